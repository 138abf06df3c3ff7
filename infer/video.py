"""Video: per-frame parameters as JSON Lines, temporally smoothed, optional meshes and an overlay video.

A video file (anything OpenCV decodes), a folder of frames or a live camera goes through the graph
one frame at a time; the largest face is reconstructed. The detector runs on the first frame and
then every :data:`REDETECT_EVERY` frames or when tracking is lost; in between, each frame's crop is
placed from the previous frame's result (:class:`facenet3d.infer.tracking.FaceTracker`), which is what makes
the path real-time (``benchmarks/video.py``). Pose and expression are smoothed over
time with a one-euro filter (:class:`OneEuroFilter`, Casiez, Roussel and Vogel, CHI 2012: a
low-pass filter whose cut-off rises with the speed of the signal, so slow jitter is removed and
fast motion is followed without lag). ``OUT/<video stem>/`` gets::

    frames.jsonl   one line per frame: {"frame", "time_s", "face": true/false, the params.json
                   fields with smoothed pose, camera and expression, "landmarks68_image_px",
                   "tracking": {"detected", "confidence"}, "raw": the unsmoothed pose}
    overlay.*      the reconstruction over every frame: H.264 .mp4 where OpenCV can encode it, else
                   VP8 .webm (browsers play both), else mp4v .mp4 / MJPG .avi (:data:`VIDEO_CODECS`)
    animation.csv  Live Link Face CSV of the smoothed blendshapes and head / eye rotations (models
                   with ARKit blendshapes, :mod:`facenet3d.export.animation`)
    animation.glb  the head mesh of the clip's identity (the median of the frames' regressed
                   identities) with morph-weight and head-rotation animation
    video.json     frames, frames with a face, fps, detections, the overlay's file, codec and fallback
                   note, and ``animation``: files written, notes, the clip's identity
    meshes/        frame_<n>.ply|obj|glb per frame with a face (optional): model frame, smoothed
                   expression, vertex albedo

The folder is written under a temporary name and renamed when complete. A camera
(``reconstruct_video(0, ...)``) goes to ``OUT/webcam<N>/``, timed by the clock, until SIGINT / SIGTERM
or ``max_frames``; its lines can also be streamed as they come (``stream``).

What is smoothed: the photo-camera pose (rotation as its 6D form, re-orthonormalised after
filtering; translation), the photo camera (log focal length, principal point: the alignment
crop moves with the face, and the camera follows it) and the expression coefficients. Each is
filtered in its own unit (:data:`SMOOTHING_UNITS`; blendshape expressions in
:data:`facenet3d.track.TRACK_SMOOTHING`'s), so one ``beta`` fits all. Lines of models with ARKit
blendshapes carry ``blendshapes`` of the smoothed expression. Identity, albedo and
lighting are per frame as regressed. A frame without a face restarts the filter.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from facenet3d.infer.pipeline import PhotoFace, RuntimeFaceModel, crops_to_input, place_faces

from facenet3d.camera_math import (
    ImageCamera,
    matrix_to_euler,
    matrix_to_rotation_6d,
    project_points,
    rotation_6d_to_matrix,
)
from facenet3d.errors import CameraError, Facenet3DError, ImageReadError
from facenet3d.export.arkit import blendshape_record
from facenet3d.export.overlay import photo_overlay
from facenet3d.landmarks.detect import FaceDetector
from facenet3d.track import TRACK_SMOOTHING, OneEuroFilter  # noqa: F401  (OneEuroFilter re-exported)
from facenet3d.video_io import (  # noqa: F401  (re-exported)
    DEFAULT_FPS,
    VIDEO_SUFFIXES,
    Frames,
    camera_source,
    frame_source,
    is_video,
)

#: What one unit of each smoothed group is (the filter's ``beta`` multiplies speeds in these units):
#: 6D rotation entries (as :data:`facenet3d.track.TRACK_SMOOTHING`'s), mm, log focal length, px,
#: expression coefficients.
SMOOTHING_UNITS = {"rotation": TRACK_SMOOTHING.rotation_unit, "translation": 10.0, "log_focal": 0.02,
                   "principal": 5.0, "expression": 0.3}
MESH_FORMATS = ("none", "ply", "obj", "glb")
#: Frames between detections while the face is tracked (:class:`facenet3d.infer.tracking.FaceTracker`):
#: one second at 30 fps.
REDETECT_EVERY = 30


@dataclass
class PoseSmoother:
    """Smooths a face's photo pose, camera and expression frame by frame (see the module docstring).

    Args:
        min_cutoff, beta, d_cutoff: :class:`OneEuroFilter` settings, in :data:`SMOOTHING_UNITS`.
        enabled: False passes everything through.
    """

    min_cutoff: float = 1.0
    beta: float = 0.5
    d_cutoff: float = 1.0
    enabled: bool = True
    #: Unit of the expression coefficients (None: :data:`SMOOTHING_UNITS`'s, for PCA models);
    #: blendshape models use :data:`facenet3d.track.TRACK_SMOOTHING`'s, so fast mouth motion is followed.
    expression_unit: float | None = None

    def __post_init__(self) -> None:
        self.filter = OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)

    def reset(self) -> None:
        self.filter.reset()

    def __call__(self, face: PhotoFace, t: float) -> tuple[np.ndarray, np.ndarray, ImageCamera, np.ndarray]:
        """The smoothed ``rotation (3, 3)``, ``translation (3,)`` mm, camera and ``expression (Ke,)``."""
        cam = face.camera
        groups = {"rotation": matrix_to_rotation_6d(face.rotation), "translation": face.translation,
                  "log_focal": np.log(np.asarray(cam.focal, np.float64)),
                  "principal": np.asarray(cam.principal, np.float64),
                  "expression": np.asarray(face.params["expression"], np.float64)}
        if not self.enabled:
            return face.rotation, face.translation, cam, groups["expression"]
        sizes = [len(v) for v in groups.values()]
        unit = {**SMOOTHING_UNITS, **({"expression": self.expression_unit} if self.expression_unit else {})}
        units = np.concatenate([np.full(n, unit[k]) for k, n in zip(groups, sizes, strict=True)])
        x = np.concatenate(list(groups.values())) / units
        y = self.filter(x, t) * units
        rot6, trans, log_f, principal, expression = np.split(y, np.cumsum(sizes)[:-1])
        focal = np.exp(log_f)
        camera = ImageCamera((float(focal[0]), float(focal[1])), (float(principal[0]), float(principal[1])),
                             cam.image_size)
        return rotation_6d_to_matrix(rot6), trans, camera, expression



#: Overlay video encodings, most wanted first: ``(file name, fourcc, codec name, browsers play it)``.
#: OpenCV's pip wheels carry no H.264 encoder (its FFmpeg is built without x264/OpenH264), so the
#: usual outcome is VP8 in WebM: Chrome, Firefox, Edge and Safari (14.1+) play it, QuickTime does
#: not. VP9 would be smaller but encodes about 5x slower through OpenCV.
VIDEO_CODECS = (("overlay.mp4", "avc1", "H.264", True), ("overlay.webm", "VP80", "VP8", True),
                ("overlay.mp4", "mp4v", "MPEG-4 Part 2", False), ("overlay.avi", "MJPG", "Motion JPEG", False))


class _OverlayWriter:
    """The overlay video in the first encoding of :data:`VIDEO_CODECS` OpenCV can write."""

    def __init__(self, folder: Path, fps: float):
        self.folder, self.fps = folder, fps
        self.writer = None
        self.path: Path | None = None
        self.codec = ""
        self.note = ""

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        from facenet3d.batch import native_stderr_silenced

        if self.writer is None:
            h, w = rgb.shape[:2]
            for name, fourcc, codec, playable in VIDEO_CODECS:
                # A missing encoder is reported by FFmpeg on fd 2, once per try: that is our message to give.
                with native_stderr_silenced():
                    writer = cv2.VideoWriter(str(self.folder / name), cv2.VideoWriter_fourcc(*fourcc), self.fps,
                                             (w, h))
                if writer.isOpened():
                    self.writer, self.path, self.codec = writer, self.folder / name, codec
                    if codec != VIDEO_CODECS[0][2]:
                        self.note = (f"no H.264 encoder in this OpenCV build; wrote {codec} ({name})"
                                     + ("" if playable else ", which web browsers do not play"))
                    break
                writer.release()
                (self.folder / name).unlink(missing_ok=True)
            if self.writer is None:
                raise OSError(f"{self.folder}: OpenCV can write none of "
                              + ", ".join(c[2] for c in VIDEO_CODECS))
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


@dataclass
class VideoReport:
    """What a video run wrote: frames, frames with a face, the folder, the frame rate, seconds,
    the overlay video's codec (empty without one), what was done instead of H.264, if anything,
    frames the detector ran on and whether a live source was stopped by a signal."""

    folder: Path
    frames: int
    faces: int
    fps: float
    seconds: float
    overlay_codec: str = ""
    overlay_note: str = ""
    detections: int = 0
    interrupted: bool = False


def write_animation_files(folder: Path, kept: dict[str, list], model: RuntimeFaceModel, fps: float,
                          bounds: list | None) -> dict:
    """``animation.csv`` (Live Link Face layout, models with ARKit blendshapes) and ``animation.glb`` of
    the smoothed per-frame values, with the clip's identity (the median of the frames'); returns the
    ``video.json`` entries."""
    from facenet3d.export.animation import write_animated_glb, write_live_link_csv
    from facenet3d.export.arkit import NoBlendshapesError
    from facenet3d.track import FaceTrack, clip_identity

    identity = clip_identity(np.stack(kept["identity"]))
    track = FaceTrack(frames=np.asarray(kept["frames"]), times=np.asarray(kept["times"], np.float64),
                      identity=identity, expression=np.stack(kept["expression"]), rotation=np.stack(kept["rotation"]),
                      translation=np.stack(kept["translation"]),
                      expression_names=tuple(model.arrays.expression_names or ()), fps=fps,
                      expression_bounds=None if bounds is None else tuple(bounds))
    files, notes = [], []
    try:
        write_live_link_csv(track, folder / "animation.csv")
        files.append("animation.csv")
    except NoBlendshapesError as e:
        notes.append(f"no animation.csv: {e}")
    neutral = model.decode(identity[None], np.zeros((1, track.expression.shape[1])))[0]
    write_animated_glb(track, model.arrays, neutral, folder / "animation.glb")
    files.append("animation.glb")
    return {"animation": {"files": files, "notes": notes, "identity": np.round(identity, 6).tolist()}}


def reconstruct_video(source: str | Path | int, out: str | Path, session, model: RuntimeFaceModel,
                      detector: FaceDetector | None = None, smoother: PoseSmoother | None = None,
                      meshes: str = "none", overlay: bool = True, fps: float | None = None, quiet: bool = False,
                      redetect_every: int = REDETECT_EVERY, stream: TextIO | None = None,
                      max_frames: int | None = None) -> VideoReport:
    """Reconstruct the largest face of every frame into ``out/<source stem>/`` (see the module docstring).

    Frames go through the graph one at a time: each frame's crop is placed from the previous
    frame's result (:class:`facenet3d.infer.tracking.FaceTracker`), so a live camera is followed as it comes.

    Args:
        source: a video file, a folder of frames, or a camera index (``out/webcam<N>/``; the run
            ends on SIGINT / SIGTERM, which are then a normal stop, or after ``max_frames``).
        out: output folder.
        session: an :class:`facenet3d.infer.session.RegressorSession`.
        model: its face model.
        detector: face detector (created when None).
        smoother: pose/expression smoothing (default settings when None; ``PoseSmoother(enabled=False)``
            for raw values).
        meshes: per-frame mesh format, ``"none"``, ``"ply"``, ``"obj"`` or ``"glb"``.
        overlay: write the overlay video.
        fps: frame rate of a folder of frames (default 30) or override of the video's.
        quiet: no progress bar.
        redetect_every: run the detector at least every this many frames (1: in every frame).
        stream: also write each JSON line here as it is made, flushed (e.g. ``sys.stdout``).
        max_frames: stop after this many frames.

    Raises:
        ImageReadError: the source cannot be read.
        CameraError: the camera cannot be opened.
    """
    from facenet3d.infer.tracking import FaceTracker

    from facenet3d.batch import Interrupted
    from facenet3d.export import write_mesh
    from facenet3d.export.bundle import replace_folder
    from facenet3d.export.jsonfile import write_json
    from facenet3d.export.mesh import TexturedMesh

    if meshes not in MESH_FORMATS:
        raise ValueError(f"meshes must be one of {MESH_FORMATS}, got {meshes!r}")
    t_start = time.perf_counter()
    live = isinstance(source, int)
    frames, rate = camera_source(source, fps) if live else frame_source(source, fps)
    name = f"webcam{source}" if live else Path(source).stem
    folder = Path(out) / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(6)}.tmp")
    tmp.mkdir()
    detector = detector or FaceDetector(max_faces=1)
    tracker = FaceTracker(detector, session.crop_size, redetect_every)
    smoother = smoother or PoseSmoother()
    names = tuple(model.arrays.expression_names or ())
    bounds = model.arrays.metadata.get("expression_bounds")
    if bounds is not None and smoother.expression_unit is None:
        smoother.expression_unit = TRACK_SMOOTHING.expression_unit
    # The animation files' track: per frame with a face, the smoothed expression and pose.
    kept: dict[str, list] = {"frames": [], "times": [], "identity": [], "expression": [], "rotation": [],
                             "translation": []}
    video = _OverlayWriter(tmp, rate) if overlay else None
    if meshes != "none":
        (tmp / "meshes").mkdir()
    count = faces_found = detections = 0
    interrupted = False

    def write_line(lines: TextIO, record: dict) -> None:
        text = json.dumps(record) + "\n"
        lines.write(text)
        if stream is not None:
            stream.write(text)
            stream.flush()

    def process(lines: TextIO, index: int, t: float, rgb: np.ndarray) -> None:
        nonlocal faces_found, detections
        try:
            placed = tracker.crop(rgb)
        except Facenet3DError as e:  # no face in this frame
            smoother.reset()
            write_line(lines, {"frame": index, "time_s": round(t, 6), "face": False, "error": str(e)})
            if video is not None:
                video.write(rgb)
            return
        detections += placed.detected
        outputs = session.run(crops_to_input(placed.face.crop[None]))
        face = place_faces(outputs, [placed.face], model, session.crop_size, rgb.shape[:2])[0]
        confidence = tracker.update(face.landmarks68_image)
        rot, trans, camera, expression = smoother(face, t)
        identity = face.params["identity"]
        # The mesh only when something draws or writes it; the landmarks need their 68 vertices.
        vertices = model.decode(identity[None], expression[None])[0] if video is not None or meshes != "none" \
            else None
        lm_mesh = model.decode_landmarks(identity, expression)
        record = face.params_record(model.name, names)
        for key, value in (("frames", index), ("times", t), ("identity", identity),
                           ("expression", expression), ("rotation", rot), ("translation", trans)):
            kept[key].append(value)
        shapes = blendshape_record(expression, names)
        if shapes is not None:
            record["blendshapes"] = shapes
        record.update({
            "expression": expression.tolist(),
            "rotation_ypr_deg": [round(v, 4) for v in matrix_to_euler(rot).tolist()],
            "rotation_matrix": np.round(rot, 6).tolist(), "translation_mm": np.round(trans, 4).tolist(),
            "camera": {**record["camera"], "focal_px": list(camera.focal), "principal_px": list(camera.principal)},
            "landmarks68_image_px": np.round(project_points(lm_mesh @ rot.T + trans, camera.focal,
                                                            camera.principal), 3).tolist(),
            "tracking": {"detected": placed.detected, "confidence": round(confidence, 4)},
            "raw": {"rotation_ypr_deg": record["rotation_ypr_deg"], "translation_mm": record["translation_mm"],
                    "focal_px": record["camera"]["focal_px"], "principal_px": record["camera"]["principal_px"]},
        })
        record.pop("seconds", None)
        write_line(lines, {"frame": index, "time_s": round(t, 6), "face": True, **record})
        faces_found += 1
        if meshes != "none":
            mesh = TexturedMesh(vertices, model.triangles, vertex_colors=face.vertex_albedo, name="face")
            write_mesh(mesh, tmp / "meshes" / f"frame_{index:06d}.{meshes}")
        if video is not None:
            video.write(photo_overlay(vertices.astype(np.float64) @ rot.T + trans, model.triangles,
                                      face.vertex_albedo, face.params["sh"], camera.focal, camera.principal, rgb))

    codec = note = ""
    try:
        with open(tmp / "frames.jsonl", "w", encoding="utf-8") as lines:
            bar = None
            if not quiet:
                try:
                    from tqdm import tqdm

                    bar = tqdm(desc=name, unit="frame")
                except ImportError:
                    bar = None
            try:
                for index, t, rgb in frames:
                    process(lines, index, t, rgb)
                    count += 1
                    if bar is not None:
                        bar.update(1)
                    if max_frames is not None and count >= max_frames:
                        break
            except Interrupted:
                if not live:
                    raise
                interrupted = True  # a live camera ends this way: write what was captured
            finally:
                frames.close()
            if bar is not None:
                bar.close()
        if video is not None:
            video.close()
        if count == 0:
            if live:
                raise CameraError(source, "opened, but gave no frames")
            raise ImageReadError(str(source), "no frames could be read")
        codec, note = (video.codec, video.note) if video is not None and video.path is not None else ("", "")
        animation = write_animation_files(tmp, kept, model, rate, bounds) if kept["frames"] else {}
        write_json({"source": str(source), "frames": count, "frames_with_face": faces_found, "fps": rate,
                    "detections": detections, "redetect_every": redetect_every,
                    "overlay": None if not codec else {"file": video.path.name, "codec": codec, "note": note},
                    **animation}, tmp / "video.json")
        replace_folder(tmp, folder)
    finally:
        if video is not None:
            video.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return VideoReport(folder=folder, frames=count, faces=faces_found, fps=rate,
                       seconds=time.perf_counter() - t_start, overlay_codec=codec, overlay_note=note,
                       detections=detections, interrupted=interrupted)
