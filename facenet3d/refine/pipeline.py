"""Running the refinement stages a configuration names, in order."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from facenet3d.facemodel import MorphableModel
from facenet3d.params import FaceParams
from facenet3d.refine.config import RefineConfig
from facenet3d.refine.landmarks_stage import fit_landmarks, initial_params, regressor_target
from facenet3d.refine.maps_stage import FaceMaps, fit_maps, statistical_maps
from facenet3d.refine.photometric_stage import fit_photometric, initial_lighting
from facenet3d.refine.target import FitTarget
from facenet3d.render import Renderer


@dataclass
class RefineResult:
    """Parameters after the last stage, the UV maps (statistical ones without stage C), and
    seconds per stage."""

    params: FaceParams
    maps: FaceMaps | None
    seconds: dict[str, float] = field(default_factory=dict)


def refine(model: MorphableModel, target: FitTarget, config: RefineConfig, start: FaceParams | None = None,
           renderer: Renderer | None = None, progress: Callable[[str, int, int], None] | None = None,
           fixed: Collection[str] = ()) -> RefineResult:
    """Refine faces with the stages of ``config`` (``landmarks``, ``photometric``, ``maps``).

    Args:
        model: the face model.
        target: ``B`` aligned crops.
        config: stages and settings (:func:`~facenet3d.refine.load_refine_config`).
        start: initial parameters (the regressor's). The landmark terms fit its own projected
            landmarks (:func:`~facenet3d.refine.landmarks_stage.regressor_target`) unless
            ``config.landmarks.landmark_source`` is ``"detector"``, in which case MediaPipe's points
            are fitted and the pose is re-initialised from them (coefficients kept). None starts from
            the mean face posed on MediaPipe's points.
        renderer: a renderer whose shading mode stage B uses (default: per-vertex shading); the
            stages render the part of the mesh the crop shows with renderers of their own.
        progress: optional callable ``(stage, step, steps)`` after every optimisation step.
        fixed: parameter names the landmark and photometric stages keep as in ``start`` (a
            video's identity, estimated once per clip: ``("identity",)``).
    """
    seconds: dict[str, float] = {}
    if start is not None and config.landmarks.landmark_source == "regressor":
        # The landmarks are the start's own: its pose already fits them.
        target = regressor_target(model, target, start)
        params = start.clone()
    else:
        # The closed-form pose from MediaPipe's points is reliable; a regressor's coefficients are kept.
        params = initial_params(model, target, start)
    if start is None and model.albedo_space != "none":
        params = initial_lighting(model, target, params)
    maps = None
    for stage in config.stages:
        t0 = time.perf_counter()
        steps = getattr(config, stage).iterations
        tell = None if progress is None else (lambda step, loss, s=stage, n=steps: progress(s, step + 1, n))
        if stage == "landmarks":
            params = fit_landmarks(model, target, config.landmarks, start=params, progress=tell, fixed=fixed)
        elif stage == "photometric":
            params = fit_photometric(model, target, config.photometric, params, renderer=renderer, progress=tell,
                                     fixed=fixed)
        elif stage == "maps":
            maps = fit_maps(model, target, config.maps, params, progress=tell)
        seconds[stage] = time.perf_counter() - t0
    if maps is None and model.albedo_space == "uv":
        maps = statistical_maps(model, params)
    return RefineResult(params=params, maps=maps, seconds=seconds)
