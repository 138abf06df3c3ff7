"""Following one face through a clip without detecting it in every frame.

Face-capture tools (MediaPipe's face mesh in video mode, ARKit) detect a face once and then place
the next frame's region of interest from the current frame's landmarks, detecting again only when
tracking is lost. :class:`FaceTracker` does the same for the regressor's aligned crop:

* a **detection frame** runs the detector (:func:`facenet3d.infer.pipeline.detect_faces`), which gives the
  alignment ``F_d`` (photo px -> crop px); the regressor's landmarks of that frame become the
  reference ``L_d``;
* every later frame is cut with ``F_d o S^-1``, ``S`` the similarity taking ``L_d``'s rigid points
  (:data:`RIGID_POINTS`) onto the previous frame's: the crop the detector would have given had the
  face moved rigidly since the detection frame. Reference and current landmarks both come from the
  regressor, so its landmark convention cancels out and the crop does not drift;
* the detector runs again every ``redetect_every`` frames (a face that left the picture is noticed
  within that many frames) and after a frame whose **tracking confidence** is 0.

The confidence is ``1 - max(residual / max_residual, shift / max_shift)`` clipped to ``[0, 1]``:
``residual`` is the RMS misfit of ``S`` over the rigid points in inter-ocular distances (the face
turned since the detection frame, so a rigid move of the detection's crop no longer frames it
as the detector would), ``shift`` the RMS move of those points inside the crop over the crop's
side (the face moved fast between two frames and nears the crop's margin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from facenet3d.infer.pipeline import FaceCrop, detect_faces

from facenet3d.landmarks.align import compose_affine, crop_image, estimate_similarity, invert_affine, transform_points
from facenet3d.landmarks.detect import FaceDetector

#: iBUG-68 points that move with the skull, not with the expression: nose bridge and base, eye corners.
RIGID_POINTS = np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45])
#: Outer eye corners (iBUG-68), whose distance is the residual's unit.
OUTER_EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class TrackedCrop:
    """A frame's crop and how it was placed.

    Attributes:
        face: the crop (for tracked frames, ``face.detected`` is the detection frame's face moved
            by the tracked motion).
        detected: whether the detector ran for this frame.
    """

    face: FaceCrop
    detected: bool


class FaceTracker:
    """Places the largest face's crop frame after frame (see the module docstring).

    Args:
        detector: the face detector (``max_faces=1`` is enough).
        crop_size: the regressor's crop size.
        redetect_every: run the detector at least every this many frames (1: every frame, the
            per-frame-detection baseline).
        max_residual: rigid-point misfit, inter-ocular distances, at which confidence reaches 0.
        max_shift: in-crop move per frame, crop sides, at which confidence reaches 0.

    Call :meth:`crop` with each frame, then :meth:`update` with the regressed landmarks of that
    frame before the next :meth:`crop`; :meth:`reset` forgets the face (a cut in the clip).
    """

    def __init__(self, detector: FaceDetector, crop_size: int, redetect_every: int = 30,
                 max_residual: float = 0.08, max_shift: float = 0.08):
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
        self.detector, self.crop_size = detector, int(crop_size)
        self.redetect_every = int(redetect_every)
        self.max_residual, self.max_shift = float(max_residual), float(max_shift)
        self.confidence = 0.0
        self.reset()

    def reset(self) -> None:
        """Detect in the next frame."""
        self._reference: FaceCrop | None = None  # the detection frame's crop
        self._reference_points: np.ndarray | None = None  # its regressed rigid points, photo px
        self._motion: np.ndarray | None = None  # S: detection frame -> last frame, photo px
        self._since_detection = 0
        self._pending: FaceCrop | None = None

    def crop(self, rgb: np.ndarray, source: str | None = None) -> TrackedCrop:
        """The crop of this frame's face: tracked from the last frame when tracking holds, else detected.

        Raises:
            NoFaceError: detection ran and found no face (the tracker stays in detection mode).
        """
        tracking = (self._motion is not None and self._since_detection < self.redetect_every
                    and self.confidence > 0.0)
        if not tracking:
            self.reset()
            face = detect_faces(self.detector, rgb, self.crop_size, 1, source=source)[0]
            self._pending, self._since_detection = face, 1
            return TrackedCrop(face, True)
        forward = compose_affine(self._reference.forward, invert_affine(self._motion))
        aligned = crop_image(rgb, forward, self.crop_size)
        face = FaceCrop(self._reference.detected.transformed(self._motion), aligned.crop, aligned.forward)
        self._pending = face
        self._since_detection += 1
        return TrackedCrop(face, False)

    def update(self, landmarks68_image: np.ndarray) -> float:
        """Take the regressed iBUG-68 landmarks (photo px) of the frame :meth:`crop` just gave;
        returns the tracking confidence (1 on detection frames)."""
        if self._pending is None:
            raise RuntimeError("update() without a crop() before it")
        points = np.asarray(landmarks68_image, np.float64)[RIGID_POINTS]
        face, self._pending = self._pending, None
        if self._reference is None or self._reference_points is None:
            self._reference, self._reference_points = face, points
            self._motion = np.eye(2, 3)
            self.confidence = 1.0
            return self.confidence
        motion = estimate_similarity(self._reference_points, points)
        eyes = np.asarray(landmarks68_image, np.float64)[list(OUTER_EYE_CORNERS)]
        inter_ocular = max(float(np.linalg.norm(eyes[1] - eyes[0])), 1e-6)
        residual = _rms(transform_points(self._reference_points, motion) - points) / inter_ocular
        shift = _rms(transform_points(points, face.forward)
                     - transform_points(self._reference_points, self._reference.forward)) / self.crop_size
        self.confidence = float(np.clip(1.0 - max(residual / self.max_residual, shift / self.max_shift), 0.0, 1.0))
        self._motion = motion
        return self.confidence

    def lose(self) -> None:
        """The frame had no usable face: detect in the next one."""
        self.reset()
        self.confidence = 0.0


def _rms(d: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(np.asarray(d, np.float64) ** 2, -1))))

