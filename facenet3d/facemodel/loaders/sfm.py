"""The Surrey Face Model / eos morphable model (``sfm_shape_3448.bin`` and other eos ``.bin`` models).

``sfm:<model.bin>``. The file is a cereal binary archive (little-endian, no header) of
``eos::morphablemodel::MorphableModel``:

* ``uint32`` class version (1..4);
* shape ``PcaModel`` then colour ``PcaModel``, each: ``mean``, ``orthonormal_pca_basis``,
  ``eigenvalues`` (Eigen matrices: ``int32 rows``, ``int32 cols``, column-major ``float32``
  data) and ``triangle_list`` (``uint64 n``, ``n x 3 int32``); eigenvalues are variances,
  so the basis is standardised with their square roots;
* version >= 2: optional expression model (``bool nullopt``; if present ``int32`` variant
  index, 0 = ``PcaModel``, 1 = blendshapes: ``uint64 n``, each ``std::string`` name
  (``uint64`` length + bytes) and an Eigen vector);
* version >= 3: optional landmark definitions (``bool nullopt``; ``uint64 n`` pairs of
  ``std::string`` and ``int32`` vertex index);
* ``texture_coordinates`` (``uint64 n``, ``n x 2 float64``, origin top-left, converted to
  the OBJ convention ``v -> 1 - v``);
* version 4: ``texture_triangle_indices`` (``uint64 n``, ``n x 3 int32``).

Expression blendshapes shipped separately (``expression_blendshapes_3448.bin``: a cereal
``std::vector<Blendshape>``) are read from ``blendshapes=<path>``, or found beside the model
by its vertex count; their coefficients are blendshape weights. A PCA expression model's
mean is added to the shape mean, as eos does.

Units: **millimetres** (scale 1). Landmarks: ``landmarks=<ibug_to_sfm.txt>`` (eos mapping),
else ``ibug_to_sfm.txt`` beside the model, else the model's own definitions when they are
named by iBUG number; -1 where undefined. Colour models are per-vertex RGB in ``[0, 1]``.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel.loaders.common import (
    MM_PER_UNIT,
    orient_outward,
    read_landmark_mapping,
    require_file,
    scale_modes,
)
from facenet3d.facemodel.model import FaceModelArrays, MorphableModel
from facenet3d.facemodel.registry import register_format

LANDMARK_FILE = "ibug_to_sfm.txt"
_MAX_COUNT = 1 << 31  # sanity bound on element counts read from the file


class CerealReader:
    """Sequential reader of a cereal binary archive with bounds checks naming the file."""

    def __init__(self, data: bytes, source: Path):
        self.data = data
        self.pos = 0
        self.source = source

    def _take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FaceModelFormatError(self.source, f"truncated: {what} needs {n} bytes at offset "
                                                    f"{self.pos}, file has {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self._take(struct.calcsize(fmt), what))[0]

    def count(self, what: str) -> int:
        n = self.scalar("Q", what)
        if n > _MAX_COUNT:
            raise FaceModelFormatError(self.source, f"implausible {what} count {n} at offset {self.pos - 8}")
        return n

    def boolean(self, what: str) -> bool:
        value = self.scalar("B", what)
        if value > 1:
            raise FaceModelFormatError(self.source, f"{what} flag is {value}, expected 0 or 1")
        return bool(value)

    def string(self, what: str) -> str:
        return self._take(self.count(what), what).decode("utf-8", errors="replace")

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(self._take(count * itemsize, what), dtype=dtype).copy()

    def eigen(self, what: str) -> np.ndarray:
        """An ``Eigen::MatrixXf``/``VectorXf`` as a ``(rows, cols)`` float64 array."""
        rows, cols = self.scalar("i", what), self.scalar("i", what)
        if rows < 0 or cols < 0 or rows * cols > _MAX_COUNT:
            raise FaceModelFormatError(self.source, f"{what} has impossible size {rows} x {cols}")
        # Eigen's default storage is column-major.
        return self.array("<f4", rows * cols, what).astype(np.float64).reshape(cols, rows).T

    def triangles(self, what: str) -> np.ndarray:
        return self.array("<i4", 3 * self.count(what), what).astype(np.int64).reshape(-1, 3)


def _pca(reader: CerealReader, what: str) -> dict[str, np.ndarray]:
    mean = reader.eigen(f"{what} mean").reshape(-1)
    basis = reader.eigen(f"{what} basis")
    eigenvalues = reader.eigen(f"{what} eigenvalues").reshape(-1)
    triangles = reader.triangles(f"{what} triangle list")
    if mean.size and (basis.shape[0] != mean.size or eigenvalues.size != basis.shape[1] or mean.size % 3):
        raise FaceModelFormatError(reader.source, f"{what}: mean of {mean.size}, basis {basis.shape}, "
                                                  f"{eigenvalues.size} eigenvalues do not agree")
    if (eigenvalues < 0).any():
        raise FaceModelFormatError(reader.source, f"{what}: negative eigenvalues (they are variances)")
    v = mean.size // 3
    modes = basis.T.reshape(basis.shape[1], v, 3) if mean.size else np.zeros((0, 0, 3))
    modes = scale_modes(modes, np.sqrt(eigenvalues), 1.0, reader.source, what)
    return {"mean": mean.reshape(v, 3), "modes": modes, "triangles": triangles}


def _blendshapes(reader: CerealReader, what: str) -> tuple[list[str], np.ndarray]:
    names, shapes = [], []
    for _ in range(reader.count(what)):
        names.append(reader.string(f"{what} name"))
        shapes.append(reader.eigen(f"{what} deformation").reshape(-1))
    if len({s.size for s in shapes}) > 1 or (shapes and shapes[0].size % 3):
        raise FaceModelFormatError(reader.source, f"{what}: deformations of different or non-xyz lengths")
    return names, (np.stack(shapes).reshape(len(shapes), -1, 3) if shapes else np.zeros((0, 0, 3)))


def read_eos_blendshapes(path: Path) -> tuple[list[str], np.ndarray]:
    """An eos blendshapes file: names and ``(K, V, 3)`` deformations (model units)."""
    reader = CerealReader(require_file(path, "blendshapes file").read_bytes(), path)
    out = _blendshapes(reader, "blendshapes")
    _expect_end(reader)
    return out


def _expect_end(reader: CerealReader) -> None:
    if reader.pos != len(reader.data):
        raise FaceModelFormatError(reader.source, f"{len(reader.data) - reader.pos} unexpected bytes after "
                                                  f"the data at offset {reader.pos}: not this format or a "
                                                  "newer version")


@register_format("sfm")
def load_sfm(path: str | Path, blendshapes: str | Path | None = None,
             landmarks: str | Path | None = None) -> MorphableModel:
    """Load an eos / Surrey Face Model ``.bin``.

    Args:
        path: the model ``.bin`` (e.g. ``sfm_shape_3448.bin``).
        blendshapes: optional eos blendshapes ``.bin`` used as the expression basis when
            the model has no expression model of its own.
        landmarks: optional eos iBUG-68 mapping (``ibug_to_sfm.txt``).

    Returns:
        The model in millimetres.

    Raises:
        FaceModelFormatError: missing, truncated or foreign file, unknown version.
    """
    path = Path(path).expanduser()
    reader = CerealReader(require_file(path, "eos model").read_bytes(), path)
    version = reader.scalar("I", "class version")
    if not 1 <= version <= 4:
        raise FaceModelFormatError(path, f"eos MorphableModel version {version}; this reader knows 1..4 (the "
                                         "pre-2017 cv::Mat format is not supported: re-download the model)")
    shape = _pca(reader, "shape model")
    colour = _pca(reader, "colour model")
    v = shape["mean"].shape[0]
    if v == 0:
        raise FaceModelFormatError(path, "the shape model is empty")
    expression_names: list[str] = []
    expression = np.zeros((0, v, 3))
    expression_mean = np.zeros((v, 3))
    if version >= 2 and not reader.boolean("expression model nullopt"):
        index = reader.scalar("i", "expression model variant index")
        if index == 0:
            pca = _pca(reader, "expression model")
            expression, expression_mean = pca["modes"], pca["mean"]
        elif index == 1:
            expression_names, expression = _blendshapes(reader, "expression blendshapes")
        else:
            raise FaceModelFormatError(path, f"expression model variant index {index}, expected 0 or 1")
    definitions: dict[str, int] = {}
    if version >= 3 and not reader.boolean("landmark definitions nullopt"):
        for _ in range(reader.count("landmark definitions")):
            name = reader.string("landmark name")
            definitions[name] = reader.scalar("i", "landmark vertex")
    uvs = reader.array("<f8", 2 * reader.count("texture coordinates"), "texture coordinates").reshape(-1, 2)
    uv_triangles = reader.triangles("texture triangles") if version >= 4 else np.zeros((0, 3), dtype=np.int64)
    _expect_end(reader)

    if blendshapes is not None or expression.shape[0] == 0:
        # Separate blendshapes: given (they replace the model's own expressions) or beside the file.
        expression_names, expression = _separate_blendshapes(path, blendshapes, v)
        expression_mean = np.zeros((v, 3))
    if expression.shape[1:] != (v, 3) or expression_mean.shape != (v, 3):
        raise FaceModelFormatError(path, f"expression model has {expression.shape[1]} vertices, "
                                         f"shape model {v}")
    scale = MM_PER_UNIT["mm"]
    mean_mm = (shape["mean"] + expression_mean) * scale
    triangles, flipped = orient_outward(mean_mm, _checked(shape["triangles"], v, path, "shape triangles"))
    arrays = FaceModelArrays(
        mean_shape=mean_mm,
        triangles=triangles,
        identity_basis=shape["modes"] * scale,
        expression_basis=expression * scale,
        expression_names=expression_names,
        landmarks68=_landmarks(path, landmarks, definitions, v),
        metadata={"name": f"eos model ({path.stem})", "source_format": "sfm", "source": str(path),
                  "source_units": "mm", "eos_version": version, "winding_flipped": flipped,
                  "license": "Surrey Face Model licence (the shape-only 3448 model ships with eos, "
                             "Apache-2.0)"},
        **_texture(uvs, uv_triangles, triangles, flipped, v, path),
        **_colour(colour, v, path),
    )
    return MorphableModel(arrays, source=str(path))


def _checked(tri: np.ndarray, count: int, path: Path, what: str) -> np.ndarray:
    if tri.size and (tri.min() < 0 or tri.max() >= count):
        raise FaceModelFormatError(path, f"{what} index outside 0..{count - 1}")
    return tri


def _separate_blendshapes(path: Path, blendshapes: str | Path | None, v: int) -> tuple[list[str], np.ndarray]:
    if blendshapes is None:
        sibling = path.with_name(f"expression_blendshapes_{v}.bin")
        if not sibling.is_file():
            return [], np.zeros((0, v, 3))
        blendshapes = sibling
    return read_eos_blendshapes(Path(blendshapes).expanduser())


def _landmarks(path: Path, mapping: str | Path | None, definitions: dict[str, int], v: int) -> np.ndarray:
    if mapping is not None:
        return read_landmark_mapping(Path(mapping).expanduser(), v)
    if (path.parent / LANDMARK_FILE).is_file():
        return read_landmark_mapping(path.parent / LANDMARK_FILE, v)
    out = np.full(68, -1, dtype=np.int64)
    for name, vertex in definitions.items():
        if re.fullmatch(r"\d+", name) and 1 <= int(name) <= 68 and 0 <= vertex < v:
            out[int(name) - 1] = vertex
    return out


def _texture(uvs: np.ndarray, uv_triangles: np.ndarray, triangles: np.ndarray, flipped: bool, v: int,
             path: Path) -> dict[str, np.ndarray]:
    if not len(uvs):
        return {}
    uvs = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1)  # eos: origin top-left; container: OBJ
    if len(uv_triangles):
        uv_tri = _checked(uv_triangles, len(uvs), path, "texture triangles")
        uv_tri = uv_tri[:, ::-1].copy() if flipped else uv_tri
    elif len(uvs) == v:
        uv_tri = triangles  # one texture coordinate per vertex
    else:
        raise FaceModelFormatError(path, f"{len(uvs)} texture coordinates for {v} vertices and no "
                                         "texture triangles")
    if uv_tri.shape != triangles.shape:
        raise FaceModelFormatError(path, f"{len(uv_tri)} texture triangles for {len(triangles)} triangles")
    return {"uvs": uvs, "uv_triangles": uv_tri}


def _colour(colour: dict[str, np.ndarray], v: int, path: Path) -> dict:
    if colour["mean"].size == 0:
        return {}
    if colour["mean"].shape != (v, 3):
        raise FaceModelFormatError(path, f"colour model has {colour['mean'].shape[0]} vertices, "
                                         f"shape model {v}")
    return {"albedo_space": "vertex", "albedo_mean": colour["mean"], "albedo_basis": colour["modes"]}
