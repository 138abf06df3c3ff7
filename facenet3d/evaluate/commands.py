"""``facenet3d evaluate {aflw2000,geometry,photometric,identity,expression,fairness}``.

Each writes a JSON report (``--json``) and prints its headline figures. The method is
``--refine none|landmarks|fast|full`` (the pipeline) or ``--baseline mediapipe|mean-face`` (aflw2000
also ``3ddfa-v2 --teacher DIR``; see :mod:`facenet3d.evaluate.methods`). Exit status: 0 done, 1 done
but some items failed (listed in the report), 2 usage or data error, 3 the method cannot run here
(e.g. ``--refine none`` without regressor weights; the report then says ``"skipped"`` and why).
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3
REFINE_CHOICES = ("none", "landmarks", "fast", "full")
BASELINE_CHOICES = ("mediapipe", "mean-face")
#: Files the ``aflw2000`` benchmark looks for beside its data folder.
REANNOTATED_FILE, PROTOCOL_ROI_FILE = "dev-reannotated-pts68.npz", "dev-protocol-roi.npz"


def _refine_choice(value: str) -> str:
    """A ``--refine`` preset name, or an existing refinement YAML file."""
    from facenet3d.evaluate.methods import is_refine_yaml

    if value in REFINE_CHOICES or is_refine_yaml(value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither one of {REFINE_CHOICES} nor a refinement YAML file")


def _common(p: argparse.ArgumentParser, baselines: tuple[str, ...] = BASELINE_CHOICES) -> None:
    p.add_argument("--json", required=True, metavar="OUT", help="report file (JSON)")
    p.add_argument("--refine", type=_refine_choice, default="fast",
                   metavar="{" + ",".join(REFINE_CHOICES) + ",FILE.yaml}",
                   help="pipeline: none (regressor only), landmarks (stage A), fast (A+B), full (A+B+C), or a "
                        "refinement YAML (configs/refine/'s format); default fast")
    if baselines:
        p.add_argument("--baseline", choices=baselines, default=None,
                       help="evaluate a baseline instead of the pipeline: " + ", ".join(baselines))
    p.add_argument("--model", default="default", help="face model spec (default: the shipped model)")
    p.add_argument("--weights", default="default", help="regressor weights: default, a path, or none")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="benchmarks: AFLW2000-3D NME, synthetic geometry, photometric, identity, "
                                        "expression, fairness",
                       description="Evaluate the pipeline or a baseline and write a JSON report. "
                                   "Exit status: 0 done, 1 some items failed, 2 usage/data error, "
                                   "3 method unavailable (skipped).")
    ev = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)

    a = ev.add_parser("aflw2000", help="68-point NME per yaw bin on AFLW2000-3D (3DDFA protocol)")
    a.add_argument("--data", required=True, help="folder of AFLW2000-3D .jpg + .mat pairs")
    a.add_argument("--crop", choices=("gt-box", "detect"), default="gt-box",
                   help="gt-box: face region from the ground-truth box (published protocol); detect: our "
                        "detector on the whole photo (default gt-box)")
    a.add_argument("--box-scale", type=float, default=None,
                   help="gt-box cut-out side over the ground-truth box's longer side (default 2)")
    a.add_argument("--limit", type=int, default=None, help="evaluate N images evenly spaced over the sorted list")
    a.add_argument("--fit-truth", choices=("all", "inner"), default=None,
                   help="score the face model refitted to the ground truth's own points (all 68, or the 51 "
                        "inner ones) from the method's result: a bound that reads the labels, not a method")
    a.add_argument("--reannotated", default=None, metavar="FILE",
                   help="re-annotated 2D labels for a second NME column (default: dev-reannotated-pts68.npz "
                        "beside the data folder when present; 'none' to skip)")
    a.add_argument("--protocol-roi", default=None, metavar="FILE",
                   help="the protocol's roi boxes for --baseline 3ddfa-v2 (default: dev-protocol-roi.npz beside "
                        "the data folder when present, else 3DDFA_V2's roi from the ground-truth box)")
    a.add_argument("--teacher", default=None, metavar="DIR",
                   help="3DDFA_V2 teacher folder (mb05_120x120.safetensors + bfm68.npz) for --baseline 3ddfa-v2")
    a.add_argument("--teacher-passes", type=int, choices=(1, 2), default=1,
                   help="3ddfa-v2: 1 = the roi as given (the published protocol, default), 2 = re-cropped around "
                        "the first pass's points")
    _common(a, BASELINE_CHOICES + ("3ddfa-v2",))
    a.set_defaults(func=run_aflw2000)

    g = ev.add_parser("geometry", help="shape error in mm (NoW style) on synthetic ICT-FaceKit faces")
    g.add_argument("--ict", required=True, help="ICT-FaceKit folder (with FaceXModel/)")
    g.add_argument("--n", type=int, default=50, help="number of faces (default 50)")
    g.add_argument("--seed", type=int, default=0, help="which sequence of faces (default 0)")
    g.add_argument("--image-size", type=int, default=320, help="rendered image side (default 320)")
    _common(g, ("mean-face",))
    g.set_defaults(func=run_geometry)

    ph = ev.add_parser("photometric", help="face-region PSNR/SSIM of the re-render on photos")
    ph.add_argument("--photos", nargs="+", required=True, help="photo files or folders")
    ph.add_argument("--n", type=int, default=None, help="evaluate N photos evenly spaced over the sorted list")
    _common(ph, ("mean-face",))
    ph.set_defaults(func=run_photometric)

    i = ev.add_parser("identity", help="neutral-shape spread within vs across people (labels.csv identity)")
    i.add_argument("--photos", nargs="+", required=True, help="identity-labelled photo folders (lfw-expressions)")
    i.add_argument("--people", type=int, default=20, help="number of people (default 20)")
    i.add_argument("--per-person", type=int, default=5, help="photos per person (default 5)")
    _common(i, ())
    i.set_defaults(func=run_identity)

    from facenet3d.evaluate.expression import EMOTIONS

    x = ev.add_parser("expression", help="ARKit expression coefficients against emotion labels (within-person "
                                         "ROC AUC; needs an ARKit model such as ict:<folder>)")
    x.add_argument("--photos", nargs="+", required=True, help="emotion-labelled photo folders (lfw-expressions)")
    x.add_argument("--people", type=int, default=20, help="number of people, 0 for all (default 20)")
    x.add_argument("--per-person", type=int, default=5,
                   help="at most this many neutral and this many emotional photos per person, 0 for all (default 5)")
    x.add_argument("--emotions", nargs="+", choices=EMOTIONS, default=list(EMOTIONS),
                   help="emotions to score (default all)")
    _common(x, ())
    x.set_defaults(func=run_expression)

    f = ev.add_parser("fairness", help="photometric error and albedo per UTKFace race group")
    f.add_argument("--photos", nargs="+", required=True, help="UTKFace photo folders")
    f.add_argument("--per-group", type=int, default=20, help="photos per group (default 20)")
    _common(f, ("mean-face",))
    f.set_defaults(func=run_fairness)


def _prepare(args: argparse.Namespace):
    """The method for the arguments, or an exit status."""
    import torch

    from facenet3d.errors import Facenet3DError
    from facenet3d.evaluate.common import write_report
    from facenet3d.evaluate.methods import MethodUnavailableError, load_method

    if args.threads:
        torch.set_num_threads(args.threads)
    name = getattr(args, "baseline", None) or args.refine
    try:
        return load_method(name, model=args.model, weights=args.weights, teacher=getattr(args, "teacher", None),
                           teacher_passes=getattr(args, "teacher_passes", 1))
    except MethodUnavailableError as e:
        print(f"skipped: {e}", file=sys.stderr)
        write_report({"skipped": True, "reason": str(e), "settings": {"method": name, "benchmark": args.benchmark}},
                     args.json)
        return EXIT_SKIPPED
    except Facenet3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


def _finish(report: dict, args: argparse.Namespace, headline: str) -> int:
    from facenet3d.evaluate.common import write_report

    path = write_report(report, args.json)
    print(headline)
    if report.get("n_failed"):
        print(f"{report['n_failed']} item(s) failed (listed in the report)")
    print(f"report: {path}")
    return EXIT_SOME_FAILED if report.get("n_failed") else EXIT_OK


def _run(args: argparse.Namespace, evaluate, headline) -> int:
    from facenet3d.errors import Facenet3DError

    method = _prepare(args)
    if isinstance(method, int):
        return method
    try:
        report = evaluate(method)
    except Facenet3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return _finish(report, args, headline(report))


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _photos(args: argparse.Namespace):
    from facenet3d.landmarks.image_io import collect_photos

    return collect_photos(args.photos)


def run_aflw2000(args: argparse.Namespace) -> int:
    from facenet3d.evaluate.aflw2000 import DEFAULT_BOX_SCALE, evaluate_aflw2000

    def headline(r: dict) -> str:
        n, n2 = r["nme_68"], r.get("nme_68_reannotated")
        fit = f", fit to truth ({r['settings']['fit_truth']})" if r["settings"]["fit_truth"] else ""
        row = (f"AFLW2000-3D NME-68 ({r['settings']['method']}{fit}, {r['settings']['crop']}, {r['n_evaluated']} of "
               f"{r['n_images']} images): [0,30] {_fmt(n['yaw_0_30'])}  [30,60] {_fmt(n['yaw_30_60'])}  "
               f"[60,90] {_fmt(n['yaw_60_90'])}  mean {_fmt(n['mean'])}  all {_fmt(n['all'])} %")
        if n2:
            row += (f"\n  re-annotated ({r['n_reannotated']}): [0,30] {_fmt(n2['yaw_0_30'])}  [30,60] "
                    f"{_fmt(n2['yaw_30_60'])}  [60,90] {_fmt(n2['yaw_60_90'])}  mean {_fmt(n2['mean'])}  "
                    f"all {_fmt(n2['all'])} %")
        if r.get("n_landmarks_fallback"):
            row += f"\n  {r['n_landmarks_fallback']} face(s) without MediaPipe points scored unrefined"
        return row

    scale = DEFAULT_BOX_SCALE if args.box_scale is None else args.box_scale
    reannotated = _beside_data(args.data, args.reannotated, REANNOTATED_FILE)
    protocol_roi = _beside_data(args.data, args.protocol_roi, PROTOCOL_ROI_FILE)
    return _run(args, lambda m: evaluate_aflw2000(m, args.data, args.crop, args.limit, scale, not args.quiet,
                                                  args.fit_truth, reannotated, protocol_roi),
                headline)


def _beside_data(data: str, given: str | None, default_name: str) -> str | None:
    """A file option of ``aflw2000``: as given (``none``: None), else ``default_name`` beside the data
    folder when present."""
    from pathlib import Path

    if given is not None:
        return None if given.lower() == "none" else given
    candidate = Path(data).resolve().parent / default_name
    return str(candidate) if candidate.is_file() else None


def run_geometry(args: argparse.Namespace) -> int:
    from facenet3d.evaluate.geometry import evaluate_geometry

    def headline(r: dict) -> str:
        e, m = r["error_mm"], r["error_mm_metrical"]
        return (f"geometry ({r['settings']['method']}, {r['n_evaluated']} of {r['n_faces']} faces): NoW median "
                f"{_fmt(e['median'])} mean {_fmt(e['mean'])} std {_fmt(e['std'])} mm; metrical median "
                f"{_fmt(m['median'])} mean {_fmt(m['mean'])} mm")

    return _run(args, lambda m: evaluate_geometry(m, args.ict, args.n, args.seed, args.image_size, not args.quiet),
                headline)


def run_photometric(args: argparse.Namespace) -> int:
    from facenet3d.evaluate.photometric import evaluate_photometric

    def headline(r: dict) -> str:
        return (f"photometric ({r['settings']['method']}, {r['n_evaluated']} photos): PSNR "
                f"{_fmt(r['psnr_db']['mean'])} dB  SSIM {_fmt(r['ssim']['mean'], 4)}")

    return _run(args, lambda m: evaluate_photometric(m, _photos(args), args.n, not args.quiet), headline)


def run_identity(args: argparse.Namespace) -> int:
    from facenet3d.evaluate.identity import evaluate_identity

    def headline(r: dict) -> str:
        return (f"identity ({r['settings']['method']}, {r['n_people']} people, {r['n_photos']} photos): within "
                f"{_fmt(r['within_mm'])} mm, between {_fmt(r['between_mm'])} mm, ratio {_fmt(r['ratio'], 3)}, "
                f"identification {_fmt(r['identification'], 3)} (chance {_fmt(r['chance'], 3)})")

    return _run(args, lambda m: evaluate_identity(m, _photos(args), args.people, args.per_person, not args.quiet),
                headline)


def run_expression(args: argparse.Namespace) -> int:
    from facenet3d.evaluate.expression import evaluate_expression

    def headline(r: dict) -> str:
        rows = [f"{e}: " + ", ".join(f"{g} {_fmt(v['auc'], 3)}" for g, v in s["groups"].items())
                + f"  ({s['n_photos']} photos of {s['n_people']} people, {s['n_neutral']} neutral)"
                for e, s in r["emotions"].items()]
        return (f"expression AUC ({r['settings']['method']}, {r['n_evaluated']} of {r['n_items']} photos):\n  "
                + "\n  ".join(rows))

    return _run(args, lambda m: evaluate_expression(m, _photos(args), args.people, args.per_person, args.emotions,
                                                    not args.quiet), headline)


def run_fairness(args: argparse.Namespace) -> int:
    from facenet3d.evaluate.fairness import evaluate_fairness

    def headline(r: dict) -> str:
        rows = [f"{g}: PSNR {_fmt(v['psnr']['mean'])} dB, albedo ITA {_fmt(v['albedo_ita_deg']['mean'], 1)} "
                f"(photo {_fmt(v['photo_ita_deg']['mean'], 1)})" for g, v in r["groups"].items()]
        wb = r["worst_best"]
        return ("fairness (" + r["settings"]["method"] + "):\n  " + "\n  ".join(rows) +
                f"\n  worst/best RMS error {_fmt(wb['rmse_ratio'], 3)}, PSNR gap {_fmt(wb['psnr_gap_db'])} dB")

    return _run(args, lambda m: evaluate_fairness(m, _photos(args), args.per_group, not args.quiet), headline)
