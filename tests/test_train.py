"""The training application: data and augmentation, losses, overfitting, checkpoints and resume, CLI, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO, tiny_face_model_arrays
from facenet3d.train.data import (
    AugmentConfig,
    CachedFaceDataset,
    FaceDataModule,
    TrainingDataError,
    is_validation,
    load_teachers,
    mirror_maps,
    similarity_matrix,
    split_key,
)
from facenet3d.train.module import FaceRegressorModule, LossWeights

from facenet3d.decode import crop_camera, decode_face
from facenet3d.landmarks.align import transform_points, warp_image
from facenet3d.landmarks.cache import PhotoCache, preprocess
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE
from facenet3d.network import load_regressor, neutral_params

GEOMETRY_ONLY = AugmentConfig(flip=0.5, scale=0.1, rotate_deg=20.0, translate=0.05, colour=0.0, occluder=0.0,
                              blur=0.0, noise=0.0, jpeg=0.0)


@pytest.fixture(scope="module")
def photo_cache(tmp_path_factory, faces_dir) -> Path:
    """A photo cache of 8 UTKFace photos and 4 photos of two lfw-expressions people."""
    utk = sorted((faces_dir / "utkface").iterdir())[:8]
    lfw = [faces_dir / "lfw-expressions" / f"Abdullah_Gul_000{i}.jpg" for i in (1, 2)]
    lfw += sorted((faces_dir / "lfw-expressions").glob("A[b-z]*_0001.jpg"))[:2]
    root = tmp_path_factory.mktemp("cache")
    report = preprocess(utk + lfw, root, workers=1, progress=False)
    assert report.cached >= 10
    return root


@pytest.fixture(scope="module")
def face_model_file(tmp_path_factory) -> Path:
    from facenet3d.facemodel import save_face_model

    return save_face_model(tiny_face_model_arrays(), tmp_path_factory.mktemp("model") / "tiny.npz")


def _collate(samples: list[dict]) -> dict:
    return torch.utils.data.default_collate(samples)


def _dataset(photo_cache: Path, crop: int, augment: AugmentConfig | None, teachers=None) -> CachedFaceDataset:
    cache = PhotoCache(photo_cache)
    return CachedFaceDataset([cache], [(0, i) for i in range(len(cache))], crop, augment, teachers)


# -- data --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale,angle,shift,flip", [(1.0, 0.0, (0.0, 0.0), False), (1.1, 17.0, (3.0, -5.0), False),
                                                    (0.9, -25.0, (-4.0, 2.0), True)])
def test_similarity_warp_moves_points_with_the_image(scale, angle, shift, flip):
    # A blob centred on a known point (pixel centres at +0.5) must land where the matrix sends the point.
    point = np.array([[130.3, 90.7]])
    v, u = np.mgrid[0:224, 0:224] + 0.5
    image = np.exp(-((u - point[0, 0]) ** 2 + (v - point[0, 1]) ** 2) / (2 * 4.0**2)).astype(np.float32)
    m = similarity_matrix(224, 96, scale, angle, shift, flip)
    out = warp_image(image, m, (96, 96))
    v2, u2 = np.mgrid[0:96, 0:96] + 0.5
    centroid = np.array([(out * u2).sum(), (out * v2).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, transform_points(point, m)[0], atol=0.05)
    # Resizing scales about the crop centre: the centre stays the centre.
    np.testing.assert_allclose(transform_points(np.array([[112.0, 112.0]]), m)[0], np.array([48.0, 48.0]) + shift,
                               atol=1e-9)


def test_mirror_maps_swap_left_and_right():
    m68, m468 = mirror_maps()
    assert np.array_equal(m68[m68], np.arange(68)) and np.array_equal(m468[m468], np.arange(468))
    for a, b in ((0, 16), (36, 45), (39, 42), (48, 54), (31, 35), (17, 26)):
        assert m68[a] == b and m68[b] == a
    for self_mirrored in (8, 30, 51, 57, 62, 66):
        assert m68[self_mirrored] == self_mirrored
    assert m468[33] == 263 and m468[1] == 1  # outer eye corners; the nose tip is on the midline
    assert np.array_equal(IBUG68_FROM_MEDIAPIPE[m68], m468[IBUG68_FROM_MEDIAPIPE])


def test_augmented_samples_keep_image_landmarks_and_masks_together(photo_cache):
    cache = PhotoCache(photo_cache)
    augment = AugmentConfig(flip=0.5, scale=0.1, rotate_deg=20.0, translate=0.05, colour=1.0, occluder=1.0,
                            blur=0.0, noise=0.0, jpeg=0.0)
    data = _dataset(photo_cache, 96, augment)
    m68, m468 = mirror_maps()
    torch.manual_seed(0)
    flips = set()
    for i in range(len(data)):
        s = data[i]
        assert s["image"].shape == (3, 96, 96) and s["target"].shape == (3, 96, 96)
        assert s["landmarks68"].shape == (68, 2) and s["landmarks_dense"].shape == (468, 2)
        assert 0 <= s["image"].min() and s["image"].max() <= 1
        warp, flip = s["warp"].double().numpy(), bool(s["flipped"])
        flips.add(flip)
        item = cache[i]
        lm68 = transform_points(np.asarray(item["landmarks68"], np.float64), warp)
        dense = transform_points(np.asarray(item["landmarks478"][:468, :2], np.float64), warp)
        if flip:
            lm68, dense = lm68[m68], dense[m468]
        np.testing.assert_allclose(s["landmarks68"].numpy(), lm68, atol=2e-3)
        np.testing.assert_allclose(s["landmarks_dense"].numpy(), dense, atol=2e-3)
        # The mask moved with the landmarks: nose tip and both cheeks are skin.
        for vertex in (4, 205, 425):
            u, v = s["landmarks_dense"][vertex].numpy()
            assert s["skin_mask"][int(v), int(u)] > 0.5, (i, vertex)
        # Subject's left eye (iBUG 42-47) is on the image right whether flipped or not.
        assert s["landmarks68"][42:48, 0].mean() > s["landmarks68"][36:42, 0].mean()
        # Occluders go into the input only; the photometric target stays clean.
        changed = (s["image"] - s["target"]).abs().amax(0) > 1e-6
        assert 0 < changed.float().mean() < 0.5
    assert flips == {True, False}


def test_validation_samples_are_plain_resized_crops(photo_cache):
    data = _dataset(photo_cache, 112, None)
    s = data[0]
    item = PhotoCache(photo_cache)[0]
    assert not s["flipped"] and torch.equal(s["image"], s["target"])
    np.testing.assert_allclose(s["landmarks68"].numpy(), np.asarray(item["landmarks68"]) / 2, atol=1e-4)


def test_split_is_stable_and_keeps_people_together(photo_cache):
    items = PhotoCache(photo_cache).items
    gul = [split_key(it) for it in items if "Abdullah_Gul" in it["source"]]
    assert len(gul) == 2 and gul[0] == gul[1] == "identity:Abdullah_Gul"
    keys = [f"source:{i}" for i in range(2000)]
    val = [is_validation(k, 0.1, 0) for k in keys]
    assert val == [is_validation(k, 0.1, 0) for k in keys]
    assert 0.07 < np.mean(val) < 0.13
    assert val != [is_validation(k, 0.1, 1) for k in keys]


def test_datamodule_splits_and_reports_missing_caches(photo_cache, tmp_path):
    dm = FaceDataModule(cache=str(photo_cache), crop_size=64, batch_size=4, num_workers=0, val_fraction=0.3)
    dm.setup("fit")
    train_sources = {dm.train_set.caches[0].items[r]["source"] for _, r in dm.train_set.items}
    val_sources = {dm.val_set.caches[0].items[r]["source"] for _, r in dm.val_set.items}
    assert train_sources and val_sources and not train_sources & val_sources
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64)
    with pytest.raises(TrainingDataError, match="nowhere: no photo cache here"):
        FaceDataModule(cache=str(tmp_path / "nowhere")).setup("fit")


def test_distillation_targets_file(photo_cache, tmp_path):
    sources = [it["source"] for it in PhotoCache(photo_cache).items]
    path = tmp_path / "teachers.npz"
    np.savez(path, source=np.array([sources[1], "/elsewhere.jpg"]), dims=np.array([4, 3, 3]),
             identity=np.ones((2, 4), np.float32), rotation=np.zeros((2, 6), np.float32))
    table, dims = load_teachers(path, sources[:3])
    assert dims == (4, 3, 3) and table.shape == (3, 4 + 3 + 3 + 6 + 3 + 27 + 1 + 1)
    assert np.isnan(table[0]).all() and np.isnan(table[2]).all()
    assert (table[1, :4] == 1).all() and np.isnan(table[1, 4:10]).all() and (table[1, 10:16] == 0).all()
    np.savez(path, source=np.array(sources[:1]), dims=np.array([4, 3, 3]), identity=np.ones((1, 5)))
    with pytest.raises(TrainingDataError, match=r"identity has shape \(1, 5\), expected \(1, 4\)"):
        load_teachers(path, sources)


# -- the module ------------------------------------------------------------------------------------


def _module(face_model_file: Path, **kwargs) -> FaceRegressorModule:
    torch.manual_seed(0)
    defaults = dict(face_model=str(face_model_file), variant="tiny", photometric_start=0, photometric_ramp=1,
                    image_every_n_steps=0, warmup_steps=1)
    return FaceRegressorModule(**{**defaults, **kwargs})


def test_teacher_landmarks_follow_the_augmentation(photo_cache, face_model_file):
    module = _module(face_model_file, crop_size=96)
    model = module.face_model
    teacher = neutral_params(model, 224)
    teacher.identity = torch.linspace(-1, 1, model.identity_dim)[None]  # not symmetric: flips must matter
    vectors = teacher.to_vector().numpy().repeat(len(PhotoCache(photo_cache)), 0)
    data = _dataset(photo_cache, 96, GEOMETRY_ONLY, vectors)
    torch.manual_seed(3)
    batch = _collate([data[i] for i in range(len(data))])
    assert batch["flipped"].any() and not batch["flipped"].all()
    moved68, moved_dense = module.teacher_landmarks(module.teacher_params(batch)[0], batch)
    # The teacher fitted the 224 px cache crop.
    in_cache = decode_face(model, teacher, crop_camera(224))
    cache = PhotoCache(photo_cache)
    m68, m468 = mirror_maps()
    for i in range(len(data)):
        # A similarity scales every distance by the same factor; relabelling permutes the points.
        scale = float(np.sqrt(abs(np.linalg.det(batch["warp"][i, :, :2].double().numpy()))))
        for moved, target, before, det, mirror in (
                (moved68, batch["landmarks68"], in_cache.landmarks68[0], cache[i]["landmarks68"], m68),
                (moved_dense, batch["landmarks_dense"], in_cache.landmarks_dense[0],
                 cache[i]["landmarks478"][:468, :2], m468)):
            after = (moved[i] - target[i]).norm(dim=-1).double().numpy()
            expected = np.linalg.norm(before.double().numpy() - np.asarray(det, np.float64), axis=-1) * scale
            if batch["flipped"][i]:
                expected = expected[mirror]
            np.testing.assert_allclose(after, expected, rtol=1e-3, atol=1e-3)


def test_distillation_of_its_own_prediction_costs_nothing(photo_cache, face_model_file):
    module = _module(face_model_file, crop_size=64,
                     losses=LossWeights(distill_landmarks=1.0, distill_coefficients=1.0))
    n = len(PhotoCache(photo_cache))
    teacher = neutral_params(module.face_model, 224).to_vector().numpy().repeat(n, 0)
    data = _dataset(photo_cache, 64, None, teacher)
    batch = _collate([data[i] for i in range(4)])
    with torch.no_grad():
        params = module.regressor(batch["image"])  # untrained: the neutral face, as the teacher
        _, terms, _ = module.compute_losses(params, batch, 0.0)
    assert terms["distill_landmarks"] < 1e-9 and terms["distill_coefficients"] == 0
    shifted = teacher.copy()
    shifted[:, 0] = 1.0  # the teacher says identity coefficient 0 is 1
    data = _dataset(photo_cache, 64, None, shifted)
    batch = _collate([data[i] for i in range(4)])
    with torch.no_grad():
        _, terms, _ = module.compute_losses(params, batch, 0.0)
    assert terms["distill_coefficients"] == pytest.approx(1.0 / module.face_model.identity_dim)
    assert terms["distill_landmarks"] > 1e-6


def test_training_overfits_one_batch(photo_cache, face_model_file):
    module = _module(face_model_file)
    data = _dataset(photo_cache, 64, None)
    batch = _collate([data[i] for i in range(4)])
    opt = torch.optim.Adam(module.regressor.parameters(), lr=3e-3)
    module.train()
    history = []
    for _ in range(12):
        params = module(batch["image"])
        loss, terms, _ = module.compute_losses(params, batch, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((float(loss), float(terms["landmarks68"]), float(terms["photometric"])))
    first, last = history[0], history[-1]
    assert last[0] < 0.5 * first[0]
    assert last[1] < 0.5 * first[1]  # the landmarks fit better
    assert last[2] < 0.9 * first[2]  # and so do the colours
    assert all(np.isfinite(h).all() for h in history)


def test_photometric_term_is_switched_on_and_ramped(face_model_file):
    module = _module(face_model_file, photometric_start=100, photometric_ramp=50)
    assert module.photometric_weight(99) == 0.0
    assert module.photometric_weight(100) == pytest.approx(1 / 50)
    assert module.photometric_weight(124) == pytest.approx(0.5)
    assert module.photometric_weight(10_000) == 1.0


# -- trainer: checkpoints, resume, CLI, DDP ----------------------------------------------------------


class _StopAt(pl.Callback):
    """Interrupt training like Ctrl-C once ``step`` steps are done."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


class _Record(pl.Callback):
    def on_train_start(self, trainer, module):
        self.start_step = trainer.global_step
        self.start_state = {k: v.clone() for k, v in module.regressor.state_dict().items()}


def _trainer(run: Path, max_steps: int, extra: list) -> pl.Trainer:
    from facenet3d.train.cli import run_callbacks

    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                      default_root_dir=run, callbacks=[*run_callbacks(run, 100), *extra])


def test_resume_after_an_interruption_continues_the_global_step(photo_cache, face_model_file, tmp_path):
    run = tmp_path / "run"
    data = FaceDataModule(cache=str(photo_cache), crop_size=64, batch_size=2, num_workers=0, val_fraction=0.2)
    with pytest.raises(SystemExit):  # Lightning turns Ctrl-C into a checkpoint and exit(1)
        _trainer(run, 10, [_StopAt(3)]).fit(_module(face_model_file), data)
    saved = run / "checkpoints" / "on_exception.ckpt"
    checkpoint = torch.load(saved, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3
    assert not (run / "regressor.safetensors").exists()  # training did not finish

    record = _Record()
    trainer = _trainer(run, 5, [record])
    trainer.fit(_module(face_model_file), FaceDataModule(cache=str(photo_cache), crop_size=64, batch_size=2,
                                                         num_workers=0, val_fraction=0.2), ckpt_path="last")
    assert record.start_step == 3 and trainer.global_step == 5
    for k, v in record.start_state.items():
        assert torch.equal(v, checkpoint["state_dict"][f"regressor.{k}"]), k
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert load_regressor(run / "regressor.safetensors").weights_metadata["extra"]["trained_steps"] == 5


def test_checkpoint_of_another_face_model_is_refused(photo_cache, face_model_file, tmp_path):
    from facenet3d.errors import WeightsError
    from facenet3d.facemodel import save_face_model

    module = _module(face_model_file)
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "facenet3d": {"face_model_fingerprint": "0" * 64}}, path)
    with pytest.raises(WeightsError, match="another face model"):
        module.on_load_checkpoint(torch.load(path, weights_only=False))
    other = save_face_model(tiny_face_model_arrays(seed=2), tmp_path / "other.npz")
    assert _module(other).face_model_fingerprint != module.face_model_fingerprint


def test_cli_fit_then_export(photo_cache, face_model_file, tmp_path):
    import cv2
    from facenet3d.train.cli import main

    run = tmp_path / "smoke"
    main(["fit", "--config", str(REPO / "configs/train/smoke.yaml"), "--model.face_model", str(face_model_file),
          "--data.cache", str(photo_cache), "--run_dir", str(run), "--model.losses.light_colour", "0.25"])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    logs = next((run / "lightning_logs").iterdir())
    metrics = (logs / "metrics.csv").read_text()
    for name in ("train/loss", "train/landmarks68", "train/photometric", "val/loss", "val/lm68_err_pct"):
        assert name in metrics
    grids = sorted((logs / "images").glob("*.png"))
    assert [g.name for g in grids] == ["train_step0000000.png", "train_step0000001.png", "val_step0000002.png"]
    assert cv2.imread(str(grids[0])).shape == (2 * 64, 3 * 64, 3)  # 2 faces x (input | render | overlay)
    from facenet3d.facemodel import load_face_model

    shipped = load_regressor(run / "regressor.safetensors", face_model=load_face_model(face_model_file))
    assert shipped.info.variant == "tiny" and shipped.crop_size == 64
    assert shipped.weights_metadata["extra"]["trained_steps"] == 2

    exported = tmp_path / "exported.safetensors"
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "-o", str(exported)]) == 0
    again = load_regressor(exported)
    for k, v in shipped.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert again.weights_metadata["extra"]["trained_steps"] == 2
    assert again.weights_metadata["extra"]["hyperparameters"]["losses"]["light_colour"] == 0.25


class RankReport(pl.Callback):
    """Used by the DDP test (imported by the training processes): each rank writes what it saw."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_end(self, trainer, module):
        flat = torch.cat([p.detach().flatten() for p in module.regressor.parameters()])
        Path(self.folder, f"rank{trainer.global_rank}.txt").write_text(
            f"{trainer.world_size} {trainer.global_step} {float(flat.double().sum())!r} "
            f"{torch.distributed.get_backend()}")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(photo_cache, face_model_file, tmp_path):
    run, report = tmp_path / "ddp", tmp_path / "report"
    report.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    cmd = [sys.executable, "-m", "facenet3d.train", "fit", "--config", str(REPO / "configs/train/smoke.yaml"),
           "--model.face_model", str(face_model_file), "--data.cache", str(photo_cache), "--run_dir", str(run),
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--model.image_every_n_steps", "0",
           "--trainer.callbacks+=test_train.RankReport", f"--trainer.callbacks.folder={report}"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [(report / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0][:2] == ranks[1][:2] == ["2", "2"]  # two processes, two steps
    assert ranks[0][3] == ranks[1][3] == "gloo"
    assert ranks[0][2] == ranks[1][2]  # gradients were averaged: both replicas hold the same weights
    assert (run / "regressor.safetensors").is_file()


def test_greyscale_photos_are_compared_in_grey():
    from facenet3d.train.module import LUMA, match_greyscale

    from facenet3d.losses import photometric_loss

    g = torch.Generator().manual_seed(0)
    rendered = torch.rand(2, 8, 8, 3, generator=g)
    luma = (rendered * torch.tensor(LUMA)).sum(-1, keepdim=True)
    target = torch.cat([luma[:1].expand(1, 8, 8, 3), rendered[1:]])  # a grey photo, a colour photo
    matched = match_greyscale(rendered, target)
    assert torch.equal(matched[1], rendered[1])
    mask = torch.ones(2, 8, 8)
    assert photometric_loss(matched, target, mask).abs().max() < 1e-6
    assert photometric_loss(rendered, target, mask)[0] > 1e-3


@pytest.mark.parametrize("recipe, variant, steps", [(["cpu.yaml"], "resnet18", 6000),
                                                    (["cpu.yaml", "mobilenetv3.yaml"], "mobilenetv3", 6000),
                                                    (["resnet50.yaml"], "resnet50", 100000),
                                                    (["cpu.yaml", "finetune.yaml"], "resnet18", 1500)])
def test_shipped_recipes_resolve(recipe, variant, steps):
    """The recipes the shipped weights were trained with parse in LightningCLI, and a second
    ``--config`` overrides only what it names."""
    import yaml

    cmd = [sys.executable, "-m", "facenet3d.train", "fit", "--print_config"]
    for name in recipe:
        cmd += ["--config", str(REPO / "configs" / "train" / name)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = yaml.safe_load(done.stdout)
    assert cfg["model"]["variant"] == variant and cfg["trainer"]["max_steps"] == steps
    assert cfg["model"]["losses"]["landmarks68"] > 0 and cfg["data"]["augment"]["enabled"] is True
    fine_tuning = "finetune.yaml" in recipe
    assert (cfg["model"]["init_weights"] == "default") is fine_tuning
    assert (cfg["data"]["augment"]["profile"] > 0) is fine_tuning


def test_untrusted_landmarks_are_left_out_of_the_landmark_terms(photo_cache, face_model_file):
    """``landmark_weight`` 0 (a face MediaPipe labels badly) removes exactly that face's share."""
    module = _module(face_model_file)
    data = _dataset(photo_cache, 64, None)
    batch = _collate([data[i] for i in range(2)])
    params = module(batch["image"])

    def terms(weights: list[float]) -> dict:
        return module.compute_losses(params, {**batch, "landmark_weight": torch.tensor(weights)}, 0.0)[1]

    both, first, second = terms([1.0, 1.0]), terms([1.0, 0.0]), terms([0.0, 1.0])
    for name in ("landmarks68", "landmarks_dense"):
        assert float(first[name]) > 0 and float(second[name]) > 0
        assert float(first[name] + second[name]) == pytest.approx(float(both[name]), rel=1e-5)
    assert float(terms([0.0, 0.0])["landmarks68"]) == 0.0
    assert float(first["identity_prior"]) == pytest.approx(float(both["identity_prior"]))
