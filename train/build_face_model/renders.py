"""Preview renders for the model card: the mean face and +-2 sd along the first modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facenet3d.decode import crop_camera, default_distance_mm
from facenet3d.export import write_png
from facenet3d.facemodel import MorphableModel
from facenet3d.render import Renderer, apply_pose, euler_to_matrix, sh_directional, sh_uniform
from facenet3d.render.color import linear_to_srgb

SIZE = 256


def _studio_light() -> torch.Tensor:
    """Soft key light from the upper left plus ambient (``(1, 9, 3)``)."""
    key = sh_directional(torch.tensor([[-0.4, 0.5, 0.77]]), torch.full((1, 3), 0.55))
    return key + sh_uniform(0.55)


def render_faces(model: MorphableModel, identity: torch.Tensor, expression: torch.Tensor,
                 albedo: torch.Tensor, yaw: float = 20.0) -> np.ndarray:
    """``(B, SIZE, SIZE, 3)`` uint8 renders of coefficient sets, slightly turned."""
    b = identity.shape[0]
    cam = crop_camera(SIZE)
    rot = euler_to_matrix(torch.tensor([[yaw, 0.0, 0.0]])).expand(b, 3, 3)
    trans = torch.tensor([[0.0, 0.0, -default_distance_mm(SIZE) * 1.1]]).expand(b, 3)
    with torch.no_grad():
        verts = apply_pose(model.decode(identity, expression), rot, trans)
        out = Renderer.from_model(model)(verts, cam, _studio_light().expand(b, -1, -1),
                                         model.albedo(albedo).clamp(0, 1))
        img = linear_to_srgb(out.image) * out.mask + (1 - out.mask)
    return (img.numpy() * 255 + 0.5).astype(np.uint8)


def mode_strip(model: MorphableModel, kind: str, modes: int = 3) -> np.ndarray:
    """Rows of -2 sd | mean | +2 sd for the first ``modes`` modes of ``kind``
    (``identity``, ``expression`` or ``albedo``)."""
    dims = {"identity": model.identity_dim, "expression": model.expression_dim, "albedo": model.albedo_dim}
    rows = []
    for k in range(min(modes, dims[kind])):
        coeffs = {n: torch.zeros(3, d) for n, d in dims.items()}
        coeffs[kind][:, k] = torch.tensor([-2.0, 0.0, 2.0])
        faces = render_faces(model, coeffs["identity"], coeffs["expression"], coeffs["albedo"])
        rows.append(np.concatenate(list(faces), 1))
    return np.concatenate(rows, 0)


def write_model_card_images(model: MorphableModel, folder: str | Path) -> list[Path]:
    """Write ``mean.png``, ``identity_modes.png``, ``expression_modes.png``, ``albedo_modes.png``
    and ``albedo_mean.png`` into ``folder``."""
    folder = Path(folder)
    z = {n: torch.zeros(1, d) for n, d in (("i", model.identity_dim), ("e", model.expression_dim),
                                           ("a", model.albedo_dim))}
    paths = [write_png(render_faces(model, z["i"], z["e"], z["a"], yaw=0.0)[0], folder / "mean.png")]
    for kind in ("identity", "expression", "albedo"):
        paths.append(write_png(mode_strip(model, kind), folder / f"{kind}_modes.png"))
    if model.albedo_space == "uv":
        srgb = linear_to_srgb(model.albedo_mean).numpy()
        paths.append(write_png(srgb, folder / "albedo_mean.png"))
    return paths


__all__ = ["mode_strip", "render_faces", "write_model_card_images"]
