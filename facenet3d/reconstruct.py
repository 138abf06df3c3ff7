"""``facenet3d reconstruct INPUT... -o OUT``: photos in, one output folder per photo out.

One bad input (missing, unreadable, no face) is reported and the rest go on; the output folder
is checked before any work. A re-run skips photos already done with the same settings, and
SIGINT / SIGTERM stop cleanly (:mod:`facenet3d.batch`, shared with the torch-free runtime).
Exit status: 0, 1 when any input failed, 2 for usage errors, 130 / 143 when interrupted.
Each photo's folder is written atomically, so an interrupted run leaves only complete results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

#: ``--refine`` choices: regressor only, landmark + photometric fit, and also per-texel maps.
REFINE_CHOICES = ("none", "fast", "full")

if TYPE_CHECKING:  # torch-heavy imports happen inside the functions: `facenet3d --help` stays fast
    from facenet3d.api import FaceReconstructor


def run(args: argparse.Namespace) -> int:
    if not args.inputs and args.webcam is None:
        print("error: give inputs (photos, folders, videos) or --webcam N", file=sys.stderr)
        return 2
    if args.backend == "onnx":
        return run_onnx(args)
    if args.engine != "local" or args.table:
        print("error: --engine ray and --table run the torch-free runtime: add --backend onnx --onnx FILE",
              file=sys.stderr)
        return 2
    if args.webcam is not None:
        print("error: --webcam needs --backend onnx: a live camera is followed frame by frame by the torch-free "
              "runtime, where the torch path fits a whole clip in two passes", file=sys.stderr)
        return 2
    if args.refine is None:
        args.refine = "fast"
    from facenet3d.batch import BatchRun, check_output_folder, collect_inputs, quiet_detector
    from facenet3d.errors import Facenet3DError
    from facenet3d.video_io import is_video

    out = Path(args.output)
    videos = [Path(i) for i in args.inputs if is_video(i)]
    photos, missing = collect_inputs([i for i in args.inputs if not is_video(i)])
    try:
        check_output_folder(out)  # before loading torch and the models, not after minutes of work
    except Facenet3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from facenet3d.api import MAX_DECODE_SIDE, FaceReconstructor, face_result
    from facenet3d.export.bundle import write_image_results
    from facenet3d.landmarks.image_io import read_image

    try:
        rec = FaceReconstructor.from_pretrained(args.weights, args.model)
    except Facenet3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.refine == "none" and rec.regressor is None:
        print("error: --refine none needs trained regressor weights and none are installed; "
              "use --refine fast or full", file=sys.stderr)
        return 2
    quiet_detector(rec.detector, verbose=args.verbose)
    from facenet3d.network import PRETRAINED, pretrained_path

    # The shipped weights by file name: a new release under the same name is not the same setting.
    weights = pretrained_path(args.weights).name if args.weights in PRETRAINED else args.weights
    settings = {"backend": "torch", "refine": args.refine, "weights": weights if rec.regressor is not None else "none",
                "face_model": rec.model_name, "max_faces": args.max_faces}
    if videos:
        status = run_videos(videos, out, rec, args)
        if not photos and not missing:
            return status
    with BatchRun(out, settings, overwrite=args.overwrite, quiet=args.quiet, failures=missing) as batch:
        for path, folder in batch.todo(photos):
            try:
                # One bounded decode serves detection, fitting and the (bounded) overlay.
                image = read_image(path, max_side=MAX_DECODE_SIDE)
                recs = rec.reconstruct(image, refine=args.refine, max_faces=args.max_faces, progress=batch.stage)
                batch.stage("write")
                # params.json names the model used ("default" resolves to the regressor's own).
                results = [face_result(r, rec.model, rec.renderer, image, rec.model_name) for r in recs]
                write_image_results(results, folder, batch.records(path))
            except (Facenet3DError, OSError) as e:
                batch.failed(path, str(e))
                continue
            batch.finished(path, folder, len(recs))
    print(batch.report.summary(out))
    return batch.report.exit_status()


def run_videos(videos: list[Path], out: Path, rec: FaceReconstructor, args: argparse.Namespace) -> int:
    """Each video's largest face as an animation (:mod:`facenet3d.video`); 1 when any failed."""
    from facenet3d.errors import Facenet3DError
    from facenet3d.video import reconstruct_video

    status = 0
    for v in videos:
        if (out / v.stem).is_dir() and not args.overwrite:
            print(f"{v}: {out / v.stem} exists, skipped")
            continue
        try:
            r = reconstruct_video(v, out, rec, refine=args.refine)
        except (Facenet3DError, OSError, ValueError) as e:
            print(f"failed: {v}: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{v} -> {r.folder}: {r.frames} frames, {r.faces} with a face ({r.frames / r.seconds:.2f} frames/s)"
              + "".join(f"; {n}" for n in r.notes))
    return status


def run_onnx(args: argparse.Namespace) -> int:
    """``--backend onnx``: the torch-free runtime (:mod:`infer`), regressor only."""
    if args.refine not in (None, "none"):
        print("error: --refine is torch-only; the ONNX backend runs the regressor alone (--refine none)",
              file=sys.stderr)
        return 2
    if not args.onnx:
        print("error: --backend onnx needs --onnx FILE (write one with `facenet3d export-onnx`)", file=sys.stderr)
        return 2
    from facenet3d.infer.__main__ import run_runtime

    shared = ("model", "max_faces", "quiet", "threads", "provider", "overwrite", "verbose", "engine", "ray_address",
              "num_workers", "table", "webcam")
    return run_runtime(args.inputs, args.output, args.onnx, **{name: getattr(args, name) for name in shared})


def register(sub: argparse._SubParsersAction) -> None:
    from facenet3d.infer.__main__ import add_engine_options
    from facenet3d.infer.session import PROVIDER_CHOICES

    p = sub.add_parser("reconstruct", help="reconstruct textured 3D faces from photos",
                       description="Reconstruct every face of each photo: OUT/<photo stem>/ gets mesh.obj "
                                   "(+ .mtl, albedo.png ...), mesh.glb, params.json, landmarks.json, "
                                   "overlay.png (textured render | shaded geometry with landmarks) and run.json "
                                   "(face_<i>/ sub-folders when a photo has several faces). A re-run skips "
                                   "photos done with the same settings; Ctrl-C keeps finished photos.")
    p.add_argument("inputs", nargs="*", help="image files or folders, video files (-> OUT/<stem>/frames.jsonl, "
                                             "animation.csv in Live Link Face's layout, animation.glb)")
    p.add_argument("--webcam", type=int, default=None, metavar="N",
                   help="a live camera (cv2.VideoCapture(N)) into OUT/webcam<N>/ until Ctrl-C (--backend onnx; "
                        "python -m facenet3d.infer --webcam has the streaming options)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--refine", choices=REFINE_CHOICES, default=None,
                   help="none: regressor only; fast: landmark + photometric fit; full: also per-texel UV maps "
                        "(default: fast; none with --backend onnx)")
    p.add_argument("--model", default="default", help="face model spec (default: the shipped model)")
    p.add_argument("--weights", default="default", help="regressor weights: default, fast, none or a path")
    p.add_argument("--max-faces", type=int, default=None, help="at most this many faces per photo")
    p.add_argument("--overwrite", action="store_true",
                   help="redo photos already done with the same settings (default: skip them, so a run resumes)")
    p.add_argument("--quiet", action="store_true", help="no per-photo lines or progress bar")
    p.add_argument("--verbose", action="store_true",
                   help="show the start-up messages of MediaPipe / TensorFlow Lite (hidden by default)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch: this library (refinement available); onnx: the torch-free runtime with an "
                        "exported graph (python -m facenet3d.infer; regressor only)")
    p.add_argument("--onnx", metavar="FILE", default=None, help="graph for --backend onnx (facenet3d export-onnx)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads (--backend onnx)")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto",
                   help="ONNX Runtime execution provider (--backend onnx; default: auto)")
    add_engine_options(p)  # --engine ray, --table: --backend onnx
    p.set_defaults(func=run)
