"""Landmark embeddings on the ICT-FaceKit topology, from public geometry only.

An embedding is ``(vertex_index (N, 3) int64, weights (N, 3) float32)``: point ``n`` is
``sum_k weights[n, k] * vertices[vertex_index[n, k]]`` (a barycentric point on a triangle, or a
single vertex as ``[i, i, i], [1, 0, 0]``). Being defined on the shared topology, an embedding
follows any decoded shape of the model (identity + expression).

:func:`ict_landmark_embeddings` computes:

``ibug68_ict``
    ICT's own 68 landmark vertices (``vertex_indices.json``).
``ibug68_3ddfa``
    The 3DDFA / AFLW2000-3D convention: the BFM2009 mean face of 3DDFA
    (``shared/data/conventions/bfm09_mean_3ddfa.npz``, micrometres; its axes already are
    facenet3d's: +x the subject's left, +y up, +z out, checked by :func:`bfm_3ddfa_face`)
    registered onto ICT by :func:`register_onto_ict`, each of its 68 keypoints then taken as the
    closest point of the fitted ICT face surface.
``mediapipe478``
    MediaPipe's 468 face-mesh points registered the same way (source geometry: the project's v1
    mean face ``weights/facenet3d_face_v1.npz``, whose vertices 0..467 are the MediaPipe points;
    mediapipe 0.10.14's wheel ships no canonical face model), plus the 10 iris points on ICT's
    eyeballs (:func:`iris_embedding`).
``aflw21``
    AFLW's 21 points from ICT's iBUG-68 vertices, the iris centres and the ear lobes
    (:func:`ear_lobe_vertex`).

Registration (:func:`register_onto_ict`): similarity-align the source onto the ICT mean on the 51
inner iBUG points (17..67; the jaw contour follows another convention in each model and is never
an anchor), then fit ICT identity and expression coefficients to the source surface by
closest-point ICP (point-to-plane, source points to the ICT face surface) with the inner anchors
and a Gaussian prior on the identity coefficients (ICT's identity modes are PCA modes scaled by
their standard deviation, so the coefficients are unit-variance) and expression weights bounded
to [0, 1], re-fitting the source's similarity each round. A statistical fit is chosen over a
free-form deformation because it keeps the ICT surface a plausible face where the two surfaces
disagree locally (eyelids, lips) instead of folding it onto the source, and its residual on the
source surface is already about a millimetre (see the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import lsq_linear
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from facenet3d.evaluate.geometry import Similarity, fit_similarity
from facenet3d.evaluate.mesh_distance import MeshDistance
from facenet3d.facemodel.model import FaceModelArrays
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE, IBUG68_INNER

Embedding = tuple[np.ndarray, np.ndarray]

#: The project's v1 mean face: vertices ``landmarks_mediapipe`` are MediaPipe's 468 points.
V1_FACE_MODEL = Path(__file__).resolve().parents[2] / "weights" / "facenet3d_face_v1.npz"
BFM_3DDFA_FILE = Path("data") / "conventions" / "bfm09_mean_3ddfa.npz"
MICROMETRES_PER_MM = 1000.0

#: MediaPipe's iris points: centre, then the rim along +x, +y, -x, -y of model space (from the
#: mean MediaPipe face: 469 / 474 lie at +x of their centres, 470 / 475 above, ...). 468..472 is
#: ``FACEMESH_RIGHT_IRIS`` (the subject's right eye, -x, next to iBUG 36..41), 473..477 the left.
MEDIAPIPE_IRIS = {"right": 468, "left": 473}
IRIS_RIM_DIRECTIONS = np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]])
#: Iris radius, mm: the 11.7 mm horizontal iris diameter MediaPipe's iris model assumes.
IRIS_RADIUS_MM = 11.7 / 2

#: AFLW-21 points as iBUG-68 indices (subject's right = image left of a frontal photo); the
#: eye centres, mouth centre and ear lobes are built separately (None here).
AFLW21_FROM_IBUG68: tuple[int | None, ...] = (
    17, 19, 21, 22, 24, 26,     # brows: image-left outer -> inner, other inner -> outer
    36, None, 39, 42, None, 45,  # eyes: image-left outer, centre, inner; other inner, centre, outer
    None, 31, 30, 35, None,      # image-left ear lobe, nostril, nose tip, other nostril, other ear lobe
    48, None, 54, 8,             # mouth corner, mouth centre, other corner, chin
)
#: AFLW-21 order read mirrored (image left <-> right): for the left/right check.
AFLW21_MIRROR = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20])


# -- embeddings --------------------------------------------------------------------------------


def embedded_points(vertices: np.ndarray, embedding: Embedding) -> np.ndarray:
    """Positions of embedded points.

    Args:
        vertices: ``(..., V, 3)`` any units.
        embedding: ``(vertex_index (N, 3), weights (N, 3))``.

    Returns:
        ``(..., N, 3)`` same units.
    """
    index, weights = embedding
    return (np.asarray(vertices)[..., index, :] * np.asarray(weights)[..., None]).sum(-2)


def vertex_embedding(vertex_index: np.ndarray) -> Embedding:
    """``(N,)`` vertex indices -> single-vertex embedding (``[i, i, i], [1, 0, 0]``)."""
    idx = np.asarray(vertex_index, np.int64).reshape(-1)
    weights = np.zeros((len(idx), 3), np.float32)
    weights[:, 0] = 1.0
    return np.repeat(idx[:, None], 3, 1), weights


def concat_embeddings(*parts: Embedding) -> Embedding:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``(N, 3)`` barycentric coordinates of points ``p`` projected onto triangles ``(a, b, c)``
    (all ``(N, 3)``), clipped to the triangle and summing to 1."""
    e1, e2, d = b - a, c - a, p - a
    d11, d12, d22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    d1, d2 = (d * e1).sum(1), (d * e2).sum(1)
    den = np.where(np.abs(d11 * d22 - d12 ** 2) > 1e-20, d11 * d22 - d12 ** 2, 1.0)
    v = (d22 * d1 - d12 * d2) / den
    w = (d11 * d2 - d12 * d1) / den
    bary = np.clip(np.stack([1 - v - w, v, w], 1), 0.0, None)
    return bary / bary.sum(1, keepdims=True)


def surface_embedding(vertices: np.ndarray, triangles: np.ndarray, points: np.ndarray) -> Embedding:
    """Embed points as the closest points of a triangle mesh.

    Args:
        vertices: ``(V, 3)`` the mesh the points lie near.
        triangles: ``(F, 3)`` the triangles allowed.
        points: ``(N, 3)`` same units.

    Returns:
        Embedding of the closest surface points (triangle corners + barycentric weights).
    """
    hit = MeshDistance(vertices, triangles).query(points)
    tri = np.asarray(triangles, np.int64)[hit.triangle]
    v = np.asarray(vertices, np.float64)
    bary = barycentric(hit.closest, v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]])
    return tri, bary.astype(np.float32)


# -- registration ------------------------------------------------------------------------------


@dataclass
class Registration:
    """A source surface registered onto ICT (see :func:`register_onto_ict`).

    Attributes:
        to_ict: similarity mapping source coordinates into ICT's frame.
        identity: ``(100,)`` ICT identity coefficients of the fitted shape.
        expression: ``(53,)`` ICT expression weights of the fitted shape.
        fitted: ``(V_ict, 3)`` mm, the fitted ICT shape (all vertices).
        anchor_residual_mm: ``(51,)`` distance of each fitted ICT inner landmark to its
            (transformed) source anchor.
        surface_residual_mm: ``(S,)`` distance of each used source vertex to the fitted ICT face
            surface (exact point-to-triangle).
    """

    to_ict: Similarity
    identity: np.ndarray
    expression: np.ndarray
    fitted: np.ndarray
    anchor_residual_mm: np.ndarray
    surface_residual_mm: np.ndarray


def face_triangles(ict: FaceModelArrays) -> np.ndarray:
    """``(F, 3)`` the ICT triangles whose corners all lie in the ``face`` region (the skin of
    the face and ears, without eyeballs, mouth socket and eyelashes)."""
    return ict.triangles[ict.regions["face"][ict.triangles].all(1)]


def _triangle_normals(v: np.ndarray, tri: np.ndarray) -> np.ndarray:
    n = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def register_onto_ict(ict: FaceModelArrays, source: np.ndarray, source_triangles: np.ndarray,
                      source_anchors: np.ndarray, ict_anchors: np.ndarray, iterations: int = 8,
                      sample: int = 6000, identity_prior: float = 0.02, expression_prior: float = 0.05,
                      anchor_weight: float = 1.0, max_distance_mm: float = 10.0) -> Registration:
    """Register a face surface onto the ICT mean by fitting ICT coefficients (closest-point ICP).

    Minimises, over ICT identity ``a`` (unbounded) and expression ``e`` (in [0, 1]) and the
    source's similarity ``T``::

        mean_i (n_i . (x_i(a, e) - T p_i))^2 + anchor_weight * mean_j |X_j(a, e) - T q_j|^2
            + identity_prior |a|^2 + expression_prior |e|^2

    with ``p_i`` source vertices, ``x_i`` their closest points on the ICT face surface (normal
    ``n_i``; pairs farther than ``max_distance_mm`` or facing away are dropped), ``q_j`` / ``X_j``
    the anchors. Alternates closest points, a bounded linear least-squares solve, and a
    similarity re-fit of the source on the anchors and correspondences.

    Args:
        ict: the ICT model arrays (mm).
        source: ``(S, 3)`` source vertices, facenet3d's axes (any scale: ``T`` has one).
        source_triangles: ``(F, 3)`` source triangles (its surface, for the residual).
        source_anchors: ``(A, 3)`` source landmark positions.
        ict_anchors: ``(A,)`` ICT vertex indices corresponding to ``source_anchors``.
        iterations: ICP rounds.
        sample: source vertices used for the correspondences (evenly spaced subset).
        identity_prior, expression_prior: weights of the coefficient priors (mm^2 per unit^2).
        anchor_weight: weight of the anchor term relative to the surface term.
        max_distance_mm: correspondences farther than this are dropped.

    Returns:
        The :class:`Registration` (residuals in mm, in ICT's frame).
    """
    tris = face_triangles(ict)
    mean = ict.mean_shape.astype(np.float64)
    basis = np.concatenate([ict.identity_basis, ict.expression_basis]).astype(np.float64)  # (K, V, 3)
    n_id, n_k = ict.identity_basis.shape[0], basis.shape[0]
    source = np.asarray(source, np.float64)
    anchors_src = np.asarray(source_anchors, np.float64)
    ict_anchors = np.asarray(ict_anchors, np.int64)
    step = max(1, len(source) // sample)
    points = source[::step]

    to_ict = fit_similarity(anchors_src, mean[ict_anchors])
    coef = np.zeros(n_k)
    prior = np.sqrt(np.r_[np.full(n_id, identity_prior), np.full(n_k - n_id, expression_prior)])
    lower = np.r_[np.full(n_id, -np.inf), np.zeros(n_k - n_id)]
    upper = np.r_[np.full(n_id, np.inf), np.ones(n_k - n_id)]
    fitted = mean
    for _ in range(iterations):
        fitted = mean + np.einsum("k,kvc->vc", coef, basis)
        p = to_ict.apply(points)
        hit = MeshDistance(fitted, tris).query(p)
        normals = _triangle_normals(fitted, tris)[hit.triangle]
        corner = tris[hit.triangle]
        bary = barycentric(hit.closest, *(fitted[corner[:, k]] for k in range(3)))
        # A pair is kept when close, and when the source point lies in front of / behind the ICT
        # surface rather than beside it (no sliding off the ICT face's edges).
        offset = p - hit.closest
        along = np.abs((offset * normals).sum(1))
        keep = (hit.distance < max_distance_mm) & (along >= 0.7 * hit.distance - 0.05)
        # Surface rows: n . (x0 + J c) = n . p  with  J = sum_k bary_k basis[:, corner_k].
        jac = np.einsum("nk,cnkd->cnd", bary[keep], basis[:, corner[keep]])  # (K, N, 3)
        x0 = np.einsum("nk,nkd->nd", bary[keep], mean[corner[keep]])
        n = normals[keep]
        rows_s = np.einsum("cnd,nd->nc", jac, n) / np.sqrt(keep.sum())
        rhs_s = ((p[keep] - x0) * n).sum(1) / np.sqrt(keep.sum())
        # Anchor rows: X_j(c) = T q_j, per coordinate.
        w_a = np.sqrt(anchor_weight / len(ict_anchors))
        rows_a = basis[:, ict_anchors].reshape(n_k, -1).T * w_a
        rhs_a = (to_ict.apply(anchors_src) - mean[ict_anchors]).reshape(-1) * w_a
        a_mat = np.concatenate([rows_s, rows_a, np.diag(prior)])
        b_vec = np.concatenate([rhs_s, rhs_a, np.zeros(n_k)])
        coef = lsq_linear(a_mat, b_vec, bounds=(lower, upper), method="bvls").x
        fitted = mean + np.einsum("k,kvc->vc", coef, basis)
        # Re-fit the source's pose on the anchors and the kept correspondences, now on the new shape.
        targets = np.einsum("nk,nkd->nd", bary[keep], fitted[corner[keep]])
        src_pts = np.concatenate([anchors_src, points[keep]])
        dst_pts = np.concatenate([fitted[ict_anchors], targets])
        to_ict = fit_similarity(src_pts, dst_pts)

    surface = MeshDistance(fitted, tris).query(to_ict.apply(points)).distance
    anchor = np.linalg.norm(fitted[ict_anchors] - to_ict.apply(anchors_src), axis=1)
    return Registration(to_ict, coef[:n_id], coef[n_id:], fitted, anchor, surface)


def _registered_embedding(ict: FaceModelArrays, registration: Registration, points: np.ndarray) -> Embedding:
    """Source points (source coordinates) -> closest points of the fitted ICT face surface; the
    triangle + barycentric weights transfer to every ICT shape (shared topology)."""
    return surface_embedding(registration.fitted, face_triangles(ict), registration.to_ict.apply(points))


# -- 3DDFA (BFM2009) ---------------------------------------------------------------------------


def bfm_3ddfa_face(shared: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3DDFA's BFM2009 mean face in facenet3d's units and axes.

    The file's axes already are facenet3d's (+y up: eyes above the chin; +z out: the nose tip in
    front; +x the subject's left: iBUG 36, the right eye's outer corner, at -x); this is checked
    here, and the micrometres are converted to millimetres.

    Returns:
        ``(vertices (53215, 3) mm, triangles (105840, 3) int64, keypoints68 (68,) int64)``.
    """
    with np.load(Path(shared) / BFM_3DDFA_FILE) as z:
        vertices = z["vertices"].astype(np.float64) / MICROMETRES_PER_MM
        triangles = z["triangles"].astype(np.int64)
        keypoints = z["keypoints68"].astype(np.int64)
    kp = vertices[keypoints]
    if not (kp[27, 1] > kp[8, 1] and kp[30, 2] > kp[[0, 16], 2].max() and kp[36, 0] < 0 < kp[45, 0]):
        raise ValueError("BFM mean face is not in facenet3d's axes (+x subject's left, +y up, +z out)")
    return vertices, triangles, keypoints


def register_bfm_3ddfa(ict: FaceModelArrays, shared: Path) -> tuple[Registration, np.ndarray]:
    """Register 3DDFA's BFM mean onto ICT, anchored on the 51 inner iBUG points.

    Returns:
        ``(registration, keypoints68 (68, 3) mm in BFM coordinates)``.
    """
    vertices, triangles, keypoints = bfm_3ddfa_face(shared)
    inner = IBUG68_INNER
    reg = register_onto_ict(ict, vertices, triangles, vertices[keypoints[inner]], ict.landmarks68[inner])
    return reg, vertices[keypoints]


# -- MediaPipe ---------------------------------------------------------------------------------


def mediapipe_source_face(path: Path = V1_FACE_MODEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The v1 mean face as MediaPipe source geometry.

    Returns:
        ``(vertices (V, 3) mm, triangles (F, 3) without the eye-region ones (its eyeballs are not
        skin), mediapipe468 (468,) vertex index of each MediaPipe point)``.
    """
    with np.load(path) as z:
        vertices = z["mean_shape"].astype(np.float64)
        triangles = z["triangles"].astype(np.int64)
        mediapipe = z["landmarks_mediapipe"].astype(np.int64)
        eyes = z["region__eyes"].astype(bool) if "region__eyes" in z.files else np.zeros(len(vertices), bool)
    return vertices, triangles[~eyes[triangles].all(1)], mediapipe


def register_mediapipe(ict: FaceModelArrays, path: Path = V1_FACE_MODEL) -> tuple[Registration, np.ndarray]:
    """Register the MediaPipe mean face onto ICT, anchored on the 51 inner iBUG points.

    Returns:
        ``(registration, points468 (468, 3) source coordinates)``.
    """
    vertices, triangles, mediapipe = mediapipe_source_face(path)
    points = vertices[mediapipe]
    inner = IBUG68_INNER
    reg = register_onto_ict(ict, vertices, triangles, points[IBUG68_FROM_MEDIAPIPE[inner]], ict.landmarks68[inner])
    return reg, points


# -- eyes and ears -----------------------------------------------------------------------------


def _sphere_centre(points: np.ndarray) -> np.ndarray:
    a = np.c_[2 * points, np.ones(len(points))]
    sol = np.linalg.lstsq(a, (points ** 2).sum(1), rcond=None)[0]
    return sol[:3]


def iris_embedding(ict: FaceModelArrays, side: str) -> Embedding:
    """MediaPipe's 5 iris points of one eye on ICT's iris mesh (``regions["iris_<side>"]``).

    ICT's iris is a closed, radially built shell (spokes around the pupil axis) whose front is a
    flattish disc meeting the eyeball-like back at a crease. Rules:

    * axis: from the least-squares sphere centre of the shell through the centroid of its front
      half (iterated so that the front half is taken about the axis itself);
    * centre: the front-most of the front iris vertices within 0.3 mm of the one nearest the axis
      (the vertex literally furthest forward sits on a ridge 2 mm off the axis, so it would bias
      the centre);
    * rim point along direction ``d`` (+x, +y, -x, -y, MediaPipe's order): among the front
      vertices within 6 degrees of ``d`` about the axis and within 0.5 mm of the iris radius
      :data:`IRIS_RADIUS_MM` from it, the front-most (the outer surface, not the shell's inner
      layers). The shell's front flattens gradually, with no crease a rule could find reliably
      on every spoke, so the rim is placed at the anatomical iris size that MediaPipe's own iris
      model assumes.

    Args:
        ict: ICT model arrays.
        side: ``"left"`` (the subject's left, +x) or ``"right"``.

    Returns:
        ``(5, 3)`` single-vertex embedding: centre, then the rim along +x, +y, -x, -y.
    """
    idx = np.flatnonzero(ict.regions[f"iris_{side}"])
    v = ict.mean_shape[idx].astype(np.float64)
    rel = v - _sphere_centre(v)
    axis = np.array([0.0, 0.0, 1.0])
    for _ in range(4):
        front = rel @ axis > 0
        axis = rel[front].mean(0) / np.linalg.norm(rel[front].mean(0))
    height = rel @ axis
    lateral = rel - height[:, None] * axis
    radius = np.linalg.norm(lateral, axis=1)
    front = np.flatnonzero(height > 0)
    near = front[radius[front] < radius[front].min() + 0.3]
    picks = [near[height[near].argmax()]]
    for d in IRIS_RIM_DIRECTIONS:
        d = d - (d @ axis) * axis
        d /= np.linalg.norm(d)
        cos = (lateral @ d) / np.maximum(radius, 1e-9)
        cand = np.flatnonzero((height > 0) & (cos > np.cos(np.radians(6.0)))
                              & (np.abs(radius - IRIS_RADIUS_MM) < 0.5))
        picks.append(cand[height[cand].argmax()])
    return vertex_embedding(idx[picks])


def ear_lobe_vertex(ict: FaceModelArrays, side: str) -> int:
    """ICT vertex of one ear lobe's lowest point.

    The ear is located as the connected part of the ``face`` region lying farther from the
    mid-sagittal plane than the widest jaw-contour landmark (``max |x|`` of iBUG 0..16 on that
    side) that contains the most lateral face vertex (the ear's rim); the lobe is its lowest
    vertex (min y). (Moving the threshold by +-4 mm moves the result by < 3 mm.)

    Args:
        ict: ICT model arrays.
        side: ``"left"`` (the subject's left, +x) or ``"right"``.
    """
    sign = 1.0 if side == "left" else -1.0
    m = ict.mean_shape.astype(np.float64)
    lateral = sign * m[:, 0]
    threshold = lateral[ict.landmarks68[:17]].max()
    mask = ict.regions["face"] & (lateral > threshold)
    tris = ict.triangles[mask[ict.triangles].all(1)]
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(m), len(m)))
    _, label = connected_components(graph, directed=False)
    candidates = np.flatnonzero(mask)
    rim = candidates[lateral[candidates].argmax()]
    ear = np.flatnonzero(mask & (label == label[rim]))
    return int(ear[m[ear, 1].argmin()])


# -- AFLW-21 -----------------------------------------------------------------------------------


def aflw21_embedding(ict: FaceModelArrays) -> Embedding:
    """AFLW's 21 points on ICT: iBUG-68 vertices where the definitions match
    (:data:`AFLW21_FROM_IBUG68`), the iris centres for the eye centres, the midpoint of the
    inner-lip points 62 / 66 for the mouth centre, and :func:`ear_lobe_vertex` for the lobes.

    Returns:
        ``(21, 3)`` embedding in AFLW's order (image-left of a frontal photo = subject's right).
    """
    lm = ict.landmarks68
    special = {
        7: iris_embedding(ict, "right")[0][0, 0], 10: iris_embedding(ict, "left")[0][0, 0],
        12: ear_lobe_vertex(ict, "right"), 16: ear_lobe_vertex(ict, "left"),
    }
    index = np.zeros((21, 3), np.int64)
    weights = np.zeros((21, 3), np.float32)
    weights[:, 0] = 1.0
    for n, i in enumerate(AFLW21_FROM_IBUG68):
        index[n] = lm[i] if i is not None else special.get(n, 0)
    index[18] = [lm[62], lm[66], lm[66]]
    weights[18] = [0.5, 0.5, 0.0]
    return index, weights


# -- all ---------------------------------------------------------------------------------------


def ict_landmark_embeddings(ict: FaceModelArrays, shared: Path) -> dict[str, Embedding]:
    """All landmark embeddings of the ICT-FaceKit model (module docstring).

    Args:
        ict: the full ICT model arrays (26,719 vertices, mm).
        shared: the ``shared/`` folder (for 3DDFA's BFM mean face).

    Returns:
        ``{"ibug68_ict": (68), "ibug68_3ddfa": (68), "mediapipe478": (478), "aflw21": (21)}``,
        each ``(vertex_index (N, 3) int64, weights (N, 3) float32)``.
    """
    bfm, bfm_keypoints = register_bfm_3ddfa(ict, shared)
    mediapipe, mediapipe_points = register_mediapipe(ict)
    irises = {side: iris_embedding(ict, side) for side in MEDIAPIPE_IRIS}
    return {
        "ibug68_ict": vertex_embedding(ict.landmarks68),
        "ibug68_3ddfa": _registered_embedding(ict, bfm, bfm_keypoints),
        "mediapipe478": concat_embeddings(_registered_embedding(ict, mediapipe, mediapipe_points),
                                          irises["right"], irises["left"]),
        "aflw21": aflw21_embedding(ict),
    }
