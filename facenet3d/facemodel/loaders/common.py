"""Helpers shared by the face-model loaders: file checks, PCA layouts, orientation, sub-meshes.

Conventions every loader follows (so that models are interchangeable):

* lengths in millimetres (each loader documents its source unit and scale);
* coefficients are *standardised*: a basis column is the PCA direction times its standard
  deviation, so coefficients drawn from ``N(0, 1)`` give plausible faces and the stored
  ``*_std`` are ones (blendshape models such as ICT-FaceKit's ARKit shapes use weights in
  ``[0, 1]`` instead);
* triangles 0-based and counter-clockwise seen from outside the head.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel.model import FaceModelArrays

#: Millimetres per unit of the units used by public face models.
MM_PER_UNIT = {"m": 1000.0, "dm": 100.0, "cm": 10.0, "mm": 1.0, "um": 1e-3}


def default_cache_dir() -> Path:
    """facenet3d's cache folder: ``$FACENET3D_CACHE`` or ``~/.cache/facenet3d``."""
    return Path(os.environ.get("FACENET3D_CACHE", Path.home() / ".cache" / "facenet3d")).expanduser()


def require_file(path: Path, what: str = "file") -> Path:
    """``path`` if it is a file, else :class:`FaceModelFormatError` naming it."""
    if not path.is_file():
        raise FaceModelFormatError(path, f"{what} not found")
    return path


def modes_from_columns(columns: np.ndarray, num_vertices: int, source: str | Path, what: str) -> np.ndarray:
    """``(3V, K)`` basis columns laid out ``x0 y0 z0 x1 ...`` -> ``(K, V, 3)`` modes."""
    columns = np.asarray(columns)
    if columns.ndim == 1:
        columns = columns[:, None]
    if columns.ndim != 2 or columns.shape[0] != 3 * num_vertices:
        raise FaceModelFormatError(source, f"{what} has shape {columns.shape}, "
                                           f"expected ({3 * num_vertices}, K)")
    return np.ascontiguousarray(columns.T).reshape(columns.shape[1], num_vertices, 3)


def scale_modes(modes: np.ndarray, std: np.ndarray | None, unit_scale: float, source: str | Path,
                what: str) -> np.ndarray:
    """Standardise ``(K, V, C)`` unit-norm modes: multiply mode ``k`` by ``std[k] * unit_scale``.

    Returns float32 (what the model stores): full BFM bases are 100+ MB each, so no float64
    copy is kept.
    """
    factor = np.full(modes.shape[0], unit_scale)
    if std is not None:
        std = np.asarray(std, dtype=np.float64).reshape(-1)
        if std.shape[0] < modes.shape[0]:
            raise FaceModelFormatError(source, f"{what}: {std.shape[0]} standard deviations for "
                                               f"{modes.shape[0]} modes")
        if (std < 0).any() or not np.isfinite(std).all():
            raise FaceModelFormatError(source, f"{what}: negative or non-finite standard deviations")
        factor = factor * std[: modes.shape[0]]
    return modes.astype(np.float32) * factor.astype(np.float32)[:, None, None]


def one_based_triangles(tri: np.ndarray, num_vertices: int, source: str | Path) -> np.ndarray:
    """``(F, 3)`` 1-based (MATLAB) triangle indices -> 0-based int64, range-checked."""
    tri = np.asarray(tri)
    if tri.ndim != 2 or 3 not in tri.shape:
        raise FaceModelFormatError(source, f"triangle list has shape {tri.shape}, expected (F, 3)")
    tri = tri if tri.shape[1] == 3 else tri.T
    out = np.rint(tri).astype(np.int64) - 1
    if out.size and (out.min() < 0 or out.max() >= num_vertices):
        raise FaceModelFormatError(source, f"1-based triangle indices outside 1..{num_vertices}")
    return out


def orient_outward(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, bool]:
    """Make the winding counter-clockwise seen from outside, flipping every triangle if needed.

    The sign of the volume enclosed with the centroid (sum of ``v0 . (v1 x v2)`` about the
    centroid) is positive for outward-facing counter-clockwise triangles on a closed head
    and on an open face mask bulging towards the viewer alike. Source formats disagree on
    their winding (BFM2009's ``tl`` is clockwise), so every loader runs this check.

    Returns:
        ``(triangles, flipped)``.
    """
    v = vertices - vertices.mean(axis=0)
    v0, v1, v2 = (v[triangles[:, i]] for i in range(3))
    signed = float(np.einsum("ij,ij->", v0, np.cross(v1, v2)))
    if signed < 0:
        return triangles[:, ::-1].copy(), True
    return triangles, False


def select_vertices(arrays: FaceModelArrays, keep: np.ndarray) -> FaceModelArrays:
    """The sub-model on the vertices where ``keep`` is True and the triangles entirely inside them.

    Vertex order is preserved; UV coordinates are compacted to those the kept triangles use;
    landmarks on dropped vertices become -1; regions left empty are dropped.

    Raises:
        ValueError: for articulated models (dropping vertices would move the regressed joints).
    """
    keep = np.asarray(keep, dtype=bool)
    v = arrays.mean_shape.shape[0]
    if keep.shape != (v,):
        raise ValueError(f"keep mask has shape {keep.shape}, expected ({v},)")
    if arrays.joint_regressor is not None:
        raise ValueError("cannot select vertices of an articulated model: its joints depend on all vertices")
    new_index = np.full(v, -1, dtype=np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    tri_kept = keep[arrays.triangles].all(axis=1)
    changes: dict = {
        "mean_shape": arrays.mean_shape[keep],
        "triangles": new_index[arrays.triangles[tri_kept]],
        "identity_basis": arrays.identity_basis[:, keep],
        "expression_basis": arrays.expression_basis[:, keep],
        "landmarks68": np.where(arrays.landmarks68 >= 0, new_index[arrays.landmarks68.clip(0)], -1),
        "regions": {name: mask[keep] for name, mask in arrays.regions.items() if mask[keep].any()},
    }
    if arrays.landmarks_mediapipe is not None:
        changes["landmarks_mediapipe"] = new_index[arrays.landmarks_mediapipe]
    if arrays.uv_triangles is not None:
        uv_tri = arrays.uv_triangles[tri_kept]
        used = np.unique(uv_tri)
        uv_index = np.full(len(arrays.uvs), -1, dtype=np.int64)
        uv_index[used] = np.arange(len(used))
        changes["uvs"], changes["uv_triangles"] = arrays.uvs[used], uv_index[uv_tri]
    if arrays.albedo_space == "vertex":
        for name in ("albedo_mean", "specular_mean", "roughness_mean"):
            value = getattr(arrays, name)
            if value is not None and value.shape[0] == v:
                changes[name] = value[keep]
        for name in ("albedo_basis", "specular_basis"):
            value = getattr(arrays, name)
            if value is not None:
                changes[name] = value[:, keep]
    return replace(arrays, **changes)


def read_mat(path: Path) -> dict[str, np.ndarray]:
    """Variables of a MATLAB ``.mat`` file (v5 through scipy, v7.3 through h5py).

    Raises:
        FaceModelFormatError: missing, truncated or not a ``.mat`` file.
    """
    import scipy.io

    require_file(path, "MATLAB file")
    try:
        return {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    except NotImplementedError:
        pass  # MATLAB v7.3 files are HDF5
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on foreign bytes
        raise FaceModelFormatError(path, f"not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e
    import h5py

    try:
        with h5py.File(path, "r") as f:
            # HDF5 stores MATLAB's column-major arrays transposed.
            return {k: np.asarray(f[k]).T for k in f if isinstance(f[k], h5py.Dataset)}
    except OSError as e:
        raise FaceModelFormatError(path, f"not a readable MATLAB v7.3 file ({e})") from e


def mat_variable(mat: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    """``mat[key]`` or :class:`FaceModelFormatError` naming the missing variable."""
    if key not in mat:
        raise FaceModelFormatError(path, f"variable {key!r} missing (has {sorted(mat)})")
    return np.asarray(mat[key])


_MAPPING_LINE = re.compile(r"^\s*(\d+)\s*=?\s*(\d+)\s*(?:[#;].*)?$")


def read_landmark_mapping(path: Path, num_vertices: int) -> np.ndarray:
    """iBUG-68 vertex indices from an eos landmark mapping (``ibug_to_sfm.txt`` and friends).

    Lines ``<ibug id 1..68> = <vertex index>`` (TOML) or ``<ibug id> <vertex index>`` (the
    older boost-info files); comments start with ``#`` or ``;``.

    Returns:
        ``(68,)`` int64 0-based vertex indices, -1 for points the mapping does not define.
    """
    require_file(path, "landmark mapping")
    out = np.full(68, -1, dtype=np.int64)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise FaceModelFormatError(path, f"cannot read ({e})") from e
    for line in lines:
        if line.strip().startswith("[contour") or line.strip().startswith("contour"):
            break  # the contour section lists iBUG ids only
        m = _MAPPING_LINE.match(line)
        if not m:
            continue
        ibug, vertex = int(m.group(1)), int(m.group(2))
        if not 1 <= ibug <= 68 or vertex >= num_vertices:
            raise FaceModelFormatError(path, f"mapping {ibug} -> {vertex} outside iBUG 1..68 / vertices "
                                             f"0..{num_vertices - 1}")
        out[ibug - 1] = vertex
    if (out < 0).all():
        raise FaceModelFormatError(path, "no '<ibug id> = <vertex>' lines: not a landmark mapping")
    return out
