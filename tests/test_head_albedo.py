"""The head model's albedo space from photos (train.build_face_model.head_albedo): the head fitted
to real cached photos, unwrapping + de-lighting of a rendered head with a known albedo, and a
whole build on a dozen real photos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from facenet3d.train.build_face_model import head_albedo as ha
from facenet3d.train.build_face_model.ict_head import atlas_mirror, head_geometry

from facenet3d.evaluate.geometry import Similarity
from facenet3d.facemodel import FaceModelArrays, MorphableModel
from facenet3d.geometry import vertex_normals
from facenet3d.landmarks.cache import PhotoCache, preprocess
from facenet3d.render.camera import PinholeCamera
from facenet3d.render.color import linear_to_srgb
from facenet3d.render.renderer import Renderer
from facenet3d.render.shading import sh_directional, sh_uniform

PER_GROUP = 3  # photos per UTKFace race group and of lfw-expressions' colour photos


@pytest.fixture(scope="module")
def head(ict_dir) -> FaceModelArrays:
    return head_geometry(ict_dir)


def _is_colour(path: Path) -> bool:
    img = cv2.imread(str(path)).astype(np.int16)
    return bool(np.abs(img[..., 0] - img[..., 1]).mean() >= 2 or np.abs(img[..., 1] - img[..., 2]).mean() >= 2)


@pytest.fixture(scope="module")
def photo_cache(faces_dir, tmp_path_factory) -> PhotoCache:
    """A temporary cache of real shared photos: the first few of each UTKFace race group and of
    lfw-expressions' colour photos."""
    photos: list[Path] = []
    utk = sorted((faces_dir / "utkface").glob("*.chip.jpg"))
    for race in range(5):
        photos += [p for p in utk if p.name.split("_")[2] == str(race)][:PER_GROUP]
    lfw = (p for p in sorted((faces_dir / "lfw-expressions").glob("*.jpg")) if _is_colour(p))
    photos += [next(lfw) for _ in range(PER_GROUP)]
    root = tmp_path_factory.mktemp("head_albedo_cache")
    preprocess(photos, root, workers=1, progress=False)
    cache = PhotoCache(root)
    assert len(cache) >= len(photos) - 1
    return cache


def test_head_fits_mediapipe_points_of_real_photos(head, photo_cache):
    fitter = ha.HeadFitter(head)
    assert fitter.corr.name == "ibug68_inner"  # the bare geometry has no MediaPipe embedding
    residuals, scales = [], []
    for i in range(len(photo_cache)):
        item = photo_cache[i]
        fit = fitter.fit(item["landmarks478"])
        residuals.append(fit.residual_px)
        scales.append(fit.similarity.scale)
        # The fitted head projects onto the photo's face: its iBUG points near MediaPipe's.
        ours = fit.vertices_px[head.landmarks68[17:], :2]
        theirs = item["landmarks478"][ha.IBUG68_FROM_MEDIAPIPE[17:], :2]
        assert np.median(np.linalg.norm(ours - theirs, axis=1)) < 4.0
        assert fit.expression.min() >= 0 and fit.expression.max() <= 1
        # Normals face the camera on the nose tip (+z toward the camera in the y-up frame).
        assert fit.normals[head.landmarks68[30], 2] > 0.5
    assert np.median(residuals) < 3.0 and max(residuals) < ha.MAX_FIT_RESIDUAL_PX
    # 224 px crops of faces ~150 mm wide: about a pixel per millimetre.
    assert 0.6 < np.median(scales) < 1.6


def _known_albedo(size: int) -> np.ndarray:
    """A skin-like albedo map with variation along both atlas axes (a few cycles over the face)."""
    v, u = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    base = np.array([0.45, 0.3, 0.22])
    pattern = 1 + 0.12 * np.sin(40 * u)[..., None] * np.array([1, -1, 0.5]) + 0.1 * np.cos(33 * v)[..., None]
    return (base * pattern).astype(np.float32)


def _rendered_photo(head: FaceModelArrays, albedo: np.ndarray, sh: torch.Tensor) -> tuple[np.ndarray, ha.HeadFit]:
    """The mean head turned by 15 degrees, rendered with a UV ``albedo`` map through a nearly
    orthographic camera (far away, long focal: ~1 px/mm) into a 224 px sRGB crop, and its
    vertices in crop pixels as MediaPipe gives them (z away from the camera, px)."""
    crop_size, distance = 224, 30000.0
    yaw = np.radians(15)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    cam_verts = head.mean_shape.astype(np.float64) @ rot.T + np.array([0, 0, -distance])
    camera = PinholeCamera.create(focal=distance, image_size=(crop_size, crop_size), far=2 * distance)
    verts_t = torch.as_tensor(cam_verts, dtype=torch.float32)[None]
    renderer = Renderer(head.triangles, head.uvs, head.uv_triangles, shading="pixel")
    image = renderer(verts_t, camera, sh, torch.as_tensor(albedo)[None]).image[0]
    crop = (linear_to_srgb(image).numpy() * 255).round().astype(np.uint8)
    pixels = camera.camera_to_pixel(verts_t)[0].numpy()
    depth = -(cam_verts[:, 2] + distance)
    normals = vertex_normals(verts_t, torch.as_tensor(head.triangles))[0].numpy()
    fit = ha.HeadFit(vertices_px=np.c_[pixels, depth], normals=normals, identity=np.zeros(100),
                     expression=np.zeros(53), similarity=Similarity(1.0, np.eye(3), np.zeros(3)), residual_px=0.0)
    return crop, fit


def test_unwrap_and_delight_recover_a_rendered_albedo(head):
    size = 384
    atlas = ha.Atlas.build(head, size, ha.head_masks(head))
    # Unwrapping: a patterned albedo under uniform white light comes back texel for texel.
    truth = _known_albedo(size)
    crop, fit = _rendered_photo(head, truth, sh_uniform(1.0))
    colour, valid = ha.alb.unwrap_photo(crop, fit.vertices_px, head.triangles, fit.normals, atlas.raster)
    check = valid & atlas.support
    assert check.sum() > 0.5 * atlas.support.sum()  # a turned head still shows most of the face
    rel = np.abs(colour[check] / truth[check] - 1)
    assert np.median(rel) < 0.01 and np.percentile(rel, 90) < 0.03
    # The far side of the turned head (+x, the subject's left, turns away) is not taken from the photo.
    far_side = atlas.sample((head.mean_shape[:, 0] > 60).astype(np.float32)[:, None])[..., 0] > 0.5
    assert (valid & far_side).sum() < 0.2 * (atlas.covered & far_side).sum()
    # De-lighting: a uniform albedo lit from the upper left comes back uniform, up to the light's
    # overall level (the shading is normalised to mean 1 over the skin). A patterned albedo would
    # leak a few per cent into the fitted light: the fit assumes uniform skin.
    plain = np.broadcast_to(truth.mean((0, 1)), truth.shape).copy()
    sh = sh_uniform(0.6) + sh_directional(torch.tensor([[-0.5, 0.4, 1.0]]), torch.tensor([[0.6]]))
    crop, fit = _rendered_photo(head, plain, sh)
    assert np.ptp(crop[crop.sum(-1) > 0].mean(-1)) > 30  # the light does shade the face
    albedo, valid = ha.unwrap_head(crop, fit, atlas)
    check = valid & atlas.support
    ratio = albedo[check] / plain[check]
    scale = np.median(ratio)
    assert 0.6 < scale < 1.6
    rel = np.abs(ratio / scale - 1)
    assert np.median(rel) < 0.01 and np.percentile(rel, 90) < 0.03


def test_build_on_a_dozen_real_photos(head, photo_cache):
    modes = 4
    out, report = ha.build_head_albedo(head, photo_cache, modes=modes, per_group=PER_GROUP, detail_per_group=1,
                                       progress=False)
    mean, basis = out["albedo_mean"], out["albedo_basis"]
    assert mean.shape == (768, 768, 3) and basis.shape == (modes, 192, 192, 3)
    assert np.isfinite(mean).all() and np.isfinite(basis).all()
    np.testing.assert_array_equal(out["albedo_std"], np.ones(modes))
    # Mirror symmetric mean; the modes span a mirror-symmetric space (mirrored copies): the
    # mirror image of every mode is a combination of the modes (over the charts).
    np.testing.assert_allclose(mean, atlas_mirror(mean), atol=1e-6)
    charts = ha.Atlas.build(head, 192, ha.head_masks(head)).covered
    flat = basis[:, charts].reshape(modes, -1).T
    flat_mirror = atlas_mirror(basis)[:, charts].reshape(modes, -1).T
    coef = np.linalg.lstsq(flat, flat_mirror, rcond=None)[0]
    assert np.linalg.norm(flat_mirror - flat @ coef) < 0.05 * np.linalg.norm(flat_mirror)
    assert np.linalg.norm(flat_mirror - flat) > 0.01 * np.linalg.norm(flat)  # not trivially symmetric
    # The whole chart is plausible skin: no black or white holes, the filled head (scalp, neck,
    # ears) within a factor of two of the face's colour.
    atlas = ha.Atlas.build(head, 768, ha.head_masks(head))
    face = np.median(mean[atlas.support], axis=0)
    assert face[0] > face[1] > face[2] > 0.02  # skin: red over green over blue
    rest = mean[atlas.covered & ~atlas.support]
    assert (rest.min(-1) > 0.01).all()
    assert np.all(np.abs(np.log(np.median(rest, axis=0) / face)) < np.log(2))
    # Held-out photos were reconstructed for every race group.
    rmse = report["held_out_rmse_linear_rgb_by_group"]
    assert {"White", "Black", "Asian", "Indian", "Other"} <= set(rmse)
    assert all(0 < v < 0.3 for v in rmse.values())
    assert report["correspondence"] == "ibug68_inner"
    # The arrays make a valid model with the head's geometry, decoding at the mean's size.
    arrays = replace(head, albedo_space="uv", **out)
    arrays.validate("head albedo test")
    model = MorphableModel(arrays)
    decoded = model.albedo(torch.ones(1, modes))
    assert tuple(decoded.shape) == (1, 768, 768, 3)
    assert not torch.allclose(decoded, model.albedo(torch.zeros(1, modes)))


def test_harmonic_fill_is_smooth_and_keeps_known_texels(head):
    atlas = ha.Atlas.build(head, 96, ha.head_masks(head))
    known = atlas.support
    maps = np.zeros((96, 96, 1), np.float32)
    maps[known] = 0.5
    filled = ha.harmonic_fill(head, atlas, maps, known)
    np.testing.assert_array_equal(filled[known], maps[known])
    # A constant known field extends as the same constant over every chart, both tiles included.
    np.testing.assert_allclose(filled[atlas.covered], 0.5, atol=1e-3)
