"""Basel Face Model 2009: ``01_MorphableModel.mat`` and Deep3DFaceRecon's ``BFM_model_front.mat``.

``bfm2009:<file or folder>``. A folder is searched for ``BFM_model_front.mat`` first (the
cropped model with expressions that Deep3DFaceRecon and its descendants use), then
``01_MorphableModel.mat``.

**Deep3DFaceRecon's ``BFM_model_front.mat``** (35,709 vertices): ``meanshape`` ``(1, 3V)``,
``idBase`` ``(3V, 80)``, ``exBase`` ``(3V, 64)``, ``meantex`` ``(1, 3V)``, ``texBase``
``(3V, 80)``, ``tri`` ``(F, 3)`` 1-based, ``keypoints`` ``(1, 68)`` 1-based iBUG vertices,
``frontmask2_idx`` (1-based) and ``skinmask`` -> regions ``front`` and ``skin``;
``point_buf`` (triangle adjacency) is not needed. Its bases are already multiplied by the
PCA standard deviations and divided by 1e5, so lengths are in **decimetres** (x100 to mm).

**Original ``01_MorphableModel.mat``** (53,490 vertices): ``shapeMU`` ``(3V, 1)``, ``shapePC``
``(3V, 199)``, ``shapeEV`` ``(199, 1)`` (standard deviations), ``texMU``/``texPC``/``texEV``,
``tl`` ``(F, 3)`` 1-based (clockwise; reoriented). Lengths are in **micrometres** (x1e-3 to
mm). It has no expressions: when ``Exp_Pca.bin`` (Guo et al.'s FaceWarehouse expression
basis, distributed with 3DDFA/Deep3DFaceRecon) lies beside it, together with
``std_exp.txt`` (standard deviations) and ``BFM_exp_idx.mat`` (``trimIndex``: the 1-based
BFM vertex of each of its vertices), the expression basis is added; vertices outside
``trimIndex`` (ears, neck) get no expression motion. ``Exp_Pca.bin`` is little-endian:
``int32 K``, ``float32 mean[3n]``, ``float32 modes[K][3n]`` (``n`` = 53,215 vertices, same
micrometre units as ``shapePC``). As in Deep3DFaceRecon, its mean expression is not added.

Landmarks: Deep3DFaceRecon's ``keypoints``; for the original file an eos mapping such as
``ibug_to_bfm.txt`` via ``landmarks=<path>`` (otherwise -1). Colours (0..255) are divided by
255 into per-vertex albedo; BFM2009 colours are camera RGB as captured, not linearised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel.loaders.common import (
    MM_PER_UNIT,
    mat_variable,
    modes_from_columns,
    one_based_triangles,
    orient_outward,
    read_landmark_mapping,
    read_mat,
    require_file,
    scale_modes,
)
from facenet3d.facemodel.model import FaceModelArrays, MorphableModel
from facenet3d.facemodel.registry import register_format

FRONT_FILE = "BFM_model_front.mat"
ORIGINAL_FILE = "01_MorphableModel.mat"
EXPRESSION_FILE = "Exp_Pca.bin"
EXPRESSION_STD_FILE = "std_exp.txt"
EXPRESSION_INDEX_FILE = "BFM_exp_idx.mat"


@register_format("bfm2009")
def load_bfm2009(path: str | Path, landmarks: str | Path | None = None,
                 expressions: bool = True) -> MorphableModel:
    """Load BFM2009 from ``01_MorphableModel.mat`` (+ ``Exp_Pca.bin``) or ``BFM_model_front.mat``.

    Args:
        path: a ``.mat`` file or a folder holding one.
        landmarks: optional eos iBUG-68 mapping file (``ibug_to_bfm.txt``), overriding the
            file's own keypoints.
        expressions: for ``01_MorphableModel.mat``, add ``Exp_Pca.bin`` when it lies beside it.

    Returns:
        The model in millimetres, per-vertex albedo.

    Raises:
        FaceModelFormatError: missing file or variable, inconsistent sizes.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = [path / FRONT_FILE, path / ORIGINAL_FILE]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    mat = read_mat(path)
    if "meanshape" in mat:
        arrays = _front_arrays(mat, path)
    elif "shapeMU" in mat:
        arrays = _original_arrays(mat, path, expressions)
    else:
        raise FaceModelFormatError(path, "neither 'meanshape' (BFM_model_front.mat) nor 'shapeMU' "
                                         "(01_MorphableModel.mat): not a BFM2009 file "
                                         f"(variables {sorted(mat)})")
    if landmarks is not None:
        arrays.landmarks68 = read_landmark_mapping(Path(landmarks).expanduser(), arrays.mean_shape.shape[0])
    return MorphableModel(arrays, source=str(path))


def _mean(mat: dict, key: str, path: Path) -> np.ndarray:
    flat = mat_variable(mat, key, path).astype(np.float64).reshape(-1)
    if flat.size % 3:
        raise FaceModelFormatError(path, f"{key} has {flat.size} values, not a multiple of 3")
    return flat.reshape(-1, 3)


def _finish(mean_mm: np.ndarray, tri: np.ndarray, path: Path, **fields) -> FaceModelArrays:
    triangles, flipped = orient_outward(mean_mm, tri)
    fields.setdefault("landmarks68", np.full(68, -1, dtype=np.int64))
    fields["metadata"] = {**fields.get("metadata", {}), "source": str(path), "winding_flipped": flipped,
                          "license": "Basel Face Model licence (registration at faces.dmi.unibas.ch)"}
    return FaceModelArrays(mean_shape=mean_mm, triangles=triangles, albedo_space="vertex", **fields)


def _front_arrays(mat: dict, path: Path) -> FaceModelArrays:
    scale = MM_PER_UNIT["dm"]  # Deep3DFaceRecon divided the micrometre model by 1e5
    mean = _mean(mat, "meanshape", path)
    v = mean.shape[0]
    keypoints = mat_variable(mat, "keypoints", path).reshape(-1).astype(np.int64) - 1
    if keypoints.shape != (68,) or keypoints.min() < 0 or keypoints.max() >= v:
        raise FaceModelFormatError(path, f"keypoints must be 68 1-based vertex indices in 1..{v}")
    regions = {}
    if "skinmask" in mat:
        skin = np.asarray(mat["skinmask"]).reshape(-1)
        if skin.shape == (v,):
            regions["skin"] = skin > 0
    if "frontmask2_idx" in mat:
        front = np.asarray(mat["frontmask2_idx"]).reshape(-1).astype(np.int64) - 1
        if front.size and front.min() >= 0 and front.max() < v:
            regions["front"] = np.zeros(v, dtype=bool)
            regions["front"][front] = True
    texture = {}
    if "meantex" in mat:
        texture = {
            "albedo_mean": _mean(mat, "meantex", path) / 255.0,
            "albedo_basis": modes_from_columns(mat_variable(mat, "texBase", path), v, path, "texBase") / 255,
        }
    return _finish(
        mean * scale,
        one_based_triangles(mat_variable(mat, "tri", path), v, path),
        path,
        identity_basis=modes_from_columns(mat_variable(mat, "idBase", path), v, path, "idBase") * scale,
        expression_basis=modes_from_columns(mat_variable(mat, "exBase", path), v, path, "exBase") * scale,
        landmarks68=keypoints,
        regions=regions,
        metadata={"name": "BFM2009 (Deep3DFaceRecon front)", "source_format": "bfm2009",
                  "source_units": "dm"},
        **texture,
    )


def _original_arrays(mat: dict, path: Path, expressions: bool) -> FaceModelArrays:
    scale = MM_PER_UNIT["um"]
    mean = _mean(mat, "shapeMU", path)
    v = mean.shape[0]
    identity = scale_modes(modes_from_columns(mat_variable(mat, "shapePC", path), v, path, "shapePC"),
                           mat_variable(mat, "shapeEV", path), scale, path, "shapeEV")
    texture = {}
    if "texMU" in mat:
        texture = {
            "albedo_mean": _mean(mat, "texMU", path) / 255.0,
            "albedo_basis": scale_modes(
                modes_from_columns(mat_variable(mat, "texPC", path), v, path, "texPC"),
                mat_variable(mat, "texEV", path), 1 / 255.0, path, "texEV"),
        }
    expression = np.zeros((0, v, 3))
    exp_path = path.parent / EXPRESSION_FILE
    if expressions and exp_path.is_file():
        expression = _guo_expressions(exp_path, v) * scale
    return _finish(
        mean * scale,
        one_based_triangles(mat_variable(mat, "tl", path), v, path),
        path,
        identity_basis=identity,
        expression_basis=expression,
        metadata={"name": "BFM2009", "source_format": "bfm2009", "source_units": "um",
                  "expression_source": str(exp_path) if expression.shape[0] else None},
        **texture,
    )


def read_exp_pca(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``Exp_Pca.bin``: ``(n, 3)`` mean and ``(K, n, 3)`` unit-norm modes, source units.

    The vertex count ``n`` follows from the file size (``4 + 4 * 3n * (K + 1)`` bytes).
    """
    raw = require_file(path, "expression basis").read_bytes()
    if len(raw) < 4:
        raise FaceModelFormatError(path, f"truncated: {len(raw)} bytes")
    k = int(np.frombuffer(raw, dtype="<i4", count=1)[0])
    payload = len(raw) - 4
    if k <= 0 or payload % (12 * (k + 1)):
        raise FaceModelFormatError(path, f"{len(raw)} bytes do not hold {k} expression modes of 3n float32 "
                                         "(int32 K, float32 mean[3n], float32 modes[K][3n])")
    n = payload // (12 * (k + 1))
    values = np.frombuffer(raw, dtype="<f4", offset=4).astype(np.float64)
    return values[: 3 * n].reshape(n, 3), values[3 * n:].reshape(k, n, 3)


def _guo_expressions(exp_path: Path, num_vertices: int) -> np.ndarray:
    """Standardised ``(K, V, 3)`` expression basis on the full BFM (zero outside ``trimIndex``), um."""
    _, modes = read_exp_pca(exp_path)
    std_path = require_file(exp_path.parent / EXPRESSION_STD_FILE, "expression standard deviations")
    try:
        std = np.loadtxt(std_path, dtype=np.float64).reshape(-1)
    except ValueError as e:
        raise FaceModelFormatError(std_path, f"not a list of numbers ({e})") from e
    index_path = exp_path.parent / EXPRESSION_INDEX_FILE
    trim = mat_variable(read_mat(index_path), "trimIndex", index_path).reshape(-1).astype(np.int64) - 1
    if trim.shape[0] != modes.shape[1]:
        raise FaceModelFormatError(index_path, f"trimIndex has {trim.shape[0]} entries, {exp_path.name} has "
                                               f"{modes.shape[1]} vertices")
    if trim.min() < 0 or trim.max() >= num_vertices:
        raise FaceModelFormatError(index_path, f"trimIndex outside 1..{num_vertices}")
    basis = np.zeros((modes.shape[0], num_vertices, 3), dtype=np.float32)
    basis[:, trim] = scale_modes(modes, std, 1.0, std_path, "std_exp.txt")
    return basis
