"""The part of a face model a crop can show: what the photometric and map stages render.

A head model is mostly out of view: the back of the head faces away from the camera and the neck
leaves the crop. Rendering only the triangles that face the camera (with a margin for the pose
still changing) and reach into the crop, and decoding only their vertices, gives the same image
inside the face at a fraction of the cost. The part also keeps every triangle around its
vertices, so that vertex normals (area-weighted over the triangles at a vertex) are exactly the
whole mesh's where the face is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facenet3d.decode import crop_camera
from facenet3d.facemodel import MorphableModel
from facenet3d.params import FaceParams
from facenet3d.render import Renderer
from facenet3d.render.pose import apply_pose, rotation_6d_to_matrix

#: Triangles turned further than this from the camera (cosine of the angle between the normal and
#: the direction to the camera) are left out: about 110 degrees, so a fit that turns the head by
#: 20 degrees more cannot bring a left-out triangle into view.
FACING_COS = -0.35
#: How far outside the crop a triangle may lie and still be kept, as a fraction of the crop.
CROP_MARGIN = 0.1


@dataclass
class VisiblePart:
    """A sub-mesh of a face model.

    Attributes:
        vertices: ``(N,)`` int64 model vertex of each part vertex.
        triangles: ``(F, 3)`` int64 part vertex indices.
        uv_triangles: ``(F, 3)`` int64 indices into the model's ``uvs``, row by row with ``triangles``.
    """

    vertices: torch.Tensor
    triangles: torch.Tensor
    uv_triangles: torch.Tensor | None

    @classmethod
    def whole(cls, model: MorphableModel) -> VisiblePart:
        """The whole mesh."""
        return cls(torch.arange(model.num_vertices, device=model.triangles.device), model.triangles,
                   model.uv_triangles)

    @classmethod
    @torch.no_grad()
    def of(cls, model: MorphableModel, params: FaceParams, size: int) -> VisiblePart:
        """The triangles of ``params``' faces (their union over the batch) that can show in a ``size`` crop."""
        camera = crop_camera(size, device=params.identity.device)
        verts = model.decode(identity=params.identity, expression=params.expression)
        cam = apply_pose(verts, rotation_6d_to_matrix(params.rotation), params.translation)
        tri = model.triangles
        corners = cam[:, tri]  # (B, F, 3, 3)
        normal = torch.linalg.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0])
        to_camera = -corners.mean(2)
        facing = (normal * to_camera).sum(-1) > FACING_COS * normal.norm(dim=-1) * to_camera.norm(dim=-1)
        px = camera.camera_to_pixel(cam)  # (B, V, 2)
        margin = CROP_MARGIN * size
        inside = ((px > -margin) & (px < size + margin)).all(-1)  # (B, V)
        wanted = (facing & inside[:, tri].any(-1)).any(0)  # (F,)
        if not bool(wanted.any()):
            return cls.whole(model)
        # Every triangle touching a wanted triangle's vertex: exact normals at those vertices.
        used = torch.zeros(model.num_vertices, dtype=torch.bool, device=tri.device)
        used[tri[wanted].reshape(-1)] = True
        keep = used[tri].any(1)
        kept = tri[keep]
        vertices = torch.unique(kept)
        local = torch.full((model.num_vertices,), -1, dtype=torch.int64, device=tri.device)
        local[vertices] = torch.arange(len(vertices), device=tri.device)
        uv_tri = None if model.uv_triangles is None else model.uv_triangles[keep]
        return cls(vertices, local[kept], uv_tri)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    def decode(self, model: MorphableModel, params: FaceParams) -> torch.Tensor:
        """``(B, N, 3)`` mm, model frame: the part's vertices of ``params``' faces."""
        return model.decode(identity=params.identity, expression=params.expression, vertex_indices=self.vertices)

    def renderer(self, model: MorphableModel, shading: str = "vertex") -> Renderer:
        """A renderer of the part (the model's UVs, when it has them)."""
        uvs = None if self.uv_triangles is None else model.uvs
        return Renderer(self.triangles, uvs, self.uv_triangles, shading=shading).to(self.vertices.device)
