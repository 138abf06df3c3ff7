"""``FaceRegressor``: aligned face crop in, :class:`~facenet3d.params.FaceParams` out, in one pass.

Input contract (also the ONNX graph's): ``(B, 3, S, S)`` float RGB in ``[0, 1]``, an aligned crop
(:func:`facenet3d.landmarks.align.align_face`) of side ``S = info.crop_size``; normalisation
happens inside. The predicted parameters live in the camera of
:func:`facenet3d.decode.crop_camera` for that crop size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facenet3d.errors import WeightsError
from facenet3d.facemodel import MorphableModel
from facenet3d.network.backbone import IMAGENET_MEAN, IMAGENET_STD, create_backbone
from facenet3d.network.head import ParamHead, neutral_params, output_scales
from facenet3d.params import FaceParams


@dataclass(frozen=True)
class RegressorInfo:
    """What a regressor is: everything needed to rebuild it and to check it against a face model.

    Attributes:
        variant: registry name it was created from (:func:`~facenet3d.network.create_regressor`).
        backbone: timm model name.
        crop_size: side of the aligned input crop, px.
        identity_dim, expression_dim, albedo_dim: coefficient counts of the face model.
        mean, std: RGB normalisation applied inside the model to ``[0, 1]`` input.
        face_model: name of the face model the head was built for (its metadata ``name``).
        face_model_fingerprint: :func:`~facenet3d.network.face_model_fingerprint` of it.
    """

    variant: str
    backbone: str
    crop_size: int
    identity_dim: int
    expression_dim: int
    albedo_dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    face_model: str = ""
    face_model_fingerprint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RegressorInfo:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("mean", "std"):
            if k in known:
                known[k] = tuple(float(v) for v in known[k])
        return cls(**known)

    @property
    def dims(self) -> tuple[int, int, int]:
        return self.identity_dim, self.expression_dim, self.albedo_dim


class FaceRegressor(nn.Module):
    """A timm backbone and a linear :class:`~facenet3d.network.head.ParamHead`.

    Build one with :func:`~facenet3d.network.create_regressor` (initialised for a face model)
    or :func:`~facenet3d.network.load_regressor` (trained weights).

    Example:
        >>> reg = create_regressor("resnet18", face_model)          # doctest: +SKIP
        >>> params = reg(torch.rand(2, 3, 160, 160))            # doctest: +SKIP
        >>> params.identity.shape                               # doctest: +SKIP
        torch.Size([2, 30])
    """

    def __init__(self, info: RegressorInfo):
        super().__init__()
        self.info = info
        #: The header entry of the weights file it was loaded from (empty when created).
        self.weights_metadata: dict = {}
        #: The weights file it was loaded from (None when created).
        self.weights_path: Path | None = None
        self.backbone, features = create_backbone(info.backbone)
        size = sum(int(np.prod(s)) for s in FaceParams.sizes(*info.dims).values())
        self.head = ParamHead(features, size)
        self.register_buffer("input_mean", torch.tensor(info.mean).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(info.std).view(1, 3, 1, 1))

    @property
    def crop_size(self) -> int:
        return self.info.crop_size

    @property
    def num_outputs(self) -> int:
        return self.head.linear.out_features

    def initialise(self, model: MorphableModel) -> None:
        """Make the untrained head output :func:`~facenet3d.network.head.neutral_params` of ``model``."""
        _check_dims(self.info, model)
        neutral = neutral_params(model, self.info.crop_size)
        scales = output_scales(model, neutral)
        with torch.no_grad():
            self.head.initialise(neutral.to_vector()[0].to(self.head.offset),
                                 scales.to_vector()[0].to(self.head.scale))

    def forward_vector(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` RGB in ``[0, 1]`` -> ``(B, D)`` flat parameter vector (the ONNX output)."""
        x = (images - self.input_mean) / self.input_std
        return self.head(self.backbone(x))

    def forward(self, images: torch.Tensor) -> FaceParams:
        """``(B, 3, S, S)`` RGB in ``[0, 1]`` -> ``B`` faces' :class:`FaceParams`."""
        return FaceParams.from_vector(self.forward_vector(images), *self.info.dims)

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray) -> FaceParams:
        """Parameters of aligned crops, in inference mode (no gradients, BatchNorm statistics frozen).

        Args:
            images: aligned crops of any size in a form :meth:`prepare_images` accepts.

        Returns:
            ``B`` faces. The crop camera (:func:`~facenet3d.decode.crop_camera`) has the same field
            of view at every crop size, so the parameters hold for the crop at any resolution
            (e.g. a 224 px crop for refinement, though the network saw it at 160 px).
        """
        was_training = self.training
        self.eval()
        try:
            return self(self.prepare_images(images))
        finally:
            self.train(was_training)

    def prepare_images(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Turn aligned crops into the network's input.

        Args:
            images: ``(B, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB (as in the photo cache and
                :func:`~facenet3d.landmarks.align.align_face`), or float RGB in [0, 1] as
                ``(B, 3, H, W)`` or ``(B, H, W, 3)`` (as :class:`~facenet3d.refine.FitTarget` holds it).

        Returns:
            ``(B, 3, S, S)`` float32 in [0, 1] on the model's device, resized (bilinear,
            antialiased) when ``H, W`` differ from the crop size.
        """
        x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
        if x.dtype == torch.uint8:
            if x.ndim == 3:
                x = x[None]
            x = x.permute(0, 3, 1, 2).float() / 255.0
        elif x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (B, H, W, 3) uint8 or (B, 3, H, W) / (B, H, W, 3) float, "
                             f"got {tuple(x.shape)}")
        x = x.to(self.input_mean)
        s = self.info.crop_size
        if x.shape[-2:] != (s, s):
            x = nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False,
                                          antialias=True)
        return x

    def extra_repr(self) -> str:
        i = self.info
        return (f"variant={i.variant!r}, backbone={i.backbone!r}, crop_size={i.crop_size}, "
                f"face_model={i.face_model!r}, outputs={self.num_outputs}")


def _check_dims(info: RegressorInfo, model: MorphableModel, source: str | None = None) -> None:
    have = (model.identity_dim, model.expression_dim, model.albedo_dim)
    if have != info.dims:
        where = f"{source}: " if source else ""
        raise WeightsError(f"{where}the regressor predicts (identity, expression, albedo) = {info.dims} "
                           f"coefficients, the face model has {have}")
