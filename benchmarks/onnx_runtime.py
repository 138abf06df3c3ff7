"""Speed of the ONNX regressor against the torch path, and of the torch-free pipeline, on CPU.

    python benchmarks/onnx_runtime.py [--variants resnet18 mobilenetv3] [--threads 2] [--repeat 10]
                                      [--photos 64] [--onnx-dir DIR] [--json out.json]

1. **Regressor, ms per face.** For each regressor variant, the graph of ``facenet3d export-onnx``
   (regressor + decoding: parameters, 7,305 vertices, 68 landmarks, vertex albedo) in ONNX
   Runtime, against the same computation in PyTorch (:class:`facenet3d.onnx.FaceGraph` under
   ``no_grad``) in the same run with the same thread count, at batch 1 and 32. Untrained
   weights: speed does not depend on their values.
2. **Full pipeline, faces per second**, ``python -m facenet3d.infer``'s work from a decoded photo to the
   mesh: MediaPipe detection + 478 landmarks, alignment, the graph in batches of 32, the photo
   camera, landmarks and the mesh (:class:`~facenet3d.export.TexturedMesh`, model frame); then
   separately what writing a result folder adds (UV maps, overlay, OBJ/GLB/PNG/JSON files).
   Photos: LFW (about 250 px, faces with context, one MediaPipe pass each) decoded beforehand.

Each time is the median (and minimum) of ``--repeat`` runs after warm-up; the machine is shared,
so the minimum is the better estimate of an idle machine and the load average is printed.
Reference: 3DDFA_V2 publishes 2.25 ms (2 threads) and 1.35 ms (4 threads) for its MobileNet
120x120 regressor (183.5 M MACs) in onnxruntime 1.5.1 on an i5-8259U (its README, "Configs").
Budgets (design brief): fast variant <= 5 ms per face; full pipeline >= 50 faces/s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timing import timed  # noqa: E402  (benchmarks/timing.py)

from facenet3d.network import create_regressor  # noqa: E402
from facenet3d.network.weights import face_model_for  # noqa: E402
from facenet3d.onnx import FaceGraph, export_onnx  # noqa: E402

SHARED = Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared"))
REFERENCE_3DDFA_V2 = {"model": "3DDFA_V2 MobileNet 120x120 (published, i5-8259U, onnxruntime 1.5.1)",
                      "ms_per_face_2_threads": 2.25, "ms_per_face_4_threads": 1.35}


def bench_regressor(variant: str, model, onnx_dir: Path, threads: int, repeat: int) -> dict:
    from facenet3d.infer.session import RegressorSession

    regressor = create_regressor(variant, model).eval()
    path = onnx_dir / f"{variant}.onnx"
    if not path.is_file():
        export_onnx(regressor, model, path, weights={"source": f"untrained:{variant}"})
    session = RegressorSession(path, threads=threads, provider="cpu")
    graph = FaceGraph(regressor, model).eval()
    s = regressor.crop_size
    row = {"variant": variant, "backbone": regressor.info.backbone, "crop": s,
           "onnx_mb": round(path.stat().st_size / 1e6, 1)}
    for batch in (1, 32):
        x = np.random.default_rng(0).random((batch, 3, s, s), dtype=np.float32)
        xt = torch.from_numpy(x)
        n = repeat if batch == 1 else max(3, repeat // 3)
        onnx_med, onnx_min, onnx_cpu = timed(lambda x=x: session.run(x), n)

        def run_torch(xt=xt):
            with torch.no_grad():
                graph(xt)

        torch_med, torch_min, torch_cpu = timed(run_torch, n)
        for name, (med, low, cpu) in (("onnx", (onnx_med, onnx_min, onnx_cpu)),
                                      ("torch", (torch_med, torch_min, torch_cpu))):
            row[f"{name}_b{batch}_ms_per_face"] = round(med / batch, 2)
            row[f"{name}_b{batch}_min_ms_per_face"] = round(low / batch, 2)
            row[f"{name}_b{batch}_cpu_ms_per_face"] = round(cpu / batch, 2)
    return row


def bench_pipeline(onnx_path: Path, threads: int, n_photos: int, write: bool) -> dict:
    """Faces per second from decoded photos to meshes (and, with ``write``, to result folders)."""
    from facenet3d.infer.pipeline import (
        MAX_DECODE_SIDE,
        RuntimeFaceModel,
        crops_to_input,
        detect_faces,
        face_result,
        place_faces,
    )
    from facenet3d.infer.session import RegressorSession

    from facenet3d.export.bundle import write_image_results
    from facenet3d.export.mesh import mesh_from_face_model
    from facenet3d.landmarks.detect import FaceDetector
    from facenet3d.landmarks.image_io import read_image

    session = RegressorSession(onnx_path, threads=threads, provider="cpu")
    model = RuntimeFaceModel.load("default", session.info)
    photos = sorted((SHARED / "data/faces/lfw-expressions").glob("*.jpg"))[::7][:n_photos]
    images = [read_image(p, max_side=MAX_DECODE_SIDE) for p in photos]
    detector = FaceDetector(max_faces=1)
    detect_faces(detector, images[0], session.crop_size, 1)  # builds the MediaPipe graphs
    stages = {"detect_align": 0.0, "regress": 0.0, "place_mesh": 0.0, "write": 0.0}
    faces_done = 0
    out = Path(tempfile.mkdtemp(prefix="facenet3d-bench-"))
    start = time.perf_counter()
    for i in range(0, len(images), 32):
        t0 = time.perf_counter()
        batch = []
        for image in images[i:i + 32]:
            try:
                batch.append((image, detect_faces(detector, image, session.crop_size, 1)[0]))
            except Exception:  # noqa: BLE001 (a photo without a face is skipped, as the runtime does)
                continue
        t1 = time.perf_counter()
        outputs = session.run(crops_to_input(np.stack([f.crop for _, f in batch])))
        t2 = time.perf_counter()
        placed = []
        for k, (image, face) in enumerate(batch):
            rows = {name: value[k:k + 1] for name, value in outputs.items()}
            hw = (image.original_size[1], image.original_size[0])
            (p,) = place_faces(rows, [face], model, session.crop_size, hw)
            mesh_from_face_model(model.arrays, p.vertices)
            placed.append((image, p))
        t3 = time.perf_counter()
        if write:
            for image, p in placed:
                write_image_results([face_result(p, model, image.pixels)], out / Path(image.path).stem)
        t4 = time.perf_counter()
        for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[key] += dt
        faces_done += len(batch)
    total = time.perf_counter() - start
    mesh_seconds = total - stages["write"]
    return {"photos": len(images), "faces": faces_done,
            "faces_per_s_to_mesh": round(faces_done / mesh_seconds, 1),
            "faces_per_s_with_files": round(faces_done / total, 1) if write else None,
            **{f"{k}_ms_per_face": round(v / max(faces_done, 1) * 1e3, 2) for k, v in stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["resnet18", "mobilenetv3"])
    parser.add_argument("--threads", type=int, default=2, help="threads for ONNX Runtime and PyTorch (default: 2)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--photos", type=int, default=64, help="photos for the pipeline figure (default: 64)")
    parser.add_argument("--no-write", action="store_true", help="skip the figure with result files written")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="keep/reuse exported graphs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    onnx_dir = args.onnx_dir or Path(tempfile.mkdtemp(prefix="facenet3d-onnx-"))
    onnx_dir.mkdir(parents=True, exist_ok=True)
    model = face_model_for("default")
    print(f"threads={args.threads} load average at start: {os.getloadavg()[0]:.1f} (2 cores)")
    print("ms per face, wall-clock median (minimum) [median process CPU time]")
    print(f"{'variant':>12} {'crop':>4} {'onnx b1':>25} {'torch b1':>25} {'onnx b32':>25} {'torch b32':>25}")
    rows = []
    for variant in args.variants:
        r = bench_regressor(variant, model, onnx_dir, args.threads, args.repeat)
        rows.append(r)

        def cell(key: str, r=r) -> str:
            return (f"{r[key + '_ms_per_face']:>7} ({r[key + '_min_ms_per_face']:>6}) "
                    f"[{r[key + '_cpu_ms_per_face']:>6}]")

        print(f"{variant:>12} {r['crop']:>4} {cell('onnx_b1'):>25} {cell('torch_b1'):>25} {cell('onnx_b32'):>25} "
              f"{cell('torch_b32'):>25}", flush=True)
    ref = REFERENCE_3DDFA_V2
    print(f"{'3DDFA_V2':>12} {120:>4} {ref['ms_per_face_2_threads']:>7} ms (2 threads), "
          f"{ref['ms_per_face_4_threads']} ms (4 threads): published, their machine")
    pipelines = {}
    for variant in args.variants:
        p = bench_pipeline(onnx_dir / f"{variant}.onnx", args.threads, args.photos, write=not args.no_write)
        pipelines[variant] = p
        print(f"pipeline {variant}: {p['faces']} faces, {p['faces_per_s_to_mesh']} faces/s to mesh"
              + (f", {p['faces_per_s_with_files']} faces/s with result folders" if p["faces_per_s_with_files"] else "")
              + f" | ms/face: detect+align {p['detect_align_ms_per_face']}, regress {p['regress_ms_per_face']}, "
                f"place+mesh {p['place_mesh_ms_per_face']}, write {p['write_ms_per_face']}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "regressor": rows, "pipeline": pipelines,
                                         "reference": REFERENCE_3DDFA_V2}, indent=2))


if __name__ == "__main__":
    main()
