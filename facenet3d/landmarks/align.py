"""Similarity alignment of faces to a canonical square crop.

A face is aligned by the least-squares similarity (rotation, uniform scale, translation;
Umeyama 1991) that maps its iBUG-68 landmarks onto :func:`canonical_template` scaled to the
crop size. The crop comes with the forward ``(2, 3)`` matrix (photo px -> crop px) and its
inverse, so anything computed in the crop maps back to the original photo exactly.

All matrices act on pixel coordinates with pixel centres at +0.5 (origin at the top-left
corner of the top-left pixel); :func:`warp_image` converts to OpenCV's centre-at-integer
convention internally.

Canonical template: the 68 iBUG points of facenet3d's mean MediaPipe face
(:func:`facenet3d.landmarks.mean_face.mean_face`, frontal, neutral), placed so that the
bounding box of the whole mean mesh (468 vertices: forehead to chin, ear to ear) is
centred in the crop and its larger side spans :data:`FACE_FRACTION` of the crop width,
leaving a margin of 10 % on each side for turned heads and hair. For a 224 px crop the eyes
lie near y = 0.40 size, the mouth near y = 0.67 size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from facenet3d.landmarks.image_io import LoadedImage

#: Fraction of the crop side covered by the mean face mesh's bounding box.
FACE_FRACTION: float = 0.8

#: Default crop side in pixels.
DEFAULT_CROP_SIZE: int = 224


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(..., 2)`` points; returns float32 ``(..., 2)``."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``(2, 3)`` float64 affine map applying ``inner`` first, then ``outer``."""
    a, b = np.asarray(outer, dtype=np.float64), np.asarray(inner, dtype=np.float64)
    return np.concatenate([a[:, :2] @ b[:, :2], a[:, :2] @ b[:, 2:] + a[:, 2:]], axis=1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine matrix, float64 ``(2, 3)``."""
    m = np.asarray(matrix, dtype=np.float64)
    a_inv = np.linalg.inv(m[:, :2])
    return np.concatenate([a_inv, -a_inv @ m[:, 2:]], axis=1)


def estimate_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` onto ``dst`` (Umeyama, no reflection).

    Args:
        src: ``(N, 2)`` points.
        dst: ``(N, 2)`` corresponding points.
        weights: optional ``(N,)`` non-negative weights.

    Returns:
        ``(2, 3)`` float64 matrix ``[s R | t]`` minimising ``sum w |s R src + t - dst|^2``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    var_s = float(w @ (xs**2).sum(1))
    scale = float(np.trace(np.diag(sig) @ d)) / max(var_s, 1e-12)
    t = mu_d - scale * rot @ mu_s
    return np.concatenate([scale * rot, t[:, None]], axis=1)


def warp_image(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], interpolation: int | None = None,
               border_value: float | tuple = 0) -> np.ndarray:
    """Resample an image through a forward ``(2, 3)`` matrix (source px -> output px).

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        matrix: forward matrix in the pixel-centre-at-+0.5 convention.
        size: output ``(width, height)``.
        interpolation: an OpenCV flag (default bilinear).
        border_value: value outside the source image.

    Returns:
        ``(height, width[, C])`` array of the input's dtype.
    """
    import cv2

    m = np.asarray(matrix, dtype=np.float64)
    # u = x_cv + 0.5 in both images: x_cv' = A x_cv + (t + A (0.5, 0.5) - (0.5, 0.5)).
    m_cv = m.copy()
    m_cv[:, 2] = m[:, 2] + m[:, :2].sum(1) * 0.5 - 0.5
    flags = cv2.INTER_LINEAR if interpolation is None else interpolation
    return cv2.warpAffine(image, m_cv, tuple(int(s) for s in size), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


@lru_cache(maxsize=8)
def _template_unit() -> np.ndarray:
    from facenet3d.landmarks.ibug68 import ibug68_from_mediapipe
    from facenet3d.landmarks.mean_face import mean_face

    mesh = mean_face()[:468, :2] * np.array([1.0, -1.0])  # model space (+y up) -> image (+y down)
    lo, hi = mesh.min(0), mesh.max(0)
    scale = FACE_FRACTION / float((hi - lo).max())
    centre = (lo + hi) / 2
    pts = (ibug68_from_mediapipe(mean_face()[:, :2] * np.array([1.0, -1.0])) - centre) * scale + 0.5
    pts.setflags(write=False)
    return pts


def canonical_template(size: int = DEFAULT_CROP_SIZE) -> np.ndarray:
    """``(68, 2)`` float64 iBUG-68 positions of the mean face in a ``size`` x ``size`` crop, px."""
    return _template_unit() * float(size)


@dataclass(frozen=True)
class AlignedFace:
    """A canonical crop of a face.

    Attributes:
        crop: ``(size, size, 3) uint8`` RGB.
        forward: ``(2, 3)`` float64: photo px -> crop px.
        inverse: ``(2, 3)`` float64: crop px -> photo px.
    """

    crop: np.ndarray
    forward: np.ndarray
    inverse: np.ndarray

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """``(..., 2)`` photo px -> crop px."""
        return transform_points(points, self.forward)

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """``(..., 2)`` crop px -> photo px."""
        return transform_points(points, self.inverse)


def alignment_matrix(landmarks68: np.ndarray, size: int = DEFAULT_CROP_SIZE) -> np.ndarray:
    """``(2, 3)`` similarity taking a face's iBUG-68 points (photo px) onto the canonical template."""
    return estimate_similarity(np.asarray(landmarks68)[:, :2], canonical_template(size))


def align_face(image: np.ndarray | LoadedImage, landmarks68: np.ndarray, size: int = DEFAULT_CROP_SIZE
               ) -> AlignedFace:
    """Crop a face to the canonical ``size`` x ``size`` frame.

    Args:
        image: ``(H, W, 3) uint8`` RGB photo, or a :class:`LoadedImage` (possibly reduced
            while decoding); the landmarks and the returned matrices then refer to the
            original, upright photo's pixels.
        landmarks68: ``(68, 2)`` iBUG-68 points in photo pixels.
        size: crop side in pixels.

    Returns:
        :class:`AlignedFace` (bilinear resampling, after an area-filtered shrink of the photo
        when the crop scale is below 1/2, so that faces in large photos do not alias; black
        outside the photo).
    """
    return crop_image(image, alignment_matrix(landmarks68, size), size)


def box_alignment_matrix(box: np.ndarray, size: int = DEFAULT_CROP_SIZE) -> np.ndarray:
    """``(2, 3)`` scale + shift taking a face box (photo px) onto the canonical template's box.

    For a face known only by its box (a benchmark's protocol crop, no detection): the box's
    centre goes to the centre of :func:`canonical_template`'s bounding box and its longer side
    to that box's longer side (a turned face's box narrows, its height stays). No rotation:
    a box says nothing about roll.

    Args:
        box: ``(4,)`` ``x0, y0, x1, y1`` of the face's 68 points, photo px.
    """
    x0, y0, x1, y1 = np.asarray(box, np.float64)[:4]
    t = canonical_template(size)
    lo, hi = t.min(0), t.max(0)
    s = float((hi - lo).max()) / max(x1 - x0, y1 - y0, 1e-6)
    c = (lo + hi) / 2
    return np.array([[s, 0.0, c[0] - s * (x0 + x1) / 2], [0.0, s, c[1] - s * (y0 + y1) / 2]])


def crop_image(image: np.ndarray | LoadedImage, forward: np.ndarray, size: int = DEFAULT_CROP_SIZE) -> AlignedFace:
    """Cut the ``size`` x ``size`` crop that ``forward`` (photo px -> crop px) maps to.

    Args:
        image: as :func:`align_face`'s.
        forward: ``(2, 3)`` similarity in the original photo's pixels.

    Returns:
        :class:`AlignedFace`, resampled as :func:`align_face` describes.
    """
    import cv2

    if isinstance(image, LoadedImage):
        pixels, px_scale = image.pixels, image.scale  # photo px per pixel of `pixels`
    else:
        pixels, px_scale = np.asarray(image), np.ones(2)
    fwd = np.asarray(forward, np.float64)
    m = fwd @ _diag3(px_scale)  # pixels -> crop
    shrink = 1.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))
    if shrink > 2.0:
        f = 1.0 / np.floor(shrink)
        h, w = pixels.shape[:2]
        small = cv2.resize(pixels, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        m = m @ _diag3([w / small.shape[1], h / small.shape[0]])
        pixels = small
    crop = warp_image(pixels, m, (size, size))
    return AlignedFace(crop=crop, forward=fwd, inverse=invert_affine(fwd))


def _diag3(scale) -> np.ndarray:
    """``(3, 3)`` homogeneous matrix scaling x and y."""
    return np.diag([float(scale[0]), float(scale[1]), 1.0])
