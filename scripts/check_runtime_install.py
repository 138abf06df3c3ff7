"""Check the torch-free runtime install: a fresh venv with ``pip install .`` and nothing else.

    python scripts/check_runtime_install.py [--onnx REGRESSOR.onnx] [--max-mb 600] [--keep]

1. creates a venv in a temporary folder and installs this checkout into it (the base
   dependencies: the runtime), timing both;
2. fails if torch, mediapipe, jax or TensorFlow got installed, or if more than one package
   installs ``cv2``;
3. fails if the venv's site-packages holds more than ``--max-mb`` MB (MiB, files' sizes);
4. runs ``python -m facenet3d.infer`` of that venv, from outside the checkout (so the installed package
   is the one imported), on a real photo with an ONNX regressor, and checks the outputs.

Without ``--onnx`` the regressor is exported by this interpreter (which needs the full install):
an untrained ``tiny`` regressor, enough to run the whole path. The face model is passed by path
(``--model``). Run by ``scripts/test.sh``; pip's cache makes the install about half a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "torchvision", "mediapipe", "jax", "jaxlib", "tensorflow", "pytorch-lightning")
CV2_PROVIDERS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
FACE_MODEL = REPO / "weights" / "facenet3d_face_v1.npz"
OUTPUTS = ("mesh.obj", "mesh.glb", "params.json", "landmarks.json", "overlay.png")


def shared_root() -> Path:
    return Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared")).resolve()


def default_photo() -> Path:
    """A real photo: one of shared/data/faces, else scikit-image's astronaut (the README's example)."""
    lfw = sorted((shared_root() / "data" / "faces" / "lfw-expressions").glob("*.jpg"))
    if lfw:
        return lfw[3]
    try:
        import skimage
    except ImportError:
        raise SystemExit("no photo: set FACENET3D_SHARED, install scikit-image or pass --photo") from None
    return Path(skimage.__file__).parent / "data" / "astronaut.png"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    return proc


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            total += st.st_size if not os.path.islink(os.path.join(root, f)) else 0
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX regressor (default: export an untrained one)")
    parser.add_argument("--photo", type=Path, default=None, help="photo (default: one from shared/data/faces)")
    parser.add_argument("--max-mb", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args()
    photo = args.photo or default_photo()
    work = Path(tempfile.mkdtemp(prefix="facenet3d-runtime-"))
    try:
        venv = work / "venv"
        t0 = time.perf_counter()
        run([sys.executable, "-m", "venv", str(venv)])
        py = venv / "bin" / "python"
        run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)])
        install_s = time.perf_counter() - t0

        listed = json.loads(run([str(py), "-m", "pip", "list", "--format=json",
                                 "--disable-pip-version-check"]).stdout)
        names = {p["name"].lower().replace("_", "-") for p in listed}
        bad = sorted(names & set(FORBIDDEN))
        cv2 = sorted(names & set(CV2_PROVIDERS))
        site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
        size_mb = tree_size(site) / 2**20

        onnx = args.onnx
        if onnx is None:
            onnx = work / "regressor.onnx"
            run([sys.executable, "-m", "facenet3d", "export-onnx", "--untrained", "tiny", "--model", str(FACE_MODEL),
                 "-o", str(onnx), "--no-verify"], cwd=REPO)
        out = work / "out"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        t1 = time.perf_counter()
        proc = run([str(py), "-m", "facenet3d.infer", str(photo), "-o", str(out), "--onnx", str(onnx), "--model",
                    str(FACE_MODEL), "--quiet"], cwd=work, env=env)
        infer_s = time.perf_counter() - t1
        where = "import facenet3d, facenet3d.infer as infer; print(facenet3d.__file__); print(infer.__file__)"
        imported = run([str(py), "-c", where],
                       cwd=work, env=env).stdout.split()
        face_dir = out / photo.stem
        missing = [f for f in OUTPUTS if not (face_dir / f).is_file()]
        landmarks = json.loads((face_dir / "landmarks.json").read_text()) if not missing else {}

        print(f"runtime venv: pip install {install_s:.0f} s, site-packages {size_mb:.0f} MiB "
              f"(limit {args.max_mb:.0f}), {len(names)} packages; python -m facenet3d.infer {infer_s:.1f} s")
        problems = []
        if bad:
            problems.append(f"forbidden packages installed: {bad}")
        if len(cv2) != 1:
            problems.append(f"packages installing cv2: {cv2} (want exactly one)")
        if size_mb > args.max_mb:
            problems.append(f"site-packages is {size_mb:.0f} MiB > {args.max_mb:.0f}")
        if not all(p.startswith(str(site)) for p in imported):
            problems.append(f"imported from outside the venv: {imported}")
        if missing:
            problems.append(f"missing outputs in {face_dir}: {missing}\n{proc.stderr[-2000:]}")
        elif len(landmarks.get("image_px", [])) != 68:
            problems.append("landmarks.json does not hold 68 image points")
        for p in problems:
            print("FAIL:", p)
        if not problems:
            print(f"OK: no torch / mediapipe, one cv2 ({cv2[0]}), outputs written for {photo.name}")
        return 1 if problems else 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
