"""Typed errors of facenet3d.

Every error a user can trigger with bad input derives from :class:`Facenet3DError`, so a
batch job can report it and carry on with the next item instead of crashing.
"""

from __future__ import annotations

from pathlib import Path


class Facenet3DError(Exception):
    """Base class of every error facenet3d raises on bad input."""


class FaceModelFormatError(Facenet3DError, ValueError):
    """A face-model file is missing, truncated, of a foreign format or has inconsistent arrays."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}")


class ImageReadError(Facenet3DError, OSError):
    """An image file cannot be read or decoded (missing, truncated, not an image)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CameraError(Facenet3DError, OSError):
    """A camera cannot be opened or stops giving frames (no such device, in use, no permission)."""

    def __init__(self, index: int, problem: str):
        self.index = int(index)
        self.problem = problem
        super().__init__(f"camera {self.index}: {problem}")


class NoFaceError(Facenet3DError):
    """No face was found in an image."""

    def __init__(self, source: str | Path | None = None):
        self.source = None if source is None else str(source)
        super().__init__(f"{self.source}: no face found" if self.source else "no face found")


class WeightsError(Facenet3DError, ValueError):
    """A weights file is missing, corrupt, or belongs to another face model or architecture."""


class ExportError(Facenet3DError, ValueError):
    """A mesh, texture or record cannot be written: inconsistent arrays, unknown map, bad values."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class RenderError(Facenet3DError, ValueError):
    """A render input has the wrong shape or type, or the requested render backend cannot run."""


class MissingExtraError(Facenet3DError, ImportError):
    """A feature needs an optional dependency that is not installed (``pip install facenet3d[extra]``)."""

    def __init__(self, feature: str, package: str, extra: str):
        self.feature = feature
        self.package = package
        self.extra = extra
        super().__init__(f"{feature} needs {package}, which is not installed: pip install 'facenet3d[{extra}]'")


class PhotoInputError(Facenet3DError, ValueError):
    """Photos asked for that are not there: a missing file or folder, or no photo found."""
