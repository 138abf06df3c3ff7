"""The mesh every exporter writes: :class:`TexturedMesh`, and the geometry the formats need.

Positions are millimetres in the model frame (right-handed, +y up, +z out of the face).
UVs follow the OBJ convention (origin bottom-left) like the face models; textures are
images with row 0 at the top (see :mod:`facenet3d.export.textures`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facenet3d.errors import ExportError
from facenet3d.export.arrays import to_numpy
from facenet3d.export.textures import TEXTURE_CHANNELS, sample_texture

__all__ = [
    "SeamSplit",
    "TexturedMesh",
    "mesh_from_face_model",
    "split_uv_seams",
    "vertex_colors_from_texture",
    "vertex_normals",
    "vertex_tangents",
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

    @property
    def has_uvs(self) -> bool:
        return self.uvs is not None

    def vertex_normals(self) -> np.ndarray:
        """``(V, 3)`` float32 unit normals: the given ones, or area-weighted ones from the triangles."""
        if self.normals is not None:
            return self.normals
        return vertex_normals(self.vertices, self.triangles)


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


def mesh_from_face_model(
    model: Any,
    vertices: Any,
    albedo: Any = None,
    specular: Any = None,
    roughness: Any = None,
    normal_map: Any = None,
    name: str = "face",
) -> TexturedMesh:
    """Build a :class:`TexturedMesh` from a :class:`~facenet3d.facemodel.MorphableModel` and a shape.

    Args:
        model: the face model (its ``triangles``, ``uvs``, ``uv_triangles`` buffers and,
            for missing maps, its mean albedo / specular / roughness are used).
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
    return TexturedMesh(
        vertices=verts,
        triangles=to_numpy(model.triangles),
        uvs=to_numpy(model.uvs) if has_uvs else None,
        uv_triangles=to_numpy(model.uv_triangles) if has_uvs else None,
        vertex_colors=vertex_colors,
        textures=textures,
        roughness=float(np.clip(roughness_value, 0.0, 1.0)),
        name=name,
    )
