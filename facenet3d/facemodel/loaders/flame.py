"""FLAME (``generic_model.pkl`` of FLAME 2017/2019/2020/2023), read without running pickled code.

``flame:<generic_model.pkl or its folder>``. The pickle is read by
:func:`~facenet3d.facemodel.loaders.restricted_pickle.load_restricted_pickle` (numpy arrays,
scipy sparse matrices and chumpy arrays as data; anything else refused). Keys used:

* ``v_template`` ``(V, 3)`` -> mean shape;
* ``shapedirs`` ``(V, 3, 300 + E)`` -> identity basis (first ``num_identity``, default 300)
  and expression basis (the rest, 100 in the released models); FLAME's coefficients are
  already standardised;
* ``posedirs`` ``(V, 3, 9 (J - 1))`` -> pose-corrective blend shapes driven by ``R - I`` of
  the non-root joints;
* ``J_regressor`` ``(J, V)`` (scipy sparse in the released files), ``weights`` ``(V, J)``,
  ``kintree_table`` ``(2, J)`` (first row: parent, ``2**32 - 1`` for the root) -> linear
  blend skinning through :func:`facenet3d.facemodel.lbs.lbs`; the 5 joints are ``global``
  (root), ``neck``, ``jaw``, ``left_eye``, ``right_eye``, and ``decode(pose=(B, 5, 3))``
  takes their axis-angle rotations;
* ``f`` ``(F, 3)`` -> triangles.

Units: FLAME is in **metres**; positions and blend shapes are scaled by 1000 to millimetres.
Axes: +y up, +z out of the face. FLAME's 68 landmarks are barycentric points defined in a
separate embedding file, not vertices, so ``landmarks68`` is all -1. FLAME has no albedo in
this file (its texture space is a separate download).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel.loaders.common import MM_PER_UNIT, orient_outward
from facenet3d.facemodel.loaders.restricted_pickle import load_restricted_pickle
from facenet3d.facemodel.model import FaceModelArrays, MorphableModel
from facenet3d.facemodel.registry import register_format

MODEL_FILE = "generic_model.pkl"
FLAME_JOINT_NAMES = ["global", "neck", "jaw", "left_eye", "right_eye"]
FLAME_NUM_IDENTITY = 300


@register_format("flame")
def load_flame(path: str | Path, num_identity: int = FLAME_NUM_IDENTITY) -> MorphableModel:
    """Load a FLAME ``generic_model.pkl``.

    Args:
        path: the ``.pkl`` or a folder holding ``generic_model.pkl``.
        num_identity: how many ``shapedirs`` columns are identity (shape) modes; the rest
            are expression modes.

    Returns:
        The articulated model in millimetres.

    Raises:
        FaceModelFormatError: missing file, refused pickle content, missing key or
            inconsistent shapes.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / MODEL_FILE
    data = load_restricted_pickle(path)
    if not isinstance(data, dict):
        raise FaceModelFormatError(path, f"the pickle holds a {type(data).__name__}, "
                                         "expected a dict of arrays")
    return MorphableModel(flame_arrays(data, path, num_identity), source=str(path))


def _array(data: dict, key: str, path: Path, ndim: int) -> np.ndarray:
    if key not in data:
        raise FaceModelFormatError(path, f"key {key!r} missing (has {sorted(map(str, data))})")
    value = data[key]
    if hasattr(value, "toarray"):  # scipy sparse
        value = value.toarray()
    value = np.asarray(value)
    if value.ndim != ndim or value.dtype.kind not in "fiu":
        raise FaceModelFormatError(path, f"{key} is a {value.ndim}-D {value.dtype} array, "
                                         f"expected {ndim}-D numbers")
    return value


def flame_arrays(data: dict, path: Path, num_identity: int = FLAME_NUM_IDENTITY) -> FaceModelArrays:
    """Container arrays (millimetres) from the unpickled FLAME dict."""
    scale = MM_PER_UNIT["m"]
    template = _array(data, "v_template", path, 2).astype(np.float64)
    v = template.shape[0]
    shapedirs = _array(data, "shapedirs", path, 3).astype(np.float64)
    posedirs = _array(data, "posedirs", path, 3).astype(np.float64)
    regressor = _array(data, "J_regressor", path, 2).astype(np.float64)
    weights = _array(data, "weights", path, 2).astype(np.float64)
    kintree = _array(data, "kintree_table", path, 2).astype(np.int64)
    faces = _array(data, "f", path, 2).astype(np.int64)
    j = regressor.shape[0]
    for key, arr, shape in (("v_template", template, (v, 3)), ("shapedirs", shapedirs, (v, 3, None)),
                            ("posedirs", posedirs, (v, 3, 9 * (j - 1))), ("J_regressor", regressor, (j, v)),
                            ("weights", weights, (v, j)), ("kintree_table", kintree, (2, j)),
                            ("f", faces, (None, 3))):
        if any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
            raise FaceModelFormatError(path, f"{key} has shape {arr.shape}, expected "
                                             f"{tuple('*' if s is None else s for s in shape)}")
    if faces.size and (faces.min() < 0 or faces.max() >= v):
        raise FaceModelFormatError(path, f"f indexes outside 0..{v - 1}")
    parents = kintree[0].copy()
    parents[(parents < 0) | (parents >= j)] = -1  # the root's parent is stored as 2**32 - 1
    if parents[0] != -1 or any(not 0 <= p < i for i, p in enumerate(parents[1:], start=1)):
        raise FaceModelFormatError(path, f"kintree_table parents {parents.tolist()} are not a tree rooted at "
                                         "joint 0 with parents before children")
    k_id = min(num_identity, shapedirs.shape[2])
    modes = np.moveaxis(shapedirs, 2, 0) * scale  # (K, V, 3)
    mean = template * scale
    triangles, flipped = orient_outward(mean, faces)
    return FaceModelArrays(
        mean_shape=mean,
        triangles=triangles,
        identity_basis=modes[:k_id],
        expression_basis=modes[k_id:],
        landmarks68=np.full(68, -1, dtype=np.int64),
        joint_regressor=regressor,
        parents=parents,
        skinning_weights=weights,
        pose_basis=np.moveaxis(posedirs, 2, 0) * scale,
        joint_names=FLAME_JOINT_NAMES if j == len(FLAME_JOINT_NAMES) else [f"joint{i}" for i in range(j)],
        metadata={
            "name": "FLAME",
            "source_format": "flame",
            "source": str(path),
            "source_units": "m",
            "license": "FLAME licence (registration at flame.is.tue.mpg.de)",
            "winding_flipped": flipped,
        },
    )
