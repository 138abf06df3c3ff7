"""The iBUG-68 landmark subset of the MediaPipe face mesh.

:data:`IBUG68_FROM_MEDIAPIPE` lists, for each of the 68 iBUG / Multi-PIE points (300-W
order, 0-based: jaw 0-16 from the subject's right ear to the left one, i.e. image left to
right for a frontal face; right brow 17-21, left brow 22-26, nose bridge 27-30, nostrils
31-35, right eye 36-41, left eye 42-47 (each clockwise in the image from the outer, resp.
inner, corner), outer lips 48-59, inner lips 60-67), the MediaPipe mesh vertex that best
stands for it.

Derivation: the table starts from the correspondence widely used with MediaPipe (the
community's "MediaPipe 468 to dlib 68" tables: jaw 127, 234, 132, 58, 172, 150, 149, 148,
152, ..., eyes 33, 160, 158, 133, 153, 144, ...), read off MediaPipe's canonical-face UV
visualisation by matching positions. Every entry was then checked on AFLW2000-3D (the 939
faces found among the 1,000 images of ``shared/data/aflw2000-3d/dev``, alternate images for
choosing and for checking): for each left/right pair of iBUG points, the mirror pair of mesh
vertices (:func:`facenet3d.landmarks.mean_face.mirror_indices`) among the current choice's
mesh neighbours with the lowest mean error against the ground-truth ``pt3d_68`` (normalised
by the ground-truth box size) was taken when it lowered the error by more than 10 % on both
halves. That moved the lower jaw points 5-7 and 9-11 (e.g. 150 -> 136: NME 11.5 -> 7.2 %)
and the lower-lip points 55, 59: AFLW2000-3D's contour points are projections of fixed 3D
surface points, which is what a mesh vertex is, and it is also how a morphable model defines
its 68 landmark vertices. The search also proposed moving the inner eye corners (133 -> 173),
the middle brow points (105 -> 52) and the upper inner lip (82, 13, 312 -> 38, 12, 268); those
were not taken: they trade the anatomical definition (the canthus, the brow's upper edge, the
inner lip line that separates when the mouth opens) for AFLW2000-3D's annotation habit.
Measured with this table (68-point NME, box-normalised, per yaw bin [0,30), [30,60),
[60,90]): 3.2 / 5.2 / 12.5 %, mean 7.0 % (the common table: 3.5 / 5.4 / 12.6 %, mean 7.2 %);
the last bin is MediaPipe's limit on profile faces. See ``benchmarks/preprocess.py --nme``.
"""

from __future__ import annotations

import numpy as np

# fmt: off
_JAW = [127, 234, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 454, 356]  # 5-7, 9-11 ref.
_RIGHT_BROW = [70, 63, 105, 66, 107]
_LEFT_BROW = [336, 296, 334, 293, 300]
_NOSE_BRIDGE = [168, 197, 5, 4]
_NOSTRILS = [75, 97, 2, 326, 305]
_RIGHT_EYE = [33, 160, 158, 133, 153, 144]
_LEFT_EYE = [362, 385, 387, 263, 373, 380]
_OUTER_LIPS = [61, 39, 37, 0, 267, 269, 291, 404, 314, 17, 84, 180]  # 55, 59 refined
_INNER_LIPS = [78, 82, 13, 312, 308, 317, 14, 87]
# fmt: on

#: ``(68,)`` int64: MediaPipe mesh vertex index of each iBUG-68 point (0-based iBUG order).
IBUG68_FROM_MEDIAPIPE: np.ndarray = np.array(
    _JAW + _RIGHT_BROW + _LEFT_BROW + _NOSE_BRIDGE + _NOSTRILS + _RIGHT_EYE + _LEFT_EYE + _OUTER_LIPS
    + _INNER_LIPS, dtype=np.int64)

#: iBUG-68 index groups, for drawing and per-region errors.
IBUG68_REGIONS: dict[str, slice] = {
    "jaw": slice(0, 17), "right_brow": slice(17, 22), "left_brow": slice(22, 27),
    "nose_bridge": slice(27, 31), "nostrils": slice(31, 36), "right_eye": slice(36, 42),
    "left_eye": slice(42, 48), "outer_lips": slice(48, 60), "inner_lips": slice(60, 68),
}
#: The 51 inner points: every region but the jaw contour (brows, nose, eyes, lips).
IBUG68_INNER = slice(IBUG68_REGIONS["jaw"].stop, 68)

#: iBUG-68 indices of the 5 points used by 5-point alignment: eye centres are the means of
#: the eye contours; then nose tip, mouth corners.
IBUG68_FIVE_POINTS = {"right_eye": slice(36, 42), "left_eye": slice(42, 48), "nose_tip": 30,
                      "mouth_right": 48, "mouth_left": 54}


def ibug68_from_mediapipe(landmarks: np.ndarray) -> np.ndarray:
    """Pick the iBUG-68 points out of MediaPipe landmarks.

    Args:
        landmarks: ``(..., 468 or 478, D)`` MediaPipe landmarks (any units).

    Returns:
        ``(..., 68, D)`` the iBUG-68 subset, same units.
    """
    return np.asarray(landmarks)[..., IBUG68_FROM_MEDIAPIPE, :]


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """``(..., 5, D)`` eye centres (right, left), nose tip, mouth corners (right, left)."""
    lm = np.asarray(landmarks68)
    p = IBUG68_FIVE_POINTS
    return np.stack([lm[..., p["right_eye"], :].mean(-2), lm[..., p["left_eye"], :].mean(-2),
                     lm[..., p["nose_tip"], :], lm[..., p["mouth_right"], :], lm[..., p["mouth_left"], :]],
                    axis=-2)
