"""Refinement settings: one dataclass per stage, presets by name from ``configs/refine/*.yaml``.

``fast`` runs stages A+B, ``full`` A+B+C. Every weight and iteration count can be changed in a
YAML file (``load_refine_config("path/to/my.yaml")``), which overrides the dataclass defaults
field by field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from facenet3d.resources import CONFIGS_DIR

CONFIG_DIR = CONFIGS_DIR / "refine"
#: What stage A's landmark terms fit when a regressor gives the start (``LandmarkStageConfig``).
LANDMARK_SOURCES = ("regressor", "detector")


@dataclass
class LandmarkStageConfig:
    """Stage A: pose, identity and expression from landmarks."""

    iterations: int = 80
    lr: float = 0.04
    # What the landmark terms fit when the fit starts from a regressor: "regressor", its own
    # projected points (measured better than MediaPipe's, most of all beyond 30 degrees of yaw:
    # weights/README.md), or "detector", MediaPipe's. Without a regressor it is always MediaPipe's.
    landmark_source: str = "regressor"
    landmarks68_weight: float = 1.0
    dense_weight: float = 1.0
    depth_weight: float = 0.1  # MediaPipe's relative depth: weak, but constrains the profile
    identity_prior: float = 2e-3
    expression_prior: float = 2e-3
    # A clip's detector offsets (:func:`~facenet3d.refine.landmarks_stage.detector_offsets`): weak, so a
    # landmark placed apart in every frame is explained by one shared offset, not by an expression in each.
    offset_prior: float = 0.1


@dataclass
class PhotometricStageConfig:
    """Stage B: adds SH lighting, statistical albedo and specular through the renderer."""

    iterations: int = 40
    lr: float = 0.03
    photometric_weight: float = 1.0
    robust_scale: float = 0.15  # colour distance where the robust loss starts to saturate
    landmark_weight: float = 10.0  # keeps the photometric term from pulling the geometry off the landmarks
    identity_prior: float = 2e-3
    expression_prior: float = 2e-3
    albedo_prior: float = 2e-3
    resolution: int = 160  # render size for the fit (the crop is resized to it)
    map_size: int = 384  # texels across the UV atlas the albedo is rendered at (0: the model's own size)


@dataclass
class MapStageConfig:
    """Stage C: per-texel UV maps (diffuse, specular, roughness, displacement -> normal)."""

    iterations: int = 60
    lr: float = 0.01
    resolution: int = 224
    map_size: int = 384  # texels across the atlas the maps are fitted at, then upsampled (0: the model's own size)
    photometric_weight: float = 1.0
    robust_scale: float = 0.1
    smoothness_weight: float = 0.05
    symmetry_weight: float = 0.02
    consistency_weight: float = 0.5  # pull towards the statistical albedo of stage B
    displacement_weight: float = 0.1
    max_displacement_mm: float = 2.0
    outlier_threshold: float = 3.0  # robust z-score of a pixel's residual beyond which it is no skin evidence; 0: off
    specular_prior_weight: float = 0.5  # pull of the specular map towards its regional prior
    roughness_prior_weight: float = 0.5  # pull of the roughness map towards its regional prior


@dataclass
class RefineConfig:
    """Which stages run, and their settings."""

    name: str = "fast"
    stages: tuple[str, ...] = ("landmarks", "photometric")
    landmarks: LandmarkStageConfig = field(default_factory=LandmarkStageConfig)
    photometric: PhotometricStageConfig = field(default_factory=PhotometricStageConfig)
    maps: MapStageConfig = field(default_factory=MapStageConfig)

    def as_dict(self) -> dict:
        return asdict(self)


def load_refine_config(name_or_path: str | Path) -> RefineConfig:
    """A preset by name (``fast``, ``full``, ``landmarks``) or a YAML file.

    Raises:
        ValueError: unknown preset, or a YAML key that is no setting.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise ValueError(f"unknown refine preset {name_or_path!r}; known: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    cfg = RefineConfig(name=data.pop("name", path.stem))
    if "stages" in data:
        cfg.stages = tuple(data.pop("stages"))
    for stage in ("landmarks", "photometric", "maps"):
        overrides = data.pop(stage, {}) or {}
        target = getattr(cfg, stage)
        names = {f.name for f in fields(target)}
        for key, value in overrides.items():
            if key not in names:
                raise ValueError(f"{path}: {stage}.{key} is not a setting; known: {sorted(names)}")
            setattr(target, key, type(getattr(target, key))(value))
    if data:
        raise ValueError(f"{path}: unknown keys {sorted(data)}")
    unknown = set(cfg.stages) - {"landmarks", "photometric", "maps"}
    if unknown:
        raise ValueError(f"{path}: unknown stages {sorted(unknown)}")
    if cfg.landmarks.landmark_source not in LANDMARK_SOURCES:
        raise ValueError(f"{path}: landmarks.landmark_source must be one of {LANDMARK_SOURCES}, "
                         f"not {cfg.landmarks.landmark_source!r}")
    return cfg
