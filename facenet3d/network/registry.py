"""Named regressor variants (timm-style): ``create_regressor("resnet18", face_model)``.

A variant is a backbone and a crop size chosen together; any other timm backbone or crop
size can be had with the ``backbone=`` / ``crop_size=`` overrides (the weights file records
what was used, so loading never needs the registry).

=============  =========================  =====  ==================================================
 name           backbone                   crop   use
=============  =========================  =====  ==================================================
 resnet50       ``resnet50``               224    quality; the Deep3DFaceRecon encoder; for GPUs
 resnet18       ``resnet18``               160    CPU training and inference (shipped: weights ``"default"``)
 mobilenetv3    ``mobilenetv3_large_100``  160    smallest inference cost per face (shipped: ``"fast"``)
 tiny           ``test_resnet``            64     tests and smoke runs only
=============  =========================  =====  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from facenet3d.errors import WeightsError
from facenet3d.facemodel import MorphableModel
from facenet3d.network.regressor import FaceRegressor, RegressorInfo


@dataclass(frozen=True)
class RegressorVariant:
    """A named backbone + crop size."""

    name: str
    backbone: str
    crop_size: int
    description: str = ""


_VARIANTS: dict[str, RegressorVariant] = {}


def register_variant(variant: RegressorVariant) -> RegressorVariant:
    """Add (or replace) a named variant."""
    _VARIANTS[variant.name] = variant
    return variant


def available_regressors() -> list[str]:
    """Names accepted by :func:`create_regressor`."""
    return sorted(_VARIANTS)


def get_variant(name: str) -> RegressorVariant:
    """The registered variant ``name``.

    Raises:
        WeightsError: no such variant.
    """
    if name not in _VARIANTS:
        known = ", ".join(available_regressors())
        raise WeightsError(f"unknown regressor variant {name!r}; available: {known}")
    return _VARIANTS[name]


def create_regressor(name: str, face_model: MorphableModel, *, backbone: str | None = None,
                     crop_size: int | None = None, face_model_name: str | None = None) -> FaceRegressor:
    """A randomly initialised regressor whose head outputs the neutral face of ``face_model``.

    Args:
        name: a registered variant (:func:`available_regressors`).
        face_model: the face model whose parameters it predicts (sizes, priors, landmarks).
        backbone: override the variant's timm backbone.
        crop_size: override the variant's crop size, px.
        face_model_name: name recorded in the weights (default: the model's metadata ``name``).

    Raises:
        WeightsError: unknown variant or backbone.
    """
    from facenet3d.network.weights import face_model_fingerprint

    variant = get_variant(name)
    size = int(crop_size or variant.crop_size)
    if size < 32:
        raise WeightsError(f"crop size {size} is too small (minimum 32 px)")
    info = RegressorInfo(
        variant=variant.name, backbone=backbone or variant.backbone, crop_size=size,
        identity_dim=face_model.identity_dim, expression_dim=face_model.expression_dim,
        albedo_dim=face_model.albedo_dim,
        face_model=face_model_name or str(face_model.metadata.get("name", "")),
        face_model_fingerprint=face_model_fingerprint(face_model),
    )
    regressor = FaceRegressor(info)
    regressor.initialise(face_model)
    return regressor


for _v in (
    RegressorVariant("resnet50", "resnet50", 224, "quality (GPU training)"),
    RegressorVariant("resnet18", "resnet18", 160, "CPU training and inference"),
    RegressorVariant("mobilenetv3", "mobilenetv3_large_100", 160, "lowest inference cost"),
    RegressorVariant("tiny", "test_resnet", 64, "tests and smoke runs"),
):
    register_variant(_v)
