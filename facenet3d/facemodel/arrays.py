"""``FaceModelArrays``: the plain numpy arrays of a face model (no torch).

Loaders produce them, the native ``.npz`` format stores them and
:class:`~facenet3d.facemodel.MorphableModel` turns them into torch buffers. Kept free of torch
so that the torch-free runtime (``infer/``) can read face models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facenet3d.errors import FaceModelFormatError

FORMAT_VERSION = 1


#: Arrays whose bytes define :meth:`FaceModelArrays.fingerprint`.
FINGERPRINT_ARRAYS = ("mean_shape", "triangles", "identity_basis", "expression_basis", "landmarks68",
                      "albedo_mean", "albedo_basis")


@dataclass
class FaceModelArrays:
    """Plain numpy arrays of a face model, as loaders produce them and the native format stores them.

    Shapes (``V`` vertices, ``F`` triangles, ``T`` UV coordinates, ``Ki``/``Ke``/``Ka``
    basis sizes, ``J`` joints); every length is millimetres.
    """

    mean_shape: np.ndarray  # (V, 3) float mm
    triangles: np.ndarray  # (F, 3) int, counter-clockwise seen from the front
    identity_basis: np.ndarray  # (Ki, V, 3) mm per unit coefficient
    expression_basis: np.ndarray  # (Ke, V, 3)
    landmarks68: np.ndarray  # (68,) int vertex indices of the iBUG-68 points, -1 where absent
    identity_std: np.ndarray | None = None  # (Ki,) prior std of coefficients; ones when None
    expression_std: np.ndarray | None = None  # (Ke,)
    expression_names: list[str] = field(default_factory=list)
    uvs: np.ndarray | None = None  # (T, 2) in [0, 1], origin bottom-left (OBJ convention)
    uv_triangles: np.ndarray | None = None  # (F, 3) int indices into uvs
    albedo_mean: np.ndarray | None = None  # (H, W, 3) for "uv", (V, 3) for "vertex"; linear RGB
    # (Ka, h, w, 3) for "uv" (h, w at most the mean's: a coarser basis is upsampled bilinearly,
    # see :func:`facenet3d.facemodel.albedo.upsample_maps`), (Ka, V, 3) for "vertex".
    albedo_basis: np.ndarray | None = None
    albedo_std: np.ndarray | None = None  # (Ka,)
    specular_mean: np.ndarray | None = None  # same space as albedo, (..., 3)
    specular_basis: np.ndarray | None = None  # (Ks, *specular_mean.shape)
    specular_std: np.ndarray | None = None  # (Ks,)
    roughness_mean: np.ndarray | None = None  # (..., 1) in the albedo space, or (1,)
    landmarks_mediapipe: np.ndarray | None = None  # (468,) vertex index of each MediaPipe point
    regions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (V,) bool
    # Separate mesh parts that share the vertices but are not rendered (eyeballs, teeth, ...):
    # name -> (Fp, 3) int triangles, counter-clockwise seen from outside.
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    # Named landmark conventions as points on the surface: name -> (vertex_index (N, 3) int,
    # weights (N, 3) float summing to 1); point n = sum_k weights[n, k] * vertices[vertex_index[n, k]].
    landmark_embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    joint_regressor: np.ndarray | None = None  # (J, V)
    parents: np.ndarray | None = None  # (J,) int, -1 for the root
    skinning_weights: np.ndarray | None = None  # (V, J)
    pose_basis: np.ndarray | None = None  # (9 (J - 1), V, 3)
    joint_names: list[str] = field(default_factory=list)
    albedo_space: str = "none"  # "uv", "vertex" or "none"
    metadata: dict[str, Any] = field(default_factory=dict)  # name, provenance, license, ...

    def fingerprint(self) -> str:
        """sha256 (hex) of the arrays that give coefficients their meaning (geometry, landmarks,
        albedo space), as float32 / int64 bytes with the bases flattened to ``(K, 3V)``.

        Two models with the same fingerprint decode every coefficient vector identically; it is
        what a regressor's weights and an ONNX graph record about the face model they were
        built for. numpy only, so the torch-free runtime computes the same value.
        """
        h = hashlib.sha256()
        for name in FINGERPRINT_ARRAYS:
            a = getattr(self, name)
            h.update(name.encode())
            if a is None:
                h.update(b"none")
                continue
            a = np.ascontiguousarray(a, dtype=np.int64 if a.dtype.kind in "iu" else np.float32)
            if name in ("identity_basis", "expression_basis"):
                a = a.reshape(a.shape[0], -1)
            h.update(str(tuple(a.shape)).encode())
            h.update(a.reshape(-1).view(np.uint8).data)
        # Embeddings change what a regressor's landmark outputs mean; models without them keep
        # the fingerprint they always had.
        for name in sorted(self.landmark_embeddings):
            index, weights = self.landmark_embeddings[name]
            h.update(f"embedding:{name}".encode())
            h.update(np.ascontiguousarray(index, np.int64).reshape(-1).view(np.uint8).data)
            h.update(np.ascontiguousarray(weights, np.float32).reshape(-1).view(np.uint8).data)
        return h.hexdigest()

    def validate(self, source: str | None = None) -> None:
        """Raise :class:`FaceModelFormatError` naming ``source`` when arrays disagree."""

        def fail(problem: str) -> None:
            raise FaceModelFormatError(source, problem)

        def check(name: str, arr: np.ndarray | None, shape: tuple, kind: str = "f") -> None:
            if arr is None:
                return
            if not isinstance(arr, np.ndarray):
                fail(f"{name} is not an array")
            if arr.dtype.kind not in ("f" if kind == "f" else "iu"):
                fail(f"{name} has dtype {arr.dtype}, expected {'float' if kind == 'f' else 'integer'}")
            if arr.ndim != len(shape) or any(
                    s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
                expected = tuple("*" if s is None else s for s in shape)
                fail(f"{name} has shape {arr.shape}, expected {expected}")
            if kind == "f" and arr.size and not np.isfinite(arr).all():
                fail(f"{name} holds NaN or infinite values")

        check("mean_shape", self.mean_shape, (None, 3))
        v = self.mean_shape.shape[0]
        check("triangles", self.triangles, (None, 3), "i")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= v):
            fail(f"triangles index outside 0..{v - 1}")
        check("identity_basis", self.identity_basis, (None, v, 3))
        check("expression_basis", self.expression_basis, (None, v, 3))
        check("identity_std", self.identity_std, (self.identity_basis.shape[0],))
        check("expression_std", self.expression_std, (self.expression_basis.shape[0],))
        check("landmarks68", self.landmarks68, (68,), "i")
        if self.landmarks68.max() >= v or self.landmarks68.min() < -1:
            fail("landmarks68 index outside the mesh")
        if self.expression_names and len(self.expression_names) != self.expression_basis.shape[0]:
            fail(f"{len(self.expression_names)} expression names for {self.expression_basis.shape[0]} modes")
        if (self.uvs is None) != (self.uv_triangles is None):
            fail("uvs and uv_triangles must be given together")
        check("uvs", self.uvs, (None, 2))
        check("uv_triangles", self.uv_triangles, (self.triangles.shape[0], 3), "i")
        uv_tri = self.uv_triangles
        if uv_tri is not None and uv_tri.size and (uv_tri.min() < 0 or uv_tri.max() >= len(self.uvs)):
            fail("uv_triangles index outside uvs")
        if self.albedo_space not in ("uv", "vertex", "none"):
            fail(f"albedo_space {self.albedo_space!r} is not one of uv, vertex, none")
        if self.albedo_space == "none":
            if self.albedo_mean is not None:
                fail("albedo arrays present but albedo_space is 'none'")
        else:
            if self.albedo_mean is None:
                fail(f"albedo_space {self.albedo_space!r} needs albedo_mean")
            space = (None, None, 3) if self.albedo_space == "uv" else (v, 3)
            if self.albedo_space == "uv" and self.uvs is None:
                fail("a UV albedo space needs uvs")
            check("albedo_mean", self.albedo_mean, space)
            if self.albedo_basis is not None:
                if self.albedo_space == "uv":
                    check("albedo_basis", self.albedo_basis, (None, None, None, 3))
                    if any(b > m for b, m in zip(self.albedo_basis.shape[1:3], self.albedo_mean.shape[:2],
                                                 strict=True)):
                        fail(f"albedo_basis maps {self.albedo_basis.shape[1:3]} are larger than the mean's "
                             f"{self.albedo_mean.shape[:2]}")
                else:
                    check("albedo_basis", self.albedo_basis, (None, *self.albedo_mean.shape))
                check("albedo_std", self.albedo_std, (self.albedo_basis.shape[0],))
            if self.specular_mean is not None:
                check("specular_mean", self.specular_mean, self.albedo_mean.shape)
            if self.specular_basis is not None:
                check("specular_basis", self.specular_basis, (None, *self.albedo_mean.shape))
                check("specular_std", self.specular_std, (self.specular_basis.shape[0],))
        check("landmarks_mediapipe", self.landmarks_mediapipe, (None,), "i")
        for name, mask in self.regions.items():
            if mask.shape != (v,):
                fail(f"region {name!r} has shape {mask.shape}, expected ({v},)")
        for name, tri in self.parts.items():
            check(f"part {name!r}", tri, (None, 3), "i")
            if tri.size and (tri.min() < 0 or tri.max() >= v):
                fail(f"part {name!r} indexes a vertex outside 0..{v - 1}")
        for name, (index, weights) in self.landmark_embeddings.items():
            check(f"landmark embedding {name!r} index", index, (None, 3), "i")
            check(f"landmark embedding {name!r} weights", weights, (index.shape[0], 3))
            if index.size and (index.min() < 0 or index.max() >= v):
                fail(f"landmark embedding {name!r} indexes a vertex outside 0..{v - 1}")
            if weights.size and np.abs(weights.sum(1) - 1).max() > 1e-3:
                fail(f"landmark embedding {name!r} has weights that do not sum to 1")
        if self.joint_regressor is not None:
            j = self.joint_regressor.shape[0]
            check("joint_regressor", self.joint_regressor, (j, v))
            check("parents", self.parents, (j,), "i")
            check("skinning_weights", self.skinning_weights, (v, j))
            check("pose_basis", self.pose_basis, (9 * (j - 1), v, 3))
            if self.parents is None or self.skinning_weights is None:
                fail("an articulated model needs parents and skinning_weights")
