"""The ``facenet3d`` command line.

Each sub-command lives beside the code it drives, in a module that exposes
``register(subparsers)``; this file only lists those modules. The commands import their
heavy dependencies (mediapipe, onnxruntime, the renderer) when they run.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from facenet3d import __version__

#: Modules that each add one sub-command.
COMMAND_MODULES: list[str] = [
    "facenet3d.reconstruct",
    "facenet3d.facemodel.commands",
    "facenet3d.landmarks.commands",
    "facenet3d.onnx.commands",
    "facenet3d.evaluate.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facenet3d",
        description="Monocular 3D face reconstruction: photo in, textured 3D face out.",
    )
    parser.add_argument("--version", action="version", version=f"facenet3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
