"""Photometric fidelity: how well the reconstruction, re-rendered, reproduces the photo's face.

Measured on the aligned crop the fit saw (224 px), in sRGB, on the photo's skin mask (eyes,
brows, nostrils and mouth interior excluded): PSNR, SSIM (:mod:`facenet3d.metrics`) and the
RMS colour error. The pixels are the photo's, the same for every method: skin the render misses
counts as black, so registration matters as much as colour. Also the mean rendered albedo over
the skin the render covers (used by :mod:`facenet3d.evaluate.fairness`). Renders use per-pixel
shading, the most faithful mode of :class:`~facenet3d.render.Renderer`, whatever the fit used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from facenet3d.evaluate.common import ItemRun, environment, evenly_spaced, summary
from facenet3d.evaluate.methods import Method, MethodUnavailableError


@dataclass
class Fidelity:
    """Fidelity of a batch of ``B`` re-rendered faces (each ``(B,)``, last one ``(B, 3)``).

    Attributes:
        psnr: dB (peak 1, sRGB).
        ssim: mean SSIM of the luminance.
        rmse: RMS colour error, sRGB in [0, 1].
        albedo: mean linear-RGB diffuse albedo over the measured pixels the render covers.
        pixels: number of measured (skin) pixels.
    """

    psnr: torch.Tensor
    ssim: torch.Tensor
    rmse: torch.Tensor
    albedo: torch.Tensor
    pixels: torch.Tensor


def render_fidelity(model, renderer, params, target, maps=None) -> Fidelity:
    """Re-render fitted faces into their crops and compare them with the photos.

    Args:
        model: the face model.
        renderer: a :class:`~facenet3d.render.Renderer` for it (``shading="pixel"`` to measure).
        params: :class:`~facenet3d.params.FaceParams` of ``B`` faces, crop camera.
        target: the :class:`~facenet3d.refine.FitTarget` they were fitted to.
        maps: :class:`~facenet3d.refine.FaceMaps` from stage C, or None for the model's
            statistical albedo and specular.
    """
    from facenet3d.metrics import masked_psnr, masked_ssim
    from facenet3d.refine import render_params
    from facenet3d.render.color import linear_to_srgb

    kw = {} if maps is None else {"albedo_map": maps.albedo, "specular_map": maps.specular,
                                  "roughness_map": maps.roughness}
    with torch.no_grad():
        out = render_params(model, renderer, params, target.size, **kw)
        image = linear_to_srgb(out.image)
        mask = target.skin_mask > 0.5
        m = mask.to(image.dtype)
        count = m.flatten(1).sum(1)
        mse = (((image - target.image) ** 2) * m[..., None]).flatten(1).sum(1) / (3 * count).clamp_min(1.0)
        seen = m * (out.mask[..., 0] > 0.5).to(m)
        albedo = (out.albedo * seen[..., None]).flatten(1, 2).sum(1) / seen.flatten(1).sum(1).clamp_min(1.0)[:, None]
        return Fidelity(masked_psnr(image, target.image, mask), masked_ssim(image, target.image, mask),
                        mse.sqrt(), albedo, count)


class PhotoFidelity:
    """Reconstruct a photo with a method and measure its fidelity (one renderer per method)."""

    def __init__(self, method: Method):
        if not method.reconstructs:
            raise MethodUnavailableError(f"method {method.name!r} gives landmarks only, nothing to render")
        from facenet3d.render import Renderer

        self.method = method
        rec = method.reconstructor
        self.renderer = Renderer.from_model(rec.model, shading="pixel").to(rec.device)

    def __call__(self, path: str | Path) -> dict:
        """``{"psnr", "ssim", "rmse", "albedo_rgb", "photo_rgb", "pixels"}`` of the photo's largest face
        (``photo_rgb``: the mean sRGB colour of the photo's skin pixels).

        Raises:
            ImageReadError, NoFaceError: unreadable photo or no face.
        """
        from facenet3d.api import MAX_DECODE_SIDE
        from facenet3d.landmarks.crop import face_crop_arrays
        from facenet3d.landmarks.image_io import read_image
        from facenet3d.refine import FitTarget

        rec = self.method.reconstructor
        loaded = read_image(path, max_side=MAX_DECODE_SIDE)
        face = self.method.run(loaded).reconstruction
        arrays = face_crop_arrays(loaded, face.detected, face.crop_size)
        target = FitTarget.from_arrays(arrays["crop"], arrays["landmarks478"], arrays["landmarks68"],
                                       arrays["skin_mask"], device=rec.device)
        maps = face.maps if self.method.refine == "full" else None
        f = render_fidelity(rec.model, self.renderer, face.params, target, maps)
        skin = target.skin_mask[0, ..., None] > 0.5
        photo = (target.image[0] * skin).flatten(0, 1).sum(0) / skin.sum().clamp_min(1)
        return {"psnr": float(f.psnr[0]), "ssim": float(f.ssim[0]), "rmse": float(f.rmse[0]),
                "albedo_rgb": f.albedo[0].tolist(), "photo_rgb": photo.tolist(), "pixels": int(f.pixels[0])}


def fidelity_summary(rows: list[dict]) -> dict:
    """Summaries of ``psnr``, ``ssim`` and ``rmse`` over per-photo results."""
    return {k: summary(r[k] for r in rows) for k in ("psnr", "ssim", "rmse")}


def evaluate_photometric(method: Method, photos: list[Path], n: int | None = None, progress: bool = True) -> dict:
    """Face-region PSNR/SSIM of the re-render on photos.

    Args:
        method: a method that reconstructs (not ``mediapipe``).
        photos: photo files (sorted; see :func:`~facenet3d.landmarks.image_io.collect_photos`).
        n: use this many, evenly spaced over the list (None: all).
        progress: show a progress bar.

    Returns:
        ``{"psnr_db", "ssim", "rmse": {median, mean, std, n}, "n_photos", "n_failed", "failures",
        "seconds_per_photo", "settings", "per_photo"}``.
    """
    measure = PhotoFidelity(method)
    chosen = evenly_spaced(photos, n)
    runner = ItemRun()
    t0 = time.perf_counter()
    done = runner.run(chosen, measure, name=str, progress=progress, desc=f"photometric {method.name}")
    rows = [r for _, r in done]
    s = fidelity_summary(rows)
    return {
        "benchmark": "photometric fidelity (face region, sRGB, 224 px crop)",
        "psnr_db": s["psnr"], "ssim": s["ssim"], "rmse": s["rmse"],
        "n_photos": len(chosen), "n_evaluated": len(done), "n_failed": len(runner.failures),
        "failures": runner.failures, "seconds_per_photo": runner.seconds_per_item,
        "seconds_total": time.perf_counter() - t0,
        "settings": {**method.describe(), "photos": len(photos), "n": n,
                     "sampling": f"{len(chosen)} of {len(photos)} evenly spaced over the sorted paths",
                     "mask": "photo skin mask (uncovered skin counts as black)", "shading": "pixel",
                     "environment": environment()},
        "per_photo": [{"photo": str(p), "psnr": round(r["psnr"], 4), "ssim": round(r["ssim"], 5),
                       "rmse": round(r["rmse"], 5)} for p, r in done],
    }
