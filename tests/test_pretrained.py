"""The shipped regressor weights: they load with the shipped face model, they are what the card
says, and alone they place the 68 landmarks on photos they never saw better than the face
model's mean does (AFLW2000-3D images are in no training set of the project)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from facenet3d.infer.pipeline import crops_to_input
from onnx_fixtures import aligned_crops, real_photos

from facenet3d.api import FaceReconstructor
from facenet3d.cli import main
from facenet3d.decode import crop_camera, decode_face
from facenet3d.evaluate.aflw2000 import evaluate_aflw2000
from facenet3d.evaluate.methods import load_method
from facenet3d.network import (
    PRETRAINED,
    face_model_fingerprint,
    load_regressor,
    pretrained_path,
    read_regressor_metadata,
)
from facenet3d.network.weights import face_model_for
from facenet3d.onnx import OUTPUT_NAMES

#: AFLW2000-3D dev images, evenly spaced over the sorted list (all yaw bins occur).
N_IMAGES = 16


@pytest.fixture(scope="module")
def model():
    return face_model_for("fast")  # the face model of the fast regressor


@pytest.fixture(scope="module")
def aflw_dir(shared):
    return shared / "data" / "aflw2000-3d" / "dev"


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_shipped_weights_load_with_the_face_model_they_name(name):
    model = face_model_for(name)
    meta = read_regressor_metadata(name)
    assert pretrained_path(name).stat().st_size < 50e6
    assert meta["regressor"]["face_model_fingerprint"] == face_model_fingerprint(model)
    assert meta["extra"]["trained_steps"] >= 1000
    regressor = load_regressor(name, face_model=model)
    assert not regressor.training
    assert {"default": "resnet18", "fast": "mobilenetv3"}[name] == meta["regressor"]["variant"]


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_regressor_alone_beats_the_untrained_mean_face_on_unseen_photos(name, aflw_dir):
    trained = evaluate_aflw2000(load_method("none", weights=name), aflw_dir, limit=N_IMAGES, progress=False)
    assert trained["n_evaluated"] >= N_IMAGES - 2
    # The same pipeline with an untrained head: the mean face looking into the camera, placed
    # at the crop's neutral distance. A regressor that learned nothing (or a decoding that
    # mixes up its outputs) does not beat it.
    untrained = _untrained_method(name)
    baseline = evaluate_aflw2000(untrained, aflw_dir, limit=N_IMAGES, progress=False)
    assert trained["nme_68"]["all"] < 0.6 * baseline["nme_68"]["all"], (trained["nme_68"], baseline["nme_68"])
    assert trained["nme_68"]["all"] < 6.0


def _untrained_method(name: str):
    from facenet3d.network import create_regressor

    method = load_method("none", weights=name)
    rec = method.reconstructor
    rec.regressor = create_regressor(rec.regressor.info.variant, rec.model).eval()
    return method


def test_reconstruct_runs_the_regressor_alone_and_refines_from_it(shared, tmp_path):
    photo = sorted((shared / "data" / "aflw2000-3d" / "dev").glob("*.jpg"))[0]
    args = ["reconstruct", str(photo), "-o", str(tmp_path), "--refine", "none", "--max-faces", "1", "--quiet"]
    assert main(args) == 0
    params = json.loads((tmp_path / photo.stem / "params.json").read_text())
    assert params["refine"] == "none"
    assert (tmp_path / photo.stem / "mesh.glb").stat().st_size > 100_000
    rec = FaceReconstructor.from_pretrained("default")
    alone = rec.reconstruct(photo, refine="none")[0]
    refined = rec.reconstruct(photo, refine="landmarks")[0]
    # The refinement starts from the regressor's shape, not from the mean: stage A keeps it
    # recognisably (identity coefficients correlate) while fitting the landmarks.
    a, r = alone.params.identity.flatten(), refined.params.identity.flatten()
    assert float(torch.corrcoef(torch.stack([a, r]))[0, 1]) > 0.3


def test_export_onnx_of_the_shipped_fast_weights_matches_torch(faces_dir, model, tmp_path):
    """``facenet3d export-onnx --weights fast``: the graph equals the torch path on real photos."""
    out = tmp_path / "fast.onnx"
    assert main(["export-onnx", "-o", str(out), "--weights", "fast"]) == 0
    regressor = load_regressor("fast", face_model=model)
    crops = aligned_crops(real_photos(faces_dir, 3), regressor.crop_size)[0]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"image": crops_to_input(crops)}), strict=True))
    with torch.no_grad():
        decoded = decode_face(model, regressor(regressor.prepare_images(crops)), crop_camera(regressor.crop_size))
    assert np.abs(got["vertices"] - decoded.vertices_camera.numpy()).max() < 0.01
    assert np.abs(got["landmarks68"] - decoded.landmarks68.numpy()).max() < 0.01


def test_from_pretrained_reports_a_broken_weights_file(tmp_path):
    """A file the user names must load or fail loudly: never a silent run without the regressor."""
    from facenet3d.errors import WeightsError

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(pretrained_path("default").read_bytes()[:10_000])
    with pytest.raises(WeightsError, match="truncated.safetensors"):
        FaceReconstructor.from_pretrained(str(truncated))
    assert FaceReconstructor.from_pretrained("none").regressor is None


def test_fine_tuning_starts_from_the_named_weights(model, tmp_path):
    """``model.init_weights`` (configs/train/finetune.yaml) puts the saved weights in the module,
    and refuses weights of another architecture."""
    from facenet3d.train.module import FaceRegressorModule

    from facenet3d.errors import WeightsError

    module = FaceRegressorModule(variant="mobilenetv3", init_weights="fast", image_every_n_steps=0)
    saved = load_regressor("fast", face_model=model).state_dict()
    mine = module.regressor.state_dict()
    assert set(mine) == set(saved) and all(torch.equal(mine[k], saved[k]) for k in saved)
    # Where fine-tuning started goes into the exported header.
    assert module.initial_weights["file"] == pretrained_path("fast").name
    assert module.initial_weights["tensors_sha256"] == read_regressor_metadata("fast")["tensors_sha256"]
    exported = read_regressor_metadata(module.export(tmp_path / "tuned.safetensors", trained_steps=3))
    assert exported["extra"]["initial_weights"] == module.initial_weights
    with pytest.raises(WeightsError, match="cannot start a resnet18"):
        FaceRegressorModule(variant="resnet18", init_weights="fast", image_every_n_steps=0)
