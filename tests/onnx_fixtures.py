"""Helpers shared by ``test_onnx.py`` and ``test_infer.py``: a regressor with non-trivial outputs
and aligned crops of real photos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def perturbed_regressor(variant: str, model, crops: np.ndarray | None = None, seed: int = 0, spread: float = 0.3):
    """``create_regressor(variant, model)`` with random head weights, so that its outputs move away
    from the neutral face by about ``spread`` output scales (a few degrees, millimetres and
    tenths of a standard deviation) and differ from photo to photo. No trained weights needed.

    Args:
        crops: ``(N, S, S, 3)`` uint8 aligned crops the weights are scaled for (real photos give
            backbone features of another spread than noise); random images when None.
    """
    from facenet3d.network import create_regressor

    torch.manual_seed(seed)
    regressor = create_regressor(variant, model).eval()
    s = regressor.crop_size
    with torch.no_grad():
        x = regressor.prepare_images(crops) if crops is not None else torch.rand(4, 3, s, s)
        features = regressor.backbone((x - regressor.input_mean) / regressor.input_std)
        # Scaled by how much the features differ between images: that is what moves the outputs.
        rms = float(features.std(0).pow(2).mean().sqrt()) + 1e-6
        linear = regressor.head.linear
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn(linear.weight.shape, generator=g) * spread / (rms * math.sqrt(linear.in_features))
        linear.weight.copy_(weight)
        linear.bias.copy_(torch.randn(linear.bias.shape, generator=g) * spread - linear.weight @ features.mean(0))
    return regressor


def real_photos(faces_dir: Path, n: int = 4) -> list[Path]:
    """``n`` photos from different sets (frontal chips, expressions, turned heads)."""
    utk = sorted((faces_dir / "utkface").glob("*.jpg"))
    lfw = sorted((faces_dir / "lfw-expressions").glob("*.jpg"))
    aflw = sorted((faces_dir / "aflw-crops").glob("*.jpg"))
    picks = [utk[10], lfw[3], aflw[8], utk[40], lfw[30], aflw[21]]
    return picks[:n]


def aligned_crops(photos: list[Path], size: int) -> tuple[np.ndarray, list]:
    """``(N, size, size, 3)`` uint8 aligned crops of the largest face of each photo and the crops'
    :class:`~facenet3d.infer.pipeline.FaceCrop` records."""
    from facenet3d.infer.pipeline import MAX_DECODE_SIDE, detect_faces

    from facenet3d.landmarks.detect import FaceDetector
    from facenet3d.landmarks.image_io import read_image

    detector = FaceDetector()
    faces = [detect_faces(detector, read_image(p, max_side=MAX_DECODE_SIDE), size, 1, str(p))[0] for p in photos]
    return np.stack([f.crop for f in faces]), faces
