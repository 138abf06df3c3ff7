"""The training-photo cache: detect, align and store every photo once.

``facenet3d preprocess PHOTOS... -o CACHE`` (or :func:`preprocess`) runs detection, the 478
landmarks, alignment and masks over folders of photos with one MediaPipe instance per worker
process, and stores the results as memory-mappable ``.npy`` arrays that a data loader reads
without decoding a JPEG or running MediaPipe again (:class:`PhotoCache`).

Layout::

    CACHE/manifest.json              what is where (written atomically: temp file + rename)
    CACHE/shards/00000/crop.npy      (n, S, S, 3) uint8 RGB canonical crops
                      landmarks478.npy (n, 478, 3) float32 crop px (z: relative depth, crop px
                                       scale, positive away from the camera)
                      landmarks68.npy  (n, 68, 2) float32 crop px
                      face_mask.npy    (n, S, S) bool
                      skin_mask.npy    (n, S, S) bool
                      forward.npy      (n, 2, 3) float64 original photo px -> crop px
                      inverse.npy      (n, 2, 3) float64 crop px -> original photo px
    CACHE/shards/00001/...

"Original photo px" are the pixels of the upright photo (EXIF orientation applied) at full
resolution, even when a large photo was decoded at reduced size. A shard is written to a
temporary folder and renamed when complete, then the manifest is rewritten; an interrupted
run keeps every finished shard, and a re-run skips the photos already cached (failed ones
are tried again).

``manifest.json``::

    {"format": "facenet3d-photo-cache", "version": 1, "size": 224,
     "arrays": {"crop": {"shape": [224, 224, 3], "dtype": "uint8"}, ...},
     "shards": [{"name": "00000", "count": 256}, ...],
     "items": [{"source": "/abs/photo.jpg", "shard": "00000", "row": 0, "width": 350,
                "height": 350, "faces": 1, "score": 0.93, "box": [x0, y0, x1, y1],
                "labels": {"identity": "...", "emotion": "..."}}, ...],
     "failures": [{"source": "/abs/bad.jpg", "error": "...: no face found"}, ...]}

Labels: a ``labels.csv`` beside the photos with an ``image`` (or ``file``) column gives each
photo its other columns (lfw-expressions: identity, emotion); UTKFace file names
``age_gender_race_date.jpg.chip.jpg`` give ``age``, ``gender`` (0 male, 1 female) and
``race`` (0 White, 1 Black, 2 Asian, 3 Indian, 4 Other). Photos with several faces are cached
with their largest face; ``faces`` records how many were found.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet3d.atomic import write_text
from facenet3d.errors import Facenet3DError, PhotoInputError
from facenet3d.landmarks.align import DEFAULT_CROP_SIZE
from facenet3d.landmarks.crop import face_crop_arrays
from facenet3d.landmarks.image_io import collect_photos
from facenet3d.landmarks.photo_labels import photo_labels

CACHE_FORMAT = "facenet3d-photo-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
SHARD_DIR = "shards"

#: Photos per shard: small enough that an interruption loses little work, large enough to
#: keep the number of files low (224 px: about 64 MB per shard).
DEFAULT_SHARD_SIZE = 256

#: Decoding limit: photos are reduced to this longer side while decoded (JPEG DCT scaling),
#: which is plenty for crops of a few hundred pixels.
DECODE_MAX_SIDE = 1600


def array_specs(size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-item shape and dtype of every cached array for crops of ``size`` px."""
    return {
        "crop": ((size, size, 3), np.dtype(np.uint8)),
        "landmarks478": ((478, 3), np.dtype(np.float32)),
        "landmarks68": ((68, 2), np.dtype(np.float32)),
        "face_mask": ((size, size), np.dtype(bool)),
        "skin_mask": ((size, size), np.dtype(bool)),
        "forward": ((2, 3), np.dtype(np.float64)),
        "inverse": ((2, 3), np.dtype(np.float64)),
    }


class CacheUsageError(PhotoInputError):
    """The cache folder or the inputs do not fit the request (exit status 2 on the CLI)."""


# -- one photo ------------------------------------------------------------------------------


def process_photo(path: str | os.PathLike, detector, size: int = DEFAULT_CROP_SIZE
                  ) -> tuple[dict, dict[str, np.ndarray]]:
    """Detect, align and mask the largest face of one photo.

    Args:
        path: photo file.
        detector: a :class:`~facenet3d.landmarks.detect.FaceDetector`.
        size: crop side, px.

    Returns:
        ``(metadata, arrays)``: metadata as stored in the manifest (without source/shard/row),
        arrays as listed by :func:`array_specs` (without the leading item axis).

    Raises:
        ImageReadError, NoFaceError: the photo cannot be read or has no face.
    """
    from facenet3d.landmarks.image_io import read_image

    image = read_image(path, max_side=DECODE_MAX_SIDE)
    faces = detector.detect(image)
    face = faces[0]
    meta = {"width": image.original_size[0], "height": image.original_size[1], "faces": len(faces),
            "score": round(face.score, 4), "box": [round(float(v), 2) for v in face.box]}
    return meta, face_crop_arrays(image, face, size)


# -- writing ------------------------------------------------------------------------------------


class _CacheWriter:
    """Appends finished photos to shards and keeps the manifest up to date."""

    def __init__(self, root: Path, size: int, shard_size: int,
                 specs: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None):
        self.root, self.size, self.shard_size = root, size, shard_size
        # Other caches in this layout (the training's labelled crops) store more arrays per item.
        self.specs = array_specs(size) if specs is None else specs
        (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.manifest = self._load_or_create()
        self.buffer: list[tuple[dict, dict[str, np.ndarray]]] = []

    def _load_or_create(self) -> dict:
        path = self.root / MANIFEST
        if path.is_file():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise CacheUsageError(f"{path}: unreadable manifest ({e}); use a new cache folder") from e
            if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
                raise CacheUsageError(f"{path}: not a facenet3d photo cache of version {CACHE_VERSION}")
            if manifest.get("size") != self.size:
                raise CacheUsageError(f"{path}: cache holds {manifest.get('size')} px crops, asked for "
                                      f"{self.size}; use another cache folder")
        else:
            manifest = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "size": self.size,
                        "arrays": {k: {"shape": list(s), "dtype": d.str} for k, (s, d) in self.specs.items()},
                        "shards": [], "items": [], "failures": []}
        # Keep only shards that were completed (a crash may leave temp folders or a renamed
        # shard the manifest never listed).
        listed = {s["name"] for s in manifest["shards"]}
        for d in (self.root / SHARD_DIR).iterdir():
            if d.name not in listed:
                shutil.rmtree(d, ignore_errors=True)
        manifest["shards"] = [s for s in manifest["shards"] if (self.root / SHARD_DIR / s["name"]).is_dir()]
        kept = {s["name"] for s in manifest["shards"]}
        manifest["items"] = [it for it in manifest["items"] if it["shard"] in kept]
        # A failure whose file has since been removed is no longer a failure; cached items
        # stay usable without their source.
        manifest["failures"] = [f for f in manifest["failures"] if Path(f["source"]).exists()]
        return manifest

    @property
    def done(self) -> set[str]:
        return {it["source"] for it in self.manifest["items"]}

    def add(self, source: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        meta = {"source": source, **meta, "labels": photo_labels(source)}
        self.buffer.append((meta, arrays))
        if len(self.buffer) >= self.shard_size:
            self.flush()

    def fail(self, source: str, error: str) -> None:
        self.manifest["failures"].append({"source": source, "error": error})

    def forget_failures(self, sources: set[str]) -> None:
        self.manifest["failures"] = [f for f in self.manifest["failures"] if f["source"] not in sources]

    def flush(self) -> None:
        """Write buffered photos as a new shard (if any) and rewrite the manifest."""
        if self.buffer:
            names = [int(s["name"]) for s in self.manifest["shards"]]
            name = f"{max(names, default=-1) + 1:05d}"
            final = self.root / SHARD_DIR / name
            tmp = self.root / SHARD_DIR / f".{name}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for key, (shape, dtype) in self.specs.items():
                stacked = np.stack([a[key] for _, a in self.buffer]).astype(dtype, copy=False)
                assert stacked.shape[1:] == shape, (key, stacked.shape)
                np.save(tmp / f"{key}.npy", stacked)
            os.replace(tmp, final)
            for row, (meta, _) in enumerate(self.buffer):
                self.manifest["items"].append({**meta, "shard": name, "row": row})
            self.manifest["shards"].append({"name": name, "count": len(self.buffer)})
            self.buffer = []
        write_text(json.dumps(self.manifest, indent=1), self.root / MANIFEST)


# -- workers ------------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(size: int, detector_kwargs: dict) -> None:
    # Ctrl-C goes to the whole process group; only the parent handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # MediaPipe's C++ code logs several lines per graph straight to file descriptor 2, which
    # would break the parent's progress bar; worker errors travel back as results instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    from facenet3d.landmarks.detect import FaceDetector

    _WORKER["detector"] = FaceDetector(**detector_kwargs)
    _WORKER["size"] = size


def _work(path: str) -> tuple[str, tuple | None, str | None]:
    try:
        meta, arrays = process_photo(path, _WORKER["detector"], _WORKER["size"])
        return path, (meta, arrays), None
    except Facenet3DError as e:
        return path, None, str(e)
    except Exception as e:  # one photo must never take the batch down
        return path, None, f"{path}: unexpected {type(e).__name__}: {e}"


@dataclass
class PreprocessReport:
    """What a :func:`preprocess` run did."""

    cached: int
    skipped: int
    failed: list[dict]
    interrupted: bool = False


def preprocess(inputs: Iterable[str | os.PathLike], cache_dir: str | os.PathLike,
               size: int = DEFAULT_CROP_SIZE, workers: int | None = None,
               shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = True,
               detector_kwargs: dict | None = None) -> PreprocessReport:
    """Fill (or complete) a photo cache.

    Args:
        inputs: photo files and/or folders.
        cache_dir: cache folder (created if needed).
        size: crop side, px.
        workers: worker processes (default: all cores; 1 runs in this process). Workers are
            spawned (fresh interpreters, one MediaPipe instance each), so a script calling this
            with several workers needs the usual ``if __name__ == "__main__":`` guard.
        shard_size: photos per shard.
        progress: show a tqdm progress bar.
        detector_kwargs: arguments of :class:`~facenet3d.landmarks.detect.FaceDetector`.

    Returns:
        A :class:`PreprocessReport`; ``interrupted`` when stopped by Ctrl-C (what finished is
        kept).

    Raises:
        CacheUsageError: missing inputs, no photos, or a cache made for another crop size.
    """
    from tqdm import tqdm

    if size < 32:
        raise CacheUsageError(f"crop size {size} is too small (minimum 32)")
    photos = [str(p) for p in collect_photos(inputs)]
    root = Path(cache_dir)
    if root.exists() and not root.is_dir():
        raise CacheUsageError(f"{root}: exists and is not a folder")
    writer = _CacheWriter(root, size, shard_size)
    done = writer.done
    todo = [p for p in photos if p not in done]
    writer.forget_failures(set(todo))  # failed photos are tried again
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    failed: list[dict] = []
    cached = 0
    bar = tqdm(total=len(todo), desc="preprocess", unit="photo", disable=not progress, dynamic_ncols=True)
    kwargs = detector_kwargs or {}
    pool = None
    interrupted = False
    try:
        if workers == 1 or not todo:
            _init_worker_in_process(size, kwargs)
            results: Iterator = map(_work, todo)
        else:
            import multiprocessing as mp

            # fork would copy a parent's MediaPipe state; spawn starts clean interpreters.
            ctx = mp.get_context("spawn")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(size, kwargs))
            results = pool.imap_unordered(_work, todo, chunksize=4)
        for path, ok, error in results:
            if ok is not None:
                writer.add(path, *ok)
                cached += 1
            else:
                writer.fail(path, error)
                failed.append({"source": path, "error": error})
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        writer.flush()
    return PreprocessReport(cached=cached, skipped=len(photos) - len(todo), failed=failed,
                            interrupted=interrupted)


def _init_worker_in_process(size: int, detector_kwargs: dict) -> None:
    from facenet3d.landmarks.detect import FaceDetector

    if _WORKER.get("size") != size or _WORKER.get("kwargs") != detector_kwargs:
        _WORKER["detector"] = FaceDetector(**detector_kwargs)
        _WORKER["size"] = size
        _WORKER["kwargs"] = dict(detector_kwargs)


# -- reading ------------------------------------------------------------------------------------


class PhotoCache:
    """Read a photo cache: ``len(cache)`` items, ``cache[i]`` -> dict of arrays (memory-mapped).

    Args:
        root: the cache folder.
        mmap: memory-map the arrays (default); ``False`` loads each shard fully on first use.

    Example:
        >>> cache = PhotoCache("cache/")             # doctest: +SKIP
        >>> item = cache[0]                          # doctest: +SKIP
        >>> item["crop"].shape, cache.items[0]["source"]  # doctest: +SKIP
        ((224, 224, 3), '/data/photo.jpg')
    """

    def __init__(self, root: str | os.PathLike, mmap: bool = True):
        self.root = Path(root)
        path = self.root / MANIFEST
        try:
            self.manifest: dict = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CacheUsageError(f"{path}: cannot read the cache manifest ({e})") from e
        if self.manifest.get("format") != CACHE_FORMAT:
            raise CacheUsageError(f"{path}: not a facenet3d photo cache")
        self.mmap = mmap
        self._arrays: dict[str, dict[str, np.ndarray]] = {}

    @property
    def items(self) -> list[dict]:
        """Per-item metadata (source, shard, row, size, faces, score, box, labels)."""
        return self.manifest["items"]

    @property
    def failures(self) -> list[dict]:
        return self.manifest["failures"]

    @property
    def size(self) -> int:
        """Crop side, px."""
        return int(self.manifest["size"])

    def __len__(self) -> int:
        return len(self.items)

    def shard_arrays(self, shard: str) -> dict[str, np.ndarray]:
        """All arrays of one shard, ``name -> (n, ...)`` (memory-mapped, read-only)."""
        if shard not in self._arrays:
            folder = self.root / SHARD_DIR / shard
            self._arrays[shard] = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if self.mmap else None)
                                   for name in self.manifest["arrays"]}
        return self._arrays[shard]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Arrays of item ``index`` (see the module docstring for shapes and units)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a cache of {len(self)} items")
        item = self.items[index]
        arrays = self.shard_arrays(item["shard"])
        return {name: a[item["row"]] for name, a in arrays.items()}

    # Memory maps are reopened in each process (e.g. data-loader workers) rather than pickled.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}
