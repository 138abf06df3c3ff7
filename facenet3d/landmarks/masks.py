"""Face and skin masks rasterised from the MediaPipe mesh polygons.

- face mask: inside the face oval (the mesh's outer contour: forehead to chin, cheek to
  cheek);
- skin mask: the face mask minus eyes, brows, nostrils and the mouth interior (lips are
  kept: they are skin for shading, and their albedo is learnt like the rest).

Polygons are filled with ``cv2.fillPoly`` at 1/16-pixel precision, in pixel coordinates with
pixel centres at +0.5. OpenCV also fills the pixels its outline passes through, so a region is
centred exactly but grown by up to half a pixel on each side (a 40 px radius disc: +2 % area);
holes (eyes, mouth) grow by the same amount, which errs on the safe side for a skin mask.
"""

from __future__ import annotations

import numpy as np

from facenet3d.landmarks.topology import region_polygons

#: Regions removed from the face mask to obtain the skin mask.
NON_SKIN_REGIONS: tuple[str, ...] = ("right_eye", "left_eye", "right_brow", "left_brow", "right_nostril",
                                     "left_nostril", "mouth_interior")

_SHIFT = 4  # fillPoly fixed-point bits: 1/16 px


def fill_polygons(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    """Rasterise polygons given in pixel coordinates (centres at +0.5).

    Args:
        shape: ``(height, width)`` of the mask.
        polygons: list of ``(K, 2)`` vertex arrays, px.

    Returns:
        ``(height, width)`` bool mask (union of the polygons).
    """
    import cv2

    mask = np.zeros(shape, np.uint8)
    # cv2 puts pixel centres at integers: shift by -0.5 and convert to fixed point.
    pts = [np.round((np.asarray(p, np.float64) - 0.5) * (1 << _SHIFT)).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask.astype(bool)


def face_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool mask of the face oval.

    Args:
        landmarks: ``(478 or 468, 2+)`` MediaPipe landmarks in the pixels of the target image.
        shape: ``(H, W)``.
    """
    lm = np.asarray(landmarks)[:, :2]
    return fill_polygons(shape, [lm[list(region_polygons()["face_oval"])]])


def skin_mask(landmarks: np.ndarray, shape: tuple[int, int], face: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` bool mask of facial skin: the face oval minus :data:`NON_SKIN_REGIONS`.

    Args:
        landmarks: ``(478 or 468, 2+)`` MediaPipe landmarks in pixels of the target image.
        shape: ``(H, W)``.
        face: the face mask if already computed (saves one rasterisation).
    """
    lm = np.asarray(landmarks)[:, :2]
    polys = region_polygons()
    holes = fill_polygons(shape, [lm[list(polys[name])] for name in NON_SKIN_REGIONS])
    face = face_mask(lm, shape) if face is None else face
    return face & ~holes


def face_and_skin_masks(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Both masks, ``((H, W) bool face, (H, W) bool skin)``."""
    face = face_mask(landmarks, shape)
    return face, skin_mask(landmarks, shape, face)
