"""The regressor: a timm backbone and a linear head to :class:`~facenet3d.params.FaceParams`.

- :func:`create_regressor` — a named variant (:func:`available_regressors`), initialised so
  that it predicts the mean face looking into the camera;
- :func:`save_regressor` / :func:`load_regressor` — safetensors with the architecture,
  input normalisation and face model recorded in the header;
- :func:`load_pretrained` — a shipped (or any) regressor together with its face model, checked
  to belong together (what ``FaceReconstructor.from_pretrained`` calls).
"""

from facenet3d.network.backbone import create_backbone
from facenet3d.network.head import ParamHead, neutral_params, neutral_translation, output_scales
from facenet3d.network.registry import (
    RegressorVariant,
    available_regressors,
    create_regressor,
    get_variant,
    register_variant,
)
from facenet3d.network.regressor import FaceRegressor, RegressorInfo
from facenet3d.network.weights import (
    PRETRAINED,
    check_face_model,
    face_model_fingerprint,
    load_pretrained,
    load_regressor,
    pretrained_path,
    read_regressor_metadata,
    save_regressor,
)

__all__ = [
    "PRETRAINED",
    "FaceRegressor",
    "ParamHead",
    "RegressorInfo",
    "RegressorVariant",
    "available_regressors",
    "check_face_model",
    "create_backbone",
    "create_regressor",
    "face_model_fingerprint",
    "get_variant",
    "load_pretrained",
    "load_regressor",
    "neutral_params",
    "neutral_translation",
    "output_scales",
    "pretrained_path",
    "read_regressor_metadata",
    "register_variant",
    "save_regressor",
]
