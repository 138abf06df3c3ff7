"""Refinement stages on synthetic faces with known parameters and on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet3d.decode import crop_camera, decode_face
from facenet3d.facemodel import load_face_model
from facenet3d.params import FaceParams
from facenet3d.refine import (
    FitTarget,
    fit_landmarks,
    fit_maps,
    fit_photometric,
    initial_lighting,
    initial_params,
    load_refine_config,
    refine,
    render_params,
)
from facenet3d.refine.config import LandmarkStageConfig, MapStageConfig, PhotometricStageConfig, RefineConfig
from facenet3d.refine.landmarks_stage import regressor_target
from facenet3d.refine.photometric_stage import ScaledTarget, photometric_error
from facenet3d.render import Renderer, euler_to_rotation_6d, rotation_6d_to_matrix
from facenet3d.render.color import linear_to_srgb


@pytest.fixture(scope="module")
def model():
    return load_face_model("default")


@pytest.fixture(scope="module")
def renderer(model):
    return Renderer.from_model(model)


def synthetic_target(model, params: FaceParams, size: int = 224) -> FitTarget:
    """Landmarks (MediaPipe-like 478 with relative depth, and 68) of a face with known params."""
    cam = crop_camera(size)
    dec = decode_face(model, params, cam)
    b = params.batch_size
    lm478 = torch.zeros(b, 478, 3)
    lm478[:, :468, :2] = dec.landmarks_dense
    depth = -model.gather_points(dec.vertices_camera, *model.dense_landmark_rows())[..., 2]
    lm478[:, :468, 2] = (depth - depth.mean(1, keepdim=True)) * cam.focal[:, :1] / (-params.translation[:, 2:3])
    lm478[:, 468:, :2] = dec.landmarks_dense[:, :10]  # iris points are unused by the fit
    with torch.no_grad():
        renderer = Renderer.from_model(model)
        out = render_params(model, renderer, params, size)
    image = linear_to_srgb(out.image) * out.mask + 0.3 * (1 - out.mask)
    skin = torch.ones(b, size, size)
    return FitTarget(image.detach(), lm478, dec.landmarks68.detach(), skin)


def known_params(model, seed: int = 0) -> FaceParams:
    g = torch.Generator().manual_seed(seed)
    p = FaceParams.neutral(2, model.identity_dim, model.expression_dim, model.albedo_dim, distance_mm=900)
    p.identity = torch.randn(2, model.identity_dim, generator=g) * 0.8
    if model.expression_bounds is None:
        p.expression = torch.randn(2, model.expression_dim, generator=g) * 0.5
    else:  # blendshape weights: a few active ones
        active = torch.rand(2, model.expression_dim, generator=g) < 0.2
        p.expression = torch.rand(2, model.expression_dim, generator=g) * 0.6 * active
    p.albedo = torch.randn(2, model.albedo_dim, generator=g) * 0.5
    p.rotation = euler_to_rotation_6d(torch.tensor([[20.0, -8.0, 5.0], [-30.0, 10.0, -4.0]]))
    p.translation = torch.tensor([[15.0, -10.0, -900.0], [-20.0, 5.0, -1000.0]])
    p.sh[:, 1:4] = torch.tensor([0.6, 0.9, 0.3])[:, None]  # light from above, right, front
    return p


def rotation_error_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r = rotation_6d_to_matrix(a) @ rotation_6d_to_matrix(b).transpose(-1, -2)
    cos = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def test_initial_pose_is_close_already(model):
    truth = known_params(model)
    target = synthetic_target(model, truth)
    init = initial_params(model, target)
    assert (rotation_error_deg(init.rotation, truth.rotation) < 8).all()
    assert ((init.translation - truth.translation).abs()[:, 2] / truth.translation[:, 2].abs() < 0.15).all()


def test_landmark_stage_recovers_pose_and_landmarks(model):
    truth = known_params(model)
    target = synthetic_target(model, truth)
    fitted = fit_landmarks(model, target, LandmarkStageConfig(iterations=150, identity_prior=1e-4,
                                                              expression_prior=1e-4))
    dec = decode_face(model, fitted, crop_camera(224))
    err = (dec.landmarks_dense - target.landmarks478[:, :468, :2]).norm(dim=-1).mean(1)
    assert (err < 1.0).all(), err  # sub-pixel on a 224 crop
    assert (rotation_error_deg(fitted.rotation, truth.rotation) < 3).all()
    # The mean shape alone fits far worse: the identity/expression coefficients do the work.
    mean_only = initial_params(model, target)
    err_mean = (decode_face(model, mean_only, crop_camera(224)).landmarks_dense
                - target.landmarks478[:, :468, :2]).norm(dim=-1).mean(1)
    assert (err * 3 < err_mean).all()


def test_landmark_stage_leaves_out_points_of_zero_weight(model):
    truth = known_params(model)
    target = synthetic_target(model, truth)
    true_jaw = target.landmarks68[:, :17].clone()
    target.landmarks68[:, :17, 0] += 25.0  # a jaw contour 25 px off to one side
    config = LandmarkStageConfig(iterations=150, dense_weight=0.0, depth_weight=0.0)
    weights = torch.ones(68)
    weights[:17] = 0.0
    start = initial_params(model, target)

    def jaw_error(params: FaceParams) -> torch.Tensor:
        return (decode_face(model, params, crop_camera(224)).landmarks68[:, :17] - true_jaw).norm(dim=-1).mean(1)

    left_out = jaw_error(fit_landmarks(model, target, config, start=start, weights68=weights))
    pulled = jaw_error(fit_landmarks(model, target, config, start=start))
    # Fitted to the inner points alone, the jaw lands near the face's own jaw (a few pixels: the
    # inner points do not fix the whole identity); with the shifted points in the term it is
    # dragged most of the 25 px toward them.
    assert (left_out < 4.0).all(), left_out
    assert (pulled > 15.0).all(), pulled


def test_regressor_target_is_the_start_s_own_landmarks(model):
    truth = known_params(model)
    target = synthetic_target(model, truth)
    g = torch.Generator().manual_seed(1)
    # A detector that places the face 6 px low and scatters its points by 3 px; the start (a
    # regressor's answer) right.
    off = torch.tensor([0.0, 6.0, 0.0])
    noisy = target.with_landmarks(
        target.landmarks478 + off + 3.0 * torch.randn(target.landmarks478.shape, generator=g),
        target.landmarks68 + off[:2] + 3.0 * torch.randn(target.landmarks68.shape, generator=g))
    own = regressor_target(model, noisy, truth)
    assert torch.allclose(own.landmarks68, target.landmarks68, atol=1e-3)
    assert torch.allclose(own.landmarks478[:, :468, :2], target.landmarks478[:, :468, :2], atol=1e-3)
    depth = own.landmarks478[:, :468, 2] - own.landmarks478[:, :468, 2].mean(1, keepdim=True)
    assert torch.allclose(depth, target.landmarks478[:, :468, 2], atol=1e-3)
    assert torch.equal(own.image, noisy.image) and torch.equal(own.skin_mask, noisy.skin_mask)

    def moved(landmark_source: str) -> torch.Tensor:
        cfg = RefineConfig(stages=("landmarks",), landmarks=LandmarkStageConfig(landmark_source=landmark_source))
        fitted = refine(model, noisy, cfg, start=truth).params
        return (decode_face(model, fitted, crop_camera(224)).landmarks68 - target.landmarks68).norm(dim=-1).mean(1)

    # From the regressor's own points the fit stays where the regressor put the face; from the
    # detector's it is pulled toward their error (Adam's first steps, sized by the learning rate,
    # and the coefficient priors move it a little even from the optimum).
    from_regressor, from_detector = moved("regressor"), moved("detector")
    assert (from_regressor < 0.75).all(), from_regressor
    assert (from_detector > 4.0).all(), from_detector


def test_photometric_stage_lowers_error_and_recovers_light_direction(model, renderer):
    truth = known_params(model, seed=1)
    target = synthetic_target(model, truth)
    start = fit_landmarks(model, target, LandmarkStageConfig(iterations=80))
    start = initial_lighting(model, target, start)
    cfg = PhotometricStageConfig(iterations=40, resolution=112)
    scaled = ScaledTarget.from_target(target, cfg.resolution)
    with torch.no_grad():
        before = photometric_error(render_params(model, renderer, start, 112), scaled, cfg.robust_scale)
    fitted = fit_photometric(model, target, cfg, start, renderer=renderer)
    with torch.no_grad():
        after = photometric_error(render_params(model, renderer, fitted, 112), scaled, cfg.robust_scale)
    assert (after < 0.5 * before).all(), (before, after)
    # Band-1 SH (direction of the light) points the same way as the truth's.
    cos = torch.nn.functional.cosine_similarity(fitted.sh[:, 1:4].mean(-1), truth.sh[:, 1:4].mean(-1), dim=-1)
    assert (cos > 0.8).all(), cos


def test_maps_stage_valid_ranges_and_better_fit(model, renderer):
    truth = known_params(model, seed=2)
    target = synthetic_target(model, truth.index(0))
    start = truth.index(0).clone()
    start.albedo.zero_()  # the maps must recover what the statistical albedo misses
    cfg = MapStageConfig(iterations=25, resolution=112)
    maps = fit_maps(model, target, cfg, start)
    assert maps.albedo.min() >= 0 and maps.albedo.max() <= 1
    assert maps.specular.min() >= 0 and maps.specular.max() <= 0.08
    assert maps.roughness.min() >= 0.1 and maps.roughness.max() <= 1
    assert maps.displacement.abs().max() <= cfg.max_displacement_mm
    assert torch.allclose(maps.normal.norm(dim=-1), torch.ones(1), atol=1e-4)
    scaled = ScaledTarget.from_target(target, 112)
    pixel = Renderer.from_model(model, shading="pixel")
    with torch.no_grad():
        base = photometric_error(render_params(model, pixel, start, 112), scaled, cfg.robust_scale)
        refined = photometric_error(render_params(model, pixel, start, 112, albedo_map=maps.albedo,
                                                  specular_map=maps.specular, roughness_map=maps.roughness),
                                    scaled, cfg.robust_scale)
    assert refined < 0.8 * base


def test_presets_and_overrides(tmp_path):
    fast, full = load_refine_config("fast"), load_refine_config("full")
    assert fast.stages == ("landmarks", "photometric")
    assert full.stages == ("landmarks", "photometric", "maps")
    custom = tmp_path / "mine.yaml"
    custom.write_text("stages: [landmarks]\nlandmarks:\n  iterations: 7\n")
    cfg = load_refine_config(custom)
    assert cfg.stages == ("landmarks",) and cfg.landmarks.iterations == 7
    custom.write_text("landmarks:\n  itertions: 7\n")
    with pytest.raises(ValueError, match="itertions"):
        load_refine_config(custom)
    with pytest.raises(ValueError, match="unknown refine preset"):
        load_refine_config("fastest")
    custom.write_text("landmarks:\n  landmark_source: mediapipe\n")
    with pytest.raises(ValueError, match="landmark_source"):
        load_refine_config(custom)
    assert fast.landmarks.landmark_source == "regressor"


def test_refine_real_photos_each_stage_improves(model, renderer, faces_dir):
    from facenet3d.landmarks.cache import process_photo
    from facenet3d.landmarks.detect import FaceDetector

    photos = sorted((faces_dir / "utkface").glob("*.jpg"))[:2]
    det = FaceDetector()
    arrays = [process_photo(p, det)[1] for p in photos]
    stack = {k: np.stack([a[k] for a in arrays]) for k in ("crop", "landmarks478", "landmarks68", "skin_mask")}
    target = FitTarget.from_arrays(stack["crop"], stack["landmarks478"], stack["landmarks68"], stack["skin_mask"])
    scaled = ScaledTarget.from_target(target, 160)

    def err(params, maps=None):
        kw = {} if maps is None else {"albedo_map": maps.albedo}
        with torch.no_grad():
            return photometric_error(render_params(model, renderer, params, 160, **kw), scaled, 0.15)

    mean = initial_lighting(model, target, initial_params(model, target))
    cfg = load_refine_config("fast")
    a = refine(model, target, load_refine_config("landmarks"), renderer=renderer)
    a_lit = initial_lighting(model, target, a.params)
    ab = refine(model, target, cfg, renderer=renderer)
    e_mean, e_a, e_ab = err(mean), err(a_lit), err(ab.params)
    assert (e_ab < e_a).all() and (e_a <= e_mean * 1.05).all(), (e_mean, e_a, e_ab)


def test_detector_offsets_take_what_every_frame_shares(model):
    """Landmarks that sit apart from the model's points by the same offsets in every frame of a clip
    (a detector's own convention) come out as one shared offset (what it does to a clip's
    blendshapes: the known-answer clip of test_animation.py)."""
    from facenet3d.refine import detector_offsets, offset_target

    names = list(model.expression_names)
    n = 4
    g = torch.Generator().manual_seed(1)
    truth = FaceParams.neutral(n, model.identity_dim, model.expression_dim, model.albedo_dim, distance_mm=900)
    truth.identity = (torch.randn(1, model.identity_dim, generator=g) * 0.6).expand(n, -1).clone()
    for i, shape in enumerate(("jawOpen", "mouthSmile_L", "eyeBlink_R", "mouthSmile_R")):
        truth.expression[i, names.index(shape)] = 0.4 + 0.1 * i
    truth.rotation = euler_to_rotation_6d(torch.tensor([[12.0 * np.sin(i), 6.0 * np.cos(i), 0.0] for i in range(n)],
                                                       dtype=torch.float32))
    target = synthetic_target(model, truth)
    offset = torch.randn(468 + 68, 2, generator=g) * 2.0  # px on a 224 crop: a detector's convention
    points = torch.cat([target.landmarks478[:, :468, :2], target.landmarks68], 1).mean(0)
    design = torch.cat([points, torch.ones_like(points[:, :1])], 1)
    offset = offset - design @ torch.linalg.lstsq(design, offset).solution  # its affine part is head pose
    target.landmarks478[:, :468, :2] += offset[:468]
    target.landmarks68 += offset[468:]
    config = LandmarkStageConfig(iterations=40)
    start = initial_params(model, target)
    found = detector_offsets(model, target, config, start)

    def rms(x: torch.Tensor) -> float:
        return float(x.norm(dim=-1).pow(2).mean().sqrt())

    assert rms(found - offset) < 0.5 * rms(offset), (rms(found - offset), rms(offset))
    # Taken off the targets, the landmarks are the face's own again (to what was not recovered); depth is kept.
    clean = offset_target(target, found)
    assert torch.allclose(clean.landmarks68, target.landmarks68 - found[468:])
    assert torch.allclose(clean.landmarks478[:, :468, :2], target.landmarks478[:, :468, :2] - found[:468])
    assert torch.equal(clean.landmarks478[..., 2], target.landmarks478[..., 2])

def test_visible_part_renders_the_face_as_the_whole_mesh(model):
    """The part of the head a crop shows, with exact normals at its vertices: the same image wherever
    a camera-facing triangle is seen, for a tenth of the vertices' work or more left out."""
    from facenet3d.refine.visible_part import VisiblePart

    params = known_params(model)
    part = VisiblePart.of(model, params, 112)
    assert part.num_vertices < 0.9 * model.num_vertices
    with torch.no_grad():
        whole = render_params(model, Renderer.from_model(model), params, 112)
        seen = render_params(model, part.renderer(model), params, 112, part=part)
    both = (whole.mask[..., 0] > 0) & (seen.mask[..., 0] > 0)
    assert both.float().mean() > 0.3
    # Only back faces seen through the mouth and eye openings are left out: a few pixels there show
    # what lies behind them instead.
    assert (whole.mask[..., 0] > 0).sum() - both.sum() < 0.02 * both.sum()
    same = ((seen.image - whole.image).abs().amax(-1) < 1e-5)[both]
    assert same.float().mean() > 0.999, same.float().mean()


def test_solved_light_recovers_the_light_of_a_render(model):
    """Stage B's warm start: the least-squares SH light from a render of known geometry and albedo."""
    from facenet3d.refine.photometric_stage import solve_lighting
    from facenet3d.refine.visible_part import VisiblePart

    truth = known_params(model).index(0)
    truth.specular.zero_()  # the solve explains diffuse light
    target = ScaledTarget.from_target(synthetic_target(model, truth, 128), 128)
    start = truth.clone()
    start.sh = torch.zeros_like(truth.sh)
    start.sh[:, 0] = 3.5449 * 0.5
    part = VisiblePart.of(model, start, 128)
    solved = solve_lighting(model, part.renderer(model), part, start, target, ridge=1e-6)
    # Bands 0 and 1 (ambient and the dominant direction) are what a face constrains well.
    torch.testing.assert_close(solved.sh[:, :4], truth.sh[:, :4], atol=0.08, rtol=0.05)


@pytest.mark.parametrize("anneal", [True, False])
def test_minimise_is_torch_adam_with_cosine_annealing(anneal):
    """The refinement's hand-written Adam takes torch.optim.Adam's steps (with CosineAnnealingLR to 5 %),
    on several leaves of different shapes at once; a leaf the loss does not reach stays as it was."""
    from facenet3d.refine.optim import minimise

    g = torch.Generator().manual_seed(0)
    a, y = torch.randn(20, 5, generator=g), torch.randn(20, generator=g)
    k = torch.randn(3, 4, generator=g)

    def loss(x, w):
        return ((a @ x - y) ** 2).mean() + ((w - k) ** 4).mean()

    ours, ours_w = torch.zeros(5, requires_grad=True), torch.zeros(3, 4, requires_grad=True)
    unused = torch.ones(2, requires_grad=True)
    minimise([ours, unused, ours_w], lambda: loss(ours, ours_w)[None], 30, 0.05, anneal=anneal)
    theirs, theirs_w = torch.zeros(5, requires_grad=True), torch.zeros(3, 4, requires_grad=True)
    opt = torch.optim.Adam([theirs, theirs_w], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 30, eta_min=0.05 * 0.05) if anneal else None
    for _ in range(30):
        opt.zero_grad()
        loss(theirs, theirs_w).backward()
        opt.step()
        if sched is not None:
            sched.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours_w.detach(), theirs_w.detach(), atol=1e-6, rtol=1e-5)
    assert torch.equal(unused.detach(), torch.ones(2))
    assert float(((a @ ours.detach() - y) ** 2).mean()) < float((y ** 2).mean())
