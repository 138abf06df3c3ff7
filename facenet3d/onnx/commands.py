"""``facenet3d export-onnx -o model.onnx``: the regressor and the face model's decoding as one ONNX file."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from facenet3d.errors import Facenet3DError
    from facenet3d.facemodel import load_face_model
    from facenet3d.network import create_regressor, load_regressor
    from facenet3d.network.weights import face_model_for
    from facenet3d.onnx.export import export_onnx

    try:
        model = load_face_model(args.model) if args.untrained else face_model_for(args.weights, args.model)
        if args.untrained:
            regressor = create_regressor(args.untrained, model)
            weights = {"source": f"untrained:{args.untrained}",
                       "note": "randomly initialised backbone, head at the neutral face (tests and benchmarks)"}
        else:
            regressor = load_regressor(args.weights, face_model=model)
            meta = regressor.weights_metadata
            weights = {"source": str(args.weights), "tensors_sha256": meta.get("tensors_sha256", ""),
                       "extra": meta.get("extra", {})}
        path = export_onnx(regressor, model, args.output, opset=args.opset, verify=not args.no_verify,
                           weights=weights)
    except Facenet3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = regressor.info
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {info.backbone} at {info.crop_size} px, "
          f"face model {info.face_model or args.model}, opset {args.opset}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from facenet3d.onnx.metadata import OUTPUT_NAMES

    p = sub.add_parser(
        "export-onnx", help="export the regressor and the face-model decoding to ONNX",
        description="Write one ONNX graph from the aligned face crop (float32 (B, 3, S, S) RGB in [0, 1], "
                    "dynamic batch) to the parameters, the vertices (mm, camera space), the 68 landmarks "
                    "(crop px) and the per-vertex albedo; outputs: " + ", ".join(OUTPUT_NAMES) +
                    ". Metadata (face model, crop size, normalisation, version) is stored in the file. "
                    "Run it without PyTorch: python -m facenet3d.infer PHOTOS -o OUT --onnx FILE.")
    p.add_argument("-o", "--output", required=True, help="destination .onnx file")
    p.add_argument("--weights", default="default", help="regressor weights: a shipped name (default) or a "
                                                        ".safetensors path (default: default)")
    p.add_argument("--untrained", metavar="VARIANT", default=None,
                   help="export a randomly initialised regressor VARIANT (e.g. resnet18) instead of weights: "
                        "for benchmarks and tests")
    p.add_argument("--model", default="default", help="face model spec (default: the shipped model)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default: 17)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip running the file in ONNX Runtime against PyTorch after export")
    p.set_defaults(func=run)
