"""Fairness across skin-tone groups: UTKFace's race labels (0 White, 1 Black, 2 Asian, 3 Indian,
4 Other, from its file names).

Per group, the same number of photos (evenly spaced over the group's sorted file names) is
reconstructed and measured with :class:`~facenet3d.evaluate.photometric.PhotoFidelity`:

- photometric error (RMS sRGB error, PSNR, SSIM in the face region) and the failure rate;
- albedo statistics: the mean rendered de-lit albedo over the measured skin pixels, and its
  Individual Typology Angle (ITA, degrees, from CIELAB: ``atan2(L* - 50, b*)``; above 55 very
  light, below -30 dark skin) next to the ITA of the photo's own skin pixels, so one can check
  that de-lighting keeps skin tone ordered and does not pull every group towards one albedo;
- ``worst_best``: the worst over the best group mean of the RMS error and of the failure rate
  (1 = parity), and the PSNR gap in dB.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from facenet3d.evaluate.common import ItemRun, environment, evenly_spaced, summary
from facenet3d.evaluate.methods import Method
from facenet3d.evaluate.photometric import PhotoFidelity, fidelity_summary

RACE_NAMES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other"}

# Linear sRGB (D65) -> CIE XYZ, and the D65 white point.
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear RGB (numpy)."""
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def ita_degrees(linear_rgb: np.ndarray) -> float:
    """Individual Typology Angle of a linear-RGB colour: ``atan2(L* - 50, b*)`` in degrees."""
    xyz = _RGB_TO_XYZ @ np.asarray(linear_rgb, np.float64) / _WHITE_D65

    def f(t: np.ndarray) -> np.ndarray:
        return np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)

    fx, fy, fz = f(xyz)
    lightness = 116 * fy - 16
    b_star = 200 * (fy - fz)
    return math.degrees(math.atan2(lightness - 50.0, b_star))


def race_groups(photos: list[Path]) -> dict[int, list[Path]]:
    """Photos by UTKFace race label (file-name parsing of
    :func:`~facenet3d.landmarks.photo_labels.photo_labels`), sorted; unlabelled photos dropped."""
    from facenet3d.landmarks.photo_labels import photo_labels

    groups: dict[int, list[Path]] = {}
    for p in photos:
        race = photo_labels(p).get("race")
        if race is not None:
            groups.setdefault(int(race), []).append(p)
    return {k: sorted(groups[k]) for k in sorted(groups)}


def worst_best(values: dict[str, float | None], higher_is_worse: bool = True) -> float | None:
    """Worst over best of per-group values (None when a value is missing or the best is 0)."""
    v = [x for x in values.values() if x is not None]
    if len(v) < 2 or len(v) != len(values):
        return None
    worst, best = (max(v), min(v)) if higher_is_worse else (min(v), max(v))
    return worst / best if best else None


def evaluate_fairness(method: Method, photos: list[Path], per_group: int = 20, progress: bool = True) -> dict:
    """Photometric error and albedo per UTKFace race group.

    Args:
        method: a method that reconstructs (not ``mediapipe``).
        photos: UTKFace photo files (``age_gender_race_date.jpg.chip.jpg``).
        per_group: photos per group.
        progress: show a progress bar.
    """
    measure = PhotoFidelity(method)
    groups = race_groups(photos)
    per: dict[str, dict] = {}
    all_failures: list[dict] = []
    seconds: list[float] = []
    t0 = time.perf_counter()
    for race, members in groups.items():
        name = RACE_NAMES.get(race, str(race))
        chosen = evenly_spaced(members, per_group)
        runner = ItemRun()
        done = runner.run(chosen, measure, name=str, progress=progress, desc=f"fairness {name}")
        rows = [r for _, r in done]
        seconds += runner.seconds
        all_failures += runner.failures
        albedo = np.array([r["albedo_rgb"] for r in rows]) if rows else np.zeros((0, 3))
        photo = np.array([r["photo_rgb"] for r in rows]) if rows else np.zeros((0, 3))
        per[name] = {
            **{k: v for k, v in fidelity_summary(rows).items()},
            "failure_rate": len(runner.failures) / len(chosen) if chosen else None,
            "albedo_rgb_mean": albedo.mean(0).tolist() if len(albedo) else None,
            "albedo_ita_deg": summary(ita_degrees(a) for a in albedo),
            "photo_ita_deg": summary(ita_degrees(srgb_to_linear(c)) for c in photo),
            "n_photos": len(chosen), "n_evaluated": len(done), "n_failed": len(runner.failures),
        }
    rmse = {g: v["rmse"]["mean"] for g, v in per.items()}
    psnr = {g: v["psnr"]["mean"] for g, v in per.items()}
    fail = {g: v["failure_rate"] for g, v in per.items()}
    psnr_known = [x for x in psnr.values() if x is not None]
    return {
        "benchmark": "fairness across UTKFace race groups",
        "groups": per,
        "worst_best": {"rmse_ratio": worst_best(rmse), "failure_rate_ratio": worst_best(fail),
                       "psnr_gap_db": (max(psnr_known) - min(psnr_known)) if len(psnr_known) > 1 else None,
                       "worst_rmse_group": max(rmse, key=lambda g: rmse[g] or -1.0) if rmse else None},
        "n_failed": len(all_failures), "failures": all_failures,
        "seconds_per_photo": float(np.mean(seconds)) if seconds else None,
        "seconds_total": time.perf_counter() - t0,
        "settings": {**method.describe(), "per_group": per_group,
                     "group_sizes": {RACE_NAMES.get(k, str(k)): len(v) for k, v in groups.items()},
                     "environment": environment()},
    }
