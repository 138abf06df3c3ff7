"""Photos on Ray Data (``python -m facenet3d.infer ... --engine ray``): one machine or a cluster, the same results.

The runtime's per-photo stages (:mod:`facenet3d.infer.batch`) become a Ray Data pipeline:

1. **detect** (CPU tasks): the resume check (the photo's :data:`~facenet3d.batch.RESULT_RECORD`
   as the single-process runtime reads it, or its row in the face table), decoding, detection
   and alignment (:func:`facenet3d.infer.batch.detect_photo`);
2. **regress** (an actor pool of ``num_workers`` actors, one ONNX Runtime session each): the
   crops of a batch of photos through the graph (:func:`facenet3d.infer.batch.regress_photos`);
3. **write** (CPU tasks): the faces placed in their photos and written, a folder per photo
   (:func:`facenet3d.infer.batch.write_photo_folder`) or rows of the face table (:mod:`facenet3d.infer.table`).

Each stage passes one row per photo; what one stage hands the next (the detected faces, the
graph's outputs) travels pickled in the row. The driver reads one status row per photo back
and reports through :class:`facenet3d.batch.BatchRun` (progress, ``failures.json``, the
summary, SIGINT / SIGTERM), and writes ``failures.parquet`` as well.

Safety: every file is written under a temporary name and renamed; a killed actor is restarted
and its batch retried by Ray (``max_restarts`` / ``max_task_retries``); what a killed writer
left under a temporary name is removed before and after the run
(:func:`facenet3d.atomic.remove_temporaries`). A photo counts as done only once its folder
(or its table part) is in place, so a run stopped anywhere resumes with the same command.

Without ``address`` a local Ray instance is started (and stopped at the end); with one, the
run joins that cluster (``ray start --head`` / ``ray start --address``), where every node needs
facenet3d installed with the ``ray`` extra and the photos and output folder at the same paths.
``ray`` is imported only here, only when this engine runs.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet3d.errors import Facenet3DError, MissingExtraError

#: Photos per detection task and per write task (small: a task's photos are its unit of retry).
PHOTOS_PER_TASK = 4
#: Memory of a regressor actor beyond its graph's weights: the Python process with onnxruntime and
#: the activations of a batch of 32 crops.
SESSION_MEMORY_BASE = 512 * 2**20
#: Seconds to wait for a cluster's address to answer (Ray itself retries for minutes).
CONNECT_TIMEOUT_S = 10.0
#: A photo's status between the stages and in the rows the driver reads back.
TODO, DONE, SKIPPED, FAILED = "todo", "done", "skipped", "failed"


class ClusterTooSmallError(Facenet3DError, ValueError):
    """The Ray cluster has too few CPUs for the actors asked for and the detection tasks."""


class ClusterUnreachableError(Facenet3DError, ConnectionError):
    """Nothing answers at the Ray cluster's address."""


@dataclass
class RayRunOptions:
    """How the Ray engine runs.

    Attributes:
        address: a Ray cluster's address (``ray start --head`` prints it; ``"auto"``: the
            cluster this node belongs to); None starts a local instance.
        num_workers: regressor actors, one ONNX Runtime session each.
        table: write the face table (:mod:`facenet3d.infer.table`) instead of a folder per photo.
        verbose: Ray's and MediaPipe's own messages and progress bars.
    """

    address: str | None = None
    num_workers: int = 1
    table: bool = False
    verbose: bool = False


def import_ray():
    """The ``ray`` module, with Ray Data.

    Raises:
        MissingExtraError: ray is not installed (``pip install 'facenet3d[ray]'``).
    """
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data comes with the ray[data] extra)
    except ImportError:
        raise MissingExtraError("--engine ray", "ray[data]", "ray") from None
    return ray


def actor_cpus(threads: int | None) -> int:
    """CPUs one regressor actor reserves: its ONNX Runtime threads (one when unset)."""
    return max(1, int(threads or 1))


def session_memory(onnx: Path) -> int:
    """Bytes one regressor actor declares: the graph's weights (ONNX Runtime keeps an optimised
    copy) and the activations of a batch."""
    return 2 * onnx.stat().st_size + SESSION_MEMORY_BASE


def check_reachable(address: str) -> None:
    """Fail fast when nothing listens at a ``host:port`` address (``auto`` and ``ray://`` addresses
    are left to Ray).

    Raises:
        ClusterUnreachableError: the connection is refused or times out.
    """
    import socket

    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ClusterUnreachableError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                                      "`ray start --head` and pass the address it prints") from None


def start_ray(address: str | None, num_workers: int, threads: int | None, verbose: bool = False) -> bool:
    """Connect to Ray: the running instance of this process, the cluster at ``address``, or a new
    local instance. Returns whether this call started one (to stop with ``ray.shutdown()``).

    A local instance counts the actors' CPUs on top of the machine's cores: on CPU an actor
    waits for its next batch most of the time (the graph is a few ms per face; detection and
    writing are the rest), so the tasks keep every core busy. Its workers import this copy of
    facenet3d.

    Raises:
        MissingExtraError: ray is not installed.
        ClusterUnreachableError: nothing answers at ``address``.
        ClusterTooSmallError: the cluster cannot hold the actors and one task beside them.
    """
    ray = import_ray()
    needed = num_workers * actor_cpus(threads) + 1
    started = False
    if not ray.is_initialized():
        kwargs: dict = {"include_dashboard": False, "log_to_driver": verbose,
                        "logging_level": logging.INFO if verbose else logging.ERROR}
        if address is None:
            root = str(Path(__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            # "local": a new instance even where RAY_ADDRESS or a `ray start` of this machine would be found.
            kwargs.update(address="local", num_cpus=(os.cpu_count() or 1) + needed - 1,
                          runtime_env={"env_vars": {"PYTHONPATH": path}})
        else:
            check_reachable(address)
            kwargs["address"] = address
        ray.init(**kwargs)
        started = True
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < needed:
        if started:
            ray.shutdown()
        raise ClusterTooSmallError(f"the Ray cluster has {cpus:g} CPUs; {num_workers} regressor actors of "
                                   f"{actor_cpus(threads)} thread(s) and the detection tasks need {needed}")
    return started


# -- the stages (run in Ray workers) -----------------------------------------------------------

_detectors: dict = {}
_face_models: dict = {}


def _detector(verbose: bool):
    """This worker's face detector (built once per worker process: MediaPipe's graphs are slow
    to build, and Ray reuses worker processes across tasks)."""
    if verbose not in _detectors:
        from facenet3d.batch import quiet_detector
        from facenet3d.landmarks.detect import FaceDetector

        _detectors[verbose] = quiet_detector(FaceDetector(), verbose)
    return _detectors[verbose]


def _face_model(spec: str, info):
    """This worker's face model for the graph described by ``info`` (loaded once per worker)."""
    key = (spec, info.face_model_fingerprint)
    if key not in _face_models:
        from facenet3d.infer.pipeline import RuntimeFaceModel

        _face_models[key] = RuntimeFaceModel.load(spec, info)
    return _face_models[key]


def _column(values: list) -> np.ndarray:
    """A batch column of Python objects (strings, bytes) as Ray Data takes it."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def detect_stage(batch: dict[str, np.ndarray], *, settings: dict, crop_size: int, max_faces: int | None,
                 overwrite: bool, table_done: dict[str, str] | None, verbose: bool) -> dict[str, np.ndarray]:
    """Ray task: resume check, decoding, detection and alignment of a batch of photos.

    Adds ``status`` (:data:`TODO`, :data:`SKIPPED`, :data:`FAILED`), ``error``, ``record`` (the
    resume record, JSON) and ``photo`` (the pickled :class:`~facenet3d.infer.batch.DetectedPhoto`).
    """
    import json

    from facenet3d.infer.batch import detect_photo

    from facenet3d.batch import is_finished, result_record

    status, errors, records, photos = [], [], [], []
    for path, folder in zip(batch["path"], batch["folder"], strict=True):
        path, folder = Path(path), Path(folder)
        state, error, record, photo = TODO, "", None, b""
        try:
            record = result_record(path, settings)
        except OSError as e:
            state, error = FAILED, f"{path}: cannot be read ({e.strerror or e})"
        if state == TODO and not overwrite:
            done = (table_done.get(str(path)) == record["input"]["sha256"] if table_done is not None
                    else is_finished(folder, record))
            state = SKIPPED if done else TODO
        if state == TODO:
            try:
                detected = detect_photo(path, folder, _detector(verbose), crop_size, max_faces)
                photo = pickle.dumps(detected, protocol=pickle.HIGHEST_PROTOCOL)
            except (Facenet3DError, OSError) as e:
                state, error = FAILED, str(e)
        status.append(state)
        errors.append(error)
        records.append(json.dumps(record) if record is not None else "")
        photos.append(photo)
    return {**batch, "status": _column(status), "error": _column(errors), "record": _column(records),
            "photo": _column(photos)}


class RegressStage:
    """Ray actor: one ONNX Runtime session; runs the crops of each batch of photos through it.

    Adds ``outputs`` (the photo's graph outputs, pickled) to the rows to do; ``photo`` is
    replaced by the photo with its ``regress`` time.
    """

    def __init__(self, onnx: str, threads: int | None, provider: str, batch_size: int):
        from facenet3d.infer.session import RegressorSession

        self.session = RegressorSession(onnx, threads=threads, provider=provider)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from facenet3d.infer.batch import regress_photos

        todo = [i for i, s in enumerate(batch["status"]) if s == TODO]
        photos = [pickle.loads(batch["photo"][i]) for i in todo]
        outputs = [b""] * len(batch["status"])
        photo_column = list(batch["photo"])
        for i, photo, out in zip(todo, photos, regress_photos(self.session, photos, self.batch_size), strict=True):
            outputs[i] = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
            photo_column[i] = pickle.dumps(photo, protocol=pickle.HIGHEST_PROTOCOL)
        return {**batch, "photo": _column(photo_column), "outputs": _column(outputs)}


def write_stage(batch: dict[str, np.ndarray], *, model_spec: str, info, crop_size: int,
                table_folder: str | None) -> dict[str, np.ndarray]:
    """Ray task: place the faces of a batch of photos and write them (a folder each, or one
    part of the face table). Returns the status rows the driver reads: ``path``, ``folder`` (the
    photo's folder, or the table part holding its rows), ``status``, ``error``, ``faces``."""
    import json

    from facenet3d.infer.batch import place_photo, write_photo_folder
    from facenet3d.infer.table import face_rows, write_table_part

    from facenet3d.batch import RESULT_RECORD

    model = _face_model(model_spec, info)
    status, errors, faces = list(batch["status"]), list(batch["error"]), [0] * len(batch["status"])
    folders = list(batch["folder"])
    rows: list[dict] = []
    in_table: list[int] = []
    for i, state in enumerate(status):
        if state != TODO:
            continue
        photo = pickle.loads(batch["photo"][i])
        record = json.loads(batch["record"][i])
        try:
            placed = place_photo(pickle.loads(batch["outputs"][i]), photo, model, crop_size)
            if table_folder is None:
                write_photo_folder(placed, photo, model, {RESULT_RECORD: record})
            else:
                rows.extend(face_rows(placed, photo.folder.name, record))
                in_table.append(i)
        except (Facenet3DError, OSError) as e:
            status[i], errors[i] = FAILED, str(e)
            continue
        status[i], faces[i] = DONE, len(placed)
    if rows:
        try:
            part = str(write_table_part(rows, table_folder))
        except OSError as e:
            part = ""
            for i in in_table:
                status[i], errors[i], faces[i] = FAILED, f"{table_folder}: cannot be written ({e.strerror or e})", 0
        for i in in_table:
            folders[i] = part  # where the photo's rows are
    return {"path": batch["path"], "folder": _column(folders), "status": _column(status), "error": _column(errors),
            "faces": np.asarray(faces, np.int64)}


# -- the driver ---------------------------------------------------------------------------------


def reconstruct_photos_on_ray(photos: list[Path], out: str | Path, onnx: str | Path, model, info, *,
                              options: RayRunOptions, threads: int | None = None, provider: str = "auto",
                              batch_size: int = 32, max_faces: int | None = None, overwrite: bool = False,
                              quiet: bool = False, failures: list[tuple[Path, str]] | None = None):
    """Reconstruct every face of every photo on Ray: what :func:`facenet3d.infer.batch.reconstruct_photos`
    writes (or the face table), with the same numbers.

    Args:
        photos: photo files (:func:`facenet3d.batch.collect_inputs`).
        out: output folder.
        onnx: the graph (its path must be readable by every node).
        model: its :class:`~facenet3d.infer.pipeline.RuntimeFaceModel` (its ``name`` is the spec the
            workers load).
        info: the graph's :class:`~facenet3d.onnx.metadata.OnnxModelInfo`.
        options: address, actors, table (:class:`RayRunOptions`).
        threads, provider: each actor's ONNX Runtime session.
        batch_size: photos per regressor batch (about the crops per graph run).
        max_faces, overwrite, quiet, failures: as for :func:`facenet3d.infer.batch.reconstruct_photos`.

    Returns:
        The :class:`~facenet3d.batch.BatchReport`; ``out/failures.json`` and
        ``out/failures.parquet`` list the failures (both removed when a run has none).

    Raises:
        MissingExtraError: ray (or pyarrow) is not installed.
        ClusterTooSmallError: see :func:`start_ray`.
        facenet3d.batch.OutputFolderError: ``out`` cannot be written (before any work).
    """
    from facenet3d.infer.batch import photo_settings
    from facenet3d.infer.table import FACE_TABLE, finished_inputs, write_failures_table

    from facenet3d.atomic import remove_temporaries
    from facenet3d.batch import BatchRun, check_output_folder, file_digest, output_names

    out = check_output_folder(out)
    settings = photo_settings(file_digest(Path(onnx)), model, max_faces)
    table_folder = out / FACE_TABLE if options.table else None
    if table_folder is not None:
        import shutil

        if overwrite:  # the table is redone whole: its parts group photos differently from run to run
            shutil.rmtree(table_folder, ignore_errors=True)
        table_folder.mkdir(exist_ok=True)
    scratch = [out] + ([table_folder] if table_folder is not None else [])
    for folder in scratch:
        remove_temporaries(folder)
    ray = import_ray()
    started = start_ray(options.address, options.num_workers, threads, options.verbose)
    completed = False
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = options.verbose
        if not options.verbose:
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        with BatchRun(out, settings, overwrite=overwrite, quiet=quiet, failures=failures or ()) as batch:
            batch.begin(len(photos))
            if photos:
                items = [{"path": str(p), "folder": str(out / name)}
                         for p, name in zip(photos, output_names(photos), strict=True)]
                table_done = finished_inputs(table_folder, settings) if table_folder is not None else None
                dataset = _pipeline(ray, items, options, settings=settings, onnx=str(onnx), threads=threads,
                                    provider=provider, batch_size=batch_size, max_faces=max_faces,
                                    overwrite=overwrite, table_done=table_done, model_spec=model.name, info=info,
                                    table_folder=table_folder)
                for rows in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    _report(batch, rows)
        completed = batch.report.interrupted is None
        write_failures_table(out, batch.report.failures)
    finally:
        if started:
            ray.shutdown()
        if started or completed:  # no writer of this run is left: what killed ones left can go
            for folder in scratch:
                remove_temporaries(folder)
    return batch.report


def _pipeline(ray, items: list[dict], options: RayRunOptions, *, settings: dict, onnx: str, threads: int | None,
              provider: str, batch_size: int, max_faces: int | None, overwrite: bool, table_done: dict | None,
              model_spec: str, info, table_folder: Path | None):
    """The Ray Data pipeline: detect (tasks) -> regress (actor pool) -> write (tasks)."""
    crop_size = info.crop_size
    blocks = max(1, -(-len(items) // PHOTOS_PER_TASK))
    gpus = {"num_gpus": 1} if provider == "cuda" else {}
    return (
        ray.data.from_items(items, override_num_blocks=blocks)
        .map_batches(detect_stage, batch_size=PHOTOS_PER_TASK, num_cpus=1,
                     fn_kwargs={"settings": settings, "crop_size": crop_size, "max_faces": max_faces,
                                "overwrite": overwrite, "table_done": table_done, "verbose": options.verbose})
        # A killed actor is restarted and its batch retried (Ray Data's defaults for actor pools).
        # Declaring the session's memory also keeps Ray from fusing the detection tasks into the
        # actors (it fuses stages with equal resource requests), which would run detection on
        # num_workers processes only.
        .map_batches(RegressStage, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=options.num_workers),
                     num_cpus=actor_cpus(threads), memory=session_memory(Path(onnx)),
                     fn_constructor_kwargs={"onnx": onnx, "threads": threads, "provider": provider,
                                            "batch_size": batch_size}, **gpus)
        # A regressor batch leaves as one block; split it so that its photos are written in parallel.
        .repartition(target_num_rows_per_block=PHOTOS_PER_TASK)
        .map_batches(write_stage, batch_size=PHOTOS_PER_TASK, num_cpus=1,
                     fn_kwargs={"model_spec": model_spec, "info": info, "crop_size": crop_size,
                                "table_folder": None if table_folder is None else str(table_folder)})
    )


def _report(batch, rows: dict[str, np.ndarray]) -> None:
    """Report one batch of status rows through the :class:`~facenet3d.batch.BatchRun`."""
    for path, folder, state, error, faces in zip(rows["path"], rows["folder"], rows["status"], rows["error"],
                                                 rows["faces"], strict=True):
        path = Path(path)
        if state == DONE:
            batch.finished(path, Path(folder), int(faces))
        elif state == SKIPPED:
            batch.skipped(path)
        else:
            batch.failed(path, str(error))
