"""Per-image refinement: stages A (landmarks), B (photometric) and C (UV maps).

Each stage is usable alone (:func:`fit_landmarks`, :func:`fit_photometric`, :func:`fit_maps`);
:func:`refine` runs the stages a :class:`RefineConfig` names, from given parameters (the
regressor's) or from the mean face.
"""

from facenet3d.refine.config import (
    LandmarkStageConfig,
    MapStageConfig,
    PhotometricStageConfig,
    RefineConfig,
    load_refine_config,
)
from facenet3d.refine.landmarks_stage import detector_offsets, fit_landmarks, initial_params, offset_target
from facenet3d.refine.maps_stage import FaceMaps, fit_maps
from facenet3d.refine.photometric_stage import fit_photometric, initial_lighting, render_params
from facenet3d.refine.pipeline import RefineResult, refine
from facenet3d.refine.target import FitTarget

__all__ = [
    "FaceMaps",
    "FitTarget",
    "LandmarkStageConfig",
    "MapStageConfig",
    "PhotometricStageConfig",
    "RefineConfig",
    "RefineResult",
    "detector_offsets",
    "fit_landmarks",
    "fit_maps",
    "fit_photometric",
    "initial_lighting",
    "initial_params",
    "load_refine_config",
    "offset_target",
    "refine",
    "render_params",
]
