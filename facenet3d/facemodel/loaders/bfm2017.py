"""Basel Face Model 2017/2019 (statismo ``.h5``), optionally with AlbedoMM's diffuse and specular albedo.

``bfm2017:<model.h5>`` (e.g. ``model2017-1_bfm_nomouth.h5``, ``model2017-1_face12_nomouth.h5``,
``model2019_*.h5``). Groups read, as h5py sees them:

* ``shape/model/mean`` ``(3V,)``, ``shape/model/pcaBasis`` ``(3V, K)`` (orthonormal
  columns), ``shape/model/pcaVariance`` ``(K,)`` (variances) -> identity basis
  ``pcaBasis * sqrt(pcaVariance)``;
* ``shape/representer/points`` ``(3, V)`` (vertex count check) and ``shape/representer/cells``
  ``(3, F)`` (0-based triangles);
* ``expression/model/...`` likewise -> expression basis; its mean is added to the shape
  mean, as statismo/eos do;
* ``color/model/...`` -> per-vertex albedo (values in ``[0, 1]``, camera RGB as captured).

``albedo=<AlbedoMM .h5>`` (``albedoModel2020_bfm_albedoPart.h5`` for the ``bfm`` mask,
``..._face12_albedoPart.h5`` for ``face12``) replaces the colour model by AlbedoMM's
``diffuseAlbedo/model/...`` and adds ``specularAlbedo/model/...`` as the specular space;
AlbedoMM is built in linear sRGB. Its vertex count must match the shape model's.

Units: the files are in **millimetres** (scale 1). Axes: +y up, +z out of the face.
Landmarks: an eos mapping such as ``ibug_to_bfm2017-1_bfm_nomouth.txt`` via
``landmarks=<path>``, otherwise -1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel.loaders.common import (
    MM_PER_UNIT,
    modes_from_columns,
    orient_outward,
    read_landmark_mapping,
    require_file,
    scale_modes,
)
from facenet3d.facemodel.model import FaceModelArrays, MorphableModel
from facenet3d.facemodel.registry import register_format


@register_format("bfm2017")
def load_bfm2017(path: str | Path, albedo: str | Path | None = None,
                 landmarks: str | Path | None = None) -> MorphableModel:
    """Load a BFM2017/2019 ``.h5`` model, optionally with an AlbedoMM ``.h5``.

    Args:
        path: the model ``.h5``.
        albedo: optional AlbedoMM ``.h5`` (diffuse + specular albedo).
        landmarks: optional eos iBUG-68 mapping file.

    Returns:
        The model in millimetres, per-vertex albedo when the files have colour.

    Raises:
        FaceModelFormatError: missing or non-HDF5 file, missing group, inconsistent sizes.
    """
    path = Path(path).expanduser()
    scale = MM_PER_UNIT["mm"]
    with _open_h5(path) as f:
        mean = _dataset(f, "shape/model/mean", path).reshape(-1)
        if mean.size % 3:
            raise FaceModelFormatError(path, f"shape/model/mean has {mean.size} values, not a multiple of 3")
        v = mean.size // 3
        points = _dataset(f, "shape/representer/points", path)
        if points.size != 3 * v:
            raise FaceModelFormatError(path, f"representer has {points.size // 3} points, the mean {v}")
        triangles = _cells(_dataset(f, "shape/representer/cells", path), v, path)
        identity = _pca(f, "shape", v, path) * scale
        expression = np.zeros((0, v, 3))
        if "expression" in f:
            expression = _pca(f, "expression", v, path) * scale
            mean = mean + _dataset(f, "expression/model/mean", path).reshape(-1)
        colour = {}
        if "color" in f and albedo is None:
            colour = {"albedo_mean": _mean(f, "color", v, path), "albedo_basis": _pca(f, "color", v, path)}
    if albedo is not None:
        colour = _albedo_mm(Path(albedo).expanduser(), v)
    mean_mm = mean.reshape(v, 3) * scale
    triangles, flipped = orient_outward(mean_mm, triangles)
    arrays = FaceModelArrays(
        mean_shape=mean_mm,
        triangles=triangles,
        identity_basis=identity,
        expression_basis=expression,
        landmarks68=(np.full(68, -1, dtype=np.int64) if landmarks is None
                     else read_landmark_mapping(Path(landmarks).expanduser(), v)),
        albedo_space="vertex" if colour else "none",
        metadata={
            "name": f"BFM ({path.stem})",
            "source_format": "bfm2017",
            "source": str(path),
            "source_units": "mm",
            "albedo_source": None if albedo is None else str(albedo),
            "license": "Basel Face Model licence (registration at faces.dmi.unibas.ch)",
            "winding_flipped": flipped,
        },
        **colour,
    )
    return MorphableModel(arrays, source=str(path))


def _open_h5(path: Path):
    import h5py

    require_file(path, "HDF5 model")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise FaceModelFormatError(path, f"not a readable HDF5 file ({e})") from e


def _dataset(f, key: str, path: Path, dtype: type = np.float64) -> np.ndarray:
    if key not in f:
        raise FaceModelFormatError(path, f"HDF5 dataset {key!r} missing")
    try:
        return np.asarray(f[key], dtype=dtype)
    except (OSError, TypeError, ValueError) as e:
        raise FaceModelFormatError(path, f"cannot read {key!r} ({e})") from e


def _mean(f, group: str, v: int, path: Path) -> np.ndarray:
    mean = _dataset(f, f"{group}/model/mean", path).reshape(-1)
    if mean.size != 3 * v:
        raise FaceModelFormatError(path, f"{group}/model/mean has {mean.size} values, expected {3 * v}")
    return mean.reshape(v, 3)


def _pca(f, group: str, v: int, path: Path) -> np.ndarray:
    """Standardised ``(K, V, 3)`` basis of a statismo PCA group (``pcaBasis * sqrt(pcaVariance)``)."""
    basis = _dataset(f, f"{group}/model/pcaBasis", path, np.float32)  # the largest array: no float64 copy
    if basis.ndim == 2 and basis.shape[0] != 3 * v and basis.shape[1] == 3 * v:
        basis = basis.T  # tolerate (K, 3V) writers
    variance = _dataset(f, f"{group}/model/pcaVariance", path).reshape(-1)
    if (variance < 0).any():
        raise FaceModelFormatError(path, f"{group}/model/pcaVariance has negative variances")
    return scale_modes(modes_from_columns(basis, v, path, f"{group}/model/pcaBasis"), np.sqrt(variance), 1.0,
                       path, f"{group}/model/pcaVariance")


def _cells(cells: np.ndarray, v: int, path: Path) -> np.ndarray:
    if cells.ndim != 2 or 3 not in cells.shape:
        raise FaceModelFormatError(path, f"representer cells have shape {cells.shape}, expected (3, F)")
    tri = np.rint(cells if cells.shape[0] != 3 else cells.T).astype(np.int64)
    if tri.size and tri.min() >= 1 and tri.max() == v:
        tri = tri - 1  # a 1-based writer: index V is impossible 0-based
    if tri.size and (tri.min() < 0 or tri.max() >= v):
        raise FaceModelFormatError(path, f"representer cells index outside 0..{v - 1}")
    return tri


def _albedo_mm(path: Path, v: int) -> dict[str, np.ndarray]:
    """AlbedoMM's diffuse and specular spaces as container fields."""
    with _open_h5(path) as f:
        out = {"albedo_mean": _mean(f, "diffuseAlbedo", v, path),
               "albedo_basis": _pca(f, "diffuseAlbedo", v, path)}
        if "specularAlbedo" in f:
            out["specular_mean"] = _mean(f, "specularAlbedo", v, path)
            out["specular_basis"] = _pca(f, "specularAlbedo", v, path)
    return out
