"""Shared fixtures: where the ``../shared`` data lives and cached extractions of it.

Tests that need ``../shared`` use the ``shared`` fixture. Without the folder they skip with
a reason; with ``FACENET3D_REQUIRE_SHARED=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("FACENET3D_SHARED", REPO.parent / "shared")).resolve()


def cache_root() -> Path:
    root = Path(os.environ.get("FACENET3D_CACHE", Path.home() / ".cache" / "facenet3d"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ``../shared`` folder (or ``$FACENET3D_SHARED``)."""
    root = shared_root()
    if not (root / "data").is_dir():
        msg = f"shared data not found at {root} (set FACENET3D_SHARED)"
        if os.environ.get("FACENET3D_REQUIRE_SHARED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def ict_dir(shared: Path) -> Path:
    """ICT-FaceKit extracted once from ``shared/data/ict-facekit.tar.xz`` into the cache.

    Extraction goes to a temporary folder renamed when complete, so an interrupted run
    never leaves a half-extracted model behind.
    """
    archive = shared / "data" / "ict-facekit.tar.xz"
    target = cache_root() / f"ict-facekit-{archive.stat().st_size}"
    if not (target / "ict-facekit" / "FaceXModel" / "vertex_indices.json").is_file():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target / "ict-facekit"


@pytest.fixture(scope="session")
def faces_dir(shared: Path) -> Path:
    """``shared/data/faces`` (utkface, aflw-crops, lfw-expressions)."""
    return shared / "data" / "faces"
