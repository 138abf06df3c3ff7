"""Face detection and 478 dense landmarks with MediaPipe's face networks (CPU).

:class:`FaceDetector` finds every face of a photo and returns, per face, the 478 face-mesh
landmarks (468 mesh vertices + 10 iris points, ``refine_landmarks=True``), their iBUG-68
subset, a box and a detection score, all in pixels of the photo it was given (or of the
original file for a :class:`~facenet3d.landmarks.image_io.LoadedImage`).

Why a cascade: MediaPipe's face mesh runs its own short-range detector and then the landmark
network; it is fast (about 5 ms at 200 px on one core) but misses tight crops whose chin or
forehead is cut (it needs context around the face) and faces far from upright. So:

1. face mesh on the photo;
2. if it found nothing, face mesh on the photo padded with a black border (recovers almost
   every tight crop, e.g. UTKFace chips);
3. the face detector (short-range, full-range when that finds nothing) proposes boxes; every
   box that no mesh face covers gets the mesh run on a square crop of twice its size around it,
   with a lower landmark confidence (recovers strongly turned heads and small faces in large
   photos).

The detector's confidence becomes :attr:`DetectedFace.score`; a face the mesh found but the
detector did not gets score 0.

Two back-ends run the cascade (``FaceDetector(backend=...)``, see :func:`resolve_backend`):
``mediapipe``, the package's legacy ``mp.solutions`` graphs, and ``onnx``, the networks the
mediapipe wheel bundles converted to ONNX and run with onnxruntime
(:mod:`facenet3d.landmarks.mediapipe_onnx`), which the torch-free runtime install uses.

Threads and processes: MediaPipe graphs are costly to create (about 50 ms) and not
thread-safe. Create one :class:`FaceDetector` and reuse it; calls from several threads are
serialised by a lock (use one detector per thread for parallelism). The graphs are created
lazily in the process that first uses them and are not pickled, so a detector may be created
before ``fork`` or sent to worker processes; each process then builds its own graphs.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from facenet3d.errors import NoFaceError
from facenet3d.landmarks.align import invert_affine, transform_points, warp_image
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE
from facenet3d.landmarks.image_io import LoadedImage

#: Number of landmarks of the refined face mesh: 468 mesh vertices + 2 x 5 iris points.
NUM_LANDMARKS = 478


@dataclass(frozen=True)
class DetectedFace:
    """One face found in a photo; every coordinate in pixels (origin top-left, centres at +0.5).

    Attributes:
        landmarks478: ``(478, 3)`` float32: x right, y down (pixels), z relative depth in the
            same pixel scale as x, origin near the head centre, positive away from the camera
            (MediaPipe's sign; x, y, z is a right-handed frame).
        landmarks68: ``(68, 2)`` float32 iBUG-68 points (see :mod:`facenet3d.landmarks.ibug68`).
        box: ``(4,)`` float32 ``x0, y0, x1, y1``: the bounding box of the 468 mesh vertices.
        score: face-detector confidence in [0, 1]; 0 when only the mesh found the face.
    """

    landmarks478: np.ndarray
    landmarks68: np.ndarray
    box: np.ndarray
    score: float

    @property
    def area(self) -> float:
        """Box area in square pixels (faces are ordered by it)."""
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    def transformed(self, matrix: np.ndarray) -> DetectedFace:
        """The same face with every coordinate mapped by a ``(2, 3)`` similarity/affine matrix.

        Depth is multiplied by the matrix's scale (``sqrt(|det A|)``) so it stays in the x
        pixel scale.
        """
        lm = np.empty_like(self.landmarks478)
        lm[:, :2] = transform_points(self.landmarks478[:, :2], matrix)
        lm[:, 2] = self.landmarks478[:, 2] * np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2])))
        return _face_from_landmarks(lm, self.score)


def _face_from_landmarks(landmarks478: np.ndarray, score: float) -> DetectedFace:
    lm = np.ascontiguousarray(landmarks478, dtype=np.float32)
    mesh = lm[:468, :2]
    box = np.concatenate([mesh.min(0), mesh.max(0)]).astype(np.float32)
    return DetectedFace(landmarks478=lm, landmarks68=lm[IBUG68_FROM_MEDIAPIPE, :2].copy(), box=box,
                        score=float(score))


class FaceDetector:
    """Reusable face detector + 478-landmark face mesh (MediaPipe's networks).

    Args:
        max_faces: most faces returned per photo (largest first).
        min_detection_confidence: threshold of the face detector and of the mesh's own detector.
        fallback_confidence: landmark confidence used on detector-guided crops (step 3 of the
            module docstring); lower finds more turned heads but also poorer meshes.
        max_side: photos larger than this are reduced before MediaPipe sees them (MediaPipe
            runs its networks at 128-256 px anyway); results are mapped back to full resolution.
        backend: ``auto``, ``mediapipe`` or ``onnx`` (see :func:`resolve_backend`).

    Example:
        >>> detector = FaceDetector()                            # doctest: +SKIP
        >>> faces = detector.detect(read_image("photo.jpg"))     # doctest: +SKIP
        >>> faces[0].landmarks68.shape                           # doctest: +SKIP
        (68, 2)
    """

    def __init__(self, max_faces: int = 4, min_detection_confidence: float = 0.5,
                 fallback_confidence: float = 0.3, max_side: int = 1600, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.max_faces = int(max_faces)
        self.min_detection_confidence = float(min_detection_confidence)
        self.fallback_confidence = float(fallback_confidence)
        self.max_side = int(max_side)
        self.backend = resolve_backend(backend)
        self._graphs: _MediaPipeGraphs | _OnnxGraphs | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    # MediaPipe graphs are neither picklable nor fork-safe: ship the settings only.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_graphs", "_pid", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._graphs, self._pid, self._lock = None, None, threading.Lock()

    def close(self) -> None:
        """Release the graphs (they are rebuilt on the next call)."""
        with self._lock:
            if self._graphs is not None and self._pid == os.getpid():
                self._graphs.close()
            self._graphs = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _get_graphs(self) -> _MediaPipeGraphs | _OnnxGraphs:
        if self._graphs is None or self._pid != os.getpid():
            graphs = _OnnxGraphs if self.backend == "onnx" else _MediaPipeGraphs
            self._graphs = graphs(self.max_faces, self.min_detection_confidence, self.fallback_confidence)
            self._pid = os.getpid()
        return self._graphs

    def warm_up(self) -> None:
        """Build the graphs now and run each once on a blank image: their first run starts the
        inference engines, which may print start-up messages (callers may silence them, see
        :func:`facenet3d.batch.quiet_detector`)."""
        with self._lock:
            self._get_graphs().warm_up()

    def detect(self, image: np.ndarray | LoadedImage, source: str | None = None) -> list[DetectedFace]:
        """Every face of a photo, largest first.

        Args:
            image: ``(H, W, 3) uint8`` RGB array, or a :class:`LoadedImage` (results are then
                in pixels of its original, upright photo).
            source: name used in the error message (defaults to the LoadedImage's path).

        Returns:
            At most ``max_faces`` :class:`DetectedFace`, ordered by box area, descending.

        Raises:
            NoFaceError: no face was found.
            ValueError: ``image`` is not an ``(H, W, 3) uint8`` array.
        """
        factors = np.ones(2)  # original pixels per pixel given to the graphs, along x and y
        if isinstance(image, LoadedImage):
            source = source or image.path
            factors = image.scale
            pixels = image.pixels
        else:
            pixels = np.asarray(image)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {pixels.shape} {pixels.dtype}")
        pixels, scale = _limit_size(pixels, self.max_side)
        with self._lock:
            faces = self._detect(np.ascontiguousarray(pixels))
        if not faces:
            raise NoFaceError(source)
        factors = factors * scale
        if not np.allclose(factors, 1.0):
            to_original = np.array([[factors[0], 0.0, 0.0], [0.0, factors[1], 0.0]])
            faces = [f.transformed(to_original) for f in faces]
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces[: self.max_faces]

    def detect_largest(self, image: np.ndarray | LoadedImage, source: str | None = None) -> DetectedFace:
        """The largest face of a photo (see :meth:`detect`)."""
        return self.detect(image, source)[0]

    # -- the cascade -----------------------------------------------------------------------
    def _detect(self, pixels: np.ndarray) -> list[DetectedFace]:
        g = self._get_graphs()
        meshes = g.mesh(pixels)
        if not meshes:
            pad = max(pixels.shape[:2]) // 4
            padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)))
            meshes = [m - np.array([pad, pad, 0], np.float32) for m in g.mesh(padded)]
        boxes = g.boxes(pixels, full_range=False) or g.boxes(pixels, full_range=True)
        faces: list[DetectedFace] = []
        unmatched = list(boxes)
        for lm in meshes:
            score = 0.0
            for i, (box, s) in enumerate(unmatched):
                if _covers(lm, box):
                    score = s
                    del unmatched[i]
                    break
            faces.append(_face_from_landmarks(lm, score))
        for box, s in unmatched:
            if len(faces) >= self.max_faces:
                break
            lm = _mesh_in_box(g, pixels, box)
            if lm is not None and not any(_covers(f.landmarks478, box) for f in faces):
                faces.append(_face_from_landmarks(lm, s))
        return faces


#: Landmark back-ends: ``mediapipe`` (the package's legacy face-mesh graphs), ``onnx`` (the
#: same networks' ONNX conversions on onnxruntime, :mod:`facenet3d.landmarks.mediapipe_onnx`),
#: ``auto`` (see :func:`resolve_backend`).
BACKENDS = ("auto", "mediapipe", "onnx")


def resolve_backend(backend: str = "auto") -> str:
    """``mediapipe`` or ``onnx``. ``auto``: the ``FACENET3D_LANDMARKS`` environment variable when
    set, else ``onnx``: it needs no mediapipe package and agrees with it to about 0.1 px (median
    over photos, 0.03-0.13 px, under 0.1 % of the inter-ocular distance; same faces found:
    ``benchmarks/face_landmarks.py``), so every install gets the same landmarks."""
    if backend == "auto":
        backend = os.environ.get("FACENET3D_LANDMARKS", "onnx")
    if backend not in BACKENDS[1:]:
        raise ValueError(f"landmark backend must be one of {BACKENDS[1:]}, got {backend!r} (FACENET3D_LANDMARKS?)")
    return backend


class _MediaPipeGraphs:
    """The cascade's three steps on the ``mediapipe`` package's legacy solutions."""

    def __init__(self, max_faces: int, min_confidence: float, fallback_confidence: float):
        import warnings

        # mediapipe 0.10.14 calls a protobuf API that newer protobuf deprecates, per call.
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
        import mediapipe as mp

        fm, fd = mp.solutions.face_mesh, mp.solutions.face_detection
        self.graphs = {
            "mesh": fm.FaceMesh(static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
                                min_detection_confidence=min_confidence),
            "mesh_lenient": fm.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                        min_detection_confidence=fallback_confidence,
                                        min_tracking_confidence=fallback_confidence),
            "short": fd.FaceDetection(model_selection=0, min_detection_confidence=min_confidence),
            "full": fd.FaceDetection(model_selection=1, min_detection_confidence=min_confidence),
        }

    def close(self) -> None:
        for g in self.graphs.values():
            g.close()

    def warm_up(self) -> None:
        blank = np.zeros((64, 64, 3), np.uint8)
        for graph in self.graphs.values():
            graph.process(blank)

    def mesh(self, pixels: np.ndarray, lenient: bool = False) -> list[np.ndarray]:
        """Face-mesh landmarks ``(478, 3)`` px for every face MediaPipe returns."""
        h, w = pixels.shape[:2]
        result = self.graphs["mesh_lenient" if lenient else "mesh"].process(pixels)
        out = []
        for face in result.multi_face_landmarks or []:
            a = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
            if a.shape[0] != NUM_LANDMARKS:
                continue
            a *= np.array([w, h, w], np.float32)  # MediaPipe's z is normalised by the image width
            out.append(a)
        return out

    def boxes(self, pixels: np.ndarray, full_range: bool) -> list[tuple[np.ndarray, float]]:
        """Face-detector boxes ``(4,)`` px ``x0, y0, x1, y1`` and scores."""
        h, w = pixels.shape[:2]
        result = self.graphs["full" if full_range else "short"].process(pixels)
        out = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            box = np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h], np.float32)
            out.append((box, float(d.score[0]) if d.score else 0.0))
        return out


class _OnnxGraphs:
    """The cascade's three steps on the ONNX conversions of the same networks (no mediapipe)."""

    def __init__(self, max_faces: int, min_confidence: float, fallback_confidence: float):
        from facenet3d.landmarks.mediapipe_onnx import FaceMeshOnnx

        self.model = FaceMeshOnnx()
        self.max_faces, self.min_confidence, self.fallback_confidence = max_faces, min_confidence, fallback_confidence
        # The cascade asks for a photo's short-range detections twice, mesh() then boxes(): mesh()
        # keeps them for boxes() on the same array (always recomputed by mesh(), never stale).
        self._last: tuple[np.ndarray, list] | None = None

    def close(self) -> None:
        pass

    def warm_up(self) -> None:
        self.mesh(np.zeros((64, 64, 3), np.uint8))

    def mesh(self, pixels: np.ndarray, lenient: bool = False) -> list[np.ndarray]:
        """Like the legacy FaceMesh in static mode: short-range detections, then the mesh on each."""
        confidence = self.fallback_confidence if lenient else self.min_confidence
        detections = self.model.detect(pixels, confidence)
        if not lenient:
            self._last = (pixels, detections)
        out = []
        for det in detections[: 1 if lenient else self.max_faces]:
            lm = self.model.landmarks(pixels, det, min_presence=confidence if lenient else 0.5)
            if lm is not None:
                out.append(lm)
        return out

    def boxes(self, pixels: np.ndarray, full_range: bool) -> list[tuple[np.ndarray, float]]:
        if not full_range and self._last is not None and self._last[0] is pixels:
            detections = self._last[1]
        else:
            detections = self.model.detect(pixels, self.min_confidence, full_range)
        self._last = None
        return [(d.box, d.score) for d in detections]


def _limit_size(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink so the longer side is at most ``max_side``.

    Returns:
        ``(pixels, (2,) original px per px along x and y)``; per axis because the rounded
        size need not keep the aspect ratio exactly.
    """
    h, w = pixels.shape[:2]
    if max(h, w) <= max_side:
        return pixels, np.ones(2)
    import cv2

    s = max_side / max(h, w)
    small = cv2.resize(pixels, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small, np.array([w / small.shape[1], h / small.shape[0]])


def _covers(landmarks: np.ndarray, box: np.ndarray) -> bool:
    """Whether the detector box's centre lies inside the mesh's bounding box."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    lo, hi = landmarks[:468, :2].min(0), landmarks[:468, :2].max(0)
    return bool(lo[0] <= cx <= hi[0] and lo[1] <= cy <= hi[1])


def _mesh_in_box(graphs: _MediaPipeGraphs | _OnnxGraphs, pixels: np.ndarray, box: np.ndarray,
                 crop: int = 256) -> np.ndarray | None:
    """Run the mesh on a square crop twice the size of a detector box; landmarks in photo px."""
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = 2.0 * max(box[2] - box[0], box[3] - box[1], 1.0)
    s = crop / side
    m = np.array([[s, 0, crop / 2 - s * cx], [0, s, crop / 2 - s * cy]])
    patch = warp_image(pixels, m, (crop, crop), interpolation=cv2.INTER_LINEAR)
    meshes = graphs.mesh(patch, lenient=True)
    if not meshes:
        return None
    face = _face_from_landmarks(meshes[0], 0.0).transformed(invert_affine(m))
    return face.landmarks478
