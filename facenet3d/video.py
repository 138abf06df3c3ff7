"""``facenet3d reconstruct clip.mp4``: a video's largest face as an animation (torch path).

Two passes over the clip's aligned crops (one detection per frame, crops kept in memory):

1. **identity**: up to :data:`IDENTITY_FRAMES` frames spread over the clip are fitted in full
   (regressor and/or refinement); the clip's identity is their per-coefficient median
   (:func:`facenet3d.track.clip_identity`). Before that, with at least :data:`OFFSET_MIN_FRAMES`
   such frames, the same frames are fitted together with one offset per landmark shared by all
   (:func:`facenet3d.refine.detector_offsets`): where the detector's points sit apart from the
   model's in every frame, which fitted frame by frame would be read as expression; every fit of
   the clip takes it off its landmarks;
2. **per frame**: every frame is fitted with that identity fixed (expression and pose only:
   ``refine(..., fixed=("identity",))``, starting from the regressor's expression when there is
   one, else from the mean face), in batches of :data:`FIT_BATCH` frames.

Expression and pose are then smoothed in time (:func:`facenet3d.track.smooth_track`) and
``OUT/<clip stem>/`` gets (written under a temporary name, renamed when complete)::

    frames.jsonl   one line per frame: {"frame", "time_s", "face": false} or
                   :func:`facenet3d.export.animation.frame_record` + "raw" (unsmoothed) values
    animation.csv  Live Link Face CSV (models with ARKit blendshapes)
    animation.glb  head mesh with morph-target and head-rotation animation
    video.json     frames, frames with a face, fps, identity frames, files written, notes
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facenet3d.camera_math import photo_pose
from facenet3d.errors import ImageReadError, NoFaceError
from facenet3d.params import FaceParams
from facenet3d.track import TRACK_SMOOTHING, FaceTrack, TrackSmoothing, clip_identity, smooth_track

#: Frames fitted in full to estimate the clip's identity.
IDENTITY_FRAMES = 8
#: Frames fitted together (one batch through the refinement).
FIT_BATCH = 8
#: Fewest identity frames from which the detector's landmark offsets are estimated (with fewer, an
#: offset shared by the frames could not tell the detector's convention from the face's expression).
OFFSET_MIN_FRAMES = 4


@dataclass
class ClipFrames:
    """The frames of a clip with a face: index, time, detection and aligned crop arrays."""

    indices: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    crops: list[dict] = field(default_factory=list)
    missing: list[tuple[int, float]] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)


def detect_clip(reconstructor, frames: Iterable[tuple[int, float, np.ndarray]]) -> ClipFrames:
    """Detect the largest face of every frame and cut its aligned crop.

    Args:
        reconstructor: a :class:`~facenet3d.api.FaceReconstructor` (its detector and crop size).
        frames: ``(index, time_s, (H, W, 3) uint8 RGB)`` (:func:`facenet3d.video_io.frame_source`).
    """
    from facenet3d.landmarks.crop import face_crop_arrays

    out = ClipFrames()
    for index, t, rgb in frames:
        out.image_size = tuple(rgb.shape[:2])
        try:
            face = reconstructor.detector.detect(rgb)[0]
        except NoFaceError:
            out.missing.append((index, t))
            continue
        out.indices.append(int(index))
        out.times.append(float(t))
        out.crops.append(face_crop_arrays(rgb, face, reconstructor.crop_size))
    return out


def _target(crops: list[dict], device):
    from facenet3d.refine import FitTarget

    return FitTarget.from_arrays(np.stack([c["crop"] for c in crops]), np.stack([c["landmarks478"] for c in crops]),
                                 np.stack([c["landmarks68"] for c in crops]),
                                 np.stack([c["skin_mask"] for c in crops]), device=device)


def fit_clip(reconstructor, clip: ClipFrames, refine: str = "fast", fps: float = 30.0,
             identity_frames: int = IDENTITY_FRAMES, batch: int = FIT_BATCH,
             progress: Callable[[str, int, int], None] | None = None) -> tuple[FaceTrack, list[int]]:
    """Fit the clip's face: one identity, then expression and pose per frame (unsmoothed).

    Args:
        reconstructor: a :class:`~facenet3d.api.FaceReconstructor`.
        clip: :func:`detect_clip`'s frames (at least one with a face).
        refine: refinement preset or YAML path (``"none"`` needs a regressor).
        fps: the clip's frame rate.
        identity_frames: frames fitted in full for the identity.
        batch: frames per refinement batch.
        progress: optional ``(stage, done, total)`` with stages ``identity`` and ``frames``.

    Returns:
        ``(track, identity_frame_indices)``.
    """
    from facenet3d.refine import LandmarkStageConfig, detector_offsets, initial_lighting, initial_params, offset_target
    from facenet3d.refine import refine as run_refinement

    rec, model = reconstructor, reconstructor.model
    n = len(clip.crops)
    if n == 0:
        raise NoFaceError("no frame of the clip has a face")
    if refine == "none" and rec.regressor is None:
        raise ValueError("--refine none needs trained regressor weights; use --refine fast (from the mean face)")
    config = None if refine == "none" else rec.config(refine)

    offsets = None

    def fit(rows: list[int], identity: torch.Tensor | None) -> FaceParams:
        target = _target([clip.crops[i] for i in rows], rec.device)
        if offsets is not None:
            target = offset_target(target, offsets)
        start = rec.regress(target.image)
        if identity is not None:
            if start is None:
                start = FaceParams.neutral(len(rows), model.identity_dim, model.expression_dim, model.albedo_dim,
                                           device=rec.device)
                start.identity = identity.expand(len(rows), -1).clone()
                start = initial_params(model, target, start)
                if model.albedo_space != "none":
                    start = initial_lighting(model, target, start)
            else:
                start.identity = identity.expand(len(rows), -1).clone()
        if config is None:
            return initial_params(model, target, start)  # the regressor's coefficients, posed by the landmarks
        fixed = ("identity",) if identity is not None else ()
        return run_refinement(model, target, config, start=start, renderer=rec.renderer, fixed=fixed).params

    chosen = sorted({int(round(x)) for x in np.linspace(0, n - 1, min(identity_frames, n))})
    if progress is not None:
        progress("identity", 0, 1)
    # The offsets correct MediaPipe's points; a refinement that keeps to the regressor's own
    # landmarks never fits those, so they are not worth their three stage-A runs there.
    fits_detector_points = config is None or rec.regressor is None or config.landmarks.landmark_source == "detector"
    if len(chosen) >= OFFSET_MIN_FRAMES and fits_detector_points:
        target = _target([clip.crops[i] for i in chosen], rec.device)
        start = rec.regress(target.image)
        stage = config.landmarks if config is not None else LandmarkStageConfig()
        offsets = detector_offsets(model, target, stage, initial_params(model, target, start))
    first = fit(chosen, None)
    identity = torch.as_tensor(clip_identity(first.identity.cpu().numpy()), dtype=torch.float32,
                               device=rec.device)[None]
    params = []
    for s in range(0, n, batch):
        if progress is not None:
            progress("frames", s, n)
        params.append(fit(list(range(s, min(s + batch, n))), identity))
    p = FaceParams.cat(params)
    from facenet3d.render import rotation_6d_to_matrix

    rot_crop = rotation_6d_to_matrix(p.rotation).double().cpu().numpy()
    trans_crop = p.translation.double().cpu().numpy()
    rotations, translations = [], []
    for i in range(n):
        r, t, _, _ = photo_pose(rot_crop[i], trans_crop[i], clip.crops[i]["forward"], rec.crop_size)
        rotations.append(r)
        translations.append(t)
    bounds = model.expression_bounds
    track = FaceTrack(frames=np.asarray(clip.indices), times=np.asarray(clip.times, np.float64),
                      identity=identity[0].double().cpu().numpy(), expression=p.expression.double().cpu().numpy(),
                      rotation=np.stack(rotations), translation=np.stack(translations),
                      expression_names=tuple(model.expression_names), fps=float(fps),
                      expression_bounds=None if bounds is None else tuple(bounds))
    return track, [clip.indices[i] for i in chosen]


@dataclass
class ClipReport:
    """What a video run wrote: the folder, frames, frames with a face, seconds and notes."""

    folder: Path
    frames: int
    faces: int
    fps: float
    seconds: float
    notes: list[str] = field(default_factory=list)


def write_clip(folder: Path, raw: FaceTrack, track: FaceTrack, model, neutral_vertices: np.ndarray,
               missing: list[tuple[int, float]], extra: dict | None = None) -> dict:
    """Write ``frames.jsonl``, ``animation.csv`` and ``animation.glb`` of a track into ``folder``
    (shared by the torch path and the ONNX runtime). Frames without the face get
    ``{"face": false}`` lines. Returns the ``video.json`` entries (files, notes).

    Args:
        folder: an existing folder.
        raw: the unsmoothed track (its pose and expression go into each line's ``raw``).
        track: the smoothed track that is written.
        model: the face model (``MorphableModel`` or ``FaceModelArrays``).
        neutral_vertices: ``(V, 3)`` mm, the clip's identity with no expression.
        missing: ``(index, time_s)`` of frames without a face.
        extra: per-frame-index dicts merged into the lines (e.g. the runtime's camera, landmarks).
    """
    from facenet3d.camera_math import matrix_to_euler
    from facenet3d.export.animation import frame_record, write_animated_glb, write_live_link_csv
    from facenet3d.export.arkit import NoBlendshapesError

    lines = {int(i): json.dumps({"frame": int(i), "time_s": round(float(t), 6), "face": False})
             for i, t in missing}
    raw_ypr = matrix_to_euler(raw.rotation)
    for k in range(len(track)):
        record = frame_record(track, k)
        record["face"] = True
        record.update((extra or {}).get(int(track.frames[k]), {}))
        record["raw"] = {"head_rotation_ypr_deg": np.round(raw_ypr[k], 4).tolist(),
                         "translation_mm": np.round(raw.translation[k], 4).tolist(),
                         "expression": np.round(raw.expression[k], 6).tolist()}
        lines[int(track.frames[k])] = json.dumps(record)
    with open(folder / "frames.jsonl", "w", encoding="utf-8") as f:
        for i in sorted(lines):
            f.write(lines[i] + "\n")
    files, notes = ["frames.jsonl"], []
    if len(track):
        try:
            write_live_link_csv(track, folder / "animation.csv")
            files.append("animation.csv")
        except NoBlendshapesError as e:
            notes.append(f"no animation.csv: {e}")
        write_animated_glb(track, model, neutral_vertices, folder / "animation.glb")
        files.append("animation.glb")
    return {"files": files, "notes": notes}


def reconstruct_video(source: str | Path, out: str | Path, reconstructor, refine: str = "fast",
                      smoothing: TrackSmoothing = TRACK_SMOOTHING, fps: float | None = None,
                      identity_frames: int = IDENTITY_FRAMES,
                      progress: Callable[[str, int, int], None] | None = None) -> ClipReport:
    """Reconstruct the largest face of a clip into ``out/<source stem>/`` (see the module docstring).

    Args:
        source: a video file or a folder of frames.
        out: output folder.
        reconstructor: a :class:`~facenet3d.api.FaceReconstructor`.
        refine: refinement preset or YAML path.
        smoothing: one-euro settings (``TrackSmoothing(enabled=False)`` for raw values).
        fps: frame rate of a folder of frames (default 30) or override of the video's.
        identity_frames: frames fitted in full for the clip's identity.
        progress: optional ``(stage, done, total)``.

    Raises:
        ImageReadError: the source cannot be read or has no frames.
        NoFaceError: no frame has a face.
    """
    from facenet3d.export.bundle import replace_folder
    from facenet3d.export.jsonfile import write_json
    from facenet3d.video_io import frame_source

    t0 = time.perf_counter()
    source = Path(source)
    frames, rate = frame_source(source, fps)
    clip = detect_clip(reconstructor, frames)
    total = len(clip.indices) + len(clip.missing)
    if total == 0:
        raise ImageReadError(source, "no frames could be read")
    raw, identity_at = fit_clip(reconstructor, clip, refine, rate, identity_frames, progress=progress)
    track = smooth_track(raw, smoothing)
    model = reconstructor.model
    with torch.no_grad():
        neutral = model.decode(torch.as_tensor(track.identity, dtype=torch.float32,
                                               device=reconstructor.device)[None])[0].cpu().numpy()
    folder = Path(out) / source.stem
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(6)}.tmp")
    tmp.mkdir()
    try:
        written = write_clip(tmp, raw, track, model, neutral, clip.missing)
        write_json({"source": str(source), "frames": total, "frames_with_face": len(track), "fps": rate,
                    "backend": "torch", "refine": refine, "face_model": reconstructor.model_name,
                    "identity_frames": identity_at, "smoothing": vars(smoothing).copy(), **written},
                   tmp / "video.json")
        replace_folder(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ClipReport(folder=folder, frames=total, faces=len(track), fps=rate, seconds=time.perf_counter() - t0,
                      notes=written["notes"])
