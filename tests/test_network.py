"""The regressor: neutral initialisation, output scaling, safetensors weights and their checks."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import timm
import torch
from conftest import tiny_face_model_arrays

from facenet3d.decode import crop_camera, decode_face
from facenet3d.errors import WeightsError
from facenet3d.facemodel import MorphableModel
from facenet3d.landmarks.align import canonical_template
from facenet3d.network import (
    available_regressors,
    create_regressor,
    face_model_fingerprint,
    get_variant,
    load_regressor,
    neutral_params,
    neutral_translation,
    read_regressor_metadata,
    save_regressor,
)
from facenet3d.params import FaceParams
from facenet3d.render import sh_uniform
from facenet3d.render.pose import rotation_6d_to_matrix


@pytest.fixture(scope="module")
def regressor(tiny_face_model):
    torch.manual_seed(0)
    return create_regressor("tiny", tiny_face_model).eval()


def _perturbed(regressor):
    """A copy whose head and backbone are no longer at their initial values (as after training)."""
    reg = create_regressor("tiny", _tiny_model()).eval()
    reg.load_state_dict(regressor.state_dict())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reg.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return reg


def _tiny_model(seed: int = 0) -> MorphableModel:
    return MorphableModel(tiny_face_model_arrays(seed=seed))


def test_untrained_regressor_predicts_the_mean_face_looking_into_the_camera(regressor, tiny_face_model):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        params = regressor(images)
        other = regressor(torch.zeros(3, 3, 64, 64))
    expected = neutral_params(tiny_face_model, 64)
    for name in ("identity", "expression", "albedo", "rotation", "translation", "sh", "specular", "roughness"):
        got = getattr(params, name)
        assert torch.equal(got, getattr(expected, name).expand_as(got)), name
        assert torch.equal(got, getattr(other, name)), name  # whatever the input
    assert not params.identity.any() and not params.expression.any() and not params.albedo.any()
    assert torch.equal(rotation_6d_to_matrix(params.rotation), torch.eye(3).expand(3, 3, 3))
    assert torch.allclose(params.sh[:, 0], sh_uniform(1.0)[:, 0].expand(3, 3))  # shading 1: colour = albedo
    assert not params.sh[:, 1:].any()
    # Placed where the aligned crops put a face: the projected landmarks land on the template.
    decoded = decode_face(tiny_face_model, params, crop_camera(64))
    error = (decoded.landmarks68 - torch.as_tensor(canonical_template(64), dtype=torch.float32)).norm(dim=-1)
    assert error.mean() < 0.02 * 64
    assert params.translation[0, 2] < -500


def test_neutral_translation_does_not_depend_on_the_crop_size(tiny_face_model):
    t64, t224 = neutral_translation(tiny_face_model, 64), neutral_translation(tiny_face_model, 224)
    assert torch.allclose(t64, t224, rtol=1e-4, atol=1e-3)


def test_head_output_scale_is_one_typical_spread_per_unit(regressor, tiny_face_model):
    head = regressor.head
    dims = (tiny_face_model.identity_dim, tiny_face_model.expression_dim, tiny_face_model.albedo_dim)
    scales = FaceParams.from_vector(head.scale[None], *dims)
    assert torch.equal(scales.identity[0], tiny_face_model.identity_std)
    assert torch.equal(scales.albedo[0], tiny_face_model.albedo_std)
    assert scales.translation[0].tolist() == [10.0, 10.0, 50.0]
    # A unit change of the linear layer's output moves each parameter by its scale.
    features = torch.randn(2, head.linear.in_features)
    with torch.no_grad():
        base = head(features)
        head.linear.bias[5] = 1.0
        moved = head(features)
        head.linear.bias[5] = 0.0
    delta = moved - base
    assert torch.allclose(delta[:, 5], head.scale[5].expand(2))
    assert not torch.cat([delta[:, :5], delta[:, 6:]], 1).any()


def test_gradients_reach_the_backbone_after_the_first_step(tiny_face_model):
    torch.manual_seed(0)
    reg = create_regressor("tiny", tiny_face_model)
    opt = torch.optim.SGD(reg.parameters(), lr=0.1)
    images = torch.rand(2, 3, 64, 64)

    def step():
        opt.zero_grad()
        reg(images).identity.sum().backward()
        grad = sum(p.grad.abs().sum() for p in reg.backbone.parameters() if p.grad is not None)
        opt.step()
        return float(grad)

    assert step() == 0.0  # zero-initialised head: only the head learns at first
    assert step() > 0.0


def test_prepare_images_accepts_uint8_crops_and_resizes(regressor):
    crops = np.full((2, 128, 128, 3), 255, np.uint8)
    crops[1] = 0
    x = regressor.prepare_images(crops)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones_like(x[0])) and not x[1].any()
    single = regressor.prepare_images(crops[0])
    assert single.shape == (1, 3, 64, 64)
    channels_last = regressor.prepare_images(torch.rand(2, 64, 64, 3))
    assert channels_last.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="images must be"):
        regressor.prepare_images(torch.zeros(2, 64, 64))


def test_predict_is_inference_whatever_the_mode(tiny_face_model):
    torch.manual_seed(0)
    reg = _perturbed(create_regressor("tiny", tiny_face_model)).train()
    crops = torch.rand(3, 96, 96, 3, generator=torch.Generator().manual_seed(2))  # float (B, H, W, 3), other size
    params = reg.predict(crops)
    assert reg.training and not params.identity.requires_grad
    reg.eval()
    with torch.no_grad():
        expected = reg(torch.nn.functional.interpolate(crops.permute(0, 3, 1, 2), size=(64, 64), mode="bilinear",
                                                       align_corners=False, antialias=True))
    assert torch.equal(params.to_vector(), expected.to_vector())
    # BatchNorm used its running statistics: a face's parameters do not depend on its batch.
    assert torch.allclose(reg.predict(crops[:1]).to_vector(), params.to_vector()[:1], atol=1e-5)


def test_variants(tiny_face_model):
    assert {"resnet50", "resnet18", "mobilenetv3", "tiny"} <= set(available_regressors())
    assert (get_variant("resnet50").backbone, get_variant("resnet50").crop_size) == ("resnet50", 224)
    assert (get_variant("resnet18").backbone, get_variant("resnet18").crop_size) == ("resnet18", 160)
    for name in available_regressors():
        assert timm.is_model(get_variant(name).backbone)
    with pytest.raises(WeightsError, match="unknown regressor variant 'nope'"):
        create_regressor("nope", tiny_face_model)
    with pytest.raises(WeightsError, match="unknown backbone"):
        create_regressor("tiny", tiny_face_model, backbone="not_a_timm_model")
    reg = create_regressor("tiny", tiny_face_model, backbone="test_efficientnet", crop_size=48)
    assert reg.info.backbone == "test_efficientnet" and reg.crop_size == 48
    assert reg(torch.rand(1, 3, 48, 48)).identity.shape == (1, tiny_face_model.identity_dim)


def test_weights_round_trip_with_metadata(regressor, tiny_face_model, tmp_path):
    trained = _perturbed(regressor)
    path = save_regressor(trained, tmp_path / "reg.safetensors", extra={"trained_steps": 7})
    loaded = load_regressor(path, face_model=tiny_face_model)
    assert not loaded.training
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.forward_vector(images), trained.forward_vector(images))
        assert not torch.equal(loaded.forward_vector(images), regressor.forward_vector(images))
    meta = read_regressor_metadata(path)
    info = meta["regressor"]
    assert info["backbone"] == "test_resnet" and info["variant"] == "tiny" and info["crop_size"] == 64
    assert info["mean"] == pytest.approx([0.485, 0.456, 0.406]) and info["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert info["face_model"] == "tiny-test-face"
    assert info["face_model_fingerprint"] == face_model_fingerprint(tiny_face_model)
    assert (info["identity_dim"], info["expression_dim"], info["albedo_dim"]) == (4, 3, 3)
    assert meta["extra"] == {"trained_steps": 7}
    assert loaded.weights_metadata == meta
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary name


def test_fingerprint_tells_face_models_apart(tiny_face_model):
    assert face_model_fingerprint(tiny_face_model) == face_model_fingerprint(_tiny_model(0))
    assert face_model_fingerprint(tiny_face_model) != face_model_fingerprint(_tiny_model(1))


def _header_end(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


def test_loading_rejects_bad_files(regressor, tiny_face_model, tmp_path):
    path = save_regressor(regressor, tmp_path / "good.safetensors")
    data = path.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 1000])
    with pytest.raises(WeightsError, match="truncated.safetensors: not a readable safetensors file"):
        load_regressor(truncated)

    flipped = bytearray(data)
    flipped[_header_end(data) + 100] ^= 0xFF  # one byte of tensor data
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(WeightsError, match="corrupt.safetensors: tensor checksum mismatch"):
        load_regressor(corrupt)

    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(WeightsError, match="without facenet3d metadata"):
        load_regressor(foreign)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a weights file")
    with pytest.raises(WeightsError, match="garbage.safetensors"):
        load_regressor(garbage)

    with pytest.raises(WeightsError, match="missing.safetensors: no such weights file"):
        load_regressor(tmp_path / "missing.safetensors")

    other = _tiny_model(seed=1)
    with pytest.raises(WeightsError, match="trained for face model 'tiny-test-face'"):
        load_regressor(path, face_model=other)

    bigger = MorphableModel(tiny_face_model_arrays(identity_dim=5))
    with pytest.raises(WeightsError, match=r"\(4, 3, 3\) coefficients, the face model has \(5, 3, 3\)"):
        load_regressor(path, face_model=bigger)


def test_loading_rejects_tensors_that_do_not_fit_the_recorded_architecture(regressor, tmp_path):
    from safetensors.torch import load_file, save

    from facenet3d.network.weights import METADATA_KEY, tensors_checksum

    path = save_regressor(regressor, tmp_path / "reg.safetensors")
    meta = read_regressor_metadata(path)
    tensors = load_file(str(path))
    del tensors["head.linear.bias"]
    meta["tensors_sha256"] = tensors_checksum(tensors)
    (tmp_path / "edited.safetensors").write_bytes(save(tensors, metadata={METADATA_KEY: json.dumps(meta)}))
    with pytest.raises(WeightsError, match="missing: head.linear.bias"):
        load_regressor(tmp_path / "edited.safetensors")


def test_shipped_names(monkeypatch, tmp_path):
    from facenet3d.network import weights

    with pytest.raises(WeightsError, match="no shipped regressor named 'nope'"):
        weights.pretrained_path("nope")
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="no such weights file"):
        load_regressor("default")


def test_load_pretrained_finds_the_face_model_named_in_the_weights(regressor, monkeypatch, tmp_path):
    from facenet3d.facemodel import save_face_model
    from facenet3d.network import load_pretrained, weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    save_regressor(regressor, tmp_path / weights.PRETRAINED["default"])
    with pytest.raises(WeightsError, match="'tiny-test-face' it was trained for is not in"):
        load_pretrained("default")
    save_face_model(tiny_face_model_arrays(), tmp_path / "tiny-test-face.npz")
    reg, model = load_pretrained("default")
    assert model.metadata["name"] == "tiny-test-face"
    assert reg.info.face_model_fingerprint == face_model_fingerprint(model)
    save_face_model(tiny_face_model_arrays(seed=1), tmp_path / "tiny-test-face.npz")  # rebuilt: another model
    with pytest.raises(WeightsError, match="fingerprint"):
        load_pretrained("default")
