"""The default head model: its converter from ICT-FaceKit, the container's new parts, and the
shipped file."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from facenet3d.train.build_face_model.head_reflectance import reflectance_maps
from facenet3d.train.build_face_model.ict_head import HEAD_PARTS, KEPT_VERTICES, atlas_mirror, head_geometry

from facenet3d.facemodel import FaceModelArrays, load_face_model, read_face_model_arrays, save_face_model
from facenet3d.facemodel.model import MorphableModel
from facenet3d.facemodel.registry import default_model_path
from facenet3d.facemodel.uvmaps import upsample_maps, upsample_maps_np
from facenet3d.refine.priors import uv_region_weights
from facenet3d.render.uv import UVRaster

ARKIT_SAMPLE = ("jawOpen", "mouthSmile_L", "mouthSmile_R", "eyeBlink_L", "eyeBlink_R", "browDown_L",
                "browInnerUp_L", "browInnerUp_R", "cheekPuff_L", "mouthFunnel", "noseSneer_R")


@pytest.fixture(scope="module")
def head(ict_dir) -> FaceModelArrays:
    return head_geometry(ict_dir)


def test_head_keeps_the_skin_as_render_surface_and_the_rest_as_parts(head):
    assert head.mean_shape.shape == (KEPT_VERTICES, 3)
    skin = head.regions["skin"]
    assert skin[head.triangles].all()  # nothing but skin is rendered
    assert set(head.parts) == set(HEAD_PARTS)
    for name, tri in head.parts.items():
        assert len(tri) > 100 and not skin[tri].all(), name
    # Every vertex belongs to the skin or to some part (nothing dangling).
    used = np.zeros(len(head.mean_shape), bool)
    used[head.triangles.ravel()] = True
    for tri in head.parts.values():
        used[tri.ravel()] = True
    assert used.mean() > 0.99
    # Millimetres: a head is ~150 mm wide at the ears, ICT's files are in cm.
    width = np.ptp(head.mean_shape[skin, 0])
    assert 140 < width < 260


def test_identity_modes_are_unit_variance_pca_and_expressions_are_arkit(head):
    basis = head.identity_basis.reshape(100, -1).astype(np.float64)
    gram = basis @ basis.T
    off = gram - np.diag(np.diag(gram))
    # Orthogonal over all of ICT's vertices; the eye helpers left out carry a little of each mode.
    assert np.abs(off).max() < 0.02 * np.diag(gram).max()
    rms = np.sqrt(np.diag(gram) / len(head.mean_shape))
    assert rms[0] > 10 * rms[-1]  # scaled by their std: magnitudes fall, not unit-norm modes
    assert len(head.expression_names) == 53 and set(ARKIT_SAMPLE) <= set(head.expression_names)
    jaw = head.expression_basis[head.expression_names.index("jawOpen")]
    chin = head.landmarks68[8]
    assert jaw[chin, 1] < -5  # opening the jaw lowers the chin by millimetres


def test_atlas_mirror_maps_texels_to_the_other_side_of_the_face(head):
    size = 192
    uvr = UVRaster.build(torch.as_tensor(head.uvs), torch.as_tensor(head.uv_triangles), size)
    pos = uvr.sample_mesh_vertices(torch.as_tensor(head.mean_shape)[None], torch.as_tensor(head.triangles))[0]
    pos, covered = pos.numpy(), uvr.covered.numpy()
    mirrored, mcovered = atlas_mirror(pos), atlas_mirror(covered[..., None])[..., 0]
    both = covered & mcovered
    assert both.sum() > 0.9 * covered.sum()
    # A texel's mirror texel holds the point reflected through the mid-sagittal plane.
    err = np.abs(mirrored[both] * [-1, 1, 1] - pos[both])
    assert np.median(err) < 1.0 and np.quantile(err, 0.95) < 4.0
    # The plain reflection of the whole map (v1's layout) is not the mirror here.
    wrong = pos[:, ::-1][both] * [-1, 1, 1] - pos[both]
    assert np.median(np.abs(wrong)) > 20


def test_reflectance_priors_are_shinier_on_the_t_zone(head):
    specular, roughness = reflectance_maps(head, 128)
    assert specular.shape == (128, 128, 3) and roughness.shape == (128, 128, 1)
    regions = uv_region_weights(MorphableModel(head), 128).numpy()
    tzone, cheeks = regions[..., 0] > 0.7, regions[..., 1] > 0.7
    assert tzone.sum() > 20 and cheeks.sum() > 20
    assert specular[tzone, 0].mean() > 1.5 * specular[cheeks, 0].mean()
    assert roughness[tzone, 0].mean() < roughness[cheeks, 0].mean() - 0.05
    # Around skin's constants: F0 = 0.028 and roughness 0.4 where no region applies.
    neither = (regions.sum(-1) < 0.01) & (np.arange(128)[:, None] < 80)
    assert np.median(specular[neither, 0]) == pytest.approx(0.028, abs=1e-4)
    assert np.median(roughness[neither, 0]) == pytest.approx(0.4, abs=1e-3)


def test_parts_embeddings_and_coarse_albedo_survive_the_native_format(head, tmp_path):
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(head.mean_shape), (5, 3))
    weights = rng.dirichlet(np.ones(3), 5).astype(np.float32)
    small = replace(head, identity_basis=head.identity_basis[:3], expression_basis=head.expression_basis[:2],
                    identity_std=None, expression_std=None, expression_names=head.expression_names[:2],
                    landmark_embeddings={"toy": (index, weights)}, albedo_space="uv",
                    albedo_mean=rng.random((32, 32, 3), np.float32),
                    albedo_basis=rng.standard_normal((2, 8, 8, 3)).astype(np.float32))
    path = save_face_model(small, tmp_path / "m.npz")
    back = read_face_model_arrays(path)
    assert set(back.parts) == set(head.parts)
    for name in head.parts:
        np.testing.assert_array_equal(back.parts[name], head.parts[name])
    np.testing.assert_array_equal(back.landmark_embeddings["toy"][0], index)
    np.testing.assert_allclose(back.landmark_embeddings["toy"][1], weights)
    assert back.fingerprint() == small.fingerprint()
    assert replace(small, landmark_embeddings={}).fingerprint() != small.fingerprint()

    model = MorphableModel(back)
    verts = model.decode(identity=torch.ones(1, 3))
    expected = (verts[0, torch.as_tensor(index)] * torch.as_tensor(weights)[..., None]).sum(1)
    torch.testing.assert_close(model.landmark_points(verts, "toy")[0], expected)
    # A coarse basis: decoding equals upsampling every mode, in torch and in numpy.
    c = torch.tensor([[0.5, -2.0]])
    modes = upsample_maps(model.albedo_basis, (32, 32))
    torch.testing.assert_close(model.albedo(c)[0], model.albedo_mean + 0.5 * modes[0] - 2.0 * modes[1],
                               atol=1e-5, rtol=1e-5)
    np_modes = np.stack([upsample_maps_np(b, (32, 32)) for b in back.albedo_basis])
    np.testing.assert_allclose(np_modes, modes.numpy(), atol=1e-5)
    # At a working size between the two: the mean area-averaged (cached, so twice the same tensor), the
    # modes upsampled only that far; equal to the full-size maps area-averaged but for the modes'
    # interpolation, which is smooth.
    small_mean = model.albedo(size=16)[0]
    torch.testing.assert_close(small_mean, model.albedo_mean.view(16, 2, 16, 2, 3).mean((1, 3)))
    assert model.albedo(size=16)[0].data_ptr() == small_mean.data_ptr()
    coarse = model.albedo(c, size=16)[0]
    assert coarse.shape == (16, 16, 3)
    full = model.albedo(c)[0].view(16, 2, 16, 2, 3).mean((1, 3))
    assert float((coarse - full).abs().mean()) < 0.05 * float(full.abs().mean())


def test_a_basis_larger_than_its_mean_is_refused(head):
    bad = replace(head, albedo_space="uv", albedo_mean=np.zeros((8, 8, 3), np.float32),
                  albedo_basis=np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(Exception, match="larger than the mean"):
        bad.validate("bad")


def test_shipped_default_is_the_head_model():
    path = default_model_path()
    assert path.name == "facenet3d_head_v2.npz"
    assert path.stat().st_size <= 30 * 2**20
    model = load_face_model("default")
    assert model.num_vertices == KEPT_VERTICES and model.expression_dim == 53
    assert {"ibug68_ict", "ibug68_3ddfa", "mediapipe478", "aflw21"} <= set(model.landmark_embedding_names)
    assert model.albedo_space == "uv" and model.albedo_dim >= 40
    assert model.albedo_mean.shape[0] >= 768 and model.roughness_mean.shape[:2] == model.albedo_mean.shape[:2]


def test_onnx_graph_decodes_the_head_as_torch_does(tmp_path):
    """Export of a (perturbed, untrained) regressor for the head: ONNX Runtime's vertices, landmarks and
    per-vertex albedo equal the torch decoding of the same parameters."""
    import onnxruntime as ort
    from onnx_fixtures import perturbed_regressor

    from facenet3d.decode import crop_camera, decode_face
    from facenet3d.onnx import export_onnx
    from facenet3d.onnx.metadata import OUTPUT_NAMES
    from facenet3d.params import FaceParams

    model = load_face_model("default")
    regressor = perturbed_regressor("mobilenetv3", model)
    path = export_onnx(regressor, model, tmp_path / "head.onnx")
    s = regressor.crop_size
    images = torch.rand(3, 3, s, s, generator=torch.Generator().manual_seed(1))
    out = dict(zip(OUTPUT_NAMES, ort.InferenceSession(str(path)).run(None, {"image": images.numpy()}), strict=True))
    params = FaceParams(**{n: torch.as_tensor(out[n]) for n in ("identity", "expression", "albedo", "rotation",
                                                                 "translation", "sh", "specular", "roughness")})
    with torch.no_grad():
        dec = decode_face(model, params, crop_camera(s))
    assert out["vertices"].shape == (3, model.num_vertices, 3)
    np.testing.assert_allclose(out["vertices_model"], dec.vertices.numpy(), atol=1e-3)  # mm
    np.testing.assert_allclose(out["vertices"], dec.vertices_camera.numpy(), atol=2e-3)
    np.testing.assert_allclose(out["landmarks68"], dec.landmarks68.numpy(), atol=1e-3)  # px
    assert np.ptp(out["vertices_model"][:, :, 0], axis=0).max() > 0.5  # the faces differ: a real test
    assert 0 <= out["vertex_albedo"].min() and out["vertex_albedo"].max() <= 1
    # The graph answers ARKit weights inside [0, 1] even where the raw network leaves them.
    with torch.no_grad():
        raw = regressor.eval()(images).expression
    assert bool(((raw < 0) | (raw > 1)).any())
    np.testing.assert_allclose(out["expression"], raw.clamp(0, 1).numpy(), atol=1e-4)
