"""Separate mesh parts of a head (eyeballs, teeth, gums, mouth and eye sockets) and their flat materials.

A face model's parts (:attr:`facenet3d.facemodel.FaceModelArrays.parts`) share its vertex
array but are not part of the rendered skin surface. The exporters write each one as its own
OBJ group / glTF primitive / PLY faces with a flat PBR material chosen by the *kind* of part
its name names (part names vary between models: ``eyeball_left`` or ``sclera_left`` +
``iris_left``, ``gums_tongue`` or ``tongue``...), see :func:`part_material`.

Colours are linear RGB (glTF's ``baseColorFactor``, Blender's base colour); the values are
the sRGB colours in the comments, decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from facenet3d.errors import ExportError
from facenet3d.export.arrays import to_numpy

__all__ = ["PART_MATERIALS", "MeshPart", "PartMaterial", "part_material"]


@dataclass(frozen=True)
class PartMaterial:
    """A flat PBR material: linear RGB base colour and perceptual roughness (dielectric)."""

    color: tuple[float, float, float]
    roughness: float


def _srgb8(r: int, g: int, b: int) -> tuple[float, float, float]:
    # Written as the sRGB bytes a person picks in a colour chooser; stored linear.
    c = np.array([r, g, b], np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return tuple(round(float(x), 4) for x in linear)


#: (name keywords, material) per kind of part, first match wins: ``iris`` before ``eyeball``
#: (an ``eyeball_iris`` is an iris), ``mouth`` before ``socket`` (a mouth socket is no eye socket).
#: A whole ``eyeball_*`` part gets the sclera's colour: models that ship ``iris_*`` separately
#: get a coloured iris.
PART_MATERIALS: tuple[tuple[tuple[str, ...], PartMaterial], ...] = (
    (("iris", "pupil"), PartMaterial(_srgb8(72, 46, 30), 0.15)),  # dark brown, wet
    (("sclera", "eyeball", "eye_ball", "eye_white"), PartMaterial(_srgb8(236, 230, 220), 0.15)),  # white-ish, wet
    (("teeth", "tooth"), PartMaterial(_srgb8(238, 228, 200), 0.3)),  # ivory
    (("gum", "tongue"), PartMaterial(_srgb8(176, 82, 88), 0.45)),  # dark pink
    (("mouth",), PartMaterial(_srgb8(112, 40, 44), 0.6)),  # dark red: the mouth's inside
    (("socket",), PartMaterial(_srgb8(40, 26, 24), 0.8)),  # dark: the eye sockets behind the eyeballs
    (("lash",), PartMaterial(_srgb8(30, 22, 18), 0.7)),  # near-black hair
)
#: Material of a part whose name matches no kind: neutral grey.
DEFAULT_PART_MATERIAL = PartMaterial(_srgb8(160, 160, 160), 0.6)

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def part_material(name: str) -> PartMaterial:
    """The flat material of a part, from the kind its name names (case-insensitive).

    Example:
        >>> part_material("teeth") == part_material("lower_teeth")
        True
    """
    lowered = name.lower()
    for keywords, material in PART_MATERIALS:
        if any(k in lowered for k in keywords):
            return material
    return DEFAULT_PART_MATERIAL


@dataclass
class MeshPart:
    """A separate part of a mesh: triangles over the mesh's vertices and a flat material.

    Attributes:
        name: part / material name in the files (letters, digits, ``_ . -``).
        triangles: ``(Fp, 3)`` int indices into the owning mesh's vertices, counter-clockwise
            seen from outside.
        color: ``(3,)`` linear RGB base colour in ``[0, 1]``; None: by the name's kind
            (:func:`part_material`).
        roughness: perceptual roughness in ``[0, 1]``; None: by the name's kind.
    """

    name: str
    triangles: Any
    color: Any = None
    roughness: float | None = None

    def __post_init__(self) -> None:
        def fail(problem: str) -> None:
            raise ExportError(None, f"part {self.name!r}: {problem}")

        if not _NAME.fullmatch(str(self.name)):
            fail("name must be letters, digits, '_', '.' or '-' (it becomes an OBJ/MTL token)")
        tri = to_numpy(self.triangles)
        if tri.ndim != 2 or tri.shape[1] != 3 or tri.dtype.kind not in "iu" or len(tri) == 0:
            fail(f"triangles must be (F, 3) integers with F > 0, got {tri.shape} {tri.dtype}")
        self.triangles = tri.astype(np.int64)
        kind = part_material(self.name)
        color = to_numpy(kind.color if self.color is None else self.color, np.float32)
        if color.shape != (3,) or not np.isfinite(color).all():
            fail(f"color must be 3 finite values, got {color.shape}")
        self.color = np.clip(color, 0.0, 1.0)
        self.roughness = float(kind.roughness if self.roughness is None else self.roughness)
        if not 0.0 <= self.roughness <= 1.0:
            fail(f"roughness {self.roughness} is outside [0, 1]")
