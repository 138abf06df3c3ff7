"""Which implementation of the rasterisation primitives runs: pure PyTorch or nvdiffrast.

Every primitive (:func:`~facenet3d.render.rasterize`, :func:`~facenet3d.render.interpolate`,
:func:`~facenet3d.render.texture`, :func:`~facenet3d.render.antialias`) takes a ``backend``
argument; when it is ``None`` the backend chosen by the innermost :func:`use_backend` context
applies (``"torch"`` outside any context).

- ``"torch"``: the pure-PyTorch implementation in this package; CPU and CUDA, no compilation.
- ``"nvdiffrast"``: a thin adapter over ``nvdiffrast.torch`` with a ``RasterizeCudaContext``;
  needs nvdiffrast installed and CUDA tensors.
- ``"auto"``: nvdiffrast where it is importable and the tensors are on CUDA, torch otherwise.

Example:
    >>> with use_backend("auto"):  # doctest: +SKIP
    ...     rast = rasterize(pos, tri, (224, 224))
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
from collections.abc import Iterator

import torch

from facenet3d.errors import RenderError

BACKENDS = ("torch", "nvdiffrast", "auto")

_current: contextvars.ContextVar[str] = contextvars.ContextVar("facenet3d_render_backend", default="torch")


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise RenderError(f"unknown render backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Make ``name`` the backend of every primitive called with ``backend=None`` inside the block."""
    token = _current.set(_check_name(name))
    try:
        yield
    finally:
        _current.reset(token)


def current_backend() -> str:
    """The backend name a primitive called with ``backend=None`` would be asked for."""
    return _current.get()


def nvdiffrast_available() -> bool:
    """Whether ``nvdiffrast.torch`` can be imported and CUDA is usable."""
    return torch.cuda.is_available() and importlib.util.find_spec("nvdiffrast") is not None


def resolve_backend(backend: str | None, *tensors: torch.Tensor) -> str:
    """The concrete backend (``"torch"`` or ``"nvdiffrast"``) to run on ``tensors``.

    Raises:
        RenderError: an unknown name, or ``"nvdiffrast"`` asked for where it cannot run
            (not installed, or tensors not on CUDA).
    """
    name = _check_name(current_backend() if backend is None else backend)
    on_cuda = all(t.is_cuda for t in tensors)
    if name == "auto":
        return "nvdiffrast" if on_cuda and nvdiffrast_available() else "torch"
    if name == "nvdiffrast":
        if not nvdiffrast_available():
            raise RenderError("render backend 'nvdiffrast' asked for, but nvdiffrast (or CUDA) is not available")
        if not on_cuda:
            raise RenderError("render backend 'nvdiffrast' needs CUDA tensors")
    return name
