"""The 3DDFA_V2 teacher's network: MobileNetV1 (Howard et al. 2017) at width 0.5 on 120x120 crops.

Written from the description in ``shared/data/teachers/3ddfa_v2/README.md``; the module's
parameter names are the checkpoint's (``conv1``, ``bn1``, ``dw2_1`` ... ``dw6``, ``fc_param``),
so :func:`load_mobilenet_v1` loads the safetensors file by name with strict key and shape checks.
The checkpoint's auxiliary landmark head ``fc_lm.*`` is not part of the module (unused) and is
the only thing in the file allowed to be left over.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facenet3d.errors import Facenet3DError

#: Depthwise-separable units: (name, output width at factor 1, stride).
UNITS = (("dw2_1", 64, 1), ("dw2_2", 128, 2), ("dw3_1", 128, 1), ("dw3_2", 256, 2), ("dw4_1", 256, 1),
         ("dw4_2", 512, 2), ("dw5_1", 512, 1), ("dw5_2", 512, 1), ("dw5_3", 512, 1), ("dw5_4", 512, 1),
         ("dw5_5", 512, 1), ("dw5_6", 1024, 2), ("dw6", 1024, 1))
#: Checkpoint tensors the module deliberately leaves out (the unused auxiliary landmark head).
SKIPPED_PREFIXES = ("fc_lm.",)
#: Input side, px.
INPUT_SIZE = 120
#: Outputs of ``fc_param``: 12 pose (3x4 matrix) + 40 shape + 10 expression.
NUM_PARAMS = 62


class TeacherWeightsError(Facenet3DError, ValueError):
    """The teacher's weights file is missing or does not match the network (keys or shapes)."""


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 conv + BN + ReLU (checkpoint names kept)."""

    def __init__(self, inp: int, out: int, stride: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False)
        self.bn_dw = nn.BatchNorm2d(inp)
        self.conv_sep = nn.Conv2d(inp, out, 1, 1, 0, bias=False)
        self.bn_sep = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn_dw(self.conv_dw(x)))
        return torch.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(nn.Module):
    """MobileNetV1 regressing 3DDFA's 62 normalised parameters.

    Args:
        widen_factor: channel multiplier (0.5 for the teacher).
        num_params: outputs of the ``fc_param`` head.
    """

    def __init__(self, widen_factor: float = 0.5, num_params: int = NUM_PARAMS):
        super().__init__()
        width = int(32 * widen_factor)
        self.conv1 = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        for name, out, stride in UNITS:
            setattr(self, name, DepthwiseSeparable(width, int(out * widen_factor), stride))
            width = int(out * widen_factor)
        self.fc_param = nn.Linear(width, num_params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 120, 120)`` normalised BGR -> ``(B, 62)`` normalised parameters."""
        x = torch.relu(self.bn1(self.conv1(x)))
        for name, _, _ in UNITS:
            x = getattr(self, name)(x)
        return self.fc_param(x.mean((2, 3)))


def load_mobilenet_v1(path: str | Path, widen_factor: float = 0.5) -> MobileNetV1:
    """The network with the checkpoint's weights, in eval mode.

    Raises:
        TeacherWeightsError: missing/unreadable file, a tensor missing or unexpected, or a shape
            that differs from the module's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise TeacherWeightsError(f"{path}: teacher weights not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise TeacherWeightsError(f"{path}: cannot read the safetensors file ({e})") from e
    net = MobileNetV1(widen_factor)
    expected = net.state_dict()
    given = {k: v for k, v in tensors.items() if not k.startswith(SKIPPED_PREFIXES)}
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    wrong = [f"{k} {tuple(given[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in given and given[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise TeacherWeightsError(f"{path}: does not match MobileNetV1 x{widen_factor}: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    net.load_state_dict(given, strict=True)
    return net.eval()
