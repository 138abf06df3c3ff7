"""The mesh every exporter writes: :class:`TexturedMesh`, and the geometry the formats need.

Positions are millimetres in the model frame (right-handed, +y up, +z out of the face).
UVs follow the OBJ convention (origin bottom-left) like the face models; textures are
images with row 0 at the top (see :mod:`facenet3d.export.textures`).

A mesh may carry separate parts (eyeballs, teeth, ... :class:`~facenet3d.export.parts.MeshPart`)
over the same vertices, and morph targets (a face model's expression modes, e.g. the 53 ARKit
blendshapes of ICT-FaceKit) with the weights that give the shape it shows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facenet3d.errors import ExportError
from facenet3d.export.arrays import to_numpy
from facenet3d.export.parts import MeshPart
from facenet3d.export.textures import TEXTURE_CHANNELS, sample_texture

__all__ = [
    "SeamSplit",
    "TexturedMesh",
    "mesh_from_face_model",
    "model_parts",
    "part_vertices",
    "split_uv_seams",
    "surface_normals",
    "vertex_colors_from_texture",
    "vertex_normals",
    "vertex_tangents",
    "with_part_colors",
]


@dataclass
class TexturedMesh:
    """A triangle mesh with optional UVs, normals, vertex colours and texture maps.

    Shapes: ``V`` vertices, ``F`` triangles, ``T`` UV coordinates. Arrays may be numpy
    arrays or torch tensors; they are converted to numpy (float32 / int64) and checked
    on construction.

    Attributes:
        vertices: ``(V, 3)`` float positions in millimetres.
        triangles: ``(F, 3)`` int vertex indices, counter-clockwise seen from the front.
        uvs: ``(T, 2)`` float texture coordinates, origin bottom-left (OBJ convention).
        uv_triangles: ``(F, 3)`` int indices into ``uvs`` (UVs are per corner, so a vertex
            on a UV seam has several).
        normals: ``(V, 3)`` vertex normals (renormalised); computed from the triangles when None.
        vertex_colors: ``(V, 3)`` linear RGB in ``[0, 1]`` (per-vertex albedo models).
        textures: name -> ``(H, W, C)`` map (names and channels in
            :data:`~facenet3d.export.textures.TEXTURE_CHANNELS`: ``albedo``, ``specular``,
            ``roughness``, ``normal``); float values in ``[0, 1]`` or ``uint8`` pixels.
        roughness: perceptual roughness used where there is no roughness map.
        name: mesh / material name written into the files.
        parts: separate parts over the same vertices, each with its own flat material
            (written as OBJ groups, glTF primitives, PLY faces); ``triangles`` is the skin.
        morph_targets: ``(K, V, 3)`` float mm per-vertex offsets (e.g. expression modes), or None.
        morph_names: ``K`` unique target names (e.g. ARKit blendshape names).
        morph_weights: ``(K,)`` weights of the shape shown: ``vertices`` is the base shape plus
            ``sum_k morph_weights[k] * morph_targets[k]`` (see :meth:`base_vertices`); zeros
            when None.
    """

    vertices: Any
    triangles: Any
    uvs: Any = None
    uv_triangles: Any = None
    normals: Any = None
    vertex_colors: Any = None
    textures: dict[str, Any] = field(default_factory=dict)
    roughness: float = 0.5
    name: str = "face"
    parts: list[MeshPart] = field(default_factory=list)
    morph_targets: Any = None
    morph_names: list[str] = field(default_factory=list)
    morph_weights: Any = None

    def __post_init__(self) -> None:
        def fail(problem: str) -> None:
            raise ExportError(None, f"mesh {self.name!r}: {problem}")

        def floats(name: str, x: Any, cols: int, rows: int | None = None) -> np.ndarray:
            a = to_numpy(x, np.float32)
            if a.ndim != 2 or a.shape[1] != cols or (rows is not None and a.shape[0] != rows):
                fail(f"{name} has shape {a.shape}, expected ({rows if rows is not None else 'N'}, {cols})")
            if not np.isfinite(a).all():
                fail(f"{name} holds NaN or infinite values")
            return a

        def indices(name: str, x: Any, count: int, what: str) -> np.ndarray:
            a = to_numpy(x)
            if a.ndim != 2 or a.shape[1] != 3 or a.dtype.kind not in "iu":
                fail(f"{name} must be (F, 3) integers, got {a.shape} {a.dtype}")
            a = a.astype(np.int64)
            if a.size and (a.min() < 0 or a.max() >= count):
                fail(f"{name} index outside 0..{count - 1} ({what})")
            return a

        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(self.name)):
            fail("name must be letters, digits, '_', '.' or '-' (it becomes an OBJ/MTL token)")
        self.vertices = floats("vertices", self.vertices, 3)
        v = len(self.vertices)
        self.triangles = indices("triangles", self.triangles, v, "vertices")
        if len(self.triangles) == 0:
            fail("has no triangles")
        if (self.uvs is None) != (self.uv_triangles is None):
            fail("uvs and uv_triangles must be given together")
        if self.uvs is not None:
            self.uvs = floats("uvs", self.uvs, 2)
            self.uv_triangles = indices("uv_triangles", self.uv_triangles, len(self.uvs), "uvs")
            if self.uv_triangles.shape != self.triangles.shape:
                fail(f"uv_triangles {self.uv_triangles.shape} and triangles {self.triangles.shape} differ")
        if self.normals is not None:
            # Renormalised: glTF rejects non-unit normals, and interpolated ones drift.
            n = floats("normals", self.normals, 3, v).astype(np.float64)
            length = np.linalg.norm(n, axis=1, keepdims=True)
            if (length < 1e-12).any():
                fail("normals contain zero vectors")
            self.normals = (n / length).astype(np.float32)
        if self.vertex_colors is not None:
            self.vertex_colors = np.clip(floats("vertex_colors", self.vertex_colors, 3, v), 0.0, 1.0)
        self.roughness = float(self.roughness)
        if not 0.0 <= self.roughness <= 1.0:
            fail(f"roughness {self.roughness} is outside [0, 1]")
        textures = {}
        for key, image in self.textures.items():
            if key not in TEXTURE_CHANNELS:
                fail(f"unknown texture {key!r}; known: {sorted(TEXTURE_CHANNELS)}")
            a = to_numpy(image)
            if a.ndim == 2:
                a = a[..., None]
            if a.ndim != 3 or a.shape[-1] not in TEXTURE_CHANNELS[key] or 0 in a.shape:
                fail(f"texture {key!r} has shape {a.shape}, expected (H, W, C), C in {TEXTURE_CHANNELS[key]}")
            if a.dtype != np.uint8:
                if a.dtype.kind not in "fb":
                    fail(f"texture {key!r} has dtype {a.dtype}; expected float values or uint8 pixels")
                a = a.astype(np.float32)
                if not np.isfinite(a).all():
                    fail(f"texture {key!r} holds NaN or infinite values")
            textures[key] = a
        if textures and self.uvs is None:
            fail(f"textures {sorted(textures)} need uvs and uv_triangles")
        self.textures = textures
        self.parts = list(self.parts)
        names = [self.name] + [p.name for p in self.parts]
        if len(set(names)) != len(names):
            fail(f"part names must be unique and differ from the mesh's: {names}")
        for part in self.parts:
            if part.triangles.max() >= v:
                fail(f"part {part.name!r} indexes a vertex outside 0..{v - 1}")
        self.morph_names = [str(n) for n in self.morph_names]
        if self.morph_targets is None:
            if self.morph_names or self.morph_weights is not None:
                fail("morph_names and morph_weights need morph_targets")
            return
        targets = to_numpy(self.morph_targets, np.float32)
        if targets.ndim != 3 or targets.shape[1:] != (v, 3):
            fail(f"morph_targets has shape {targets.shape}, expected (K, {v}, 3)")
        if not np.isfinite(targets).all():
            fail("morph_targets holds NaN or infinite values")
        k = len(targets)
        if len(self.morph_names) != k or len(set(self.morph_names)) != k or not all(self.morph_names):
            fail(f"morph_names must be {k} unique non-empty names, got {len(self.morph_names)}")
        self.morph_targets = targets
        weights = np.zeros(k, np.float32) if self.morph_weights is None else to_numpy(self.morph_weights, np.float32)
        if weights.shape != (k,) or not np.isfinite(weights).all():
            fail(f"morph_weights must be {k} finite values, got shape {weights.shape}")
        self.morph_weights = weights

    @property
    def has_uvs(self) -> bool:
        return self.uvs is not None

    @property
    def has_morph_targets(self) -> bool:
        return self.morph_targets is not None and len(self.morph_targets) > 0

    def vertex_normals(self) -> np.ndarray:
        """``(V, 3)`` float32 unit normals: the given ones, or :func:`surface_normals` of the vertices."""
        if self.normals is not None:
            return self.normals
        return surface_normals(self.vertices, self.triangles, self.parts)

    def base_vertices(self) -> np.ndarray:
        """``(V, 3)`` float64 mm: the shape with every morph weight zero (``vertices`` without targets).

        For a face model's expression modes this is the neutral face of the identity.
        """
        base = self.vertices.astype(np.float64)
        if self.has_morph_targets:
            base -= np.tensordot(self.morph_weights.astype(np.float64), self.morph_targets, axes=1)
        return base


def surface_normals(vertices: np.ndarray, triangles: np.ndarray, parts: Sequence[MeshPart] = ()) -> np.ndarray:
    """Vertex normals of a mesh with separate parts: each vertex's from the surface it belongs to.

    Args:
        vertices: ``(V, 3)`` positions.
        triangles: ``(F, 3)`` skin triangles.
        parts: parts over the same vertices; a vertex in no skin triangle takes the normal
            of the (last) part that uses it, so parts never bend the skin's normals.

    Returns:
        ``(V, 3)`` float32 unit normals (see :func:`vertex_normals`).
    """
    normals = vertex_normals(vertices, triangles)
    for part, own in zip(parts, part_vertices(triangles, parts, len(vertices)), strict=True):
        normals[own] = vertex_normals(vertices, part.triangles)[own]
    return normals


def part_vertices(triangles: np.ndarray, parts: Sequence[MeshPart], num_vertices: int) -> list[np.ndarray]:
    """For each part, the sorted vertices it uses that no skin triangle uses.

    Those vertices take the part's normal and colour in formats with one per vertex (OBJ, PLY);
    a vertex shared with the skin keeps the skin's.

    Args:
        triangles: ``(F, 3)`` skin triangles.
        parts: the parts.
        num_vertices: ``V``.
    """
    in_skin = np.zeros(num_vertices, bool)
    in_skin[np.asarray(triangles).reshape(-1)] = True
    out = []
    for part in parts:
        index = np.unique(part.triangles)
        out.append(index[~in_skin[index]])
    return out


def with_part_colors(mesh: TexturedMesh, colors: np.ndarray, part_colors: list[np.ndarray]) -> np.ndarray:
    """Per-vertex colours of a mesh with parts: the skin's ``colors`` and each part's flat colour.

    Args:
        mesh: the mesh.
        colors: ``(V, C)`` skin colours in the file's encoding.
        part_colors: one ``(C,)`` colour per part of ``mesh.parts``, in the same encoding.

    Returns:
        ``(V, C)``: a copy of ``colors`` with the parts' own vertices (:func:`part_vertices`) recoloured.
    """
    out = np.array(colors, copy=True)
    for color, own in zip(part_colors, part_vertices(mesh.triangles, mesh.parts, len(mesh.vertices)), strict=True):
        out[own] = color
    return out


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, in numpy.

    The torch-free twin of :func:`facenet3d.geometry.vertex_normals` (same definition, used
    where torch is not installed); a test holds the two equal.

    Args:
        vertices: ``(V, 3)`` positions.
        triangles: ``(F, 3)`` int vertex indices, counter-clockwise seen from the front.

    Returns:
        ``(V, 3)`` float32 unit normals; ``(0, 0, 1)`` for a vertex in no (non-degenerate)
        triangle, so that every normal is unit length as glTF requires.
    """
    v = np.asarray(vertices, np.float64)
    t = np.asarray(triangles, np.int64)
    # The cross product's length is twice the triangle area: area weighting for free.
    fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    out = np.zeros_like(v)
    for corner in range(3):
        np.add.at(out, t[:, corner], fn)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    out = np.where(length > 1e-12, out / np.maximum(length, 1e-300), np.array([0.0, 0.0, 1.0]))
    return out.astype(np.float32)


def vertex_tangents(
    vertices: np.ndarray, normals: np.ndarray, uvs: np.ndarray, triangles: np.ndarray
) -> np.ndarray:
    """Per-vertex tangent frames of a mesh with one UV per vertex (split at seams first).

    The frame normal maps are read in: the tangent ``t`` points along increasing ``u``,
    the bitangent ``b = cross(n, t) * w`` along increasing OBJ ``v`` (up in the image), as
    glTF defines ``TANGENT`` and its normal textures (+Y up). Each triangle's ``dP/du`` and
    ``dP/dv`` (Lengyel's method) is accumulated on its vertices weighted by its UV area,
    then Gram-Schmidt orthogonalised against the normal; ``w`` is -1 where the UV mapping
    is mirrored. On smooth, well-unwrapped meshes this agrees closely with the MikkTSpace
    frame that glTF viewers and Blender generate when tangents are absent.

    Args:
        vertices: ``(N, 3)`` positions.
        normals: ``(N, 3)`` unit normals.
        uvs: ``(N, 2)`` per-vertex UVs, origin bottom-left (OBJ convention).
        triangles: ``(F, 3)`` int indices.

    Returns:
        ``(N, 4)`` float32: unit tangent ``xyz`` orthogonal to the normal, and ``w`` = +-1.
        A vertex without UV variation gets an arbitrary unit tangent orthogonal to ``n``.
    """
    p = np.asarray(vertices, np.float64)
    n = np.asarray(normals, np.float64)
    uv = np.asarray(uvs, np.float64)
    t = np.asarray(triangles, np.int64)
    e1, e2 = p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]]
    d1, d2 = uv[t[:, 1]] - uv[t[:, 0]], uv[t[:, 2]] - uv[t[:, 0]]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    # dP/du = (e1 dv2 - e2 dv1) / det; multiplying by |det| weights by UV area and avoids
    # dividing by ~0 on degenerate UV triangles.
    sign = np.sign(det)[:, None]
    face_t = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * sign
    face_b = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * sign
    tan, bit = np.zeros_like(p), np.zeros_like(p)
    for corner in range(3):
        np.add.at(tan, t[:, corner], face_t)
        np.add.at(bit, t[:, corner], face_b)
    tan -= n * np.sum(n * tan, axis=1, keepdims=True)
    length = np.linalg.norm(tan, axis=1, keepdims=True)
    # Fallback for vertices without UV variation: any unit vector orthogonal to n.
    helper = np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    fallback = np.cross(n, helper)
    fallback /= np.maximum(np.linalg.norm(fallback, axis=1, keepdims=True), 1e-300)
    tan = np.where(length > 1e-12, tan / np.maximum(length, 1e-300), fallback)
    w = np.where(np.sum(np.cross(n, tan) * bit, axis=1) < 0.0, -1.0, 1.0)
    return np.concatenate([tan, w[:, None]], axis=1).astype(np.float32)


@dataclass(frozen=True)
class SeamSplit:
    """Vertices split so that each carries one UV (what glTF and most engines need).

    Attributes:
        vertex_index: ``(N,)`` original vertex of each output vertex.
        uv_index: ``(N,)`` index into the original ``uvs`` of each output vertex.
        triangles: ``(F, 3)`` triangles over the ``N`` output vertices.
    """

    vertex_index: np.ndarray
    uv_index: np.ndarray
    triangles: np.ndarray


def split_uv_seams(triangles: Any, uv_triangles: Any) -> SeamSplit:
    """One output vertex per distinct (vertex, UV) corner pair.

    A vertex on a UV seam has a different UV in the triangles on either side; formats with
    one index per corner (glTF, PLY, game engines) need it duplicated. Output vertices are
    ordered by original vertex, then UV index, so a mesh without seams whose vertices are
    all used comes back in its original order. Vertices used by no triangle are dropped.

    Args:
        triangles: ``(F, 3)`` int vertex indices.
        uv_triangles: ``(F, 3)`` int UV indices of the same corners.

    Example:
        >>> s = split_uv_seams(np.array([[0, 1, 2], [0, 2, 3]]), np.array([[0, 1, 2], [4, 2, 3]]))
        >>> s.vertex_index.tolist(), s.uv_index.tolist()
        ([0, 0, 1, 2, 3], [0, 4, 1, 2, 3])
    """
    tri = to_numpy(triangles).astype(np.int64)
    uvt = to_numpy(uv_triangles).astype(np.int64)
    if tri.shape != uvt.shape:
        raise ExportError(None, f"triangles {tri.shape} and uv_triangles {uvt.shape} differ")
    pairs = np.stack([tri.reshape(-1), uvt.reshape(-1)], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return SeamSplit(unique[:, 0], unique[:, 1], inverse.reshape(tri.shape))


def vertex_colors_from_texture(mesh: TexturedMesh, name: str = "albedo") -> np.ndarray:
    """Bake a texture map into per-vertex values (e.g. albedo for PLY vertex colours).

    Each vertex gets the mean of the texture sampled (bilinear) at the UVs of its corners,
    so a seam vertex averages both sides.

    Returns:
        ``(V, C)`` float32, in the texture's own space (linear for float maps, 0..255 pixel
        values for ``uint8`` maps); vertices in no triangle get 0.
    """
    if name not in mesh.textures:
        raise ExportError(None, f"mesh {mesh.name!r} has no {name!r} texture")
    samples = sample_texture(mesh.textures[name], mesh.uvs[mesh.uv_triangles.reshape(-1)])
    v = len(mesh.vertices)
    total = np.zeros((v, samples.shape[1]), np.float64)
    np.add.at(total, mesh.triangles.reshape(-1), samples)
    count = np.bincount(mesh.triangles.reshape(-1), minlength=v)[:, None]
    return (total / np.maximum(count, 1)).astype(np.float32)


def model_parts(model: Any) -> dict[str, np.ndarray]:
    """A face model's separate parts, name -> ``(Fp, 3)`` int64 triangles, in name order.

    Works on a :class:`~facenet3d.facemodel.MorphableModel` (``part_names`` / ``part()``) and on
    plain :class:`~facenet3d.facemodel.FaceModelArrays` (``parts``, the torch-free runtime's).
    """
    if hasattr(model, "part_names"):
        return {name: to_numpy(model.part(name)).astype(np.int64) for name in model.part_names}
    parts = getattr(model, "parts", None) or {}
    return {name: to_numpy(parts[name]).astype(np.int64) for name in sorted(parts)}


def mesh_from_face_model(
    model: Any,
    vertices: Any,
    albedo: Any = None,
    specular: Any = None,
    roughness: Any = None,
    normal_map: Any = None,
    name: str = "face",
    expression: Any = None,
    morph_targets: bool | None = None,
    include_parts: bool = True,
) -> TexturedMesh:
    """Build a :class:`TexturedMesh` from a :class:`~facenet3d.facemodel.MorphableModel` and a shape.

    The skin (the model's ``triangles``) carries the UVs and maps; the model's separate parts
    (eyeballs, teeth, ...) come along with flat materials (:func:`~facenet3d.export.parts.part_material`),
    and its expression modes become morph targets. Vertices used by no written triangle (e.g.
    the parts' with ``include_parts=False``) are dropped, the others keep the model's order.

    Args:
        model: the face model (its ``triangles``, ``uvs``, ``uv_triangles`` buffers and,
            for missing maps, its mean albedo / specular / roughness are used), or its
            :class:`~facenet3d.facemodel.FaceModelArrays`.
        vertices: ``(V, 3)`` or ``(1, V, 3)`` mm, e.g. ``model.decode(...)``.
        albedo: diffuse albedo, linear RGB: ``(H, W, 3)`` UV map for a UV albedo space,
            ``(V, 3)`` for a per-vertex one (written as vertex colours); a leading batch
            dimension of 1 is dropped. None: the model's mean albedo, if it has one.
        specular: specular albedo in the same space as the albedo (None: the model's mean).
            Per-vertex specular has no place in the mesh formats and is dropped.
        roughness: a float, or an ``(H, W[, 1])`` UV map (None: the model's
            ``roughness_mean`` if it is a UV map or a constant, else 0.5).
        normal_map: ``(H, W, 3)`` encoded tangent-space normal map (see
            :func:`~facenet3d.export.textures.encode_normal_map`).
        name: mesh and material name in the files.
        expression: ``(Ke,)`` or ``(1, Ke)`` expression coefficients of ``vertices`` (fewer
            columns: the rest are zero). They become the morph weights, so the base mesh of a
            GLB is ``vertices`` minus the weighted modes (the neutral face) and the asset opens
            showing ``vertices``. None: zero weights, ``vertices`` is the base.
        morph_targets: write the expression modes as morph targets (mm offsets per unit
            coefficient) named by ``model.expression_names`` (``expression_000``... for a model
            without names). None: when the model names its expressions.
        include_parts: write the model's separate parts (see
            :attr:`~facenet3d.facemodel.FaceModelArrays.parts`).
    """
    space = getattr(model, "albedo_space", "none")

    verts = to_numpy(vertices, np.float32)
    if verts.ndim == 3 and verts.shape[0] == 1:
        verts = verts[0]

    def unbatch(x: Any) -> np.ndarray | None:
        # (1, H, W, 3) UV maps and (1, V, 3) per-vertex values, as model.albedo() returns them.
        if x is None:
            return None
        a = to_numpy(x, np.float32)
        batched = a.ndim == 4 or (a.ndim == 3 and a.shape[1] == len(verts) and a.shape[2] == 3)
        return a[0] if batched and a.shape[0] == 1 else a
    has_uvs = getattr(model, "uvs", None) is not None
    if albedo is None and space != "none":
        albedo = model.albedo_mean
    if specular is None and getattr(model, "specular_mean", None) is not None:
        specular = model.specular_mean
    albedo, specular = unbatch(albedo), unbatch(specular)
    if roughness is None and getattr(model, "roughness_mean", None) is not None:
        rm = to_numpy(model.roughness_mean, np.float32)
        # A UV roughness map is (H, W, 1); anything else (a constant or per-vertex values)
        # can only be a material constant in these formats.
        roughness = rm if (space == "uv" and rm.ndim == 3) else float(rm.mean())

    textures: dict[str, np.ndarray] = {}
    vertex_colors = None
    if albedo is not None:
        if space == "vertex" or (albedo.ndim == 2 and albedo.shape[0] == len(verts)):
            vertex_colors = albedo
        else:
            textures["albedo"] = albedo
    if specular is not None and specular.ndim == 3:
        textures["specular"] = specular
    roughness_value = 0.5
    if roughness is not None:
        r = to_numpy(roughness, np.float32)
        if r.ndim >= 2:
            textures["roughness"] = r
        else:
            roughness_value = float(r.reshape(-1)[0]) if r.size == 1 else float(r.mean())
    if normal_map is not None:
        textures["normal"] = to_numpy(normal_map)

    triangles = to_numpy(model.triangles).astype(np.int64)
    parts = model_parts(model) if include_parts else {}
    targets, names, weights = _expression_targets(model, len(verts), expression, morph_targets)
    used = np.unique(np.concatenate([triangles.reshape(-1), *(t.reshape(-1) for t in parts.values())]))
    if len(used) < len(verts):
        # Drop what no written triangle uses (a part left out, unused helper geometry), keeping the order.
        new_index = np.full(len(verts), -1, np.int64)
        new_index[used] = np.arange(len(used))
        triangles = new_index[triangles]
        parts = {n: new_index[t] for n, t in parts.items()}
        verts = verts[used]
        vertex_colors = None if vertex_colors is None else vertex_colors[used]
        targets = None if targets is None else targets[:, used]
    return TexturedMesh(
        vertices=verts,
        triangles=triangles,
        uvs=to_numpy(model.uvs) if has_uvs else None,
        uv_triangles=to_numpy(model.uv_triangles) if has_uvs else None,
        vertex_colors=vertex_colors,
        textures=textures,
        roughness=float(np.clip(roughness_value, 0.0, 1.0)),
        name=name,
        parts=[MeshPart(n, t) for n, t in parts.items()],
        morph_targets=targets,
        morph_names=names,
        morph_weights=weights,
    )


def _expression_targets(model: Any, num_vertices: int, expression: Any, enabled: bool | None
                        ) -> tuple[np.ndarray | None, list[str], np.ndarray | None]:
    """``(Ke, V, 3)`` mm modes, their names and ``(Ke,)`` weights of a model, or ``(None, [], None)``."""
    names = list(getattr(model, "expression_names", None) or [])
    basis = getattr(model, "expression_basis", None)
    if enabled is None:
        enabled = bool(names)
    if not enabled or basis is None:
        return None, [], None
    # MorphableModel keeps the basis flattened to (Ke, 3V), FaceModelArrays as (Ke, V, 3).
    basis = to_numpy(basis, np.float32)
    basis = basis.reshape(len(basis), -1, 3)
    ke = len(basis)
    if ke == 0:
        return None, [], None
    if basis.shape[1] != num_vertices:
        raise ExportError(None, f"expression modes have {basis.shape[1]} vertices, the shape {num_vertices}")
    names = names or [f"expression_{k:03d}" for k in range(ke)]
    weights = np.zeros(ke, np.float32)
    if expression is not None:
        given = to_numpy(expression, np.float32).reshape(-1)
        if len(given) > ke:
            raise ExportError(None, f"{len(given)} expression coefficients for {ke} modes")
        weights[:len(given)] = given
    return basis, names, weights
