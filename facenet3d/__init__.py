"""facenet3d: monocular 3D face reconstruction on CPU.

The sub-packages each hold one responsibility: ``facemodel`` (morphable models and their
file formats), ``render`` (differentiable rasterisation and shading), ``landmarks``
(detection, alignment, masks, image input), ``network``, ``losses``, ``refine``,
``export`` and ``onnx``.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting make PyTorch on a busy CPU several times slower (the
# renderer's many small ops wait often); sleeping waits cost nothing on an idle one. Takes effect
# when facenet3d is imported before torch, as the command-line tools do.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
