"""How close a regressor comes to its own kind of labels on held-out photos, as they are and turned.

    python -m facenet3d.train.turned_error --cache ../cache/faces224 --weights default

The photos are the training caches' validation split (:class:`~facenet3d.train.data.FaceDataModule`'s
stable hash split, ``--val-fraction`` as in training). Each is scored twice: as it is, against
MediaPipe's 68 points, and turned in depth to ``--min-yaw``..``--max-yaw`` degrees by the
training's profiling augmentation (:mod:`facenet3d.train.profiling`), against MediaPipe's points of the
frontal photo turned along (photos MediaPipe sees beyond 30 degrees, or whose turned render the
detector misses, are not turned and not counted there). Errors are normalised as AFLW2000-3D's NME
(mean point distance over ``sqrt(w h)`` of the labels' box), over all 68 points, the 51 inner and
the 17 jaw points. Set beside the AFLW2000-3D profile bin, the turned figure tells what the network
learnt from the synthetic turns from how much of it carries over to real profiles.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from facenet3d.train.data import AugmentConfig, CachedFaceDataset, FaceDataModule
from torch.utils.data import DataLoader
from tqdm import tqdm

from facenet3d.decode import crop_camera, decode_face
from facenet3d.evaluate.aflw2000 import point_errors
from facenet3d.evaluate.common import write_report
from facenet3d.facemodel import MorphableModel
from facenet3d.landmarks.ibug68 import IBUG68_INNER, IBUG68_REGIONS
from facenet3d.network import FaceRegressor, load_regressor
from facenet3d.network.weights import face_model_for

#: The point sets scored: all 68, the 51 inner ones, the 17 jaw-contour points.
POINT_SETS = {"all": slice(0, 68), "inner": IBUG68_INNER, "jaw": IBUG68_REGIONS["jaw"]}


def turning(min_yaw: float, max_yaw: float) -> AugmentConfig:
    """An augmentation that only turns every near-frontal face to ``min_yaw``..``max_yaw`` degrees."""
    return AugmentConfig(flip=0.0, scale=0.0, rotate_deg=0.0, translate=0.0, colour=0.0, occluder=0.0, blur=0.0,
                         noise=0.0, jpeg=0.0, profile=1.0, profile_min_yaw=min_yaw, profile_max_yaw=max_yaw)


def landmark_errors(regressor: FaceRegressor, model: MorphableModel, dataset: CachedFaceDataset,
                    turned_only: bool = False,
                    batch_size: int = 16, seed: int = 0, progress: bool = True) -> np.ndarray:
    """Per-face NME-style errors of the regressor's 68 points against the samples' labels.

    Args:
        regressor: the network.
        model: the face model it predicts for (decodes the points).
        dataset: the samples (their crop size must be the regressor's).
        turned_only: keep only samples that were turned (``turn_deg != 0``).
        batch_size: faces per forward pass.
        seed: seeds the augmentation's random draws (the turn angles).
        progress: show a progress bar.

    Returns:
        ``(N, 3)`` percent over :data:`POINT_SETS` (all, inner, jaw).
    """
    torch.manual_seed(seed)
    camera = crop_camera(dataset.crop_size)
    rows = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in tqdm(loader, desc="turned" if dataset.augment else "as they are", disable=not progress):
        keep = batch["turn_deg"] != 0 if turned_only else torch.ones(len(batch["turn_deg"]), dtype=torch.bool)
        if not bool(keep.any()):
            continue
        with torch.no_grad():
            params = regressor.predict(batch["image"][keep])
            points = decode_face(model, params, camera, landmarks_only=True).landmarks68
        for p, g in zip(points.double().numpy(), batch["landmarks68"][keep].double().numpy(), strict=True):
            errors = point_errors(p, g)[0]
            rows.append([errors[s].mean() * 100 for s in POINT_SETS.values()])
    return np.array(rows).reshape(-1, len(POINT_SETS))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facenet3d.train.turned_error", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", nargs="+", required=True, help="photo cache folder(s) of the training")
    ap.add_argument("--weights", default="default", help="regressor weights: a shipped name or a path")
    ap.add_argument("--model", default="default", help="the face model the weights belong to")
    ap.add_argument("--val-fraction", type=float, default=0.02, help="validation share, as in training")
    ap.add_argument("--n", type=int, default=300, help="at most this many validation photos")
    ap.add_argument("--min-yaw", type=float, default=60.0)
    ap.add_argument("--max-yaw", type=float, default=80.0)
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args(argv)

    model = face_model_for(args.weights, args.model)
    regressor = load_regressor(args.weights, model)
    data = FaceDataModule(args.cache, crop_size=regressor.crop_size, val_fraction=args.val_fraction, val_max=args.n)
    data.setup()
    plain = data.val_set
    turned = CachedFaceDataset(plain.caches, plain.items, plain.crop_size, turning(args.min_yaw, args.max_yaw))
    report = {"weights": str(args.weights), "photos": len(plain), "turn_deg": [args.min_yaw, args.max_yaw]}
    for name, dataset, only in (("as_they_are", plain, False), ("turned", turned, True)):
        e = landmark_errors(regressor, model, dataset, turned_only=only)
        report[name] = {"n": len(e), **{k: round(float(v), 3) for k, v in zip(POINT_SETS, e.mean(0), strict=True)}}
        print(f"{name.replace('_', ' '):12s} {len(e):4d} faces: NME all {report[name]['all']:.2f}  "
              f"inner {report[name]['inner']:.2f}  jaw {report[name]['jaw']:.2f} %")
    if args.json:
        write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
