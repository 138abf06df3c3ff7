"""What every batch command shares: inputs, resume records, failures, signals, progress, quiet start-up.

``facenet3d reconstruct`` (torch) and ``python -m facenet3d.infer`` (the torch-free runtime) both drive
their photo loops through :class:`BatchRun`, so they behave alike:

- inputs: :func:`collect_inputs` turns files and folders into photos; a missing path or an
  empty folder is one failure among the others, never the end of the run;
- the output folder is checked before any work (:func:`check_output_folder`: creatable,
  writable, some free space), with a typed :class:`OutputFolderError`;
- resume: every finished photo folder holds :data:`RESULT_RECORD` (the input's SHA-256 and the
  run's settings), written with the folder's other files before it is renamed into place; a
  re-run skips a photo whose folder carries a record with the same input and settings
  (``overwrite`` redoes it). A folder without a record, or with other settings, is redone;
- ``OUT/failures.json``: ``[{"input", "error"}]`` of this run, removed when nothing failed;
- SIGINT and SIGTERM stop the run between two Python bytecodes: the photo in progress is
  dropped (its files are written under temporary names that are removed on the way out),
  finished photos are kept, and the run ends with a one-line message and its summary
  (exit status 130 / 143);
- a progress bar for one photo as for many, with the stage of the photo in progress;
- MediaPipe / TensorFlow Lite start-up messages (C++ code writing to file descriptor 2, which
  no environment variable of theirs silences before ``absl::InitializeLog``) are swallowed by
  :func:`quiet_detector` unless asked for.

numpy and the standard library only (tqdm when installed): the torch-free runtime imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facenet3d.errors import Facenet3DError

#: Failures of a run, in the output folder: ``[{"input": path, "error": message}]``.
FAILURES_FILE = "failures.json"
#: Resume record in every finished photo folder: ``{"input": {...}, "settings": {...}, ...}``.
RESULT_RECORD = "run.json"
#: Free space asked of the output folder before a run starts: a few results (one photo's folder
#: is 3-5 MB with the v1 model; the head model's GLB with morph targets is larger).
MIN_FREE_BYTES = 100 * 1024 * 1024
#: Exit status of a run stopped by a signal: 128 + the signal's number, as shells report it.
INTERRUPTED_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class OutputFolderError(Facenet3DError, OSError):
    """The output folder cannot be created or written, or its disk is (almost) full."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"output folder {self.path}: {problem}")


class Interrupted(KeyboardInterrupt):
    """Raised by :class:`BatchRun`'s signal handler (SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (so ``finally`` blocks and
    atomic writers clean up, where SIGTERM's default would kill the process mid-write); a second
    signal while the first unwinds is ignored. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame) -> None:
        if not received:
            received.append(signum)
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# -- inputs -------------------------------------------------------------------------------------


def collect_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Photos from files and folders (folders searched recursively, sorted), deduplicated, and
    the inputs that gave none.

    Returns:
        ``(photos, failures)``: resolved photo paths in input order, and ``(input, message)`` for
        each path that does not exist, cannot be listed, or is a folder without photos.
    """
    from facenet3d.errors import PhotoInputError
    from facenet3d.landmarks.image_io import collect_photos

    photos: list[Path] = []
    failures: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for item in inputs:
        try:
            found = collect_photos([item])
        except PhotoInputError as e:
            message = str(e) if str(Path(item)) in str(e) else f"{item}: {e}"
            failures.append((Path(item), message))
            continue
        except OSError as e:  # e.g. a folder that cannot be listed
            failures.append((Path(item), f"{item}: cannot be read ({e.strerror or e})"))
            continue
        for p in found:
            if p not in seen:
                seen.add(p)
                photos.append(p)
    return photos, failures


def output_names(photos: Sequence[Path]) -> list[str]:
    """Output folder name of each photo: its stem, ``<stem>_2``, ... when stems repeat
    (deterministic for a given input list, so resuming finds the same folders)."""
    used: set[str] = set()
    names = []
    for path in photos:
        name, k = path.stem, 1
        while name in used:
            k += 1
            name = f"{path.stem}_{k}"
        used.add(name)
        names.append(name)
    return names


# -- the output folder -------------------------------------------------------------------------


def check_output_folder(out: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create ``out`` if needed and make sure results can be written there.

    Writability is tested by creating (and removing) a hidden folder, as the results are
    written: ``os.access`` answers for the permission bits only, and root passes those
    everywhere while a read-only mount, a full quota or an ACL still refuses.

    Raises:
        OutputFolderError: it cannot be created (e.g. a file is in the way), is not writable,
            or has less than ``min_free_bytes`` free.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputFolderError(out, f"cannot be created ({e.strerror or e})") from None
    probe = out / f".facenet3d-write-test.{secrets.token_hex(4)}.tmp"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise OutputFolderError(out, f"is not writable ({e.strerror or e})") from None
    free = shutil.disk_usage(out).free
    if free < min_free_bytes:
        raise OutputFolderError(out, f"only {free / 2**20:.0f} MiB free; the first results need about "
                                     f"{min_free_bytes / 2**20:.0f} MiB")
    return out


def write_failures(out: Path, failures: Sequence[tuple[Path, str]]) -> Path | None:
    """``out/failures.json`` listing ``failures``, or remove it when there are none."""
    from facenet3d.export.jsonfile import write_json

    path = Path(out) / FAILURES_FILE
    if failures:
        write_json([{"input": str(p), "error": msg} for p, msg in failures], path)
        return path
    path.unlink(missing_ok=True)
    return None


# -- resume records ----------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def result_record(path: Path, settings: dict) -> dict:
    """The resume record of one input under ``settings`` (JSON-able)."""
    from facenet3d import __version__

    return {"input": {"path": str(path), "sha256": file_digest(path), "bytes": path.stat().st_size},
            "settings": dict(settings), "facenet3d": __version__}


def is_finished(folder: Path, record: dict) -> bool:
    """Whether ``folder`` holds a result for the same input content and settings as ``record``."""
    import json

    try:
        saved = json.loads((folder / RESULT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(saved, dict) and saved.get("settings") == record["settings"]
            and (saved.get("input") or {}).get("sha256") == record["input"]["sha256"])


# -- logging and progress ----------------------------------------------------------------------


def log(message: str, quiet: bool = False, err: bool = False) -> None:
    """A line that does not break a progress bar (errors are printed even when ``quiet``)."""
    if quiet and not err:
        return
    stream = sys.stderr if err else sys.stdout
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional for the runtime
        print(message, file=stream)
        return
    tqdm.write(message, file=stream)


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to ``/dev/null`` for the block (C/C++ libraries write there directly,
    past ``sys.stderr``). Python's own ``sys.stderr`` is flushed first; does nothing when not
    ``enabled`` or when fd 2 cannot be duplicated."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def quiet_detector(detector, verbose: bool = False):
    """``detector`` (a :class:`~facenet3d.landmarks.detect.FaceDetector`) with its MediaPipe graphs
    built and run once now, their start-up messages swallowed unless ``verbose``."""
    with native_stderr_silenced(not verbose):
        detector.warm_up()
    return detector


@dataclass
class BatchReport:
    """What a run did.

    Attributes:
        total: photos found (failed inputs such as missing paths excluded).
        written: output folders written by this run.
        skipped: photos whose result was already there (resumed runs).
        failures: ``(input, message)`` of inputs that failed.
        faces: faces reconstructed.
        seconds: wall-clock time of the run.
        interrupted: the signal that stopped the run (``"SIGINT"``, ``"SIGTERM"``), or None.
    """

    total: int = 0
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    faces: int = 0
    seconds: float = 0.0
    interrupted: str | None = None

    def summary(self, out: Path) -> str:
        """One line: photos written, skipped, failed, speed."""
        rate = self.faces / self.seconds if self.seconds and self.faces else 0.0
        return (f"{len(self.written)} of {self.total} photos reconstructed into {out}"
                + (f"; {len(self.skipped)} already done" if self.skipped else "")
                + (f"; {len(self.failures)} failed (listed in {Path(out) / FAILURES_FILE})" if self.failures else "")
                + (f"; {rate:.2f} faces/s" if rate else ""))

    def exit_status(self) -> int:
        """130 / 143 when stopped by SIGINT / SIGTERM, 1 when an input failed, else 0."""
        if self.interrupted:
            return INTERRUPTED_STATUS.get(signal.Signals[self.interrupted], 130)
        return 1 if self.failures else 0


class BatchRun:
    """One photo batch into ``out``: skips finished photos, records results, lists failures,
    turns SIGINT / SIGTERM into a clean stop (see the module docstring).

    Args:
        out: the output folder (checked on entering: :func:`check_output_folder`).
        settings: what makes two runs' results the same (backend, model, refinement, ...),
            recorded with every result.
        overwrite: redo photos whose result exists.
        quiet: no per-photo lines and no progress bar.
        failures: failures found before the loop (:func:`collect_inputs`).

    Example:
        >>> with BatchRun(out, settings) as run:                      # doctest: +SKIP
        ...     for path, folder in run.todo(photos):
        ...         write_image_results(process(path), folder, run.records(path))
        ...         run.finished(path, folder, faces=1)
        >>> print(run.report.summary(out))                           # doctest: +SKIP
    """

    def __init__(self, out: str | Path, settings: dict, overwrite: bool = False, quiet: bool = False,
                 failures: Sequence[tuple[Path, str]] = ()):
        self.out = Path(out)
        self.settings = dict(settings)
        self.overwrite = overwrite
        self.quiet = quiet
        self.report = BatchReport(failures=list(failures))
        self._records: dict[Path, dict] = {}
        self._bar = None
        self._stage_shown = 0.0
        self._current = ""
        self._signals = stop_on_signals()
        self._t0 = 0.0

    # -- context: output check, signals, failures.json ----------------------------------------
    def __enter__(self) -> BatchRun:
        check_output_folder(self.out)
        self._t0 = time.perf_counter()
        for _path, message in self.report.failures:
            log(f"failed: {message}", self.quiet, err=True)
        self._signals.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        stopped = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        if stopped:  # a plain KeyboardInterrupt (no handler installed) is a SIGINT too
            self.report.interrupted = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
        try:
            if self._bar is not None:
                self._bar.close()
            write_failures(self.out, self.report.failures)
            self.report.seconds = time.perf_counter() - self._t0
            if stopped:
                done = len(self.report.written) + len(self.report.skipped)
                print(f"interrupted ({self.report.interrupted}): {done} of {self.report.total} photos done, "
                      f"the one in progress dropped; run the same command again to resume", file=sys.stderr)
        finally:
            self._signals.__exit__(None, None, None)
        return stopped

    # -- the loop ---------------------------------------------------------------------------
    def todo(self, photos: Sequence[Path]) -> Iterator[tuple[Path, Path]]:
        """``(photo, its output folder)`` for every photo not finished yet, under a progress bar."""
        photos = list(photos)
        self.begin(len(photos))
        for path, name in zip(photos, output_names(photos), strict=True):
            folder = self.out / name
            self._current = path.name
            try:
                record = result_record(path, self.settings)
            except OSError as e:
                self.failed(path, f"{path}: cannot be read ({e.strerror or e})")
                continue
            if not self.overwrite and is_finished(folder, record):
                self.skipped(path)
                continue
            self._records[path] = record
            yield path, folder

    def begin(self, total: int) -> None:
        """``total`` photos are to be reported (:meth:`todo` calls it; engines that check for
        finished photos elsewhere call it and then report every photo with :meth:`finished`,
        :meth:`skipped` or :meth:`failed`)."""
        self.report.total = int(total)
        self._bar = _progress_bar(self.report.total, disable=self.quiet)

    def stage(self, name: str, step: int = 0, total: int = 0) -> None:
        """Progress within the photo in progress (a ``progress`` callable for the stages)."""
        if self._bar is None:
            return
        now = time.monotonic()
        if step and step != total and now - self._stage_shown < 0.2:  # a redraw costs more than a step
            return
        self._stage_shown = now
        self._bar.set_postfix_str(f"{self._current}: {name}" + (f" {step}/{total}" if total > 1 else ""))

    def records(self, path: Path) -> dict[str, dict]:
        """The JSON files to write into ``path``'s folder with its results (``records`` of
        :func:`facenet3d.export.bundle.write_image_results`): the resume record, so that a
        folder is finished exactly when it exists."""
        return {RESULT_RECORD: self._records.get(path) or result_record(path, self.settings)}

    def finished(self, path: Path, folder: Path, faces: int) -> None:
        """``path``'s result is complete in ``folder`` (written with :meth:`records`): report it."""
        self._records.pop(path, None)
        self.report.written.append(folder)
        self.report.faces += faces
        log(f"{path} -> {folder} ({faces} face{'s' * (faces != 1)})", self.quiet)
        self._advance()

    def skipped(self, path: Path) -> None:
        """``path``'s result was already there: report it."""
        self.report.skipped.append(path)
        self._advance()

    def failed(self, path: Path, message: str) -> None:
        """``path`` failed: listed in ``failures.json``, reported, and the run goes on."""
        self._records.pop(path, None)
        self.report.failures.append((path, message))
        log(f"failed: {message}", self.quiet, err=True)
        self._advance()

    def _advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)


def _progress_bar(total: int, disable: bool):
    """A tqdm bar on stderr (None when disabled or tqdm is missing)."""
    if disable:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="reconstruct", unit="photo", file=sys.stderr)
