"""The package as users install it: one import name, ``facenet3d``, carrying the runtime, the
training code, the shipped models and the presets; a wheel installed outside the checkout runs the
README's main command."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from facenet3d.facemodel.registry import DEFAULT_MODEL_FILE
from facenet3d.network.weights import PRETRAINED
from facenet3d.resources import CONFIGS_DIR, WEIGHTS_DIR, resource_dir

REPO = Path(__file__).resolve().parents[1]


def test_runtime_and_training_import_under_the_facenet3d_namespace():
    import facenet3d.infer
    import facenet3d.train

    assert Path(facenet3d.infer.__file__).parent == REPO / "infer"
    assert Path(facenet3d.train.__file__).parent == REPO / "train"


def test_shipped_data_is_found_in_the_checkout():
    assert WEIGHTS_DIR == REPO / "weights" == resource_dir("weights")
    assert CONFIGS_DIR == REPO / "configs"
    assert (WEIGHTS_DIR / DEFAULT_MODEL_FILE).is_file()
    assert (CONFIGS_DIR / "refine" / "full.yaml").is_file()


@pytest.mark.slow
def test_wheel_outside_the_checkout_runs_the_main_command(tmp_path):
    """Build the wheel, install it into a folder of its own and reconstruct the README's photo from
    another working directory: the models and presets come from the installed package."""
    skimage = pytest.importorskip("skimage")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO)], check=True, cwd=tmp_path)
    (wheel,) = dist.glob("facenet3d-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"facenet3d", next(n.split("/")[0] for n in names
                                                                  if ".dist-info/" in n)}
    for name in (DEFAULT_MODEL_FILE, PRETRAINED["default"], PRETRAINED["fast"]):
        assert f"facenet3d/weights/{name}" in names
    assert "facenet3d/configs/refine/full.yaml" in names and "facenet3d/infer/__main__.py" in names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True)
    photo = Path(skimage.__file__).parent / "data" / "astronaut.png"
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import facenet3d.resources as r; print(r.WEIGHTS_DIR)"],
                           check=True, cwd=tmp_path, env=env, capture_output=True, text=True).stdout.strip()
    assert Path(where) == site / "facenet3d" / "weights"
    subprocess.run([sys.executable, "-m", "facenet3d", "reconstruct", str(photo), "-o", "out", "--refine", "none",
                    "--quiet"], check=True, cwd=tmp_path, env=env)
    result = tmp_path / "out" / "astronaut"
    assert (result / "mesh.glb").stat().st_size > 0 and (result / "params.json").is_file()
