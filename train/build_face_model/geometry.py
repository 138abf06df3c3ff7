"""Identity and expression shape bases from MediaPipe face-mesh geometry of photos.

MediaPipe's 468 landmarks carry a relative depth, so every photo gives a (weak-perspective,
smoothed) 3D face mesh. We bring them into one metric frame and separate identity from
expression with identity-labelled photos:

1. Generalised Procrustes analysis (similarity: rotation, translation, scale) on all meshes;
   mirror images are added wherever statistics are taken, so the model has no left/right bias.
2. A canonical frame from anatomical points (+x toward the subject's left, +y up, +z out of
   the face) and a metric scale: the mean distance between the iris centres is set to
   63 mm, the mean adult interpupillary distance (Dodgson 2004, "Variation and extrema of
   human interpupillary distance": mean 63.36 mm over 3,976 adults).
3. Expression basis: PCA of within-identity deviations from each person's neutral photos
   (lfw-expressions identity + emotion labels).
4. Identity basis: PCA of all meshes after projecting out the expression subspace, so the
   two bases are orthogonal and expression cannot leak into identity coefficients.

Bases are scaled by their standard deviations: coefficients have unit prior variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facenet3d.landmarks.mean_face import frontal_rotation, mirror_map, similarity_fit
from facenet3d.landmarks.topology import NUM_MESH_VERTICES as NUM_MEDIAPIPE_VERTICES

#: MediaPipe indices used to set up the canonical frame.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
NOSE_TIP = 1
RIGHT_IRIS, LEFT_IRIS = 468, 473  # centres in the 478-point refined output
INTERPUPILLARY_MM = 63.0
#: How far behind the nose tip the model origin lies (roughly the head's centre of
#: rotation), so that a rotation in the pose moves the face like a turning head.
ORIGIN_BEHIND_NOSE_MM = 95.0


def mediapipe_to_model_frame(landmarks_px: np.ndarray) -> np.ndarray:
    """MediaPipe image-space landmarks to a right-handed, y-up frame (still in pixels).

    Args:
        landmarks_px: ``(N, P, 3)`` x right, y down, z toward the camera negative (MediaPipe).

    Returns:
        ``(N, P, 3)`` with x right, y up, z toward the camera (out of a frontal face).
    """
    return landmarks_px * np.array([1.0, -1.0, -1.0], dtype=landmarks_px.dtype)


def to_canonical(aligned: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map GPA-aligned shapes and their mean into the model frame in millimetres.

    The mean is turned frontal (:func:`facenet3d.landmarks.mean_face.frontal_rotation`),
    scaled to the interpupillary distance, and made mirror-symmetric about ``x = 0``; the
    origin lies on that plane, at the height halfway between the eyes and the mouth,
    :data:`ORIGIN_BEHIND_NOSE_MM` behind the nose tip.

    Args:
        aligned: ``(N, 478, 3)`` GPA-aligned shapes.
        mean: ``(478, 3)`` their mean.

    Returns:
        ``(shapes (N, 478, 3) mm, mean (478, 3) mm, mirror (478,))``.
    """
    rot, centre = frontal_rotation(mean)
    scale = INTERPUPILLARY_MM / np.linalg.norm(mean[LEFT_IRIS] - mean[RIGHT_IRIS])
    shapes = scale * (aligned - centre) @ rot
    m = scale * (mean - centre) @ rot
    if m[NOSE_TIP, 2] < m[:NUM_MEDIAPIPE_VERTICES, 2].mean():
        raise ValueError("the mean face points away from +z: landmarks are not MediaPipe's")
    # Refine the frame so the mean is as mirror-symmetric about x = 0 as it can be.
    mirror = mirror_map(m)
    r, _, t = similarity_fit(m, (m + m[mirror] * np.array([-1.0, 1.0, 1.0])) / 2)
    shapes = shapes @ r.T + t
    m = m @ r.T + t
    eyes_y = (m[RIGHT_EYE_OUTER, 1] + m[LEFT_EYE_OUTER, 1]) / 2
    mouth_y = m[[13, 14], 1].mean()
    origin = np.array([0.0, (eyes_y + mouth_y) / 2, m[NOSE_TIP, 2] - ORIGIN_BEHIND_NOSE_MM])
    return shapes - origin, m - origin, mirror


@dataclass
class ShapeBases:
    """Result of :func:`build_shape_bases` on the 468-vertex MediaPipe topology (mm)."""

    mean: np.ndarray  # (468, 3) neutral mean face
    identity: np.ndarray  # (Ki, 468, 3), scaled so coefficients have unit prior variance
    expression: np.ndarray  # (Ke, 468, 3)
    pca_variance: np.ndarray  # (K,) variance spectrum of all meshes, mm^2 per mode
    identity_ratio: np.ndarray  # (Ki,) between- / within-person variance of each identity mode
    expression_ratio: np.ndarray  # (Ke,) the same for each expression mode
    pose_rms_mm: float  # RMS per vertex of the pose-dependent MediaPipe distortion removed
    mirror: np.ndarray  # (468,) mirror vertex of each vertex


def mirror_shapes(shapes: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(N, 468, 3)`` shapes reflected through ``x = 0`` with vertices re-indexed."""
    return shapes[:, pairs] * np.array([-1.0, 1.0, 1.0])


def head_pose_sines(raw: np.ndarray, canonical_mean: np.ndarray) -> np.ndarray:
    """Approximate sines of yaw, pitch and roll of each photo's mesh relative to the mean.

    Args:
        raw: ``(N, P, 3)`` meshes in the y-up frame of :func:`mediapipe_to_model_frame`.
        canonical_mean: ``(P, 3)`` the mean in the model frame.

    Returns:
        ``(N, 3)`` entries ``R[0, 2], -R[1, 2], R[1, 0]`` of the rotation taking the mean to
        each mesh (about sin yaw, sin pitch, sin roll).
    """
    idx = np.arange(NUM_MEDIAPIPE_VERTICES)
    out = np.empty((len(raw), 3))
    for i, x in enumerate(raw):
        r, _, _ = similarity_fit(canonical_mean[idx], x[idx])
        out[i] = r[0, 2], -r[1, 2], r[1, 0]
    return out


def pose_features(pose_sines: np.ndarray) -> np.ndarray:
    """``(N, 3)`` pose sines -> ``(N, 7)`` features of the pose-dependent shape distortion.

    MediaPipe's depth estimate depends on the head pose (a turned head looks flatter), so
    its meshes carry a pose-correlated distortion that is neither identity nor expression.
    Linear and quadratic terms of the angles capture it.
    """
    y, p, r = pose_sines.T
    return np.stack([y, p, r, y * y, p * p, y * p, np.ones_like(y)], 1)


def within_person_deviations(shapes: np.ndarray, identity_ids: np.ndarray, is_neutral: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Deviations of each labelled photo from its person's neutral mean.

    Returns:
        ``(deltas (M, P, 3), neutral_means (Q, P, 3))`` over people with a neutral photo
        and at least two photos.
    """
    deltas, means = [], []
    for pid in np.unique(identity_ids[identity_ids >= 0]):
        mine = identity_ids == pid
        neutral = mine & is_neutral
        if neutral.sum() == 0 or mine.sum() < 2:
            continue
        ref = shapes[neutral].mean(0)
        means.append(ref)
        deltas.append(shapes[mine] - ref)  # neutral photos vary too: measurement noise
    return np.concatenate(deltas), np.stack(means)


@dataclass
class ModeSplit:
    """Identity and expression modes (rows, flattened shapes) and their between/within ratios."""

    identity: np.ndarray  # (Ki, D), scaled to the between-person standard deviation
    expression: np.ndarray  # (Ke, D), scaled to the within-person standard deviation
    identity_ratio: np.ndarray  # (Ki,)
    expression_ratio: np.ndarray  # (Ke,)


def split_discriminant_modes(sub: np.ndarray, between: np.ndarray, within: np.ndarray, identity_modes: int,
                             expression_modes: int) -> ModeSplit:
    """Diagonalise between- and within-person covariances jointly and split the modes.

    ``between v = r within v`` gives modes whose between/within variance ratio is ``r``: the
    ``identity_modes`` with the highest ratio are the identity basis; of the rest, the
    ``expression_modes`` with the largest within-person variance (mm^2) are the expression
    basis, and the remainder (low-variance noise) is dropped.

    Args:
        sub: ``(K, D)`` orthonormal rows spanning the subspace the covariances live in.
        between, within: ``(K, K)`` covariances in the coordinates of ``sub``.
    """
    import scipy.linalg

    k = len(sub)
    ratio, vecs = scipy.linalg.eigh(between, within + 1e-9 * np.trace(within) * np.eye(k))
    modes = np.linalg.inv(vecs).T  # columns: within-variance 1 per unit coefficient
    order = np.argsort(-ratio)
    ratio = np.maximum(ratio, 1e-3)
    id_idx, rest = order[:identity_modes], order[identity_modes:]
    within_mm2 = ((sub.T @ modes[:, rest]) ** 2).sum(0)
    ex_idx = rest[np.argsort(-within_mm2)[:expression_modes]]
    return ModeSplit(identity=(sub.T @ (modes[:, id_idx] * np.sqrt(ratio[id_idx]))).T,
                     expression=(sub.T @ modes[:, ex_idx]).T,
                     identity_ratio=ratio[id_idx], expression_ratio=ratio[ex_idx])


def build_shape_bases(
    shapes: np.ndarray,
    identity_ids: np.ndarray,
    is_neutral: np.ndarray,
    mirror: np.ndarray,
    poses: np.ndarray | None = None,
    identity_modes: int = 30,
    expression_modes: int = 20,
    subspace: int = 80,
) -> ShapeBases:
    """Identity and expression bases that separate what differs between people from what
    differs between photos of one person.

    Within the top ``subspace`` principal directions of all meshes, the total covariance ``C``
    and the within-person covariance ``W`` (from people photographed with several
    expressions) give the between-person covariance ``C - W``; the two are diagonalised
    jointly and split by :func:`split_discriminant_modes`. Plain PCA would mix them: on MediaPipe
    geometry within-person variation (expression, pose, estimation noise) exceeds
    between-person variation in almost every principal direction.

    Args:
        shapes: ``(N, 468, 3)`` mm, in the model frame (from :func:`to_canonical`).
        identity_ids: ``(N,)`` int person id, ``-1`` where unknown (one photo per person).
        is_neutral: ``(N,)`` bool, photo labelled neutral (used where the id is known).
        mirror: ``(468,)`` mirror vertex index.
        poses: optional ``(N, 3)`` pose sines (:func:`head_pose_sines`) of each photo; their
            pose-dependent distortion is regressed out first.
        identity_modes, expression_modes: numbers of modes.
    """
    n, p, _ = shapes.shape
    flat = shapes.reshape(n, -1)
    pose_rms = 0.0
    if poses is not None:
        phi = pose_features(poses)
        coef, *_ = np.linalg.lstsq(phi, flat, rcond=None)
        distortion = phi[:, :-1] @ coef[:-1]
        pose_rms = float(np.sqrt((distortion ** 2).sum(1).mean() / p))
        flat = flat - distortion
    shapes = flat.reshape(n, p, 3)
    everything = np.concatenate([shapes, mirror_shapes(shapes, mirror)]).reshape(2 * n, -1)
    mean = everything.mean(0)
    _, sv, vt = np.linalg.svd(everything - mean, full_matrices=False)
    k = min(subspace, len(vt))
    sub = vt[:k]  # (K, 3P) orthonormal principal subspace
    deltas, _ = within_person_deviations(shapes, identity_ids, is_neutral)
    deltas = np.concatenate([deltas, mirror_shapes(deltas, mirror)]).reshape(len(deltas) * 2, -1)
    within = np.cov((deltas @ sub.T).T, bias=True)
    total = np.diag(sv[:k] ** 2 / (2 * n - 1))
    split = split_discriminant_modes(sub, total - within, within, identity_modes, expression_modes)
    identity, expression = split.identity, split.expression
    # The mean carries the photos' average expression: move it to the neutral photos' mean
    # along the expression basis, so the mean face is neutral.
    labelled = (identity_ids >= 0) & is_neutral
    if labelled.any():
        offset = flat[labelled].mean(0) - mean
        coef = np.linalg.lstsq(expression.T, offset, rcond=None)[0]
        mean = mean + coef @ expression
    return ShapeBases(
        mean=mean.reshape(p, 3),
        identity=identity.reshape(-1, p, 3),
        expression=expression.reshape(-1, p, 3),
        pca_variance=sv ** 2 / (2 * n - 1),
        identity_ratio=split.identity_ratio,
        expression_ratio=split.expression_ratio,
        pose_rms_mm=pose_rms,
        mirror=mirror,
    )


def fit_shape(target: np.ndarray, mean: np.ndarray, bases: list[np.ndarray], prior: float = 1e-3
              ) -> tuple[np.ndarray, np.ndarray]:
    """Similarity-align ``target`` and fit coefficients of stacked ``bases`` by ridge least squares.

    Args:
        target: ``(P, 3)`` mm.
        mean: ``(P, 3)``.
        bases: list of ``(K_i, P, 3)`` std-scaled bases (unit-variance coefficients).
        prior: ridge weight on the coefficients (relative to mm^2 residuals).

    Returns:
        ``(aligned_target (P, 3), fitted (P, 3))`` in the frame of ``mean``.
    """
    b = np.concatenate([x.reshape(len(x), mean.size) for x in bases])
    fit = mean.copy()
    for _ in range(3):  # alternate alignment and coefficients
        r, s, t = similarity_fit(target, fit)
        aligned = s * target @ r.T + t
        rhs = (aligned - mean).reshape(-1)
        coef = np.linalg.solve(b @ b.T + prior * np.eye(len(b)), b @ rhs) if len(b) else np.zeros(0)
        fit = mean + (coef @ b).reshape(mean.shape)
    r, s, t = similarity_fit(target, fit)
    return s * target @ r.T + t, fit


def generalisation_error(held_out: np.ndarray, bases: ShapeBases, identity_counts: list[int]
                         ) -> dict[int, float]:
    """RMS per-vertex error (mm) of fitting held-out meshes with the first k identity modes
    (plus every expression mode), for each k in ``identity_counts``."""
    out = {}
    for k in identity_counts:
        err = []
        for target in held_out:
            aligned, fit = fit_shape(target, bases.mean, [bases.identity[:k], bases.expression])
            err.append(np.sqrt(((aligned - fit) ** 2).sum(-1).mean()))
        out[k] = float(np.mean(err))
    return out


def subspace_fraction(vectors: np.ndarray, basis: np.ndarray) -> float:
    """Mean fraction of squared norm of ``vectors (N, D)`` inside the span of ``basis (K, D)``."""
    q, _ = np.linalg.qr(basis.T)
    proj = vectors @ q
    return float(((proj ** 2).sum(1) / np.maximum((vectors ** 2).sum(1), 1e-12)).mean())
