"""``python -m facenet3d.infer INPUT... -o OUT --onnx model.onnx``: the torch-free runtime's command line.

Photos, folders of photos, list files (one path a line) and Parquet manifests (a ``path``
column) give ``OUT/<photo stem>/`` exactly as ``facenet3d reconstruct`` writes it (``--refine
none``), in this process or on Ray (``--engine ray``, :mod:`facenet3d.infer.ray_engine`; ``--table``: one
Parquet face table instead, :mod:`facenet3d.infer.table`); video files (and folders of frames with ``--video``) give
``OUT/<video stem>/frames.jsonl`` with an overlay video (see :mod:`facenet3d.infer.video`); ``--webcam N``
reconstructs a live camera into ``OUT/webcam<N>/`` until Ctrl-C (``--stream -`` prints each
frame's line as it comes). Exit status 0
when everything worked, 1 when some input failed (the others are written; ``OUT/failures.json``
lists them), 2 for usage errors (and an output folder that cannot be written), 130 / 143 when
stopped by SIGINT / SIGTERM (finished results are kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

#: ``--engine`` choices: this process, or Ray Data (:mod:`facenet3d.infer.ray_engine`).
ENGINES = ("local", "ray")


def build_parser() -> argparse.ArgumentParser:
    from facenet3d.infer.video import MESH_FORMATS, REDETECT_EVERY

    p = argparse.ArgumentParser(
        prog="python -m facenet3d.infer",
        description="Reconstruct faces with an exported ONNX graph (ONNX Runtime, numpy, OpenCV, MediaPipe; "
                    "no PyTorch). Photos and folders -> OUT/<stem>/ (mesh.obj, mesh.glb, params.json, "
                    "landmarks.json, overlay.png); videos -> OUT/<stem>/frames.jsonl + overlay video.")
    p.add_argument("inputs", nargs="*", help="photos, folders of photos, list files (.txt: one path a line), "
                                             "Parquet manifests (.parquet: a 'path' column), video files")
    p.add_argument("-o", "--output", required=True, help="output folder")
    add_runtime_options(p)
    add_engine_options(p)
    p.add_argument("--model", default="default", help="the face model's .npz (default: the shipped model)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per graph run (default: 32)")
    p.add_argument("--max-faces", type=int, default=None, help="at most this many faces per photo")
    p.add_argument("--overwrite", action="store_true",
                   help="redo photos done with the same graph and settings, and videos whose folder exists "
                        "(default: skip them, so a run resumes)")
    p.add_argument("--quiet", action="store_true", help="no per-photo lines or progress bar")
    p.add_argument("--verbose", action="store_true",
                   help="show the start-up messages of MediaPipe / TensorFlow Lite (hidden by default)")
    v = p.add_argument_group("video")
    v.add_argument("--video", action="store_true", help="treat folders as the frames of one video each")
    v.add_argument("--fps", type=float, default=None, help="frame rate of frame folders (default: 30)")
    v.add_argument("--no-smooth", action="store_true", help="no temporal smoothing of pose and expression")
    v.add_argument("--smooth-min-cutoff", type=float, default=1.0,
                   help="one-euro filter cut-off at rest, Hz (lower: smoother; default: 1.0)")
    v.add_argument("--smooth-beta", type=float, default=0.5,
                   help="one-euro filter speed coefficient (higher: less lag in fast motion; default: 0.5)")
    v.add_argument("--frame-meshes", choices=MESH_FORMATS, default="none",
                   help="write a mesh per frame in this format (default: none)")
    v.add_argument("--no-overlay-video", action="store_true", help="do not write the overlay video")
    v.add_argument("--redetect-every", type=int, default=REDETECT_EVERY, metavar="N",
                   help="the face is tracked from frame to frame and the detector runs every N frames and when "
                        f"tracking is lost (1: detect in every frame; default: {REDETECT_EVERY})")
    v.add_argument("--webcam", type=int, default=None, metavar="N",
                   help="reconstruct the live camera N (cv2.VideoCapture(N)) into OUT/webcam<N>/ until Ctrl-C / "
                        "SIGTERM or --max-frames; frames.jsonl, animation.csv (Live Link Face) and animation.glb "
                        "are written when it stops")
    v.add_argument("--stream", metavar="FILE", default=None,
                   help="also write each frame's JSON line here as it is made, flushed ('-': stdout)")
    v.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop a video or camera after N frames")
    return p


def run_runtime(inputs: Sequence[str | Path], output: str | Path, onnx: str | Path, **options) -> int:
    """Run the runtime as ``python -m facenet3d.infer`` does, from Python: ``options`` by their
    argument names (``max_faces=1``, ``engine="ray"``, ``webcam=0``, ...), the others at the
    command's defaults. Returns the command's exit status.

    Raises:
        TypeError: an option the command does not have.
    """
    args = build_parser().parse_args(["-o", str(output), "--onnx", str(onnx)])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise TypeError(f"unknown runtime options: {unknown}")
    vars(args).update(options, inputs=[str(i) for i in inputs])
    return run(args)


def add_runtime_options(p: argparse.ArgumentParser, onnx_required: bool = True) -> None:
    """``--onnx``, ``--threads``, ``--provider`` (shared with ``facenet3d reconstruct --backend onnx``)."""
    from facenet3d.infer.session import PROVIDER_CHOICES

    p.add_argument("--onnx", required=onnx_required, metavar="FILE",
                   help="graph written by `facenet3d export-onnx`")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime (default: one per core)")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto",
                   help="execution provider: auto (CUDA when onnxruntime-gpu finds a GPU, else CPU), cuda, cpu")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """``--engine``, ``--ray-address``, ``--num-workers``, ``--table`` (shared with ``facenet3d reconstruct
    --backend onnx``)."""
    from facenet3d.infer.table import FACE_TABLE

    g = p.add_argument_group("engine (photos)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process; ray: Ray Data, detection in tasks and the graph in an actor pool "
                        "(pip install 'facenet3d[ray]'; default: local)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join (ray start --head prints it; default: start a local instance)")
    g.add_argument("--num-workers", type=int, default=1, metavar="N",
                   help="regressor actors, one ONNX Runtime session of --threads threads each (default: 1)")
    g.add_argument("--table", action="store_true",
                   help=f"one Parquet table of parameters, landmarks and pose, a row per face "
                        f"(OUT/{FACE_TABLE}/), instead of a folder per photo (--engine ray)")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    from facenet3d.infer.batch import reconstruct_photos
    from facenet3d.infer.inputs import expand_path_lists
    from facenet3d.infer.pipeline import RuntimeFaceModel
    from facenet3d.infer.session import RegressorSession
    from facenet3d.infer.video import PoseSmoother, is_video, reconstruct_video

    from facenet3d.batch import (
        INTERRUPTED_STATUS,
        Interrupted,
        OutputFolderError,
        check_output_folder,
        collect_inputs,
        log,
        quiet_detector,
        stop_on_signals,
        write_failures,
    )
    from facenet3d.errors import Facenet3DError
    from facenet3d.landmarks.detect import FaceDetector

    if not args.inputs and args.webcam is None:
        print("error: give inputs (photos, folders, videos) or --webcam N", file=sys.stderr)
        return 2
    videos: list[Path | int] = [Path(i) for i in args.inputs
                                if is_video(i) or (getattr(args, "video", False) and Path(i).is_dir())]
    if args.webcam is not None:
        videos.append(args.webcam)
    out = Path(args.output)
    engine = getattr(args, "engine", "local")
    try:
        if engine != "ray" and (getattr(args, "table", False) or getattr(args, "ray_address", None)):
            raise ValueError("--table and --ray-address need --engine ray")
        if getattr(args, "num_workers", 1) < 1:
            raise ValueError("--num-workers must be at least 1")
        others, failures = expand_path_lists([i for i in args.inputs if Path(i) not in videos])
        photos, missing = collect_inputs(others)
        failures += missing
        check_output_folder(out)  # before any work
        session = RegressorSession(args.onnx, threads=args.threads, provider=args.provider)
        model = RuntimeFaceModel.load(args.model, session.info)
    except (OutputFolderError, Facenet3DError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verbose = getattr(args, "verbose", False)
    if photos or failures:
        if engine == "ray":
            from facenet3d.infer.ray_engine import RayRunOptions, reconstruct_photos_on_ray

            options = RayRunOptions(address=args.ray_address, num_workers=args.num_workers, table=args.table,
                                    verbose=verbose)
            try:
                report = reconstruct_photos_on_ray(photos, out, args.onnx, model, session.info, options=options,
                                                   threads=args.threads, provider=args.provider,
                                                   batch_size=args.batch_size, max_faces=args.max_faces,
                                                   overwrite=args.overwrite, quiet=args.quiet, failures=failures)
            except (Facenet3DError, ConnectionError) as e:  # ray missing, a cluster too small or unreachable
                print(f"error: {e}", file=sys.stderr)
                return 2
        else:
            report = reconstruct_photos(photos, out, session, model, quiet_detector(FaceDetector(), verbose),
                                        batch_size=args.batch_size, max_faces=args.max_faces,
                                        overwrite=args.overwrite, quiet=args.quiet, failures=failures)
        print(report.summary(out))
        if report.interrupted:
            return report.exit_status()
        failures = report.failures
    if videos:
        detector = quiet_detector(FaceDetector(max_faces=1), verbose)
        smoother_args = dict(min_cutoff=args.smooth_min_cutoff, beta=args.smooth_beta, enabled=not args.no_smooth)
        stream = None
        try:
            if args.stream == "-":
                stream = sys.stdout
            elif args.stream:
                stream = open(args.stream, "a", encoding="utf-8")  # noqa: SIM115  (closed below)
            with stop_on_signals():
                for v in videos:
                    name = f"webcam{v}" if isinstance(v, int) else v.stem
                    if (out / name).is_dir() and not args.overwrite:
                        log(f"{v}: {out / name} exists, skipped", args.quiet)
                        continue
                    try:
                        r = reconstruct_video(v, out, session, model, detector,
                                              smoother=PoseSmoother(**smoother_args), meshes=args.frame_meshes,
                                              overlay=not args.no_overlay_video, fps=args.fps, quiet=args.quiet,
                                              redetect_every=args.redetect_every, stream=stream,
                                              max_frames=args.max_frames)
                    except (Facenet3DError, OSError) as e:
                        failures.append((Path(name) if isinstance(v, int) else v, str(e)))
                        print(f"failed: {e}", file=sys.stderr)
                        continue
                    # Progress goes to stderr when the frames stream to stdout.
                    print(f"{v} -> {r.folder}: {r.frames} frames, {r.faces} with a face, {r.detections} detections "
                          f"({r.frames / r.seconds:.1f} frames/s)" + (f"; {r.overlay_note}" if r.overlay_note else ""),
                          file=sys.stderr if stream is sys.stdout else sys.stdout)
                    if r.interrupted:
                        break  # a live camera is stopped by a signal: that is its normal end
        except Interrupted as e:
            print(f"interrupted ({e}): finished videos kept, the one in progress dropped", file=sys.stderr)
            return INTERRUPTED_STATUS.get(e.signum, 130)
        finally:
            write_failures(out, failures)
            if stream is not None and stream is not sys.stdout:
                stream.close()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
