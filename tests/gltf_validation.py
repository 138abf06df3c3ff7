"""Running the Khronos glTF validator (npm ``gltf-validator``, via ``tests/js/validate_gltf.js``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "gltf-validator").is_dir():
        msg = "node or tests/js/node_modules/gltf-validator missing (run `npm install --prefix tests/js`)"
        if os.environ.get("FACENET3D_REQUIRE_SHARED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return node


def run_validator(path: Path) -> tuple[int, dict]:
    out = subprocess.run([node_or_skip(), str(JS_DIR / "validate_gltf.js"), str(path)],
                         capture_output=True, text=True, timeout=120)
    return out.returncode, json.loads(out.stdout)[str(path)]


def assert_valid_gltf(path: Path) -> None:
    """The Khronos validator finds no error and no warning in ``path``."""
    code, report = run_validator(path)
    issues = report["issues"]
    assert code == 0 and issues["numErrors"] == 0, json.dumps(issues, indent=1)
    assert issues["numWarnings"] == 0, json.dumps(issues, indent=1)
