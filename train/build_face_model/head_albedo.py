"""The de-lit diffuse albedo space of the head model (ICT-FaceKit geometry), from the shared photos.

``OMP_NUM_THREADS=1 python -m facenet3d.train.build_face_model.head_albedo --ict DIR --cache CACHE --shared SHARED
[--photos DIR...] -o head_albedo.npz`` (one thread; about 10 minutes for ~1,800 photos).

For every photo of the photo cache (aligned crop + MediaPipe's 478 points in crop pixels, with
depth in the same pixel scale):

1. **Geometry** (:func:`fit_head`): the head is fitted to MediaPipe's points, orthographic in
   crop pixels as v1's unwrapping assumes: a similarity (Umeyama) alternating with a regularised
   linear least-squares solve for ICT's 100 identity coefficients (unit Gaussian prior) and 53
   ARKit expression weights (bounded to [0, 1], weak prior toward 0). Correspondences
   (:func:`mediapipe_correspondence`): the model's ``mediapipe478`` landmark embedding when it has
   one (MediaPipe's 468 mesh points as barycentric points of the head), else the 51 inner iBUG
   points (ICT's ``landmarks68`` against MediaPipe's iBUG subset; the jaw contour is a silhouette,
   not a fixed surface point, in MediaPipe's mesh).
2. **Unwrapping** (:func:`unwrap_head`, reusing v1's ``unwrap_photo``): the render surface (the
   skin) rasterised in the atlas; a texel takes the photo's colour where its surface point is the
   visible one and faces the camera.
3. **De-lighting** (v1's ``delight``): a white SH irradiance fitted to the luminance of the
   *delighting skin* texels only (:func:`head_masks`), divided out.

Masks, from the head's own geometry (the mean shape and its iBUG-68 landmark vertices, mm):
``support`` (where photo statistics are gathered) is the front of the face inside a face oval:
ICT's ``face`` region, in front of the plane of the outer jaw points (the ears lie behind it),
within an ellipse a little inside the jaw contour's cheek points, from the chin point (the
surface under it faces down into shadow) to :data:`SUPPORT_ABOVE_BROWS_MM` above the brows
(above that, at the temples and on the ears, most photos show hair or background). ``skin``
(where the light is fitted) is ``support`` without the hair-prone top of the forehead (above
:data:`SKIN_ABOVE_BROWS_MM`), the eyes (within 7 mm of the eye contours, and inside them), brows
(8 mm), lips (5 mm of the outer lip contour, and inside it), nostrils (7 mm of iBUG 31..35) and
the oval's border (12 mm).

Statistics (:func:`build_head_albedo`): photos balanced over UTKFace's five race groups and the
colour photos of lfw-expressions (greyscale ones skipped), a stratified 10 % of each group held
out. Per texel of the basis map, photos disagreeing with the median by more than 4 MADs are
rejected (hair, glasses, highlights), mirrored copies join (``atlas_mirror``) and EM-PCA with
missing data gives the mean and modes at the basis size. Texels of the support no photo saw
reliably, and all of the head outside the support (scalp, ears, back of the head, neck), are filled
smoothly from the nearest seen skin by harmonic interpolation over the mesh
(:func:`harmonic_fill`, so the fill crosses UV seams and the two tiles). The full-resolution mean
is the upsampled low-resolution mean plus the high-frequency detail of the per-texel median of a
subset of photos unwrapped at full resolution (float16), mirrored average, and extended past the
charts (``dilate_into_background``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.sparse as sp
import torch
from facenet3d.train.build_face_model import albedo as alb
from facenet3d.train.build_face_model.build import RACE_NAMES, _is_grey
from facenet3d.train.build_face_model.ict_head import atlas_mirror
from scipy.sparse.linalg import splu
from tqdm import tqdm

from facenet3d.evaluate.geometry import Similarity, fit_similarity
from facenet3d.facemodel import FaceModelArrays
from facenet3d.facemodel.uvmaps import upsample_maps_np
from facenet3d.geometry import vertex_normals
from facenet3d.landmarks.cache import PhotoCache
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE, IBUG68_INNER
from facenet3d.render.uv import UVRaster

#: Photo groups of the statistics besides UTKFace's race groups (by their folder name).
EXTRA_GROUPS = ("lfw-expressions",)
#: MediaPipe's depth is its least reliable coordinate: its residual weighs this much in the fit.
DEPTH_WEIGHT = 0.25
#: Landmark noise (mm) against which the unit identity prior is weighed.
LANDMARK_SIGMA_MM = 2.0
#: Prior weight of the expression weights (toward 0) relative to the identity's unit prior.
EXPRESSION_PRIOR = 0.1
#: Photos whose fitted correspondences miss MediaPipe's points by more (RMS px) are left out.
MAX_FIT_RESIDUAL_PX = 6.0
#: The statistics' support reaches this far above the brows (mm); the light is fitted up to the
#: second height (the hairline varies from about 50 mm above the brows down to the brows).
SUPPORT_ABOVE_BROWS_MM = 28.0
SKIN_ABOVE_BROWS_MM = 22.0
#: A support texel enters the statistics when at least this fraction of photos saw it.
MIN_SEEN_FRACTION = 0.1


# -- correspondence and fit ---------------------------------------------------------------------


@dataclass
class Correspondence:
    """MediaPipe points and the head's points that stand for them.

    Attributes:
        mediapipe: ``(N,)`` MediaPipe landmark indices.
        index: ``(N, 3)`` head vertex indices of each point's triangle corners.
        weights: ``(N, 3)`` barycentric weights (sum 1).
        name: ``"mediapipe478"`` or ``"ibug68_inner"``.
    """

    mediapipe: np.ndarray
    index: np.ndarray
    weights: np.ndarray
    name: str

    def points(self, vertices: np.ndarray) -> np.ndarray:
        """``(..., V, 3)`` vertices -> ``(..., N, 3)`` the corresponding points, same units."""
        return (np.asarray(vertices)[..., self.index, :] * self.weights[:, :, None]).sum(-2)


def mediapipe_correspondence(arrays: FaceModelArrays) -> Correspondence:
    """The model's ``mediapipe478`` embedding (its 468 mesh points: the iris points follow the
    gaze, not the head) when it has one, else the 51 inner iBUG points."""
    emb = arrays.landmark_embeddings.get("mediapipe478")
    if emb is not None:
        index, weights = (np.asarray(a)[:468] for a in emb)
        if index.max() < len(arrays.mean_shape):
            return Correspondence(np.arange(468), index.astype(np.int64), weights.astype(np.float64),
                                  "mediapipe478")
    lm = np.asarray(arrays.landmarks68)[IBUG68_INNER]
    weights = np.zeros((len(lm), 3))
    weights[:, 0] = 1.0
    return Correspondence(IBUG68_FROM_MEDIAPIPE[IBUG68_INNER].copy(), np.repeat(lm[:, None], 3, 1).astype(np.int64),
                          weights, "ibug68_inner")


@dataclass
class HeadFit:
    """The head fitted to one photo.

    Attributes:
        vertices_px: ``(V, 3)`` in crop pixels: x right, y down, z away from the camera (MediaPipe's
            frame and scale).
        normals: ``(V, 3)`` unit normals in the y-up camera frame (+z toward the camera).
        identity: ``(Ki,)`` coefficients; ``expression``: ``(Ke,)`` weights in [0, 1].
        similarity: model mm -> y-up pixel frame ``(x, -y, -z)``.
        residual_px: RMS image distance of the fitted correspondences to MediaPipe's points.
    """

    vertices_px: np.ndarray
    normals: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    similarity: Similarity
    residual_px: float


class HeadFitter:
    """Fits the head to MediaPipe points (see the module docstring); holds the bases at the
    correspondence points so that a fit costs a few small solves."""

    def __init__(self, arrays: FaceModelArrays, correspondence: Correspondence | None = None,
                 iterations: int = 4):
        self.arrays = arrays
        self.corr = correspondence or mediapipe_correspondence(arrays)
        self.iterations = iterations
        basis = np.concatenate([arrays.identity_basis, arrays.expression_basis]).astype(np.float64)
        self.n_id = arrays.identity_basis.shape[0]
        self.basis = basis  # (K, V, 3)
        self.mean_pts = self.corr.points(arrays.mean_shape.astype(np.float64))  # (N, 3)
        self.basis_pts = self.corr.points(basis)  # (K, N, 3)
        k = len(basis)
        w = np.sqrt(np.array([1.0, 1.0, DEPTH_WEIGHT]))
        self.row_weights = np.tile(w, len(self.mean_pts)) / LANDMARK_SIGMA_MM
        self.design = self.basis_pts.reshape(k, -1).T * self.row_weights[:, None]  # (3N, K)
        self.prior = np.diag(np.r_[np.ones(self.n_id), np.full(k - self.n_id, np.sqrt(EXPRESSION_PRIOR))])
        # The design never changes: the identity (unbounded) is eliminated in closed form, and the
        # bounded expression weights solve the Schur complement's problem by accelerated
        # projected gradient (FISTA), warm-started across alternations.
        a_mat = np.concatenate([self.design, self.prior])
        normal = a_mat.T @ a_mat
        i = self.n_id
        self.id_inv = np.linalg.inv(normal[:i, :i])
        self.id_ex = normal[:i, i:]
        self.schur = normal[i:, i:] - self.id_ex.T @ self.id_inv @ self.id_ex
        self.step = 1.0 / np.linalg.eigvalsh(self.schur)[-1]

    def _solve(self, b: np.ndarray, x: np.ndarray, iterations: int = 300) -> np.ndarray:
        """``argmin 0.5 x' N x - b' x`` over identity and bounded expression (``N`` the normal
        matrix of the design and prior), from ``x``."""
        i = self.n_id
        b_id, b_ex = b[:i], b[i:]
        b_red = b_ex - self.id_ex.T @ self.id_inv @ b_id
        e = x[i:].copy()
        y, e_prev, t = e.copy(), e.copy(), 1.0
        for _ in range(iterations):
            e = np.clip(y - self.step * (self.schur @ y - b_red), 0.0, 1.0)
            t_next = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
            y = e + (t - 1) / t_next * (e - e_prev)
            e_prev, t = e, t_next
        return np.r_[self.id_inv @ (b_id - self.id_ex @ e), e]

    def fit(self, landmarks478: np.ndarray) -> HeadFit:
        """Fit to ``(478, 3)`` MediaPipe points in crop pixels (z away from the camera)."""
        target = np.asarray(landmarks478, np.float64)[self.corr.mediapipe] * np.array([1.0, -1.0, -1.0])
        k = len(self.basis)
        coef = np.zeros(k)
        for _ in range(self.iterations):
            pts = self.mean_pts + np.einsum("k,knd->nd", coef, self.basis_pts)
            sim = fit_similarity(pts, target)
            in_model = sim.inverse(target)  # MediaPipe's points in model mm
            rhs = (in_model - self.mean_pts).reshape(-1) * self.row_weights
            coef = self._solve(self.design.T @ rhs, coef)
        pts = self.mean_pts + np.einsum("k,knd->nd", coef, self.basis_pts)
        sim = fit_similarity(pts, target)
        residual = float(np.sqrt(((sim.apply(pts)[:, :2] - target[:, :2]) ** 2).sum(1).mean()))
        shape = self.arrays.mean_shape + np.einsum("k,kvd->vd", coef, self.basis)
        up = sim.apply(shape)  # y-up pixel frame, +z toward the camera
        normals = vertex_normals(torch.as_tensor(up, dtype=torch.float32)[None],
                                 torch.as_tensor(self.arrays.triangles))[0].numpy()
        return HeadFit(vertices_px=up * np.array([1.0, -1.0, -1.0]), normals=normals, identity=coef[:self.n_id],
                       expression=coef[self.n_id:], similarity=sim, residual_px=residual)


# -- masks and atlas ----------------------------------------------------------------------------


def _polyline_distance(points: np.ndarray, line: np.ndarray, closed: bool = False) -> np.ndarray:
    """``(V,)`` distance of ``points (V, 3)`` to the polyline through ``line (L, 3)``."""
    ends = np.r_[line, line[:1]] if closed else line
    out = np.full(len(points), np.inf)
    for a, b in zip(ends[:-1], ends[1:], strict=True):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
        out = np.minimum(out, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return out


def _inside_polygon_xy(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """``(V,)`` whether the frontal projection (x, y) of each point lies inside ``polygon (L, 3)``."""
    contour = polygon[:, :2].astype(np.float32)[:, None]
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points[:, :2]])


def head_masks(arrays: FaceModelArrays) -> dict[str, np.ndarray]:
    """Per-vertex ``(V,)`` bool masks ``support`` and ``skin`` (see the module docstring), left/right
    symmetric like the head."""
    v = arrays.mean_shape.astype(np.float64)
    lm = v[arrays.landmarks68]
    face = arrays.regions.get("face", np.ones(len(v), bool))
    brow_y = lm[17:27, 1].mean()
    chin_y = lm[8, 1]
    # The face oval: a little inside the cheek points of the jaw contour (photos show background
    # or hair beyond), from the chin point (the surface under it faces down and is shadowed) to
    # SUPPORT_ABOVE_BROWS_MM above the brows; in front of the plane of the outer jaw points (the ears lie behind it).
    top, bottom = brow_y + SUPPORT_ABOVE_BROWS_MM, chin_y
    half_width = 0.92 * np.abs(lm[[1, 15], 0]).mean()
    cy, b = (top + bottom) / 2, (top - bottom) / 2
    oval = (v[:, 0] / half_width) ** 2 + ((v[:, 1] - cy) / b) ** 2
    front = v[:, 2] > lm[[0, 16], 2].mean()
    support = face & front & (oval <= 1.0)
    # Inside the border: ~12 mm in from the oval's edge (at its narrowest).
    inner = oval <= (1.0 - 12.0 / half_width) ** 2
    eyes = np.minimum(_polyline_distance(v, lm[36:42], True), _polyline_distance(v, lm[42:48], True)) < 7.0
    eyes |= _inside_polygon_xy(v, lm[36:42]) | _inside_polygon_xy(v, lm[42:48])
    brows = np.minimum(_polyline_distance(v, lm[17:22]), _polyline_distance(v, lm[22:27])) < 8.0
    lips = (_polyline_distance(v, lm[48:60], True) < 5.0) | _inside_polygon_xy(v, lm[48:60])
    nostrils = _polyline_distance(v, lm[31:36]) < 7.0
    features = (eyes | brows | nostrils | lips) & (v[:, 2] > lm[[0, 16], 2].mean())
    skin = support & inner & ~features & (v[:, 1] < brow_y + SKIN_ABOVE_BROWS_MM)
    return {"support": support, "skin": skin}


def vertex_raster(arrays: FaceModelArrays, size: int) -> UVRaster:
    """The render surface rasterised in the atlas, indexed by *mesh* vertices: its
    ``sample_vertices`` takes per-vertex attributes ``(B, V, C)`` (what v1's ``unwrap_photo`` gives
    it); the UV layout only decides where each triangle lands."""
    uvr = UVRaster.build(torch.as_tensor(arrays.uvs), torch.as_tensor(arrays.uv_triangles), size)
    return UVRaster(rast=uvr.rast, covered=uvr.covered, uv_triangles=torch.as_tensor(arrays.triangles))


@dataclass
class Atlas:
    """The atlas at one size: raster, charts and masks.

    Attributes:
        raster: :func:`vertex_raster`.
        covered: ``(T, T)`` texels inside a chart.
        support, skin: ``(T, T)`` the masks of :func:`head_masks` in the atlas, mirror-symmetric.
    """

    raster: UVRaster
    covered: np.ndarray
    support: np.ndarray
    skin: np.ndarray

    @classmethod
    def build(cls, arrays: FaceModelArrays, size: int, masks: dict[str, np.ndarray]) -> Atlas:
        raster = vertex_raster(arrays, size)
        covered = raster.covered.numpy()
        m = raster.sample_vertices(torch.as_tensor(np.stack([masks["support"], masks["skin"]], -1),
                                                   dtype=torch.float32)[None])[0].numpy() > 0.999
        m &= covered[..., None]
        m &= atlas_mirror(m)  # exactly symmetric (the raster is, up to a few edge texels)
        return cls(raster, covered, m[..., 0], m[..., 1])

    @property
    def size(self) -> int:
        return int(self.covered.shape[0])

    def sample(self, per_vertex: np.ndarray) -> np.ndarray:
        """``(V, C)`` per-vertex values -> ``(T, T, C)`` (zero outside the charts)."""
        return self.raster.sample_vertices(torch.as_tensor(per_vertex, dtype=torch.float32)[None])[0].numpy()


def unwrap_head(crop: np.ndarray, fit: HeadFit, atlas: Atlas) -> tuple[np.ndarray, np.ndarray]:
    """Unwrap and de-light one photo.

    Args:
        crop: ``(S, S, 3)`` uint8 sRGB crop.
        fit: the head fitted to it.
        atlas: where to unwrap.

    Returns:
        ``(albedo (T, T, 3) float32 linear RGB, valid (T, T) bool)``; nothing valid when too few
        skin texels were seen to fit the light.
    """
    triangles = atlas.raster.uv_triangles.numpy()
    colour, valid = alb.unwrap_photo(crop, fit.vertices_px, triangles, fit.normals, atlas.raster)
    if (valid & atlas.skin).sum() < 50:
        return np.zeros_like(colour, dtype=np.float32), np.zeros_like(valid)
    normals = atlas.sample(fit.normals)
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
    albedo, _ = alb.delight(colour, valid, atlas.skin, normals)
    return albedo.astype(np.float32), valid


def downsample(maps: np.ndarray, valid: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average ``maps (T, T, C)`` over ``factor`` x ``factor`` blocks, valid texels only:
    ``((T/f, T/f, C), (T/f, T/f) valid where at least half a block was)``."""
    if factor == 1:
        return maps, valid
    t, c = maps.shape[0] // factor, maps.shape[-1]
    w = valid.reshape(t, factor, t, factor).sum((1, 3)).astype(np.float32)
    acc = np.where(valid[..., None], maps, 0).reshape(t, factor, t, factor, c).sum((1, 3))
    out = acc / np.maximum(w, 1)[..., None]
    return out.astype(np.float32), w >= factor * factor / 2


# -- hole filling -------------------------------------------------------------------------------


def _uv_of_vertex(arrays: FaceModelArrays) -> np.ndarray:
    """``(V, 2)`` one UV position of each mesh vertex (seams: any copy; NaN for vertices off the
    render surface)."""
    out = np.full((len(arrays.mean_shape), 2), np.nan)
    out[arrays.triangles.reshape(-1)] = arrays.uvs[arrays.uv_triangles.reshape(-1)]
    return out


def harmonic_fill(arrays: FaceModelArrays, atlas: Atlas, maps: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill the charts of ``maps (..., T, T, C)`` outside ``known (T, T)`` smoothly from the known
    texels: the render surface's vertices whose texel is known keep its value, the others solve
    the mesh's (uniform) Laplace equation, and every unknown texel takes the interpolated vertex
    values. Over the mesh, so values flow across UV seams and between the atlas tiles.

    Returns:
        ``(..., T, T, C)`` known texels unchanged, the rest of the charts filled.
    """
    t = atlas.size
    lead, c = maps.shape[:-3], maps.shape[-1]
    flat = maps.reshape(-1, t, t, c)
    uv = _uv_of_vertex(arrays)
    on_surface = ~np.isnan(uv[:, 0])
    col = np.clip(np.nan_to_num(uv[:, 0]) * t, 0, t - 1).astype(int)
    row = np.clip((1.0 - np.nan_to_num(uv[:, 1])) * t, 0, t - 1).astype(int)
    # A vertex is known when every UV copy of it sits on a known texel.
    hit = np.zeros(len(uv), bool)
    miss = np.zeros(len(uv), bool)
    uv_all = arrays.uvs[arrays.uv_triangles.reshape(-1)]
    rows_all = np.clip((1.0 - uv_all[:, 1]) * t, 0, t - 1).astype(int)
    cols_all = np.clip(uv_all[:, 0] * t, 0, t - 1).astype(int)
    k_all = known[rows_all, cols_all]
    np.logical_or.at(hit, arrays.triangles.reshape(-1), k_all)
    np.logical_or.at(miss, arrays.triangles.reshape(-1), ~k_all)
    vknown = on_surface & hit & ~miss
    vals = flat[:, row, col].transpose(1, 0, 2).reshape(len(uv), -1)  # (V, B*C)
    tri = arrays.triangles
    n = len(uv)
    i = np.r_[tri[:, 0], tri[:, 1], tri[:, 2]]
    j = np.r_[tri[:, 1], tri[:, 2], tri[:, 0]]
    adj = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    lap = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj
    unknown = np.flatnonzero(on_surface & ~vknown)
    kn = np.flatnonzero(vknown)
    field = np.zeros((n, vals.shape[1]))
    field[kn] = vals[kn]
    if len(unknown):
        # A tiny pull toward the known mean keeps components without a known vertex solvable.
        eps = 1e-6
        a = (lap[unknown][:, unknown] + eps * sp.eye(len(unknown))).tocsc()
        rhs = -lap[unknown][:, kn] @ vals[kn] + eps * vals[kn].mean(0)
        field[unknown] = splu(a).solve(np.asarray(rhs))
    filled = atlas.sample(field.astype(np.float32)).reshape(t, t, -1, c).transpose(2, 0, 1, 3)
    out = np.where(known[..., None], flat, np.where(atlas.covered[..., None], filled, flat))
    return out.reshape(*lead, t, t, c)


# -- photo selection ----------------------------------------------------------------------------


@dataclass
class PhotoSplit:
    """The colour photos of a cache used for the statistics and held out, by group."""

    train: dict[str, list[int]]
    held_out: dict[str, list[int]]
    greyscale: int


def photo_group(item: dict) -> str | None:
    """A cached photo's group: its UTKFace race name, an :data:`EXTRA_GROUPS` folder, or None."""
    race = item.get("labels", {}).get("race")
    if race is not None and int(race) in RACE_NAMES:
        return RACE_NAMES[int(race)]
    folder = Path(item["source"]).parent.name
    return folder if folder in EXTRA_GROUPS else None


def split_photos(cache: PhotoCache, seed: int = 0, per_group: int = 300, held_out_fraction: float = 0.1
                 ) -> PhotoSplit:
    """Colour photos by group; ``held_out_fraction`` of each group (at least one of a group of
    two or more) held out, at most ``per_group`` of the rest used."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    grey = 0
    for i, item in enumerate(cache.items):
        g = photo_group(item)
        if g is None:
            continue
        if _is_grey(cache[i]["crop"]):
            grey += 1
            continue
        groups.setdefault(g, []).append(i)
    train, held = {}, {}
    for g in sorted(groups):
        idx = np.array(groups[g])
        n_held = int(round(held_out_fraction * len(idx)))
        n_held = max(n_held, 1) if len(idx) >= 2 else 0
        perm = rng.permutation(len(idx))
        held[g] = sorted(idx[perm[:n_held]].tolist())
        rest = idx[perm[n_held:]]
        train[g] = sorted(rest[: per_group].tolist())
    return PhotoSplit(train, held, grey)


# -- the build ----------------------------------------------------------------------------------


def _mirror_index(mask: np.ndarray) -> np.ndarray:
    """For the texels of a mirror-symmetric ``mask (T, T)`` in row-major order, the position of
    each one's mirror texel in that order."""
    t = mask.shape[0]
    ids = np.full((t, t, 1), -1, np.int64)
    ids[mask, 0] = np.arange(mask.sum())
    return atlas_mirror(ids)[mask, 0]


def _high_pass(maps: np.ndarray, valid: np.ndarray, factor: int) -> np.ndarray:
    """``maps (T, T, C)`` minus its valid-weighted ``factor``-block average upsampled bilinearly
    (the detail a map of size ``T / factor`` cannot hold); 0 where invalid."""
    low, _ = downsample(maps, valid, factor)
    up = upsample_maps_np(low, maps.shape[:2])
    return np.where(valid[..., None], maps - up, 0.0).astype(np.float32)


def _full_resolution_mean(mean_low: np.ndarray, known: np.ndarray, highs: list[np.ndarray], atlas_b: Atlas,
                          atlas_m: Atlas) -> np.ndarray:
    """The ``(M, M, 3)`` mean: ``mean_low (T, T, 3)`` (filled over the charts, ``known (T, T)``
    from photos) upsampled, plus the high-frequency detail of the per-texel median of ``highs``
    (photos unwrapped at ``M``: ``(S_m, 3)`` float16 over ``atlas_m.support``, NaN where unseen),
    mirrored, extended past the charts and clipped to [0, 1]."""
    size = atlas_m.size
    factor = size // atlas_b.size
    sup_m = atlas_m.support
    known_m = upsample_maps_np(known[..., None].astype(np.float32), (size, size))[..., 0] > 0.999
    mean_hi = upsample_maps_np(alb.dilate_into_background(mean_low, atlas_b.covered), (size, size))
    if highs:
        stack = np.stack(highs)
        med_m = np.full(stack.shape[1:], np.nan, np.float32)
        for c0 in range(0, stack.shape[1], 20000):  # chunks keep the float32 copies small
            med_m[c0:c0 + 20000] = alb.nanmedian(stack[:, c0:c0 + 20000].astype(np.float32), axis=0)
        del stack
        mirrored = med_m[_mirror_index(sup_m)]
        both = np.where(np.isnan(med_m), mirrored, np.where(np.isnan(mirrored), med_m, 0.5 * (med_m + mirrored)))
        median_map = np.zeros((size, size, 3), np.float32)
        median_map[sup_m] = np.nan_to_num(both)
        has = np.zeros_like(sup_m)
        has[sup_m] = ~np.isnan(both).any(-1)
        detail_map = _high_pass(median_map, has, factor)
        # Feathered: the detail fades out over a few texels toward the filled region.
        weight = cv2.blur((cv2.erode((has & known_m).astype(np.uint8), np.ones((5, 5), np.uint8))
                           ).astype(np.float32), (5, 5))
        mean_hi = mean_hi + weight[..., None] * detail_map
    # Symmetrised after the dilation, so the texels past the charts are mirror images too.
    mean_hi = alb.dilate_into_background(mean_hi, atlas_m.covered)
    return np.clip(0.5 * (mean_hi + atlas_mirror(mean_hi)), 0.0, 1.0).astype(np.float32)


def _held_out_errors(cache: PhotoCache, split: PhotoSplit, fitter: HeadFitter, atlas_u: Atlas, atlas_b: Atlas,
                     known: np.ndarray, mean: np.ndarray, basis: np.ndarray, max_per_group: int, progress: bool
                     ) -> dict[str, dict[str, list[float]]]:
    """Per held-out photo, by group: its de-lit albedo at the basis size over the ``known`` texels
    it shows, reconstructed by the mean (downsampled) and least-squares coefficients of all the
    modes. Returns ``statistic -> group -> values``: ``rmse`` (linear RGB), ``rmse_skin`` (the
    delighting skin texels only), ``rmse_mean_only`` (no modes), ``level`` (RMS albedo of the
    photo), ``relative`` (rmse / level), ``coefficient_rms``."""
    modes = len(basis)
    mean_at_b, _ = downsample(mean, np.ones(mean.shape[:2], bool), mean.shape[0] // atlas_b.size)
    flat_basis = basis[:, known].reshape(modes, -1).astype(np.float64)
    flat_mean = mean_at_b[known].reshape(-1).astype(np.float64)
    skin = np.repeat(atlas_b.skin[known], 3)
    out: dict[str, dict[str, list[float]]] = {k: {} for k in ("rmse", "rmse_skin", "rmse_mean_only", "level",
                                                              "relative", "coefficient_rms")}
    for g, idx in split.held_out.items():
        for i in tqdm(idx[:max_per_group], desc=f"held-out {g}", disable=not progress, leave=False):
            fit = fitter.fit(cache[int(i)]["landmarks478"])
            if fit.residual_px > MAX_FIT_RESIDUAL_PX:
                continue
            a, v = unwrap_head(cache[int(i)]["crop"], fit, atlas_u)
            a, v = downsample(a, v, atlas_u.size // atlas_b.size)
            m = np.repeat(v[known], 3)
            if m.sum() < 300:
                continue
            target = a[known].reshape(-1)[m]
            b = flat_basis[:, m]
            r = target - flat_mean[m]
            coef = np.linalg.solve(b @ b.T + 1e-3 * np.eye(modes), b @ r)
            resid = r - coef @ b
            err = float(np.sqrt((resid ** 2).mean()))
            lev = float(np.sqrt((target ** 2).mean()))
            # Errors scale with the photo's albedo level (exposure, skin tone): relative to it too.
            for key, value in (("rmse", err), ("rmse_skin", float(np.sqrt((resid[skin[m]] ** 2).mean()))),
                               ("rmse_mean_only", float(np.sqrt((r ** 2).mean()))), ("level", lev),
                               ("relative", err / lev), ("coefficient_rms", float(np.sqrt((coef ** 2).mean())))):
                out[key].setdefault(g, []).append(value)
    return out


def _by_group(values: dict[str, list[float]], stat=np.mean) -> dict[str, float]:
    return {g: round(float(stat(v)), 4) for g, v in sorted(values.items())}


def _race_ratio(values: dict[str, list[float]]) -> float | None:
    """Worst over best of the race groups' mean values."""
    race = [float(np.mean(v)) for g, v in values.items() if g in RACE_NAMES.values()]
    return round(max(race) / min(race), 3) if race else None


def build_head_albedo(arrays: FaceModelArrays, cache: PhotoCache | str | Path, seed: int = 0, modes: int = 40,
                      mean_size: int = 768, basis_size: int = 192, per_group: int = 300,
                      held_out_fraction: float = 0.1, unwrap_size: int = 384, detail_per_group: int = 50,
                      max_held_out_per_group: int = 40, progress: bool = True) -> tuple[dict, dict]:
    """The head's albedo space from a photo cache (see the module docstring).

    Args:
        arrays: the head (:func:`~facenet3d.train.build_face_model.ict_head.head_geometry`, optionally with
            landmark embeddings).
        cache: the photo cache (``facenet3d preprocess``) or its folder.
        seed: photo selection and PCA seed.
        modes: albedo modes kept.
        mean_size, basis_size: atlas sizes of the mean and of the modes (``mean_size`` a multiple of
            ``unwrap_size``, which is a multiple of ``basis_size``).
        per_group: photos used per group (UTKFace race groups, lfw-expressions' colour photos).
        held_out_fraction: stratified fraction of each group held out for the report.
        unwrap_size: atlas size photos are unwrapped at before averaging down to ``basis_size``.
        detail_per_group: photos per group also unwrapped at ``mean_size`` for the mean's detail.
        max_held_out_per_group: held-out photos evaluated per group.

    Returns:
        ``(arrays, report)``: ``albedo_mean (mean_size, mean_size, 3)``, ``albedo_basis (modes,
        basis_size, basis_size, 3)`` (each mode scaled by its standard deviation, so coefficients
        have unit variance), ``albedo_std (modes,)`` ones; all float32 linear RGB.
    """
    start = time.time()
    cache = cache if isinstance(cache, PhotoCache) else PhotoCache(cache)
    split = split_photos(cache, seed, per_group, held_out_fraction)
    masks = head_masks(arrays)
    fitter = HeadFitter(arrays)
    atlas_u = Atlas.build(arrays, unwrap_size, masks)
    atlas_b = Atlas.build(arrays, basis_size, masks)
    atlas_m = Atlas.build(arrays, mean_size, masks)
    f_ub, f_mb = unwrap_size // basis_size, mean_size // basis_size
    sup_b, sup_m = atlas_b.support, atlas_m.support
    rng = np.random.default_rng(seed + 1)
    detail = {i for g, idx in split.train.items()
              for i in rng.choice(idx, min(detail_per_group, len(idx)), replace=False).tolist()}

    def unwrap_basis(i: int, fit: HeadFit) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        crop = cache[int(i)]["crop"]
        if i in detail:
            a, v = unwrap_head(crop, fit, atlas_m)
            hi = np.where((v & sup_m)[..., None], a, np.nan)[sup_m].astype(np.float16)
            a, v = downsample(a, v, f_mb)
            return a, v, hi
        a, v = unwrap_head(crop, fit, atlas_u)
        a, v = downsample(a, v, f_ub)
        return a, v, None

    # 1. Unwrap the training photos.
    maps, valids, groups, highs, residuals, skipped = [], [], [], [], {}, {"fit": 0, "no_skin": 0}
    order = [(g, i) for g, idx in split.train.items() for i in idx]
    for g, i in tqdm(order, desc="unwrapping photos", disable=not progress):
        fit = fitter.fit(cache[int(i)]["landmarks478"])
        residuals.setdefault(g, []).append(fit.residual_px)
        if fit.residual_px > MAX_FIT_RESIDUAL_PX:
            skipped["fit"] += 1
            continue
        a, v, hi = unwrap_basis(i, fit)
        if not v.any():
            skipped["no_skin"] += 1
            continue
        a, v = alb.fill_from_mirror(a, v, mirror=atlas_mirror)
        maps.append(a[sup_b])
        valids.append(v[sup_b])
        groups.append(g)
        if hi is not None:
            highs.append(hi)
    maps_a, valid_a, groups_a = np.stack(maps), np.stack(valids), np.array(groups)
    del maps, valids
    t_unwrap = time.time() - start

    # 2. Robust outlier rejection against the per-texel median (hair, glasses, highlights).
    med = alb.nanmedian(np.where(valid_a[..., None], maps_a, np.nan), axis=0)
    med = np.where(np.isnan(med), np.nanmean(med), med)
    dev = np.abs(maps_a - med).max(-1)
    mad = alb.nanmedian(np.where(valid_a, dev, np.nan), axis=0)
    valid_a &= dev <= 4 * np.maximum(np.nan_to_num(mad, nan=1.0), 0.02)

    # 3. Mirrored copies; texels few photos saw leave the statistics (filled like the rest).
    mirror = _mirror_index(sup_b)
    maps_a = np.concatenate([maps_a, maps_a[:, mirror]])
    valid_a = np.concatenate([valid_a, valid_a[:, mirror]])
    seen = valid_a.mean(0) >= MIN_SEEN_FRACTION
    n, s = len(maps_a), int(seen.sum())
    # Total variance of the observed data (per texel and channel, over the photos that saw it),
    # for the fraction the kept modes explain.
    obs = np.where(valid_a[:, seen, None], maps_a[:, seen], np.nan)
    total_var = float(np.nansum(np.nanvar(obs, axis=0)))
    del obs
    mean, comps, var = alb.em_pca(maps_a[:, seen].reshape(n, -1), np.repeat(valid_a[:, seen], 3, axis=1),
                                  modes, seed=seed)
    known = np.zeros_like(sup_b)
    known[sup_b] = seen
    t = basis_size
    low = np.zeros((1 + modes, t, t, 3), np.float32)
    low[:, known] = np.concatenate([mean[None], comps * np.sqrt(var)[:, None]]).reshape(1 + modes, s, 3)

    # 4. Fill the head outside the seen support from the nearest seen skin.
    low = harmonic_fill(arrays, atlas_b, low, known)
    mean_low, basis = low[0], low[1:]
    basis = alb.canonical_signs(np.stack([alb.dilate_into_background(b, atlas_b.covered) for b in basis]))

    # 5. The full-resolution mean: upsampled low-resolution mean + the median's detail.
    mean_hi = _full_resolution_mean(mean_low, known, highs, atlas_b, atlas_m)

    # 6. Held-out photos: reconstruction error with all the modes, per group.
    held = _held_out_errors(cache, split, fitter, atlas_u, atlas_b, known, mean_hi, basis, max_held_out_per_group,
                            progress)

    n_train = len(groups_a)
    report = {
        "correspondence": fitter.corr.name,
        "photos": {"greyscale_skipped": split.greyscale,
                   "train_by_group": {g: len(v) for g, v in split.train.items()},
                   "held_out_by_group": {g: len(v) for g, v in split.held_out.items()},
                   "used_by_group": {g: int((groups_a == g).sum()) for g in split.train},
                   "skipped": skipped, "detail_photos": len(highs)},
        "fit_residual_px": {g: {"median": round(float(np.median(v)), 2), "p90": round(float(np.percentile(v, 90)), 2)}
                            for g, v in residuals.items()},
        "sizes": {"mean": mean_size, "basis": basis_size, "unwrap": unwrap_size},
        "support_texels_at_basis_size": int(sup_b.sum()), "seen_texels_at_basis_size": s,
        "chart_texels_at_basis_size": int(atlas_b.covered.sum()),
        "modes": modes,
        "variance_cumulative_fraction_of_total": np.round(np.cumsum(var) / total_var, 4).tolist(),
        "held_out_rmse_linear_rgb_by_group": _by_group(held["rmse"]),
        "held_out_rmse_median_by_group": _by_group(held["rmse"], np.median),
        "held_out_rmse_skin_texels_by_group": _by_group(held["rmse_skin"]),
        "held_out_albedo_level_by_group": _by_group(held["level"]),
        "held_out_rmse_mean_only_by_group": _by_group(held["rmse_mean_only"]),
        "held_out_relative_rmse_by_group": _by_group(held["relative"]),
        "held_out_coefficient_rms_by_group": _by_group(held["coefficient_rms"]),
        "held_out_evaluated_by_group": {g: len(v) for g, v in sorted(held["rmse"].items())},
        "worst_to_best_ratio_race_groups": _race_ratio(held["rmse"]),
        "worst_to_best_ratio_race_groups_relative": _race_ratio(held["relative"]),
        "worst_to_best_ratio_race_groups_skin_texels": _race_ratio(held["rmse_skin"]),
        "mean_albedo_linear_rgb_by_group": {
            g: np.round(np.nanmean(np.where(valid_a[:n_train][groups_a == g][..., None],
                                            maps_a[:n_train][groups_a == g], np.nan), axis=(0, 1)), 4).tolist()
            for g in split.train if (groups_a == g).any()},
        "seconds": {"unwrap": round(t_unwrap, 1), "total": round(time.time() - start, 1)},
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "seed": seed,
    }
    out = {"albedo_mean": mean_hi, "albedo_basis": basis.astype(np.float32),
           "albedo_std": np.ones(modes, np.float32)}
    return out, report


# -- command line -------------------------------------------------------------------------------


def load_head(ict_dir: str | Path, shared: str | Path | None = None) -> FaceModelArrays:
    """The head geometry, with ``ict_landmarks``' embeddings when that module provides them (else
    the fit falls back to the 68 iBUG points)."""
    from facenet3d.train.build_face_model.ict_head import head_geometry, with_embeddings

    arrays = head_geometry(ict_dir)
    try:
        from facenet3d.train.build_face_model.ict_landmarks import ict_landmark_embeddings

        from facenet3d.facemodel.loaders.ict import read_ict_arrays
    except ImportError:
        return arrays
    if shared is None:
        return arrays
    return with_embeddings(arrays, ict_landmark_embeddings(read_ict_arrays(ict_dir), Path(shared)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facenet3d.train.build_face_model.head_albedo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ict", required=True, help="ICT-FaceKit folder (holding FaceXModel/)")
    p.add_argument("--cache", required=True, type=Path, help="photo cache folder")
    p.add_argument("--photos", nargs="*", help="photos/folders to preprocess into the cache first")
    p.add_argument("--shared", help="shared data folder (for ict_landmarks' MediaPipe embedding)")
    p.add_argument("-o", "--output", required=True, type=Path, help=".npz to write (report JSON beside it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", type=int, default=40)
    p.add_argument("--per-group", type=int, default=300)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.photos:
        from facenet3d.landmarks.cache import preprocess

        preprocess(a.photos, a.cache, workers=1)
    arrays = load_head(a.ict, a.shared)
    out, report = build_head_albedo(arrays, a.cache, seed=a.seed, modes=a.modes, per_group=a.per_group)
    a.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.output, **out)
    a.output.with_suffix(".report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
