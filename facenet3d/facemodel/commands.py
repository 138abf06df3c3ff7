"""``facenet3d convert-face-model``: read any supported format, write the native ``.npz``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-face-model", help="convert a face model (ict:, bfm2009:, ...) to native .npz",
                       description="Load a face model from any supported format and save it as facenet3d's "
                                   "native .npz (millimetres, JSON metadata).")
    p.add_argument("spec", help='"<format>:<path>" or a native .npz path')
    p.add_argument("-o", "--output", required=True, help="destination .npz")
    p.add_argument("--half", action="store_true", help="store the bases as float16")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facenet3d.errors import Facenet3DError
    from facenet3d.facemodel import load_face_model, save_face_model

    try:
        model = load_face_model(args.spec)
    except Facenet3DError as e:
        print(f"error: {e}")
        return 1
    path = save_face_model(model, args.output, half_bases=args.half)
    print(f"wrote {path}: {model.extra_repr()}")
    return 0
