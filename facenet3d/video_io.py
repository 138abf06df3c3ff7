"""Reading video: files (OpenCV), folders of frames (sorted by name) and live cameras, as one
stream of ``(index, time_s, (H, W, 3) uint8 RGB)`` frames. numpy + OpenCV only, so the torch path
(:mod:`facenet3d.video`) and the torch-free runtime (:mod:`facenet3d.infer.video`) read frames alike."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np

from facenet3d.errors import CameraError, ImageReadError
from facenet3d.landmarks.image_io import IMAGE_SUFFIXES

#: Suffixes taken for video files.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
#: Frame rate assumed for a folder of frames (and for videos that do not state one).
DEFAULT_FPS = 30.0
#: A frame: ``(index, time_s, (H, W, 3) uint8 RGB)``.
Frames = Generator[tuple[int, float, np.ndarray], None, None]


def is_video(path: str | Path) -> bool:
    """Whether a path names a video file (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def frame_source(source: str | Path, fps: float | None = None) -> tuple[Frames, float]:
    """Frames of a video file or of a folder of images (sorted by name).

    Returns:
        ``(frames, fps)``: a generator of ``(index, time_s, (H, W, 3) uint8 RGB)`` and the frame rate.

    Raises:
        ImageReadError: the video cannot be opened or the folder holds no images.
    """
    import cv2

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ImageReadError(source, "no image frames in this folder")
        rate = float(fps or DEFAULT_FPS)

        def read_folder() -> Frames:
            from facenet3d.landmarks.image_io import read_image

            for i, f in enumerate(files):
                yield i, i / rate, read_image(f).pixels

        return read_folder(), rate
    if not source.is_file():
        raise ImageReadError(source, "no such file")
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise ImageReadError(source, "cannot open video (not a video file, or a codec OpenCV lacks)")
    rate = _capture_rate(capture, fps)
    return _capture_frames(capture, lambda i: i / rate), rate


def camera_source(index: int, fps: float | None = None) -> tuple[Frames, float]:
    """Frames of a live camera (``cv2.VideoCapture(index)``), timed by the clock as they arrive.

    Returns:
        ``(frames, fps)`` as :func:`frame_source`'s; ``fps`` is the camera's stated rate (or ``fps``).

    Raises:
        CameraError: no camera ``index``, or it cannot be opened.
    """
    import cv2

    from facenet3d.batch import native_stderr_silenced

    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise CameraError(-1 if not isinstance(index, int) else index, "a camera is named by an index >= 0")
    with native_stderr_silenced():  # OpenCV's backends print their own failure lines on fd 2
        capture = cv2.VideoCapture(index)
        opened = capture.isOpened()
    if not opened:
        capture.release()
        raise CameraError(index, "cannot open it (no such camera, it is in use, or access is denied)")
    # Keep the newest frame only: a frame waiting in the driver's queue is latency, not data.
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    start = time.perf_counter()
    return _capture_frames(capture, lambda i: time.perf_counter() - start), _capture_rate(capture, fps)


def _capture_rate(capture, fps: float | None) -> float:
    import cv2

    stated = capture.get(cv2.CAP_PROP_FPS)
    return float(fps or (stated if stated and stated > 0 and math.isfinite(stated) else DEFAULT_FPS))


def _capture_frames(capture, time_of: Callable[[int], float]) -> Frames:
    """An OpenCV capture's frames as RGB, ``time_of(index)`` seconds each; released when done."""
    import cv2

    i = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield i, time_of(i), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        capture.release()
