"""``python -m facenet3d.train``: the Lightning command line of the regressor's training.

    python -m facenet3d.train fit --config configs/train/cpu.yaml              # train, or resume the run
    python -m facenet3d.train export runs/resnet18/checkpoints/last.ckpt -o weights/regressor.safetensors

``fit``/``validate`` are LightningCLI's: every option of the YAML can be overridden on the
command line (``--trainer.max_steps 100 --data.batch_size 8``). The data module's crop size
is linked to the model's, so only the model sets it.

Everything a run writes goes under ``run_dir``: ``checkpoints/`` (``last.ckpt``, a periodic
checkpoint every ``checkpoint_every_n_steps``, and ``on_exception.ckpt`` when interrupted),
``lightning_logs/version_N/`` (CSV metrics, ``images/`` grids, the resolved config) and
``regressor.safetensors`` when training ends. The configs set ``ckpt_path: last``, so running
the same command again resumes an interrupted run from its newest checkpoint (the global step
continues); pass ``--ckpt_path null`` or another ``--run_dir`` to start afresh.

``--monitor METRIC`` (e.g. ``val/landmark_nme``, lower is better) also keeps the best validation
checkpoint as ``checkpoints/best.ckpt`` and, with ``--early_stopping_patience N``, stops after
``N`` validations without improvement.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facenet3d.train.data import FaceDataModule
from facenet3d.train.module import ExportRegressor, FaceRegressorModule, crop_size_of
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, OnExceptionCheckpoint
from pytorch_lightning.cli import LightningCLI


def run_callbacks(run_dir: str | Path, checkpoint_every_n_steps: int, monitor: str | None = None,
                  early_stopping_patience: int | None = None) -> list:
    """The callbacks every run gets: periodic and last checkpoints, a checkpoint on interruption
    (Ctrl-C, an exception), and the regressor exported when training ends; with ``monitor`` (a
    validation metric, lower is better) the best checkpoint (``best.ckpt``) and early stopping."""
    run = Path(run_dir)
    callbacks = [ModelCheckpoint(dirpath=run / "checkpoints", save_last=True,
                                 every_n_train_steps=checkpoint_every_n_steps),
                 OnExceptionCheckpoint(dirpath=run / "checkpoints"),
                 ExportRegressor(str(run / "regressor.safetensors"))]
    if monitor:
        callbacks.append(ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor=monitor, mode="min",
                                         save_top_k=1, enable_version_counter=False))
        if early_stopping_patience:
            callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=early_stopping_patience))
    return callbacks


class FaceTrainingCLI(LightningCLI):
    """LightningCLI with a run folder, its checkpoints, and the crop size linked from model to data."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", type=str, default="runs/default",
                            help="folder of the run's checkpoints, logs and exported weights")
        parser.add_argument("--checkpoint_every_n_steps", type=int, default=500,
                            help="training steps between periodic checkpoints")
        parser.add_argument("--monitor", type=str | None, default=None,
                            help="validation metric (lower is better) selecting checkpoints/best.ckpt")
        parser.add_argument("--early_stopping_patience", type=int | None, default=None,
                            help="stop after this many validations without improvement of --monitor")
        parser.link_arguments("run_dir", "trainer.default_root_dir")
        parser.link_arguments(("model.variant", "model.crop_size"), "data.crop_size", compute_fn=crop_size_of)

    def _instantiate_trainer(self, config: dict, callbacks: list):
        extra = run_callbacks(*(self._get(self.config_init, k) for k in (
            "run_dir", "checkpoint_every_n_steps", "monitor", "early_stopping_patience")))
        return super()._instantiate_trainer(config, [*callbacks, *extra])


def export_main(argv: list[str]) -> int:
    """``python -m facenet3d.train export CKPT -o OUT``: a training checkpoint -> regressor safetensors."""
    p = argparse.ArgumentParser(prog="python -m facenet3d.train export",
                                description="Write a training checkpoint's regressor as safetensors.")
    p.add_argument("checkpoint", help="Lightning checkpoint (.ckpt)")
    p.add_argument("-o", "--output", required=True, help="destination .safetensors")
    args = p.parse_args(argv)
    import torch

    module = FaceRegressorModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
    # load_from_checkpoint does not restore the step counter; keep it for the provenance.
    step = int(torch.load(args.checkpoint, map_location="cpu", weights_only=False).get("global_step", 0))
    path = module.export(args.output, trained_steps=step)
    print(f"wrote {path} ({module.regressor.info.backbone}, crop {module.crop_size}, step {step})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "export":
        return export_main(args[1:])
    FaceTrainingCLI(FaceRegressorModule, FaceDataModule, args=argv, seed_everything_default=0,
                    save_config_kwargs={"overwrite": True})
    return 0
