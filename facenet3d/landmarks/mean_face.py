"""facenet3d's mean MediaPipe face and the canonical face mesh built on it.

mediapipe 0.10.14's wheel ships the face-mesh topology (see :mod:`.topology`) but not the
canonical face geometry (``canonical_face_model.obj`` is absent from the wheel). The mean
face stands in for it: the average, after generalised Procrustes alignment (rotation,
translation, uniform scale; 3D), of the 478 landmarks MediaPipe finds on the neutral photos
of ``shared/data/faces/lfw-expressions`` (1,150 photos of 159 people), turned frontal and
made left/right symmetric, in millimetres. It is built by this module's command line and
shipped as ``facenet3d/landmarks/data/mean_face.npz`` (an artifact of facenet3d's own tool;
no MediaPipe data is copied)::

    python -m facenet3d.landmarks.mean_face ../shared/data/faces/lfw-expressions \\
        -o facenet3d/landmarks/data/mean_face.npz

Frame (model space): millimetres, +x to the subject's left (image right), +y up, +z out of
the face; origin midway between the iris centres; frontal means the line between the iris
centres is the x axis and the chin-to-forehead direction (vertex 152 -> 10) lies in the
y-z plane. Scale: MediaPipe's landmarks are known only up to scale, so the mean is scaled
to an inter-pupillary distance of :data:`INTERPUPILLARY_MM` (63 mm, the adult mean; Dodgson,
"Variation and extrema of human interpupillary distance", 2004). Depth comes from MediaPipe's
relative z, which it estimates in the x scale; treat it as approximate.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Adult mean inter-pupillary distance used to give the mean face a metric scale, mm.
INTERPUPILLARY_MM: float = 63.0

_DATA = Path(__file__).with_name("data") / "mean_face.npz"

# Vertices on the face's midline (forehead, nose bridge and tip, lips, chin): the mirror
# plane of a symmetric face contains them.
_MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 11, 12, 13, 14, 15, 16, 17, 18,
            200, 199, 175, 152)


@lru_cache(maxsize=1)
def _load() -> dict[str, np.ndarray]:
    if not _DATA.is_file():
        raise FileNotFoundError(f"{_DATA} is missing; rebuild: python -m facenet3d.landmarks.mean_face")
    with np.load(_DATA) as z:
        out = {k: z[k] for k in z.files}
    for v in out.values():
        v.setflags(write=False)
    return out


def mean_face() -> np.ndarray:
    """``(478, 3)`` float32 mean MediaPipe landmarks, model space (mm, +y up, +z out, frontal)."""
    return _load()["vertices"]


def mirror_indices() -> np.ndarray:
    """``(478,)`` int64: index of each landmark's left/right mirror image (midline ones map to
    themselves); an involution."""
    return _load()["mirror"]


@dataclass(frozen=True)
class CanonicalMesh:
    """The 468-vertex MediaPipe face mesh on facenet3d's mean face.

    Attributes:
        vertices: ``(468, 3)`` float32 mm, model space (+x subject's left, +y up, +z out).
        uvs: ``(468, 2)`` float32 in [0, 1], v up (OpenGL/OBJ convention).
        triangles: ``(852, 3)`` int64, counter-clockwise from the front.
    """

    vertices: np.ndarray
    uvs: np.ndarray
    triangles: np.ndarray


def mediapipe_canonical_mesh() -> CanonicalMesh:
    """The canonical face mesh: mean-face vertices, a cylindrical UV layout, wheel triangles.

    UVs: the mean face is unrolled around a vertical cylinder whose axis passes through the
    midpoint of the cheek extremities (vertices 234 and 454) pushed back by half their
    distance, so the whole face oval (which wraps to the ears) maps without folds; arc
    length and height share one scale, so texels are roughly square. The layout is
    centred and fills [0.02, 0.98] along its longer side.
    """
    from facenet3d.landmarks.topology import NUM_MESH_VERTICES, mesh_triangles

    verts = mean_face()[:NUM_MESH_VERTICES]
    return CanonicalMesh(vertices=verts, uvs=cylindrical_uvs(verts), triangles=mesh_triangles())


def cylindrical_uvs(verts: np.ndarray) -> np.ndarray:
    """UV layout of a frontal MediaPipe-topology face unrolled around a vertical cylinder.

    Args:
        verts: ``(N >= 468, 3)`` model-space vertices (frontal, symmetric about x = 0).

    Returns:
        ``(N, 2)`` float32 in [0, 1], v up; symmetric: mirror vertices get ``u`` and ``1 - u``.
    """
    v = verts.astype(np.float64)
    half_width = 0.5 * float(np.linalg.norm(v[454] - v[234]))
    axis_z = 0.5 * float(v[234, 2] + v[454, 2]) - half_width
    theta = np.arctan2(v[:, 0], v[:, 2] - axis_z)
    uv = np.stack([half_width * theta, v[:, 1]], axis=1)
    lo, hi = uv.min(0), uv.max(0)
    s = 0.96 / float((hi - lo).max())
    # Centre u on x = 0 (not on the bounding box) so the layout stays exactly symmetric.
    uv = (uv - np.array([0.0, (lo[1] + hi[1]) / 2])) * s + 0.5
    return uv.astype(np.float32)


# -- building ------------------------------------------------------------------------------


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` between corresponding 3D points
    (Umeyama 1991, no reflection).

    Args:
        src, dst: ``(P, 3)``.

    Returns:
        ``(R (3, 3), s, t (3,))``.
    """
    mx, mr = src.mean(0), dst.mean(0)
    xc, rc = src - mx, dst - mr
    u, sig, vt = np.linalg.svd(rc.T @ xc)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    r = u @ d @ vt
    s = float(np.trace(np.diag(sig) @ d) / (xc**2).sum())
    return r, s, mr - s * r @ mx


def generalized_procrustes(shapes: np.ndarray, iterations: int = 5, subset: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes analysis (rotation, translation, uniform scale).

    Args:
        shapes: ``(N, P, 3)`` point sets in correspondence.
        iterations: alignment / mean-update rounds.
        subset: indices of the points the similarities are fitted on (all by default);
            every point is transformed.

    Returns:
        ``(aligned (N, P, 3), mean (P, 3))``.
    """
    idx = slice(None) if subset is None else subset
    mean = shapes[0]
    aligned = shapes
    for _ in range(iterations):
        out = np.empty_like(shapes)
        for i, x in enumerate(shapes):
            r, s, t = similarity_fit(x[idx], mean[idx])
            out[i] = s * x @ r.T + t
        aligned = out
        mean = aligned.mean(0)
    return aligned, mean


def frontal_rotation(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame of a model-space MediaPipe face (see module docstring).

    Returns:
        ``(R (3, 3), origin (3,))`` such that ``(p - origin) @ R`` is frontal with the origin
        midway between the iris centres.
    """
    from facenet3d.landmarks.topology import LEFT_IRIS, RIGHT_IRIS

    right, left = p[RIGHT_IRIS[0]], p[LEFT_IRIS[0]]
    x = left - right
    x /= np.linalg.norm(x)
    y = p[10] - p[152]
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=1), (left + right) / 2


def frontal_frame(p: np.ndarray) -> np.ndarray:
    """Rotate and translate model-space points so the face is frontal (see module docstring)."""
    r, origin = frontal_rotation(p)
    return (p - origin) @ r


def mirror_map(p: np.ndarray) -> np.ndarray:
    """Pair every point with its mirror image: the permutation that best matches the points to
    their reflection in x = 0 (an optimal assignment, so no two points share a partner)."""
    from scipy.optimize import linear_sum_assignment

    refl = p * np.array([-1.0, 1.0, 1.0])
    mirror = np.arange(len(p))
    for g in (np.arange(min(468, len(p))), np.arange(468, len(p))):  # iris points mirror among themselves
        if not len(g):
            continue
        cost = np.linalg.norm(p[g][:, None] - refl[g][None], axis=-1)
        rows, cols = linear_sum_assignment(cost)
        mirror[g[rows]] = g[cols]
    if not np.array_equal(mirror[mirror], np.arange(len(p))):
        raise RuntimeError("the mirror pairing of the mean face is not an involution")
    return mirror


def build_mean_face(landmarks: np.ndarray, iterations: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean face from many photos' MediaPipe landmarks.

    Args:
        landmarks: ``(N, 478, 3)`` image-space landmarks (x right, y down, z away from the
            camera, pixels) of N neutral, roughly frontal faces.
        iterations: generalised-Procrustes iterations.

    Returns:
        ``((478, 3) float32 mm model-space vertices, (478,) int64 mirror indices)``.
    """
    from facenet3d.landmarks.topology import LEFT_IRIS, RIGHT_IRIS

    # image (x right, y down, z away) -> model (x right, y up, z towards the viewer): a
    # rotation by 180 degrees about x, so handedness is kept.
    sets = np.asarray(landmarks, np.float64) * np.array([1.0, -1.0, -1.0])
    _, mean = generalized_procrustes(sets, iterations)
    mean = frontal_frame(mean)
    mirror = mirror_map(mean)
    # symmetrise: average each point with the reflection of its mirror partner
    mean = 0.5 * (mean + mean[mirror] * np.array([-1.0, 1.0, 1.0]))
    ipd = float(np.linalg.norm(mean[LEFT_IRIS[0]] - mean[RIGHT_IRIS[0]]))
    mean = frontal_frame(mean) * (INTERPUPILLARY_MM / ipd)
    return mean.astype(np.float32), mirror.astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build facenet3d's mean MediaPipe face from neutral photos.")
    p.add_argument("folder", help="photo folder (with a labels.csv: its neutral photos)")
    p.add_argument("-o", "--output", default=str(_DATA))
    args = p.parse_args(argv)

    import csv

    from tqdm import tqdm

    from facenet3d.errors import Facenet3DError
    from facenet3d.landmarks.detect import FaceDetector
    from facenet3d.landmarks.image_io import IMAGE_SUFFIXES, read_image

    folder = Path(args.folder)
    labels = folder / "labels.csv"
    if labels.is_file():
        with open(labels, newline="") as f:
            names = [r["image"] for r in csv.DictReader(f) if r.get("emotion", "neutral") == "neutral"]
    else:
        names = sorted(q.name for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
    detector = FaceDetector(max_faces=1)
    sets = []
    for name in tqdm(names, desc="landmarks"):
        try:
            sets.append(detector.detect_largest(read_image(folder / name)).landmarks478)
        except Facenet3DError:
            continue
    verts, mirror = build_mean_face(np.stack(sets))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, vertices=verts, mirror=mirror, num_photos=np.int64(len(sets)))
    os.replace(tmp, out)
    print(f"wrote {out}: mean of {len(sets)} photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
