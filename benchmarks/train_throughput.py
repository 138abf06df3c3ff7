"""Training throughput of each regressor config on this machine (images per second).

    python benchmarks/train_throughput.py [configs/train/cpu.yaml[,more.yaml] ...] [--steps 3] [--batch-size B]

Each argument is a recipe: one YAML, or several joined by commas and merged in order as
LightningCLI merges repeated ``--config`` options (default: the shipped recipes, ``cpu``,
``cpu,mobilenetv3`` and ``resnet50``). For each, the script builds the config's
LightningModule and data module (its face model, backbone, crop size, batch size, loss
weights), takes augmented batches from the real photo cache, and times whole optimisation
steps: forward, every loss term, backward and the AdamW update, in both training phases,
landmarks only (before ``photometric_start``) and with the photometric term (which adds the
render and its backward). Data loading is timed separately, per image, in this process
(the trainer overlaps it with the step in its worker processes). Nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


CONFIGS = REPO / "configs" / "train"
DEFAULT_RECIPES = ("cpu.yaml", "cpu.yaml,mobilenetv3.yaml", "resnet50.yaml")


def merged(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s keys replacing its own, nested dictionaries merged key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_recipe(recipe: str) -> dict:
    """A comma-separated list of YAML paths (relative ones also looked up in ``configs/train``), merged."""
    cfg: dict = {}
    for name in recipe.split(","):
        path = Path(name) if Path(name).exists() else CONFIGS / name
        cfg = merged(cfg, yaml.safe_load(path.read_text()) or {})
    return cfg


def build(recipe: str, face_model: str | None, batch_size: int | None = None) -> tuple:
    from facenet3d.train.data import AugmentConfig, FaceDataModule
    from facenet3d.train.module import FaceRegressorModule, LossWeights, crop_size_of

    cfg = read_recipe(recipe)
    model_kw = dict(cfg.get("model", {}))
    if face_model:
        model_kw["face_model"] = face_model
    if "losses" in model_kw:
        model_kw["losses"] = LossWeights(**model_kw["losses"])
    data_kw = dict(cfg.get("data", {}))
    if "augment" in data_kw:
        data_kw["augment"] = AugmentConfig(**data_kw["augment"])
    data_kw["crop_size"] = crop_size_of(model_kw.get("variant", "resnet18"), model_kw.get("crop_size"))
    data_kw["num_workers"] = 0
    if batch_size:
        data_kw["batch_size"] = batch_size
    module = FaceRegressorModule(**model_kw)
    data = FaceDataModule(**data_kw)
    data.setup("fit")
    return module, data


def time_steps(module, batches: list[dict], photometric: bool) -> float:
    """Seconds per optimisation step (mean over ``batches`` after one warm-up step)."""
    opt = torch.optim.AdamW(module.regressor.parameters(), lr=1e-4)
    module.train()
    weight = module.weights.photometric if photometric else 0.0
    times = []
    for i, batch in enumerate([batches[0], *batches]):
        t = time.perf_counter()
        params = module(batch["image"])
        loss, _, _ = module.compute_losses(params, batch, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators and caches
            times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="*", default=list(DEFAULT_RECIPES),
                   help="YAML files, several per recipe joined by commas (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per phase")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--face-model", default=None, help="override the configs' face model")
    p.add_argument("--batch-size", type=int, default=None, help="override the configs' batch size")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'recipe':<26} {'backbone':<22} {'crop':>4} {'batch':>5} {'data img/s':>10} "
          f"{'lm-only img/s':>13} {'full img/s':>10} {'full s/step':>11}")
    for recipe in args.recipes:
        module, data = build(recipe, args.face_model, args.batch_size)
        loader = data.train_dataloader()
        it = iter(loader)
        t = time.perf_counter()
        batches = [next(it) for _ in range(args.steps)]
        b = batches[0]["image"].shape[0]
        data_rate = b * args.steps / (time.perf_counter() - t)
        lm = time_steps(module, batches, photometric=False)
        full = time_steps(module, batches, photometric=True)
        info = module.regressor.info
        name = "+".join(Path(n).stem for n in recipe.split(","))
        print(f"{name:<26} {info.backbone:<22} {info.crop_size:>4} {b:>5} {data_rate:>10.1f} "
              f"{b / lm:>13.1f} {b / full:>10.1f} {full:>11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
