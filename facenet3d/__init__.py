"""facenet3d: monocular 3D face reconstruction on CPU.

The sub-packages each hold one responsibility: ``facemodel`` (morphable models and their
file formats), ``render`` (differentiable rasterisation and shading), ``landmarks``
(detection, alignment, masks, image input), ``network``, ``losses``, ``refine``,
``export`` and ``onnx``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from facenet3d.errors import (  # noqa: E402
    FaceModelFormatError,
    Facenet3DError,
    ImageReadError,
    NoFaceError,
    WeightsError,
)

__all__ = [
    "__version__",
    "Facenet3DError",
    "FaceModelFormatError",
    "ImageReadError",
    "NoFaceError",
    "WeightsError",
]
