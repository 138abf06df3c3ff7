"""Where the shipped data lives: the models of ``weights/`` and the presets of ``configs/``.

In a checkout they are the repository's top-level folders; an installed wheel carries them as
package data inside ``facenet3d/`` (``setup.py`` maps the folders there).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder of shipped data ``name`` (``"weights"`` or ``"configs"``): inside the installed
    package when it is there, else the checkout's top-level folder."""
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name


WEIGHTS_DIR = resource_dir("weights")
CONFIGS_DIR = resource_dir("configs")
