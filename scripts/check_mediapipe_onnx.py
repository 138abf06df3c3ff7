"""Check the converted MediaPipe detector models against the TensorFlow Lite interpreter.

(The attention face-mesh model holds MediaPipe custom operators the plain interpreter lacks; it is
checked end to end against the mediapipe package by ``benchmarks/face_landmarks.py``.)

Each model gets real photos (resized to its input, in its value range) and random inputs;
the script prints the largest absolute and relative difference of every output. Needs a
Python with ``ai-edge-litert`` (the TFLite interpreter), ``onnxruntime``, ``opencv-python-headless``
and the ``mediapipe`` wheel's .tflite files (``--mediapipe-dir``)::

    python scripts/check_mediapipe_onnx.py --mediapipe-dir .venv/lib/python3.11/site-packages/mediapipe \
        --onnx-dir facenet3d/landmarks/data/mediapipe /work/shared/data/faces/lfw-expressions/*.jpg

Not a project dependency: a one-off check of the converter's output, run by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MODELS = {
    "face_detection_short_range": ("modules/face_detection/face_detection_short_range.tflite", (-1.0, 1.0)),
    "face_detection_full_range": ("modules/face_detection/face_detection_full_range_sparse.tflite", (-1.0, 1.0)),
}


def main() -> int:
    import cv2
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mediapipe-dir", type=Path, required=True)
    parser.add_argument("--onnx-dir", type=Path, required=True)
    parser.add_argument("--random", type=int, default=4, help="random inputs per model")
    parser.add_argument("photos", nargs="+")
    args = parser.parse_args()
    photos = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in args.photos]
    worst = 0.0
    for name, (rel, (lo, hi)) in MODELS.items():
        interp = Interpreter(model_path=str(args.mediapipe_dir / rel))
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        outs = interp.get_output_details()
        sess = ort.InferenceSession(str(args.onnx_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        h, w = inp["shape"][1:3]
        rng = np.random.default_rng(0)
        batch = [cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255 * (hi - lo) + lo
                 for p in photos]
        batch += [rng.uniform(lo, hi, (h, w, 3)).astype(np.float32) for _ in range(args.random)]
        max_abs = {o["name"]: 0.0 for o in outs}
        max_rel = dict(max_abs)
        for x in batch:
            interp.set_tensor(inp["index"], x[None])
            interp.invoke()
            names = [o.name for o in sess.get_outputs()]
            got = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x[None]}), strict=True))
            for o in outs:
                ref = interp.get_tensor(o["index"])
                diff = float(np.abs(got[o["name"]] - ref).max())
                max_abs[o["name"]] = max(max_abs[o["name"]], diff)
                max_rel[o["name"]] = max(max_rel[o["name"]], diff / max(float(np.abs(ref).max()), 1e-6))
        for key in max_abs:
            print(f"{name:28s} {key:32s} max|diff| {max_abs[key]:.2e}  relative to max|ref| {max_rel[key]:.2e}")
            worst = max(worst, max_rel[key])
    print(f"{len(photos)} photos + {args.random} random inputs per model; worst relative difference {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
