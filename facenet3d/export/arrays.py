"""Array conversion shared by the exporters: anything array-like (torch included) to numpy.

The export package runs in the torch-free runtime (``infer/``), so it never imports torch;
tensors are recognised by their ``detach`` method instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_numpy"]


def to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """``x`` as a numpy array: a torch tensor is detached and moved to the CPU first.

    Args:
        x: numpy array, torch tensor (any device, with or without grad), list or scalar.
        dtype: optional dtype to cast to.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)
