"""Shape error in millimetres, measured as the NoW benchmark measures it, on faces of known shape.

NoW (Sanyal et al. 2019; the ``now_evaluation`` code) compares a reconstructed mesh with a
ground-truth scan:

1. the scan is cut to the face: the vertices within a sphere around a point 30 % of the way
   from the nose bottom to the midpoint of the inner eye corners, of radius
   ``1.4 (outer-eye-corner distance + nose length) / 2`` (:func:`now_face_region`);
2. the reconstruction is aligned to the scan by a similarity on 7 landmarks (eye corners, nose
   bottom, mouth corners), then refined by minimising the scan-to-mesh distances
   (:func:`align_to_scan`; here by iterating closest points, as ICP does);
3. the error is the distance from every kept scan vertex to the aligned mesh's surface;
   median, mean and standard deviation over all vertices of all scans are reported.

``scale=True`` is NoW's original protocol (a reconstruction's size is free); ``scale=False``
is its *metrical* variant (rigid only: a reconstruction in millimetres must also get the size
right). Both are reported.

The faces are ICT-FaceKit heads rendered by :mod:`facenet3d.evaluate.synthetic`; the "scan" is
ICT's face region.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet3d.evaluate.common import ItemRun, environment, summary
from facenet3d.evaluate.mesh_distance import MeshDistance
from facenet3d.evaluate.methods import Method, MethodUnavailableError

#: NoW's 7 landmarks as iBUG-68 indices: outer and inner eye corners (right, left), nose bottom,
#: mouth corners.
NOW_LANDMARKS_IBUG68 = (36, 39, 42, 45, 33, 48, 54)


def now_face_region(points: np.ndarray, landmarks7: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the points inside NoW's face sphere.

    Args:
        points: ``(N, 3)`` scan vertices.
        landmarks7: ``(7, 3)`` in the order of :data:`NOW_LANDMARKS_IBUG68`.
    """
    lm = np.asarray(landmarks7, np.float64)
    nose_bottom = lm[4]
    nose_bridge = (lm[1] + lm[2]) / 2
    centre = nose_bottom + 0.3 * (nose_bridge - nose_bottom)
    radius = 1.4 * (np.linalg.norm(lm[0] - lm[3]) + np.linalg.norm(nose_bridge - nose_bottom)) / 2
    return np.linalg.norm(np.asarray(points, np.float64) - centre, axis=1) <= radius


@dataclass
class Similarity:
    """``x -> s R x + t``."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(x, np.float64) @ self.rotation.T + self.translation

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, np.float64) - self.translation) @ self.rotation / self.scale


def fit_similarity(src: np.ndarray, dst: np.ndarray, scale: bool = True) -> Similarity:
    """Least-squares ``dst ~ s R src + t`` (Umeyama 1991, no reflection); ``s = 1`` when not ``scale``.

    Args:
        src, dst: ``(N, 3)`` corresponding points.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag(d) @ vt
    s = float((sig * d).sum() / (a ** 2).sum()) if scale else 1.0
    return Similarity(s, rot, md - s * rot @ ms)


def align_to_scan(scan: np.ndarray, scan_landmarks7: np.ndarray, mesh: MeshDistance, mesh_landmarks7: np.ndarray,
                  scale: bool = True, iterations: int = 30, tolerance_mm: float = 1e-3
                  ) -> tuple[Similarity, np.ndarray]:
    """NoW's alignment of a reconstruction to a scan, and the resulting distances.

    Args:
        scan: ``(N, 3)`` ground-truth points (already cut to the face region), mm.
        scan_landmarks7: ``(7, 3)`` ground-truth landmarks.
        mesh: the reconstruction (:class:`MeshDistance` over its vertices, in its own frame).
        mesh_landmarks7: ``(7, 3)`` the reconstruction's landmarks.
        scale: similarity (NoW) or rigid (NoW metrical).
        iterations: most closest-point iterations after the landmark alignment (closest points
            from :meth:`MeshDistance.query_approximate`; the returned distances are exact).
        tolerance_mm: stop when the RMS distance improves by less than this.

    Returns:
        ``(transform of the mesh into the scan's frame, (N,) scan-to-mesh distances in mm)``.
    """
    def closest(t: Similarity):
        # Closest points of the transformed mesh, found in the mesh's own frame (the scan is
        # mapped by the inverse transform; distances scale by s).
        hit = mesh.query_approximate(t.inverse(scan))
        return hit, t.scale * hit.distance

    transform = fit_similarity(mesh_landmarks7, scan_landmarks7, scale)
    hit, dist = closest(transform)
    rms = float(np.sqrt((dist ** 2).mean()))  # NoW's objective: the sum of squared distances
    for _ in range(iterations):
        # ICP step: the closest points, held fixed, pull the mesh onto the scan; a step that does
        # not lower the objective ends the refinement.
        candidate = fit_similarity(hit.closest, scan, scale)
        cand_hit, cand_dist = closest(candidate)
        cand_rms = float(np.sqrt((cand_dist ** 2).mean()))
        if cand_rms >= rms:
            break
        transform, hit = candidate, cand_hit
        improved, rms = rms - cand_rms, cand_rms
        if improved < tolerance_mm:
            break
    # The reported distances are exact point-to-surface distances.
    return transform, transform.scale * mesh.query(transform.inverse(scan)).distance


@dataclass
class ScanErrors:
    """Distances of one face, mm: ``now`` (similarity) and ``metrical`` (rigid), ``(N,)`` each."""

    now: np.ndarray
    metrical: np.ndarray
    scale: float  # the NoW alignment's scale (1 = the reconstruction's size was right)


def scan_to_mesh_errors(scan_vertices: np.ndarray, scan_landmarks68: np.ndarray, vertices: np.ndarray,
                        triangles: np.ndarray, landmarks68: np.ndarray) -> ScanErrors:
    """NoW-style errors of a reconstruction against a ground-truth face.

    Args:
        scan_vertices: ``(N, 3)`` ground-truth face vertices, mm (cut here to NoW's sphere).
        scan_landmarks68: ``(68, 3)`` ground-truth iBUG-68 landmarks, mm.
        vertices: ``(V, 3)`` reconstructed mesh, mm, any frame.
        triangles: ``(F, 3)`` its triangles.
        landmarks68: ``(68, 3)`` its iBUG-68 landmarks, same frame.
    """
    sel = list(NOW_LANDMARKS_IBUG68)
    gt7 = np.asarray(scan_landmarks68, np.float64)[sel]
    scan = np.asarray(scan_vertices, np.float64)
    scan = scan[now_face_region(scan, gt7)]
    mesh = MeshDistance(vertices, triangles)
    pred7 = np.asarray(landmarks68, np.float64)[sel]
    similarity, now = align_to_scan(scan, gt7, mesh, pred7, scale=True)
    _, metrical = align_to_scan(scan, gt7, mesh, pred7, scale=False)
    return ScanErrors(now, metrical, similarity.scale)


def evaluate_geometry(method: Method, ict_dir: str | Path, n: int = 50, seed: int = 0, image_size: int = 320,
                      progress: bool = True) -> dict:
    """Reconstruct ``n`` synthetic ICT-FaceKit faces and measure their shape error (NoW style).

    Args:
        method: a method that reconstructs a mesh (not ``mediapipe``).
        ict_dir: the ICT-FaceKit folder.
        n: number of faces (face ``i`` is the same for every ``n`` with the same ``seed``).
        seed: the sequence of faces.
        image_size: rendered image side, px.
        progress: show a progress bar.

    Returns:
        ``{"error_mm": {"median", "mean", "std"} (NoW, similarity), "error_mm_metrical": {...}
        (rigid), "per_face_mean_mm", "n_faces", "n_failed", "failures", "seconds_per_face",
        "settings", "per_face"}``.

    Raises:
        MethodUnavailableError: ``method`` gives no mesh.
    """
    if not method.reconstructs:
        raise MethodUnavailableError(f"method {method.name!r} gives landmarks only, no mesh to measure")
    from facenet3d.evaluate.synthetic import ICTFaceRenderer

    faces = ICTFaceRenderer(ict_dir, image_size=image_size)
    rec_model = method.reconstructor.model
    triangles = rec_model.triangles.cpu().numpy()

    def one(index: int) -> tuple[dict, ScanErrors]:
        face = faces.sample(seed, index)
        lo, hi = face.landmarks68_image.min(0), face.landmarks68_image.max(0)
        pred = method.run(face.image, reference_box=np.concatenate([lo, hi])).reconstruction
        errors = scan_to_mesh_errors(face.face_vertices, face.landmarks68, pred.vertices, triangles,
                                     pred.landmarks68_mesh)
        return face.record, errors

    runner = ItemRun()
    t0 = time.perf_counter()
    done = runner.run(list(range(n)), one, name=lambda i: f"face {i}", progress=progress,
                      desc=f"geometry {method.name}")
    now = np.concatenate([e.now for _, (_, e) in done]) if done else np.empty(0)
    metrical = np.concatenate([e.metrical for _, (_, e) in done]) if done else np.empty(0)
    return {
        "benchmark": "ICT-FaceKit synthetic, NoW-style scan-to-mesh error",
        "error_mm": summary(now),
        "error_mm_metrical": summary(metrical),
        "per_face_mean_mm": summary([float(e.now.mean()) for _, (_, e) in done]),
        "n_faces": n,
        "n_evaluated": len(done),
        "n_failed": len(runner.failures),
        "failures": runner.failures,
        "seconds_per_face": runner.seconds_per_item,
        "seconds_total": time.perf_counter() - t0,
        "settings": {**method.describe(), "ict": str(Path(ict_dir)), "n": n, "seed": seed,
                     "image_size": image_size, "landmarks": "NoW 7: iBUG-68 " + str(NOW_LANDMARKS_IBUG68),
                     "environment": environment()},
        "per_face": [{**rec, "now_median_mm": round(float(np.median(e.now)), 4),
                      "now_mean_mm": round(float(e.now.mean()), 4),
                      "metrical_mean_mm": round(float(e.metrical.mean()), 4), "now_scale": round(e.scale, 4),
                      "scan_points": int(e.now.size)} for _, (rec, e) in done],
    }
