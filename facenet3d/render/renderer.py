"""The face renderer: a morphable model's posed mesh, camera, SH lighting and albedo -> images."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from facenet3d.errors import RenderError
from facenet3d.geometry import vertex_normals
from facenet3d.render.antialias import antialias, antialias_topology
from facenet3d.render.backend import resolve_backend
from facenet3d.render.camera import PinholeCamera
from facenet3d.render.interpolate import interpolate
from facenet3d.render.rasterize import Fragments, rasterize_fragments
from facenet3d.render.shading import shading_terms
from facenet3d.render.texture import sample_bilinear, texture

SHADING_MODES = ("pixel", "vertex")


@dataclass
class RenderOutput:
    """What :class:`Renderer` returns; every image has row 0 at the top.

    Attributes:
        image: ``(B, H, W, 3)`` linear RGB, composited over the background.
        mask: ``(B, H, W, 1)`` coverage in ``[0, 1]`` (antialiased, hence differentiable at the
            silhouette, when the renderer antialiases; else exactly 0 or 1, without gradient).
        rast: ``(B, H, W, 4)`` the :func:`~facenet3d.render.rasterize` output, for reuse.
        depth: ``(B, H, W, 1)`` distance along the viewing axis (``-z``), mm; 0 on the background.
        normals: ``(B, H, W, 3)`` unit camera-frame normals; 0 on the background.
        albedo: ``(B, H, W, 3)`` diffuse albedo at each pixel; 0 on the background.

    ``depth``, ``normals`` and ``albedo`` are interpolated on first access (and differentiable):
    a training step that only needs ``image`` and ``mask`` does not pay for them.
    """

    image: torch.Tensor
    mask: torch.Tensor
    rast: torch.Tensor
    _compute: Callable[[str], torch.Tensor] = field(repr=False, compare=False)
    _cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def _get(self, name: str) -> torch.Tensor:
        if name not in self._cache:
            self._cache[name] = self._compute(name)
        return self._cache[name]

    @property
    def depth(self) -> torch.Tensor:
        return self._get("depth")

    @property
    def normals(self) -> torch.Tensor:
        return self._get("normals")

    @property
    def albedo(self) -> torch.Tensor:
        return self._get("albedo")


class Renderer(nn.Module):
    """Differentiable renderer of one mesh topology with SH lighting and a specular lobe.

    Args:
        triangles: ``(F, 3)`` int vertex indices, counter-clockwise seen from the front.
        uvs: ``(T, 2)`` texture coordinates in ``[0, 1]`` with ``v`` up (OBJ convention, as
            :class:`~facenet3d.facemodel.FaceModelArrays` stores them); needed for UV maps.
        uv_triangles: ``(F, 3)`` int indices into ``uvs``.
        shading: ``"vertex"`` (default): SH and specular shading are evaluated at the vertices
            and interpolated (Gouraud), which with per-vertex albedo leaves a single 3-channel
            interpolation per pixel: the fast path, the same as per-pixel shading where triangles
            are about a pixel in size (a face crop of a few thousand vertices at 224 px). ``"pixel"``:
            normals are interpolated and shaded at every pixel, for larger images, sharp
            highlights and UV roughness maps.
        antialias: blend silhouette edges (:func:`~facenet3d.render.antialias`), which is what
            gives the image and mask gradients with respect to the silhouette. Off by default: it
            costs about as much as the rest of the render, and photometric losses inside a face
            mask do not need it; fitting silhouettes or masks does.
        backend: primitive backend (see :mod:`facenet3d.render.backend`); None follows the context.

    Built on the public primitives: :func:`~facenet3d.render.rasterize`, then
    :func:`~facenet3d.render.interpolate` (``covered_only=True`` for what is shaded or textured per
    pixel) and :func:`~facenet3d.render.texture`'s sampling. ``forward`` runs four steps: the
    materials, the raster, shading (at the vertices or at the pixels), compositing.

    Lighting, normals and view directions are in the camera frame. UV maps are images with row 0
    at the top of the texture (as read from a PNG), sampled with ``v -> 1 - v`` and clamped at the
    borders.

    Example:
        >>> renderer = Renderer.from_model(model)  # doctest: +SKIP
        >>> verts = apply_pose(model.decode(identity), rotation, translation)  # doctest: +SKIP
        >>> out = renderer(verts, camera, sh, model.albedo(albedo_coeffs))  # doctest: +SKIP
    """

    def __init__(self, triangles: torch.Tensor, uvs: torch.Tensor | None = None,
                 uv_triangles: torch.Tensor | None = None, shading: str = "vertex", antialias: bool = False,
                 backend: str | None = None):
        super().__init__()
        if shading not in SHADING_MODES:
            raise RenderError(f"shading must be one of {SHADING_MODES}, got {shading!r}")
        if (uvs is None) != (uv_triangles is None):
            raise RenderError("uvs and uv_triangles go together")
        triangles = torch.as_tensor(triangles, dtype=torch.int64)
        self.register_buffer("triangles", triangles, persistent=False)
        self.register_buffer("topology", antialias_topology(triangles), persistent=False)
        if uvs is not None:
            uvs = torch.as_tensor(uvs, dtype=torch.get_default_dtype())
            # Texture row 0 is the top of the map, OBJ's v = 1.
            self.register_buffer("uvs", torch.stack([uvs[:, 0], 1.0 - uvs[:, 1]], -1), persistent=False)
            self.register_buffer("uv_triangles", torch.as_tensor(uv_triangles, dtype=torch.int64),
                                 persistent=False)
        else:
            self.uvs = self.uv_triangles = None
        self.shading = shading
        self.antialias = antialias
        self.backend = backend

    @classmethod
    def from_model(cls, model, **kwargs) -> Renderer:
        """A renderer for a :class:`~facenet3d.facemodel.MorphableModel`'s topology and UVs."""
        return cls(model.triangles, getattr(model, "uvs", None), getattr(model, "uv_triangles", None), **kwargs)

    # ------------------------------------------------------------------ materials
    def _split_material(self, name: str, value: torch.Tensor | None, b: int, v: int, channels: tuple[int, ...]):
        """Classify a material input as constant ``(B, C)``, per-vertex ``(B, V, C)`` or a UV map, ``C``
        one of ``channels``."""
        if value is None:
            return None, None
        if value.ndim == 2 and value.shape[-1] in channels:
            return "constant", value
        if value.ndim == 3 and value.shape[1] == v and value.shape[-1] in channels:
            return "vertex", value
        if value.ndim == 4 and value.shape[-1] in channels:
            if self.uvs is None:
                raise RenderError(f"{name} is a UV map but the renderer has no uvs")
            return "uv", value
        c = "|".join(map(str, channels))
        raise RenderError(f"{name} must be (B, {c}), (B, V={v}, {c}) or (B, H, W, {c}), got {tuple(value.shape)}")

    def forward(self, vertices: torch.Tensor, camera: PinholeCamera, sh: torch.Tensor, albedo: torch.Tensor,
                specular: torch.Tensor | None = None, roughness: torch.Tensor | None = None,
                background: torch.Tensor | None = None, visible: Fragments | None = None) -> RenderOutput:
        """Render.

        Args:
            vertices: ``(B, V, 3)`` mm in the camera's world frame (the camera frame for a camera
                without extrinsics: pose the model with :func:`~facenet3d.render.pose.apply_pose`).
            camera: the cameras, batch ``B`` or 1.
            sh: ``(B, 9, 3)`` SH lighting in the camera frame (:mod:`~facenet3d.render.shading`).
            albedo: diffuse albedo, linear RGB: ``(B, V, 3)`` per vertex, ``(B, Ht, Wt, 3)`` UV map
                or ``(B, 3)`` constant.
            specular: specular albedo in any of the same forms, with 3 channels or 1 (grey), or None
                for no specular term.
            roughness: ``(B, 1)``, ``(B, V, 1)`` or ``(B, Ht, Wt, 1)`` in ``[0, 1]``; defaults to 0.5
                when ``specular`` is given.
            background: ``(B, H, W, 3)`` image behind the face, or None for black.
            visible: which triangle each pixel shows, from an earlier render of these triangles
                (``fragments_of(out.rast)``): kept instead of searched again, for a fit whose mesh
                moves by a fraction of a pixel (see :func:`~facenet3d.render.rasterize.rasterize_fragments`).

        Returns:
            A :class:`RenderOutput`.
        """
        if vertices.ndim != 3 or vertices.shape[-1] != 3:
            raise RenderError(f"vertices must be (B, V, 3) mm, got {tuple(vertices.shape)}")
        materials = self._materials(vertices, albedo, specular, roughness)
        frame = self._rasterize(vertices, camera, visible)
        if self.shading == "vertex":
            image, computed = self._shade_vertices(frame, materials, sh)
        else:
            image, computed = self._shade_pixels(frame, materials, sh, camera)
        image, mask = self._composite(frame, image, background)
        return RenderOutput(image=image, mask=mask, rast=frame.rast,
                            _compute=functools.partial(self._extra, frame, materials, computed))

    # ------------------------------------------------------------------ steps of forward
    def _materials(self, vertices: torch.Tensor, albedo: torch.Tensor, specular: torch.Tensor | None,
                   roughness: torch.Tensor | None) -> dict[str, tuple[str, torch.Tensor]]:
        """The materials given, each as ``(kind, value)`` (see :meth:`_split_material`); roughness 0.5
        when a specular albedo comes without one, none without a specular albedo."""
        b, v = vertices.shape[:2]
        if specular is not None and roughness is None:
            roughness = vertices.new_full((b, 1), 0.5)
        if specular is None:
            roughness = None
        # A grey specular albedo (one channel, the same in R, G and B) is what face models have: it
        # broadcasts over the light's colour, so a map of it is sampled and differentiated a third
        # as much as its RGB copy.
        materials = {name: self._split_material(name, value, b, v, c) for name, value, c in
                     (("albedo", albedo, (3,)), ("specular", specular, (1, 3)), ("roughness", roughness, (1,)))}
        if self.shading == "vertex" and materials["roughness"][0] == "uv":
            raise RenderError("a UV roughness map needs shading='pixel'")
        return {name: entry for name, entry in materials.items() if entry[0] is not None}

    def _rasterize(self, vertices: torch.Tensor, camera: PinholeCamera, visible: Fragments | None = None
                   ) -> _Frame:
        """Camera-frame vertices and normals, and the raster of the mesh."""
        cam_vertices = camera.world_to_camera(vertices)
        clip = camera.camera_to_clip(cam_vertices)
        rast, fragments = rasterize_fragments(clip, self.triangles, camera.image_size, backend=self.backend,
                                              visible=visible)
        return _Frame(self, cam_vertices, vertex_normals(cam_vertices, self.triangles), clip, rast, fragments)

    def _shade_vertices(self, frame: _Frame, materials: dict, sh: torch.Tensor
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Shade the vertices and interpolate the result: where the materials are per vertex too, a
        single 3-channel interpolation carries the whole colour. Returns the ``(B, H, W, 3)`` image
        and the per-pixel values computed on the way."""
        values = {name: value for name, (_, value) in materials.items()}
        has_specular = "specular" in values
        view = F.normalize(-frame.cam_vertices, dim=-1, eps=1e-12) if has_specular else None
        rough = values.get("roughness")
        rough = rough[:, None] if rough is not None and rough.ndim == 2 else rough
        diffuse, spec = shading_terms(frame.normals, view, sh, rough)
        if all(kind != "uv" for kind, _ in materials.values()):
            color = _as_vertex(values["albedo"]) * diffuse
            if spec is not None:
                color = color + _as_vertex(values["specular"]) * spec
            return frame.interpolate(color, dense=True), {}  # straight into the image: no compact copy
        terms = {"diffuse": diffuse} if spec is None else {"diffuse": diffuse, "spec": spec}
        pixel = _interpolate_many(terms, frame.interpolate)
        pixel.update(frame.at_pixels(materials, {n: values[n] for n in ("albedo", "specular") if n in values}))
        color = pixel["albedo"] * pixel["diffuse"]
        if spec is not None:
            color = color + pixel["specular"] * pixel["spec"]
        return frame.fragments.to_image(color), {"albedo": pixel["albedo"]}

    def _shade_pixels(self, frame: _Frame, materials: dict, sh: torch.Tensor, camera: PinholeCamera
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Interpolate normals and materials to the covered pixels and shade there."""
        values = {name: value for name, (_, value) in materials.items()}
        pixel = frame.at_pixels(materials, {"normals": frame.normals, **values})
        pixel_normals = F.normalize(pixel["normals"], dim=-1, eps=1e-12)
        b, h, w = frame.fragments.shape
        pixels = frame.fragments.pixels
        rays = camera.pixel_rays(frame.cam_vertices.dtype).reshape(-1, 3)  # (B or 1) * H * W
        view = -rays.index_select(0, pixels if rays.shape[0] == b * h * w else pixels % (h * w))
        diffuse, spec = _per_image(lambda n, v, r, s_: shading_terms(n[None], v[None], s_, r), frame.fragments,
                                   pixel_normals, view, pixel.get("roughness"), sh=sh)
        color = pixel["albedo"] * diffuse
        if spec is not None:
            color = color + pixel["specular"] * spec
        return frame.fragments.to_image(color), {"normals": pixel_normals, "albedo": pixel["albedo"]}

    def _composite(self, frame: _Frame, image: torch.Tensor, background: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The image over its background, and the coverage mask (both antialiased when asked for)."""
        mask = (frame.rast[..., 3:] > 0).to(image.dtype)
        if background is not None:
            image = image + background.to(image) * (1 - mask)
        if self.antialias:
            both = antialias(torch.cat([image, mask], -1), frame.rast, frame.clip, self.triangles,
                             topology=self.topology, backend=self.backend)
            image, mask = both[..., :3], both[..., 3:]
        return image, mask

    @staticmethod
    def _extra(frame: _Frame, materials: dict, computed: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The ``(B, H, W, C)`` image of a :class:`RenderOutput` extra (depth, normals, albedo)."""
        if name in computed:
            values = computed[name]
        elif name == "depth":
            values = frame.interpolate(-frame.cam_vertices[..., 2:3])
        elif name == "normals":
            values = F.normalize(frame.interpolate(frame.normals), dim=-1, eps=1e-12)
        else:
            values = frame.at_pixels(materials, {"albedo": materials["albedo"][1]})["albedo"]
        return frame.fragments.to_image(values)

    def _sample_maps(self, maps: dict[str, torch.Tensor], uv: torch.Tensor, images: torch.Tensor,
                     to_image: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """UV maps at the covered pixels (``uv`` ``(M, 2)``); maps of one size are sampled together."""
        out: dict[str, torch.Tensor] = {}
        by_size: dict[tuple[int, int], list[str]] = {}
        for name, value in maps.items():
            by_size.setdefault(tuple(value.shape[1:3]), []).append(name)
        for names in by_size.values():
            sizes = [maps[n].shape[-1] for n in names]
            batch = max(maps[n].shape[0] for n in names)
            stacked = torch.cat([maps[n].expand(batch, -1, -1, -1) for n in names], -1)
            if resolve_backend(self.backend, stacked, uv) == "torch":
                sampled = sample_bilinear(stacked, uv, images if batch > 1 else None, "clamp")
            else:  # nvdiffrast samples images of coordinates
                dense = texture(stacked, to_image(uv), boundary_mode="clamp", backend=self.backend)
                sampled = dense.reshape(-1, dense.shape[-1]).index_select(0, pixels)
            out.update(zip(names, sampled.split(sizes, -1), strict=True))
        return out


@dataclass
class _Frame:
    """One render's geometry: camera-frame vertices and normals, clip positions, the raster and its
    covered pixels; per-vertex values and materials are interpolated at those pixels through the
    public primitives."""

    renderer: Renderer
    cam_vertices: torch.Tensor
    normals: torch.Tensor
    clip: torch.Tensor
    rast: torch.Tensor
    fragments: Fragments
    _uv: torch.Tensor | None = None

    def interpolate(self, values: torch.Tensor, triangles: torch.Tensor | None = None, dense: bool = False
                    ) -> torch.Tensor:
        """Per-vertex ``values`` at the covered pixels, ``(M, C)``, or as ``(B, H, W, C)`` images."""
        triangles = self.renderer.triangles if triangles is None else triangles
        return interpolate(values, self.rast, triangles, backend=self.renderer.backend, covered_only=not dense)

    def at_pixels(self, materials: dict, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Materials and per-vertex values at the covered pixels, ``(M, C)`` each: one interpolation
        for all per-vertex ones, one texture sampling per map size."""
        out: dict[str, torch.Tensor] = {}
        per_vertex, maps = {}, {}
        images = self.fragments.images
        for name, value in values.items():
            kind = materials[name][0] if name in materials else "vertex"
            if kind == "vertex":
                per_vertex[name] = value
            elif kind == "uv":
                maps[name] = value
            else:  # constant (B or 1, C)
                out[name] = value.index_select(0, images) if value.shape[0] > 1 else \
                    value.expand(images.shape[0], -1)
        if per_vertex:
            out.update(_interpolate_many(per_vertex, self.interpolate))
        if maps:
            if self._uv is None:
                self._uv = self.interpolate(self.renderer.uvs, self.renderer.uv_triangles)
            out.update(self.renderer._sample_maps(maps, self._uv, images, self.fragments.to_image,
                                                  self.fragments.pixels))
        return out


def _per_image(fn: Callable, fragments: Fragments, *rows: torch.Tensor | None, sh: torch.Tensor):
    """Apply ``fn(rows..., sh_b)`` to the covered pixels of each image with its own lighting.

    Per-pixel shading takes lighting per image; the covered pixels are sorted by image, so each
    image's rows are one slice. Returns ``fn``'s outputs concatenated back, ``(M, ...)``.
    """
    b = fragments.shape[0]
    if b == 1 or sh.shape[0] == 1:
        outputs = fn(*rows, sh)
        return tuple(None if o is None else o[0] for o in outputs)
    counts = torch.bincount(fragments.images, minlength=b).tolist()
    parts = [fn(*(None if r is None or r.shape[0] != fragments.pixels.shape[0] else r.split(counts)[i]
                  for r in rows), sh[i:i + 1]) for i in range(b)]
    return tuple(None if parts[0][k] is None else torch.cat([p[k][0] for p in parts]) for k in range(len(parts[0])))


def _interpolate_many(attributes: dict[str, torch.Tensor], interp: Callable[[torch.Tensor], torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
    """Interpolate several per-vertex attributes with one call (one gather and scatter, not several)."""
    names = list(attributes)
    stacked = interp(torch.cat([attributes[n] for n in names], -1))
    return dict(zip(names, stacked.split([attributes[n].shape[-1] for n in names], -1), strict=True))


def _as_vertex(value: torch.Tensor) -> torch.Tensor:
    """A ``(B, C)`` constant as ``(B, 1, C)`` to broadcast over vertices; ``(B, V, C)`` unchanged."""
    return value[:, None, :] if value.ndim == 2 else value
