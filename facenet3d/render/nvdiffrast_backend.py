"""Thin adapter from this package's primitives to ``nvdiffrast.torch`` (CUDA only).

nvdiffrast is imported lazily, so importing :mod:`facenet3d.render` never needs it. One
``RasterizeCudaContext`` is kept per CUDA device. The tensor conventions are nvdiffrast's own,
which the torch backend reproduces; only the return values differ: nvdiffrast's image-space
derivative outputs (``rast_db``, ``out_da``) are dropped.
"""

from __future__ import annotations

import torch

_contexts: dict[torch.device, object] = {}


def _dr():
    import nvdiffrast.torch as dr  # noqa: PLC0415 - optional dependency, CUDA only

    return dr


def _context(device: torch.device):
    if device not in _contexts:
        _contexts[device] = _dr().RasterizeCudaContext(device=device)
    return _contexts[device]


def _tri32(tri: torch.Tensor) -> torch.Tensor:
    return tri.to(torch.int32).contiguous()


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    rast, _ = _dr().rasterize(_context(pos.device), pos.float().contiguous(), _tri32(tri), list(resolution))
    return rast


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    out, _ = _dr().interpolate(attr.float().contiguous(), rast, _tri32(tri))
    return out


def texture(tex: torch.Tensor, uv: torch.Tensor, boundary_mode: str) -> torch.Tensor:
    return _dr().texture(tex.float().contiguous(), uv.float().contiguous(), filter_mode="linear",
                         boundary_mode=boundary_mode)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    return _dr().antialias(color.float().contiguous(), rast, pos.float().contiguous(), _tri32(tri))
