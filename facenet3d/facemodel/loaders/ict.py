"""ICT-FaceKit ("ICT Face Model Light") read from its original files.

``ict:<folder>`` where ``<folder>`` holds ``FaceXModel/`` exactly as downloaded (or is
``FaceXModel/`` itself):

* ``generic_neutral_mesh.obj`` -> mean shape, triangles (each quad split into two triangles
  with the quad's counter-clockwise winding, along the diagonal that keeps both facing like
  the quad; see :func:`~facenet3d.facemodel.loaders.obj.triangulate`), texture coordinates
  (``uvs`` + ``uv_triangles`` split the same way, OBJ convention, origin bottom-left);
* ``identity000.obj`` ... ``identity099.obj`` -> identity mode ``k`` is
  ``identityNNN.obj - generic_neutral_mesh.obj`` (100 modes, coefficients used as given);
* the 53 ARKit-named shapes listed in ``vertex_indices.json["expressions"]`` -> expression
  mode ``<name>.obj - generic_neutral_mesh.obj``, coefficients are blendshape weights in
  ``[0, 1]``, ``expression_names`` in the file's order;
* ``vertex_indices.json["idx_to_landmark_verts"]`` -> the 68 Multi-PIE (iBUG) landmarks;
  ``idx_to_fitting_verts`` / ``idx_to_rigid_verts`` -> regions ``fitting`` / ``rigid``.

The four further OBJs of the download (``cheekRaiser_L/R``, ``PupilDilate_L/R``) are not in
ICT's expression list, are not ARKit shapes and are not used by ICT's own fitting; they are
left out so that expression coefficients map one-to-one to ARKit blendshape weights.
``extra_expressions=True`` appends them (and any other unlisted shape OBJ), sorted by name.

Units: the files are in **centimetres**; everything is scaled by 10 to millimetres. Axes are
already facenet3d's (+y up, +z out of the face).

Regions (vertex ranges from the tables of ICT-FaceKit's README, left/right as named there):
``face`` (0..9408), ``narrow_face`` (0..6705), ``head_neck``, ``mouth_socket``,
``gums_tongue``, ``teeth``, ``eye_socket_*``, ``eyeball_*`` (``sclera_*`` + ``iris_*``),
``lacrimal_fluid_*``, ``eye_blend_*``, ``eye_occlusion_*``, ``eyelashes_*``, and the unions
``skin`` (face + head and neck), ``eyes`` (both eyeballs) and ``mouth`` (socket, gums,
tongue, teeth).
``region=<name>`` keeps only that region's vertices and the triangles entirely inside it
(``region="face"``: 9,409 vertices).

Parsing the 154 OBJs used takes a few seconds; the parsed model is cached as a native ``.npz``
under ``$FACENET3D_CACHE/ict/`` (default ``~/.cache/facenet3d``), keyed by the folder and
the size and modification time of every file in it, so a later load takes well under a
second. Nothing is written into the user's folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from facenet3d.errors import FaceModelFormatError
from facenet3d.facemodel.loaders.common import (
    MM_PER_UNIT,
    default_cache_dir,
    orient_outward,
    require_file,
    select_vertices,
)
from facenet3d.facemodel.loaders.obj import read_obj_mesh, read_obj_vertices
from facenet3d.facemodel.model import FaceModelArrays, MorphableModel
from facenet3d.facemodel.native import read_face_model_arrays, save_face_model
from facenet3d.facemodel.registry import register_format

ICT_NUM_VERTICES = 26719
NEUTRAL_FILE = "generic_neutral_mesh.obj"
INDICES_FILE = "vertex_indices.json"
_IDENTITY_FILE = re.compile(r"^identity(\d+)\.obj$")
# Bump when the parsed arrays change, so stale caches are not reused.
_CACHE_VERSION = 2

#: Inclusive vertex ranges of the mesh parts, from the tables of ICT-FaceKit's README.
ICT_PARTS: dict[str, tuple[int, int]] = {
    "face": (0, 9408),
    "narrow_face": (0, 6705),
    "head_neck": (9409, 11247),
    "mouth_socket": (11248, 13293),
    "eye_socket_left": (13294, 13677),
    "eye_socket_right": (13678, 14061),
    "gums_tongue": (14062, 17038),
    "teeth": (17039, 21450),
    "eyeball_left": (21451, 23020),
    "sclera_left": (21451, 22220),
    "iris_left": (22221, 23020),
    "eyeball_right": (23021, 24590),
    "sclera_right": (23021, 23790),
    "iris_right": (23791, 24590),
    "lacrimal_fluid_left": (24591, 24794),
    "lacrimal_fluid_right": (24795, 24998),
    "eye_blend_left": (24999, 25022),
    "eye_blend_right": (25023, 25046),
    "eye_occlusion_left": (25047, 25198),
    "eye_occlusion_right": (25199, 25350),
    "eyelashes_left": (25351, 26034),
    "eyelashes_right": (26035, 26718),
}
ICT_UNIONS: dict[str, tuple[str, ...]] = {
    "skin": ("face", "head_neck"),
    "eyes": ("eyeball_left", "eyeball_right"),
    "mouth": ("mouth_socket", "gums_tongue", "teeth"),
}


@register_format("ict")
def load_ict(path: str | Path, region: str = "full", extra_expressions: bool = False,
             cache: bool | str | Path = True) -> MorphableModel:
    """Load ICT-FaceKit from its original files.

    Args:
        path: folder holding ``FaceXModel/`` (or ``FaceXModel/`` itself).
        region: ``"full"`` (26,719 vertices) or a region name, e.g. ``"face"`` (9,409
            vertices) or ``"narrow_face"``.
        extra_expressions: append the shape OBJs that ``vertex_indices.json`` does not list
            (``cheekRaiser_L/R``, ``PupilDilate_L/R``) to the 53 ARKit expressions.
        cache: True for the default cache folder, False for none, or a folder.

    Returns:
        The model, millimetres.

    Raises:
        FaceModelFormatError: not an ICT-FaceKit folder, a missing or inconsistent file.
    """
    arrays = read_ict_arrays(path, extra_expressions=extra_expressions, cache=cache)
    if region != "full":
        if region not in arrays.regions:
            raise FaceModelFormatError(path, f"unknown region {region!r}; choose 'full' or one of "
                                             f"{sorted(arrays.regions)}")
        arrays = select_vertices(arrays, arrays.regions[region])
        arrays = replace(arrays, metadata={**arrays.metadata, "region": region})
    return MorphableModel(arrays, source=str(path))


def model_folder(path: str | Path) -> Path:
    """The ``FaceXModel`` folder of an ICT-FaceKit download."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FaceModelFormatError(path, "folder not found")
    for folder in (path / "FaceXModel", path):
        if (folder / NEUTRAL_FILE).exists() or (folder / INDICES_FILE).exists():
            return folder
    raise FaceModelFormatError(path, f"no FaceXModel/{NEUTRAL_FILE}: not an ICT-FaceKit folder")


def read_ict_arrays(path: str | Path, extra_expressions: bool = False,
                    cache: bool | str | Path = True) -> FaceModelArrays:
    """The full ICT-FaceKit model as arrays (float32, millimetres), through the cache."""
    folder = model_folder(path)
    indices = _read_indices(folder)
    expressions = list(indices["expressions"])
    if extra_expressions:
        expressions += _unlisted_shapes(folder, expressions)
    identity_files = _identity_files(folder)
    files = [folder / NEUTRAL_FILE, *identity_files, *(folder / f"{n}.obj" for n in expressions)]
    for f in files:  # fail fast, before minutes of parsing, naming the missing file
        require_file(f, "ICT-FaceKit OBJ")

    cache_file = _cache_file(folder, extra_expressions, cache)
    if cache_file is not None and cache_file.is_file():
        try:
            return read_face_model_arrays(cache_file)
        except FaceModelFormatError:
            pass  # a damaged cache entry is rebuilt below
    arrays = _parse(folder, indices, identity_files, expressions)
    if cache_file is not None:
        try:
            save_face_model(arrays, cache_file)
        except OSError:
            pass  # a read-only cache folder only costs speed
    return arrays


def _read_indices(folder: Path) -> dict:
    path = require_file(folder / INDICES_FILE, "ICT-FaceKit index file")
    try:
        indices = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FaceModelFormatError(path, f"not valid JSON ({e})") from e
    for key in ("expressions", "idx_to_landmark_verts"):
        if key not in indices:
            raise FaceModelFormatError(path, f"missing key {key!r}")
    if len(indices["idx_to_landmark_verts"]) != 68:
        raise FaceModelFormatError(path, f"{len(indices['idx_to_landmark_verts'])} landmark vertices, "
                                         "expected 68")
    return indices


def _identity_files(folder: Path) -> list[Path]:
    numbered = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _IDENTITY_FILE.match(p.name)))
    if not numbered:
        raise FaceModelFormatError(folder, "no identityNNN.obj files")
    numbers = [n for n, _ in numbered]
    if numbers != list(range(len(numbers))):
        missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
        raise FaceModelFormatError(folder / f"identity{missing[0]:03d}.obj", "identity mode file not found "
                                   f"(identity files must be numbered 000..{max(numbers):03d} without gaps)")
    return [p for _, p in numbered]


def _unlisted_shapes(folder: Path, listed: list[str]) -> list[str]:
    known = {NEUTRAL_FILE[:-4], *listed}
    return sorted(p.stem for p in folder.glob("*.obj")
                  if p.stem not in known and not _IDENTITY_FILE.match(p.name))


def _cache_file(folder: Path, extra_expressions: bool, cache: bool | str | Path) -> Path | None:
    if cache is False:
        return None
    root = default_cache_dir() if cache is True else Path(cache).expanduser()
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    key = json.dumps([str(folder.resolve()), stats, extra_expressions, _CACHE_VERSION])
    return root / "ict" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _parse(folder: Path, indices: dict, identity_files: list[Path],
           expressions: list[str]) -> FaceModelArrays:
    neutral_path = folder / NEUTRAL_FILE
    mesh = read_obj_mesh(neutral_path)
    neutral = mesh.vertices
    v = neutral.shape[0]

    def modes(files: list[Path]) -> np.ndarray:
        out = np.empty((len(files), v, 3), dtype=np.float32)
        for k, f in enumerate(files):
            shape = read_obj_vertices(f)
            if shape.shape != neutral.shape:
                raise FaceModelFormatError(f, f"has {shape.shape[0]} vertices, {neutral_path.name} has {v}")
            # Difference in float64 before rounding, so mode + neutral reproduces the file.
            out[k] = (shape - neutral) * MM_PER_UNIT["cm"]
        return out

    landmarks = np.asarray(indices["idx_to_landmark_verts"], dtype=np.int64)
    if landmarks.min() < 0 or landmarks.max() >= v:
        raise FaceModelFormatError(folder / INDICES_FILE, f"landmark vertex outside 0..{v - 1}")
    triangles, flipped = orient_outward(neutral, mesh.triangles)
    uv_triangles = None if mesh.uv_triangles is None else (mesh.uv_triangles[:, ::-1].copy() if flipped
                                                           else mesh.uv_triangles)
    return FaceModelArrays(
        mean_shape=(neutral * MM_PER_UNIT["cm"]).astype(np.float32),
        triangles=triangles,
        identity_basis=modes(identity_files),
        expression_basis=modes([folder / f"{n}.obj" for n in expressions]),
        landmarks68=landmarks,
        expression_names=expressions,
        uvs=None if mesh.uvs is None else mesh.uvs.astype(np.float32),
        uv_triangles=uv_triangles,
        regions=_regions(v, indices),
        metadata={
            "name": "ICT-FaceKit Light",
            "source_format": "ict",
            "source": str(folder),
            "source_units": "cm",
            "license": "MIT (ICT-FaceKit, USC Institute for Creative Technologies)",
            "identity_coefficients": "weights of ICT's PCA modes as shipped (identityNNN.obj = weight 1)",
            "expression_coefficients": "ARKit blendshape weights in [0, 1]",
            "expression_bounds": [0.0, 1.0],
            "winding_flipped": flipped,
            "region": "full",
        },
    )


def _regions(num_vertices: int, indices: dict) -> dict[str, np.ndarray]:
    regions: dict[str, np.ndarray] = {}
    if num_vertices == ICT_NUM_VERTICES:  # the README's ranges describe this topology only
        for name, (first, last) in ICT_PARTS.items():
            mask = np.zeros(num_vertices, dtype=bool)
            mask[first:last + 1] = True
            regions[name] = mask
        for name, parts in ICT_UNIONS.items():
            regions[name] = np.logical_or.reduce([regions[p] for p in parts])
    for name, key in (("fitting", "idx_to_fitting_verts"), ("rigid", "idx_to_rigid_verts")):
        idx = np.asarray(indices.get(key, []), dtype=np.int64)
        if idx.size and idx.min() >= 0 and idx.max() < num_vertices:
            mask = np.zeros(num_vertices, dtype=bool)
            mask[idx] = True
            regions[name] = mask
    return regions
