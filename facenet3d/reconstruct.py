"""``facenet3d reconstruct INPUT... -o OUT``: photos in, one output folder per photo out.

One bad input (unreadable, no face) is reported and the rest go on; the exit status is 1 when
any input failed, 2 for usage errors. Each photo's folder is written atomically, so a run
interrupted half-way leaves only complete results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch-heavy imports happen inside the functions: `facenet3d --help` stays fast
    from facenet3d.api import FaceReconstruction
    from facenet3d.export.bundle import FaceResult
    from facenet3d.facemodel import MorphableModel
    from facenet3d.render import Renderer

#: ``--refine`` choices: regressor only, landmark + photometric fit, and also per-texel maps.
REFINE_CHOICES = ("none", "fast", "full")
#: Largest side of the overlay render before it is warped into the photo.
MAX_OVERLAY_RENDER = 1024


def render_overlay(rec: FaceReconstruction, model: MorphableModel, renderer: Renderer, photo: np.ndarray
                   ) -> np.ndarray:
    """The reconstruction rendered over the photo, at the photo's size.

    The face is rendered in its aligned crop's camera at about the photo's resolution there,
    then warped into the photo by the crop's inverse similarity and alpha-composited.

    Args:
        rec: the reconstruction.
        model: its face model.
        renderer: a renderer for the model.
        photo: ``(H, W, 3)`` uint8 RGB at the photo's full size.
    """
    import torch

    from facenet3d.decode import CROP_FOCAL_PER_PX
    from facenet3d.render import PinholeCamera, apply_pose, rotation_6d_to_matrix
    from facenet3d.render.color import linear_to_srgb

    size = overlay_render_size(rec.crop_forward, rec.crop_size)
    p = rec.params
    cam = PinholeCamera.create(CROP_FOCAL_PER_PX * size, (size, size))
    with torch.no_grad():
        verts = model.decode(p.identity, p.expression)
        cam_verts = apply_pose(verts, rotation_6d_to_matrix(p.rotation), p.translation)
        albedo = rec.maps.albedo if rec.maps is not None else model.albedo(p.albedo)
        out = renderer(cam_verts, cam, p.sh, albedo.clamp(0, 1))
        rgba = torch.cat([linear_to_srgb(out.image), out.mask], -1)[0].cpu().numpy().astype(np.float32)
    return composite_crop_render(rgba, rec.crop_forward, rec.crop_size, photo)


def overlay_render_size(crop_forward: np.ndarray, crop_size: int) -> int:
    """Side of the overlay render in the crop camera: about the photo's resolution at the face,
    at least the crop size, at most :data:`MAX_OVERLAY_RENDER`."""
    fwd = np.asarray(crop_forward, np.float64)
    photo_per_crop = 1.0 / np.sqrt(abs(np.linalg.det(fwd[:, :2])))
    return int(np.clip(round(crop_size * photo_per_crop), crop_size, MAX_OVERLAY_RENDER))


def composite_crop_render(rgba: np.ndarray, crop_forward: np.ndarray, crop_size: int, photo: np.ndarray
                          ) -> np.ndarray:
    """Warp a render made in the aligned crop's camera into the photo and alpha-composite it.

    numpy + OpenCV only: the torch-free runtime (``infer/``) composites its overlays with it too.

    Args:
        rgba: ``(S, S, 4)`` float32 sRGB colour and coverage in ``[0, 1]``, rendered with the crop
            camera scaled to ``S`` pixels (focal ``CROP_FOCAL_PER_PX * S``, centre ``S / 2``).
        crop_forward: ``(2, 3)`` photo px -> crop px.
        crop_size: the crop size ``crop_forward`` maps to.
        photo: ``(H, W, 3)`` uint8 RGB.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    import cv2

    size = rgba.shape[0]
    fwd = np.asarray(crop_forward, np.float64)
    # render px -> crop px -> photo px
    scale = np.diag([crop_size / size, crop_size / size, 1.0])
    inv = np.linalg.inv(np.vstack([fwd, [0, 0, 1]]))
    to_photo = (inv @ scale)[:2]
    h, w = photo.shape[:2]
    warped = cv2.warpAffine(np.asarray(rgba, np.float32), to_photo, (w, h), flags=cv2.INTER_LINEAR,
                            borderValue=0)
    alpha = warped[..., 3:4]
    blended = photo.astype(np.float32) / 255.0 * (1 - alpha) + warped[..., :3] * alpha
    return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)


def face_result(rec: FaceReconstruction, model: MorphableModel, renderer: Renderer, photo: np.ndarray,
                model_name: str) -> FaceResult:
    """Everything written for one face (see :mod:`facenet3d.export.bundle`)."""
    from facenet3d.export.bundle import FaceResult
    from facenet3d.export.mesh import mesh_from_face_model
    from facenet3d.export.textures import encode_normal_map

    maps = rec.maps
    kwargs = {}
    if maps is not None:
        covered = chart_mask(model, maps.albedo.shape[1])
        kwargs = {"albedo": flatten_outside(maps.albedo[0].cpu().numpy(), covered),
                  "specular": flatten_outside(maps.specular[0].cpu().numpy(), covered),
                  "roughness": flatten_outside(maps.roughness[0].cpu().numpy(), covered)}
        if rec.refine == "full" or bool((maps.displacement != 0).any()):
            kwargs["normal_map"] = encode_normal_map(maps.normal[0].cpu().numpy())
    mesh = mesh_from_face_model(model, rec.vertices, **kwargs)
    return FaceResult(mesh=mesh, params=rec.params_record(model_name), landmarks_image_px=rec.landmarks68_image,
                      landmarks_mesh_mm=rec.landmarks68_mesh, overlay=render_overlay(rec, model, renderer, photo))


def chart_mask(model: MorphableModel, size: int, border: int = 4) -> np.ndarray:
    """``(size, size)`` bool: texels of the model's UV charts grown by ``border`` texels (what
    bilinear and mip-mapped sampling can reach). Cached per model and size."""
    key = (id(model), size, border)
    if key not in _CHART_MASKS:
        import cv2

        from facenet3d.render.uv import UVRaster

        covered = UVRaster.build(model.uvs.cpu(), model.uv_triangles.cpu(), size).covered.numpy()
        grown = cv2.dilate(covered.astype(np.uint8), np.ones((2 * border + 1, 2 * border + 1), np.uint8))
        _CHART_MASKS[key] = grown.astype(bool)
    return _CHART_MASKS[key]


_CHART_MASKS: dict = {}


def flatten_outside(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Texels outside ``mask`` set to the mean inside it (clean, compressible texture files)."""
    out = image.copy()
    out[~mask] = image[mask].mean(0)
    return out


def full_size_photo(path: Path) -> np.ndarray:
    """The upright photo at its original size (for the overlay)."""
    from facenet3d.landmarks.image_io import read_image

    return read_image(path).pixels


def run(args: argparse.Namespace) -> int:
    if args.backend == "onnx":
        return run_onnx(args)
    if args.refine is None:
        args.refine = "fast"
    from tqdm import tqdm

    from facenet3d.api import FaceReconstructor
    from facenet3d.errors import Facenet3DError
    from facenet3d.export.bundle import write_image_results
    from facenet3d.landmarks.cache import CacheUsageError, collect_photos

    try:
        photos = collect_photos(args.inputs)
    except CacheUsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        rec = FaceReconstructor.from_pretrained(args.weights, args.model)
    except Facenet3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.refine == "none" and rec.regressor is None:
        print("error: --refine none needs trained regressor weights and none are installed; "
              "use --refine fast or full", file=sys.stderr)
        return 2
    out = Path(args.output)
    failures: list[tuple[Path, str]] = []
    used: set[str] = set()
    bar = tqdm(photos, desc="reconstruct", unit="photo", disable=len(photos) < 2 or args.quiet)
    for path in bar:
        name = path.stem
        k = 1
        while name in used:  # two inputs with one stem: keep both
            k += 1
            name = f"{path.stem}_{k}"
        used.add(name)
        try:
            recs = rec.reconstruct(path, refine=args.refine, max_faces=args.max_faces)
            photo = full_size_photo(path)
            results = [face_result(r, rec.model, rec.renderer, photo, args.model) for r in recs]
            folder = write_image_results(results, out / name)
            if not args.quiet:
                tqdm.write(f"{path} -> {folder} ({len(recs)} face{'s' * (len(recs) > 1)})")
        except (Facenet3DError, OSError) as e:
            failures.append((path, str(e)))
            tqdm.write(f"failed: {e}", file=sys.stderr)
    done = len(photos) - len(failures)
    print(f"{done} of {len(photos)} photos reconstructed into {out}" +
          (f"; {len(failures)} failed" if failures else ""))
    return 1 if failures else 0


def run_onnx(args: argparse.Namespace) -> int:
    """``--backend onnx``: the torch-free runtime (:mod:`infer`), regressor only."""
    if args.refine not in (None, "none"):
        print("error: --refine is torch-only; the ONNX backend runs the regressor alone (--refine none)",
              file=sys.stderr)
        return 2
    if not args.onnx:
        print("error: --backend onnx needs --onnx FILE (write one with `facenet3d export-onnx`)", file=sys.stderr)
        return 2
    from infer.__main__ import build_parser
    from infer.__main__ import run as run_infer

    infer_args = build_parser().parse_args([*map(str, args.inputs), "-o", str(args.output), "--onnx", args.onnx])
    for name in ("model", "max_faces", "quiet", "threads", "provider"):
        setattr(infer_args, name, getattr(args, name))
    return run_infer(infer_args)


def register(sub: argparse._SubParsersAction) -> None:
    from infer.session import PROVIDER_CHOICES

    p = sub.add_parser("reconstruct", help="reconstruct textured 3D faces from photos",
                       description="Reconstruct every face of each photo: OUT/<photo stem>/ gets mesh.obj "
                                   "(+ .mtl, albedo.png ...), mesh.glb, params.json, landmarks.json and "
                                   "overlay.png (face_<i>/ sub-folders when a photo has several faces).")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--refine", choices=REFINE_CHOICES, default=None,
                   help="none: regressor only; fast: landmark + photometric fit; full: also per-texel UV maps "
                        "(default: fast; none with --backend onnx)")
    p.add_argument("--model", default="default", help="face model spec (default: the shipped model)")
    p.add_argument("--weights", default="default", help="regressor weights: default, fast, none or a path")
    p.add_argument("--max-faces", type=int, default=None, help="at most this many faces per photo")
    p.add_argument("--quiet", action="store_true", help="no per-photo lines or progress bar")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch: this library (refinement available); onnx: the torch-free runtime with an "
                        "exported graph (python -m infer; regressor only, completed outputs are skipped)")
    p.add_argument("--onnx", metavar="FILE", default=None, help="graph for --backend onnx (facenet3d export-onnx)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads (--backend onnx)")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto",
                   help="ONNX Runtime execution provider (--backend onnx; default: auto)")
    p.set_defaults(func=run)
