"""Differentiable rendering: nvdiffrast-style primitives, a pinhole camera, SH shading, a face renderer.

Primitives (nvdiffrast's tensor conventions; pure PyTorch by default, nvdiffrast on CUDA when
asked for with ``backend=`` or :func:`use_backend`):

- :func:`rasterize` ``(pos (B, V, 4), tri (F, 3), (H, W)) -> rast (B, H, W, 4)``
- :func:`interpolate` ``(attr (B, V, C), rast, tri) -> (B, H, W, C)``
- :func:`texture` ``(tex (B, Ht, Wt, C), uv (B, H, W, 2)) -> (B, H, W, C)``
- :func:`antialias` ``(color (B, H, W, C), rast, pos, tri) -> (B, H, W, C)``

Camera and pose: :class:`PinholeCamera`, :func:`apply_pose`, Euler and 6D rotations.
Shading: :func:`sh_shading`, :func:`blinn_phong`, :func:`shading_terms`.
Everything together: :class:`Renderer` -> :class:`RenderOutput`.
"""

from __future__ import annotations

from facenet3d.render.antialias import antialias, antialias_topology
from facenet3d.render.backend import BACKENDS, current_backend, nvdiffrast_available, use_backend
from facenet3d.render.camera import PinholeCamera
from facenet3d.render.interpolate import interpolate
from facenet3d.render.pose import (
    apply_pose,
    euler_to_matrix,
    euler_to_rotation_6d,
    matrix_to_euler,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)
from facenet3d.render.rasterize import rasterize
from facenet3d.render.renderer import Renderer, RenderOutput
from facenet3d.render.shading import (
    blinn_phong,
    dominant_light,
    sh_basis,
    sh_directional,
    sh_shading,
    sh_uniform,
    shading_terms,
)
from facenet3d.render.texture import texture

__all__ = [
    "BACKENDS",
    "PinholeCamera",
    "RenderOutput",
    "Renderer",
    "antialias",
    "antialias_topology",
    "apply_pose",
    "blinn_phong",
    "current_backend",
    "dominant_light",
    "euler_to_matrix",
    "euler_to_rotation_6d",
    "interpolate",
    "matrix_to_euler",
    "matrix_to_rotation_6d",
    "nvdiffrast_available",
    "rasterize",
    "rotation_6d_to_matrix",
    "sh_basis",
    "sh_directional",
    "sh_shading",
    "sh_uniform",
    "shading_terms",
    "texture",
    "use_backend",
]
