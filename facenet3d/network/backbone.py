"""Image encoders: timm backbones, randomly initialised, ending in a global-average-pooled feature vector.

No pretrained weights are ever fetched (``pretrained=False``): facenet3d never downloads at
run time, and the regressor is trained from scratch on face crops.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from facenet3d.errors import WeightsError

#: RGB normalisation of timm's ImageNet-trained models; used by every backbone here so that a
#: backbone's input statistics do not depend on which timm variant it is.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def create_backbone(name: str) -> tuple[nn.Module, int]:
    """A timm model without its classifier.

    Args:
        name: any ``timm.list_models()`` name (``"resnet50"``, ``"resnet18"``,
            ``"mobilenetv3_large_100"``, ...).

    Returns:
        ``(backbone, features)``: the module maps ``(B, 3, H, W)`` normalised images to
        ``(B, features)`` pooled features.

    Raises:
        WeightsError: timm has no such model.
    """
    if not timm.is_model(name):
        raise WeightsError(f"unknown backbone {name!r}: not a timm model name (see timm.list_models())")
    model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="avg")
    # The pooled width is not always ``num_features`` (MobileNetV3 adds a 1x1 conv head after
    # pooling), so measure it.
    was_training = model.training
    model.eval()
    with torch.no_grad():
        features = int(model(torch.zeros(1, 3, 64, 64)).shape[-1])
    model.train(was_training)
    return model, features
