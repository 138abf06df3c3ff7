"""Apple ARKit's 52 face blendshapes from a face model's expression coefficients.

ARKit (``ARFaceAnchor.BlendShapeLocation``) names 52 blendshapes, each a weight in ``[0, 1]``;
iPhone face capture, Unreal's Live Link Face, MetaHuman, VRM avatars and the Blender add-ons
read them. A face model whose expression modes are ARKit blendshapes (ICT-FaceKit's 53, the
shipped head model's) converts by a fixed linear map :func:`arkit_matrix`:

* ``<shape>_L`` / ``<shape>_R`` are ARKit's ``<shape>Left`` / ``<shape>Right`` (both name the
  subject's own side, as ARKit does); unsided names are the same (``jawOpen``);
* ICT splits ``browInnerUp`` and ``cheekPuff`` into ``_L`` / ``_R`` halves, which ARKit keeps
  whole: the ARKit weight is the **mean of the two halves** (the two halves at ``w`` make ICT's
  whole shape at ``w``, and a one-sided ICT value counts half);
* ``tongueOut`` has no ICT mode: it is always 0.

So 51 of ARKit's names come from 53 coefficients, and the 52 weights are clipped to ``[0, 1]``.
:func:`from_arkit` is the map back (a whole ARKit shape sets both halves).
A model without ARKit-named expression modes (PCA expressions, e.g. the v1 model) has no
blendshapes: :func:`arkit_matrix` returns None and :func:`to_arkit` raises
:class:`NoBlendshapesError` saying so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facenet3d.errors import Facenet3DError

#: ARKit's 52 blendshape names in Apple's documented order (left eye, right eye, mouth and jaw,
#: brows / cheeks / nose, tongue).
ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight",
    "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft",
    "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft",
    "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)
ARKIT_INDEX = {name: k for k, name in enumerate(ARKIT_NAMES)}
#: ARKit shapes a model may split into ``_L`` / ``_R`` halves (ICT-FaceKit does).
SPLIT_SHAPES = ("browInnerUp", "cheekPuff")
#: How far the eyes turn at full ``eyeLook*`` weight, degrees (an eye's comfortable range;
#: ARKit's own eye transforms are measured, ours are derived from the blendshapes).
EYE_LOOK_MAX_DEG = 30.0


class NoBlendshapesError(Facenet3DError):
    """The face model's expression modes are not ARKit blendshapes."""


def arkit_name(model_name: str) -> tuple[str, float] | None:
    """The ARKit shape a model's expression mode feeds and its weight in the mean.

    ``"eyeBlink_L" -> ("eyeBlinkLeft", 1.0)``, ``"cheekPuff_R" -> ("cheekPuff", 0.5)``,
    ``"jawOpen" -> ("jawOpen", 1.0)``, ``"expression_003" -> None``.
    """
    base, side = model_name, ""
    if model_name.endswith(("_L", "_R")):
        base, side = model_name[:-2], {"_L": "Left", "_R": "Right"}[model_name[-2:]]
    if base in SPLIT_SHAPES and side:
        return base, 0.5
    name = base + side
    return (name, 1.0) if name in ARKIT_INDEX else None


def arkit_matrix(names: Sequence[str]) -> np.ndarray | None:
    """``(52, Ke)`` float64 ``M`` with ``arkit = M @ expression`` for a model's ``Ke`` mode names.

    None when the names are not ARKit blendshapes (any unknown name, or none at all).

    Raises:
        ValueError: two modes feed one ARKit shape other than as the halves of a split shape.
    """
    if not names:
        return None
    m = np.zeros((len(ARKIT_NAMES), len(names)))
    for k, name in enumerate(names):
        target = arkit_name(str(name))
        if target is None:
            return None
        row = ARKIT_INDEX[target[0]]
        if m[row].sum() + target[1] > 1.0 + 1e-9:
            raise ValueError(f"expression mode {name!r}: ARKit's {target[0]!r} is already fully given")
        m[row, k] = target[1]
    return m


def has_blendshapes(names: Sequence[str]) -> bool:
    """Whether a model's expression modes convert to ARKit blendshapes."""
    return arkit_matrix(names) is not None


def _matrix_or_raise(names: Sequence[str]) -> np.ndarray:
    m = arkit_matrix(names)
    if m is None:
        raise NoBlendshapesError(
            "this face model's expression modes are not ARKit blendshapes (no ARKit names: e.g. a PCA "
            "expression space such as the v1 model's), so no blendshape weights can be written; "
            "reconstruct with the head model (--model default / facenet3d_head_v2) for them")
    return m


def to_arkit(expression: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """A model's expression coefficients -> ARKit weights.

    Args:
        expression: ``(..., Ke')`` coefficients, ``Ke' <= Ke`` (missing trailing ones are 0).
        names: the model's ``Ke`` expression mode names.

    Returns:
        ``(..., 52)`` float64 weights in :data:`ARKIT_NAMES` order, clipped to ``[0, 1]``.

    Raises:
        NoBlendshapesError: the names are not ARKit blendshapes.
    """
    m = _matrix_or_raise(names)
    x = np.asarray(expression, np.float64)
    if x.shape[-1] > m.shape[1]:
        raise ValueError(f"{x.shape[-1]} expression coefficients for {m.shape[1]} named modes")
    return np.clip(x @ m[:, : x.shape[-1]].T, 0.0, 1.0)


def from_arkit(weights: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """ARKit weights -> a model's expression coefficients (split halves both get the whole
    shape's weight; ARKit shapes the model lacks, ``tongueOut``, are dropped).

    Args:
        weights: ``(..., 52)`` in :data:`ARKIT_NAMES` order.
        names: the model's ``Ke`` expression mode names.

    Returns:
        ``(..., Ke)`` float64.
    """
    m = _matrix_or_raise(names)
    return np.asarray(weights, np.float64) @ (m > 0).astype(np.float64)


def blendshape_record(expression: np.ndarray, names: Sequence[str]) -> dict[str, float] | None:
    """``{ARKit name: weight}`` (52 entries, Apple's order, rounded to 1e-6) or None for a model
    without ARKit blendshapes."""
    if not has_blendshapes(names):
        return None
    return {n: round(float(w), 6) for n, w in zip(ARKIT_NAMES, to_arkit(expression, names), strict=True)}


def eye_rotations(weights: np.ndarray) -> np.ndarray:
    """Eye rotations implied by the ``eyeLook*`` blendshapes.

    Args:
        weights: ``(..., 52)`` ARKit weights.

    Returns:
        ``(..., 6)`` degrees: left eye yaw, pitch, roll, right eye yaw, pitch, roll. Yaw is positive
        towards the subject's left, pitch positive upwards (the head pose's
        :func:`~facenet3d.camera_math.matrix_to_euler` convention is the same for yaw; its pitch
        is positive downwards), roll 0: ``EYE_LOOK_MAX_DEG`` times the difference of the
        opposing shapes (``eyeLookOutLeft`` turns the left eye to the subject's left).
    """
    w = np.asarray(weights, np.float64)

    def g(name: str) -> np.ndarray:
        return w[..., ARKIT_INDEX[name]]

    zero = np.zeros(w.shape[:-1])
    left = [g("eyeLookOutLeft") - g("eyeLookInLeft"), g("eyeLookUpLeft") - g("eyeLookDownLeft"), zero]
    right = [g("eyeLookInRight") - g("eyeLookOutRight"), g("eyeLookUpRight") - g("eyeLookDownRight"), zero]
    return EYE_LOOK_MAX_DEG * np.stack(left + right, -1)
