"""Pinhole perspective camera: world <-> camera <-> clip <-> pixel transforms.

Conventions:

- **Camera frame** (OpenGL): the camera sits at the origin looking down ``-z``, ``+x`` right, ``+y``
  up, millimetres. A point in front of the camera has ``z < 0``; its *depth* is ``-z`` (mm).
- **World frame**: ``x_cam = R x_world + t`` with the optional extrinsics ``rotation`` ``R`` and
  ``translation`` ``t``; without them world and camera frames coincide, which is how a face is
  usually rendered (its head pose, :func:`~facenet3d.render.pose.apply_pose`, already puts it in
  the camera frame).
- **Pixels**: origin at the top-left corner of the image, ``u`` right, ``v`` down, pixel centres at
  ``+0.5`` (the first pixel's centre is ``(0.5, 0.5)``).
- **Focal length** ``(fx, fy)`` in pixels: a camera-frame point ``(X, Y, Z)`` projects to
  ``u = cx + fx X / (-Z)``, ``v = cy - fy Y / (-Z)``, so ``fx = (W / 2) / tan(fov_x / 2)`` and a focal
  length ``f_mm`` on a sensor ``s_mm`` wide gives ``fx = f_mm W / s_mm``. ``(cx, cy)`` is the principal
  point in pixels, ``(W / 2, H / 2)`` for a centred one.
- **Clip space**: :meth:`PinholeCamera.projection_matrix` is an OpenGL perspective matrix whose
  NDC ``y = -1`` is the *top* image row, so that :func:`~facenet3d.render.rasterize` (row 0 at NDC
  ``y = -1``, as in nvdiffrast) outputs images with row 0 at the top. NDC ``z`` is ``-1`` at
  ``near`` and ``+1`` at ``far``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from facenet3d.errors import RenderError


def _as_pair(value: float | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.get_default_dtype()) if not torch.is_tensor(value) else value
    if t.ndim == 0:
        t = t.expand(2)
    if t.ndim == 1:
        t = t.expand(2) if t.shape[0] == 1 else t
        t = t[None]
    if t.ndim != 2 or t.shape[-1] != 2:
        raise RenderError(f"{name} must be a number, (2,) or (B, 2), got shape {tuple(t.shape)}")
    return t


@dataclass
class PinholeCamera:
    """A batch of pinhole cameras sharing an image size.

    Attributes:
        focal: ``(B, 2)`` ``(fx, fy)`` in pixels (``B = 1`` broadcasts over any batch).
        principal: ``(B, 2)`` ``(cx, cy)`` in pixels.
        image_size: ``(H, W)`` in pixels.
        near: near clipping plane distance, mm (``> 0``).
        far: far clipping plane distance, mm.
        rotation: optional ``(B, 3, 3)`` world-to-camera rotation.
        translation: optional ``(B, 3)`` world-to-camera translation, mm.

    Create with :meth:`create` or :meth:`from_fov`; the tensors may require gradients (to fit the
    focal length, for instance).

    Example:
        >>> cam = PinholeCamera.create(focal=1000.0, image_size=(224, 224))
        >>> cam.camera_to_pixel(torch.tensor([[[10.0, 10.0, -500.0]]]))  # right of, above the centre
        tensor([[[132.,  92.]]])
    """

    focal: torch.Tensor
    principal: torch.Tensor
    image_size: tuple[int, int]
    near: float = 10.0
    far: float = 10000.0
    rotation: torch.Tensor | None = None
    translation: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.focal = _as_pair(self.focal, "focal")
        self.principal = _as_pair(self.principal, "principal").to(self.focal)
        if not 0 < self.near < self.far:
            raise RenderError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if min(self.image_size) <= 0:
            raise RenderError(f"image_size must be positive, got {self.image_size}")

    @classmethod
    def create(cls, focal: float | torch.Tensor, image_size: tuple[int, int],
               principal: float | torch.Tensor | None = None, near: float = 10.0, far: float = 10000.0,
               rotation: torch.Tensor | None = None, translation: torch.Tensor | None = None) -> PinholeCamera:
        """A camera from a focal length in pixels; the principal point defaults to the image centre."""
        h, w = image_size
        focal_t = _as_pair(focal, "focal")
        if principal is None:
            principal = torch.tensor([[w / 2.0, h / 2.0]], dtype=focal_t.dtype, device=focal_t.device)
        return cls(focal_t, principal, (h, w), near, far, rotation, translation)

    @classmethod
    def from_fov(cls, fov_degrees: float, image_size: tuple[int, int], **kwargs) -> PinholeCamera:
        """A camera whose horizontal field of view is ``fov_degrees`` (square pixels)."""
        return cls.create((image_size[1] / 2.0) / math.tan(math.radians(fov_degrees) / 2.0), image_size, **kwargs)

    @property
    def batch_size(self) -> int:
        return self.focal.shape[0]

    def to(self, *args, **kwargs) -> PinholeCamera:
        """A copy with every tensor moved/cast like ``Tensor.to``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(*args, **kwargs)

        return PinholeCamera(move(self.focal), move(self.principal), self.image_size, self.near, self.far,
                             move(self.rotation), move(self.translation))

    # ------------------------------------------------------------------ world <-> camera
    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` world-frame points -> ``(B, N, 3)`` camera-frame points (mm)."""
        if self.rotation is not None:
            points = points @ self.rotation.transpose(-1, -2)
        if self.translation is not None:
            points = points + self.translation[..., None, :]
        return points

    def camera_to_world(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` camera-frame points -> ``(B, N, 3)`` world-frame points (mm)."""
        if self.translation is not None:
            points = points - self.translation[..., None, :]
        if self.rotation is not None:
            points = points @ self.rotation
        return points

    # ------------------------------------------------------------------ camera <-> clip <-> pixel
    def projection_matrix(self) -> torch.Tensor:
        """``(B, 4, 4)`` OpenGL perspective matrix, camera frame -> clip space (see the module docstring).

        Rows: ``(2 fx / W, 0, 1 - 2 cx / W, 0)``, ``(0, -2 fy / H, 1 - 2 cy / H, 0)``,
        ``(0, 0, -(f + n) / (f - n), -2 f n / (f - n))``, ``(0, 0, -1, 0)``.
        """
        h, w = self.image_size
        n, f = self.near, self.far
        size = self.focal.new_tensor([w, h])
        scale = 2 * self.focal / size * self.focal.new_tensor([1.0, -1.0])  # (B, 2)
        shift = 1 - 2 * self.principal / size
        matrix = self.focal.new_tensor([[0.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, -(f + n) / (f - n), -2 * f * n / (f - n)],
                                        [0, 0, -1, 0]]).repeat(scale.shape[0], 1, 1)
        matrix[:, 0, 0], matrix[:, 1, 1] = scale[:, 0], scale[:, 1]
        matrix[:, :2, 2] = shift
        return matrix

    def camera_to_clip(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` camera-frame points (mm) -> ``(B, N, 4)`` clip-space positions for ``rasterize``."""
        matrix = self.projection_matrix()
        return points @ matrix[:, :, :3].transpose(-1, -2) + matrix[:, None, :, 3]

    def world_to_clip(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` world-frame points -> ``(B, N, 4)`` clip space."""
        return self.camera_to_clip(self.world_to_camera(points))

    def clip_to_pixel(self, clip: torch.Tensor) -> torch.Tensor:
        """``(B, N, 4)`` clip space -> ``(B, N, 2)`` pixel coordinates ``(u, v)`` (meaningless for ``w <= 0``)."""
        h, w = self.image_size
        ndc = clip[..., :2] / clip[..., 3:4]
        return (ndc + 1) * torch.tensor([w / 2.0, h / 2.0], dtype=clip.dtype, device=clip.device)

    def camera_to_pixel(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` camera-frame points (mm, ``z < 0``) -> ``(B, N, 2)`` pixels ``(u, v)``."""
        return self.clip_to_pixel(self.camera_to_clip(points))

    def world_to_pixel(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` world-frame points -> ``(B, N, 2)`` pixels."""
        return self.camera_to_pixel(self.world_to_camera(points))

    def pixel_to_camera(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Back-project pixels to camera-frame points.

        Args:
            pixels: ``(B, N, 2)`` ``(u, v)``.
            depth: ``(B, N)`` or ``(B, N, 1)`` distance along ``-z``, mm.

        Returns:
            ``(B, N, 3)`` camera-frame points (``z = -depth``).
        """
        d = depth[..., None] if depth.ndim == pixels.ndim - 1 else depth
        xy = (pixels - self.principal[:, None]) / self.focal[:, None] * d
        return torch.cat([xy[..., :1], -xy[..., 1:2], -d], -1)

    def pixel_rays(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(B, H, W, 3)`` unit camera-frame directions from the camera through each pixel centre."""
        h, w = self.image_size
        dtype = dtype or self.focal.dtype
        v, u = torch.meshgrid(torch.arange(h, device=self.focal.device, dtype=dtype) + 0.5,
                              torch.arange(w, device=self.focal.device, dtype=dtype) + 0.5, indexing="ij")
        pixels = torch.stack([u, v], -1).reshape(1, -1, 2)
        points = self.pixel_to_camera(pixels, torch.ones_like(pixels[..., 0]))
        return torch.nn.functional.normalize(points, dim=-1).view(-1, h, w, 3)

    def ndc_depth_to_depth(self, z_ndc: torch.Tensor) -> torch.Tensor:
        """NDC ``z/w`` (``rast[..., 2]``) -> depth along ``-z`` in mm."""
        n, f = self.near, self.far
        return 2 * f * n / ((f + n) - z_ndc * (f - n))
