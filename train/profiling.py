"""Out-of-plane head rotation of a cached photo ("face profiling"), to train on large yaw.

The photos' landmark labels come from MediaPipe, which is accurate on near-frontal faces and
poor beyond ~45 degrees of yaw, and the shared photo sets are mostly near-frontal. As 300W-LP
was made for 3DDFA (Zhu et al., "Face Alignment Across Large Poses", CVPR 2016), a near-frontal
face is turned in depth and the photo re-rendered: its 3D MediaPipe mesh (``x, y`` in crop px,
``z`` in the same units, growing away from the camera), plus three rings of anchors around the
face that carry hair, ears and background, is rotated about a vertical axis through the head and
rasterised with facenet3d's rasteriser (the z-buffer hides the far cheek); each output pixel
takes the photo's colour where its surface point was. The labels are the rotated landmarks,
consistent with the new image by construction (the texture moves with the mesh) and as accurate
as MediaPipe was on the frontal photo. The projection is orthographic, as MediaPipe's is.

The anchor rings are the face oval scaled about its centre: the first turns with the head (ears,
hair, jaw line), the second by half the angle, the third (far outside the crop) stays put, so the
background stretches between them instead of tearing. Like 300W-LP's, the result has stretched
texture where the turn uncovers what the photo never showed.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from facenet3d.landmarks.topology import mesh_triangles, region_polygons
from facenet3d.render import interpolate, rasterize

#: Symmetric MediaPipe landmark pairs, image-left then image-right on a frontal face: outer eye
#: corners, inner eye corners, cheeks at the face oval, mouth corners.
SYMMETRIC_PAIRS = ((33, 263), (133, 362), (234, 454), (61, 291))

#: Anchor rings ``(scale about the oval's centre, share of the rotation, depth behind the oval in
#: face widths)``, innermost first.
ANCHOR_RINGS = ((1.35, 1.0, 0.15), (2.0, 0.5, 0.5), (6.0, 0.0, 1.5))

NUM_LANDMARKS = 478


def estimate_yaw(landmarks: np.ndarray) -> float:
    """Yaw of a face from its 3D MediaPipe landmarks, degrees.

    The angle, in the ``x``-``z`` plane, of the mean left-to-right vector of
    :data:`SYMMETRIC_PAIRS`: 0 for a frontal face, and exactly ``+a`` after
    :func:`rotate_points` by ``a`` (the sign convention of this module).

    Args:
        landmarks: ``(478, 3)`` or ``(468, 3)`` MediaPipe landmarks, ``z`` in the units of ``x``.

    Example:
        >>> from facenet3d.landmarks.mean_face import mean_face
        >>> round(estimate_yaw(mean_face() * np.array([1, -1, -1])), 3)  # model space -> image
        0.0
    """
    p = np.asarray(landmarks, np.float64)
    left, right = np.asarray(SYMMETRIC_PAIRS).T
    e = (p[right] - p[left]).sum(0)
    return math.degrees(math.atan2(-e[2], e[0]))


def yaw_matrix(yaw_deg: float) -> np.ndarray:
    """``(3, 3)`` rotation about the image's vertical axis acting on ``(x, y, z)`` image-space points.

    ``x' = cos a x + sin a z``, ``z' = -sin a x + cos a z``: a face turned by ``a > 0`` shows more
    of its image-right side and its nose moves to the image left.
    """
    a = math.radians(yaw_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def face_oval(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The face oval's landmarks ``(L, 3)`` in order around it, and the face's width (their ``x`` extent)."""
    oval = np.asarray(landmarks, np.float64)[list(region_polygons()["face_oval"])]
    return oval, float(np.ptp(oval[:, 0]))


def head_pivot(landmarks: np.ndarray) -> np.ndarray:
    """``(3,)`` point the head turns about: the face oval's centre in ``x``, ``y``, and 0.15 face
    widths behind the oval's mean depth (the axis runs through the skull, behind the cheeks)."""
    oval, width = face_oval(landmarks)
    centre = oval.mean(0)
    return np.array([centre[0], centre[1], centre[2] + 0.15 * width])


def rotate_points(points: np.ndarray, yaw_deg: float, pivot: np.ndarray) -> np.ndarray:
    """``(N, 3)`` points turned by ``yaw_deg`` about the vertical axis through ``pivot``."""
    p = np.asarray(points, np.float64)
    return (p - pivot) @ yaw_matrix(yaw_deg).T + pivot


@lru_cache(maxsize=1)
def profiling_triangles() -> np.ndarray:
    """``(F, 3)`` int64 triangles of the profiling mesh.

    Vertices: the 478 MediaPipe landmarks (the 10 iris points belong to no triangle), then the
    :data:`ANCHOR_RINGS`, ``L`` = the face oval's length vertices each. Triangles: the face mesh,
    fans closing the eyes and the mouth (so the photo's own eyes and mouth move with the face),
    and a strip of quads between each ring and the next.
    """
    polys = region_polygons()
    tris = [np.asarray(mesh_triangles(), np.int64)]
    for name in ("right_eye", "left_eye", "mouth_interior"):
        loop = polys[name]
        tris.append(np.array([(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)], np.int64))
    oval = np.asarray(polys["face_oval"], np.int64)
    n = len(oval)
    rings = [oval] + [NUM_LANDMARKS + k * n + np.arange(n) for k in range(len(ANCHOR_RINGS))]
    for inner, outer in zip(rings[:-1], rings[1:], strict=True):
        nxt = np.roll(np.arange(n), -1)
        tris.append(np.stack([inner, inner[nxt], outer[nxt]], 1))
        tris.append(np.stack([inner, outer[nxt], outer], 1))
    return np.concatenate(tris)


@lru_cache(maxsize=1)
def _triangles_tensor() -> torch.Tensor:
    # One tensor for every call: the rasteriser keeps its per-topology tables on the tensor's identity.
    return torch.from_numpy(profiling_triangles())


def profile_vertices(landmarks: np.ndarray, yaw_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The profiling mesh's vertices before and after turning the head by ``yaw_deg``.

    Args:
        landmarks: ``(478, 3)`` MediaPipe landmarks in crop px (``z`` in px, + away from the camera).
        yaw_deg: the added yaw, degrees.

    Returns:
        ``source`` ``(V, 2)`` where each vertex is in the photo (px), and ``turned`` ``(V, 3)``
        where it is after the turn (``x``, ``y`` px; depth). ``turned[:478]`` are the turned
        landmarks. ``V = 478 + 3 L`` (:func:`profiling_triangles`).
    """
    p = np.asarray(landmarks, np.float64)
    if p.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"landmarks must be (478, 3), got {p.shape}")
    pivot = head_pivot(p)
    oval, width = face_oval(p)
    centre = oval[:, :2].mean(0)
    source, turned = [p[:, :2]], [rotate_points(p, yaw_deg, pivot)]
    for scale, share, depth in ANCHOR_RINGS:
        xy = centre + scale * (oval[:, :2] - centre)
        ring = np.concatenate([xy, oval[:, 2:] + depth * width], 1)
        source.append(xy)
        turned.append(rotate_points(ring, share * yaw_deg, pivot))
    return np.concatenate(source), np.concatenate(turned)


def source_map(source: np.ndarray, turned_xy: np.ndarray, depth: np.ndarray, size: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of a ``size`` x ``size`` output, where its colour comes from in the photo.

    Rasterises the profiling mesh at its turned positions (nearest surface wins) and interpolates
    the vertices' photo positions.

    Args:
        source: ``(V, 2)`` photo px of the vertices (pixel centres at +0.5).
        turned_xy: ``(V, 2)`` output px of the vertices.
        depth: ``(V,)`` depth of the turned vertices (smaller is nearer).
        size: output side, px.

    Returns:
        ``where`` ``(size, size, 2)`` float32 photo px ``(x, y)`` per output pixel (NaN where no
        triangle covers it), and ``on_face`` ``(size, size)`` bool: the pixel shows the face mesh
        (not an anchor ring, whose stretched texture is no skin to compare a render with).
    """
    tri = _triangles_tensor()
    lo, hi = float(depth.min()), float(depth.max())
    z = (depth - lo) / max(hi - lo, 1e-6) * 1.8 - 0.9  # inside the clip volume, near = small
    pos = np.concatenate([2.0 * turned_xy / size - 1.0, z[:, None], np.ones_like(z)[:, None]], 1)
    rast = rasterize(torch.from_numpy(pos).float()[None], tri, (size, size), backend="torch")
    where = interpolate(torch.from_numpy(source).float(), rast, tri, backend="torch")[0]
    triangle = rast[0, ..., 3].long() - 1
    where[triangle < 0] = float("nan")
    return where.numpy(), ((triangle >= 0) & (triangle < face_triangle_count())).numpy()


@lru_cache(maxsize=1)
def face_triangle_count() -> int:
    """Triangles of the profiling mesh that belong to the face (the first ones, before the rings)."""
    return len(profiling_triangles()) - 2 * len(region_polygons()["face_oval"]) * len(ANCHOR_RINGS)
