"""The one container for every linear face model (ICT-FaceKit, BFM, FLAME, SFM, our own).

Geometry is ``mean + identity_basis . alpha + expression_basis . beta`` in millimetres,
optionally posed by linear blend skinning (FLAME's jaw, neck and eyes). Albedo is a linear
space either in UV texture space (``albedo_space == "uv"``, maps ``(H, W, 3)``) or per
vertex (``"vertex"``, ``(V, 3)``), values in linear RGB in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from facenet3d.facemodel.arrays import FORMAT_VERSION, FaceModelArrays  # noqa: F401  (re-exported)
from facenet3d.facemodel.lbs import lbs
from facenet3d.facemodel.uvmaps import downsample_maps, upsample_maps
from facenet3d.geometry import vertex_normals


class MorphableModel(nn.Module):
    """A linear 3D morphable face model with batched, device-agnostic torch decoding.

    All arrays live in registered buffers, so ``model.to(device)`` moves them and
    ``state_dict`` carries them. Build one with :func:`facenet3d.facemodel.load_face_model`
    or from :class:`FaceModelArrays`.

    Example:
        >>> model = load_face_model("ict:/path/to/ict-facekit")  # doctest: +SKIP
        >>> verts = model.decode(identity=torch.zeros(2, model.identity_dim))  # (2, V, 3) mm
    """

    def __init__(self, arrays: FaceModelArrays, source: str | None = None):
        super().__init__()
        arrays.validate(source)
        self.arrays_metadata = dict(arrays.metadata)
        self.expression_names: list[str] = list(arrays.expression_names)
        self.joint_names: list[str] = list(arrays.joint_names)
        self.albedo_space: str = arrays.albedo_space
        self.region_names: list[str] = sorted(arrays.regions)

        def buf(name: str, arr: np.ndarray | None, dtype: torch.dtype = torch.float32) -> None:
            self.register_buffer(name, None if arr is None else torch.as_tensor(np.asarray(arr), dtype=dtype))

        ki, v = arrays.identity_basis.shape[0], arrays.mean_shape.shape[0]
        ke = arrays.expression_basis.shape[0]
        buf("mean_shape", arrays.mean_shape)
        buf("triangles", arrays.triangles, torch.int64)
        # Bases are kept flattened to (K, 3V) so decoding is one matmul.
        buf("identity_basis", arrays.identity_basis.reshape(ki, v * 3))
        buf("expression_basis", arrays.expression_basis.reshape(ke, v * 3))
        buf("identity_std", np.ones(ki) if arrays.identity_std is None else arrays.identity_std)
        buf("expression_std", np.ones(ke) if arrays.expression_std is None else arrays.expression_std)
        buf("landmarks68", arrays.landmarks68, torch.int64)
        buf("landmarks_mediapipe", arrays.landmarks_mediapipe, torch.int64)
        buf("uvs", arrays.uvs)
        buf("uv_triangles", arrays.uv_triangles, torch.int64)
        buf("albedo_mean", arrays.albedo_mean)
        buf("albedo_basis", arrays.albedo_basis)
        ka = 0 if arrays.albedo_basis is None else arrays.albedo_basis.shape[0]
        buf("albedo_std", np.ones(ka) if arrays.albedo_std is None and ka else arrays.albedo_std)
        buf("specular_mean", arrays.specular_mean)
        buf("specular_basis", arrays.specular_basis)
        ks = 0 if arrays.specular_basis is None else arrays.specular_basis.shape[0]
        buf("specular_std", np.ones(ks) if arrays.specular_std is None and ks else arrays.specular_std)
        buf("roughness_mean", arrays.roughness_mean)
        for name in self.region_names:
            buf(f"region_{name}", arrays.regions[name], torch.bool)
        self.part_names: list[str] = sorted(arrays.parts)
        for name in self.part_names:
            buf(f"part_{name}", arrays.parts[name], torch.int64)
        self.landmark_embedding_names: list[str] = sorted(arrays.landmark_embeddings)
        for name in self.landmark_embedding_names:
            index, weights = arrays.landmark_embeddings[name]
            buf(f"embedding_{name}_index", index, torch.int64)
            buf(f"embedding_{name}_weights", weights)
        buf("joint_regressor", arrays.joint_regressor)
        buf("parents", arrays.parents, torch.int64)
        buf("skinning_weights", arrays.skinning_weights)
        buf("pose_basis", arrays.pose_basis)

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def identity_dim(self) -> int:
        return self.identity_basis.shape[0]

    @property
    def expression_dim(self) -> int:
        return self.expression_basis.shape[0]

    @property
    def albedo_dim(self) -> int:
        return 0 if self.albedo_basis is None else self.albedo_basis.shape[0]

    @property
    def specular_dim(self) -> int:
        return 0 if self.specular_basis is None else self.specular_basis.shape[0]

    @property
    def num_joints(self) -> int:
        return 0 if self.joint_regressor is None else self.joint_regressor.shape[0]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.arrays_metadata

    @property
    def expression_bounds(self) -> tuple[float, float] | None:
        """``(low, high)`` of every expression coefficient when they are bounded (blendshape
        weights: ``(0, 1)``), else None (PCA coefficients)."""
        bounds = self.arrays_metadata.get("expression_bounds")
        return None if bounds is None else (float(bounds[0]), float(bounds[1]))

    def clamp_expression_(self, expression: torch.Tensor) -> torch.Tensor:
        """Clamp ``(B, Ke)`` expression coefficients into :attr:`expression_bounds`, in place."""
        if self.expression_bounds is not None:
            expression.clamp_(*self.expression_bounds)
        return expression

    def clamp_expression(self, expression: torch.Tensor) -> torch.Tensor:
        """``(B, Ke)`` expression coefficients clamped into :attr:`expression_bounds` (a new tensor;
        traceable, so exported graphs keep blendshape weights in range)."""
        if self.expression_bounds is None:
            return expression
        return expression.clamp(*self.expression_bounds)

    def region(self, name: str) -> torch.Tensor:
        """``(V,)`` bool mask of a named region (e.g. ``"face"``, ``"eyes"``, ``"mouth"``)."""
        if name not in self.region_names:
            raise KeyError(f"no region {name!r}; this model has {self.region_names}")
        return getattr(self, f"region_{name}")

    def part(self, name: str) -> torch.Tensor:
        """``(Fp, 3)`` triangles of a separate mesh part (e.g. ``"eyeball_left"``, ``"teeth"``)."""
        if name not in self.part_names:
            raise KeyError(f"no part {name!r}; this model has {self.part_names}")
        return getattr(self, f"part_{name}")

    def landmark_embedding(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3)`` vertex indices and ``(N, 3)`` weights of a named landmark convention."""
        if name not in self.landmark_embedding_names:
            raise KeyError(f"no landmark embedding {name!r}; this model has {self.landmark_embedding_names}")
        return getattr(self, f"embedding_{name}_index"), getattr(self, f"embedding_{name}_weights")

    def landmark_points(self, vertices: torch.Tensor, name: str) -> torch.Tensor:
        """``(B, V, 3)`` vertices -> ``(B, N, 3)`` points of the landmark convention ``name``."""
        return self.gather_points(vertices, *self.landmark_embedding(name))

    #: Embedding of MediaPipe's face-mesh points, used for fitting when the model has it.
    MEDIAPIPE_EMBEDDING = "mediapipe478"

    def dense_landmark_rows(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The 468 MediaPipe mesh points: ``(468, 3)`` vertex indices and ``(468, 3)`` weights of
        the ``mediapipe478`` surface embedding when the model has one, else the
        ``landmarks_mediapipe`` vertices ``(468,)`` and None; None for a model with neither."""
        if self.MEDIAPIPE_EMBEDDING in self.landmark_embedding_names:
            index, weights = self.landmark_embedding(self.MEDIAPIPE_EMBEDDING)
            return index[:468], weights[:468]
        if self.landmarks_mediapipe is None:
            return None
        return self.landmarks_mediapipe, None

    @staticmethod
    def gather_points(vertices: torch.Tensor, index: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """``(B, V, 3)`` -> ``(B, N, 3)``: the vertices ``index (N,)``, or the weighted points of
        ``index (N, 3)`` and ``weights (N, 3)``."""
        if weights is None:
            return vertices[:, index]
        return (vertices[:, index] * weights[..., None].to(vertices)).sum(-2)

    # ------------------------------------------------------------------ decoding
    def _batch(self, *tensors: torch.Tensor | None) -> int:
        # A list, not a set: under ONNX/JIT tracing sizes are tensors that hash by identity, and
        # the returned size must stay traced so that exported graphs keep a dynamic batch.
        sizes = [t.shape[0] for t in tensors if t is not None]
        if any(int(s) != int(sizes[0]) for s in sizes[1:]):
            raise ValueError(f"coefficient batches disagree: {sorted({int(s) for s in sizes})}")
        return sizes[0] if sizes else 1

    @staticmethod
    def _coefficients(x: torch.Tensor | None, dim: int, batch: int, like: torch.Tensor,
                      what: str) -> torch.Tensor:
        if x is None:
            return like.new_zeros(batch, dim)
        if x.ndim != 2 or x.shape[1] > dim:
            raise ValueError(f"{what} coefficients must be (B, <={dim}), got {tuple(x.shape)}")
        # Fewer coefficients than modes mean the trailing ones are zero.
        return torch.nn.functional.pad(x.to(like), (0, dim - x.shape[1]))

    def decode(
        self,
        identity: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
        vertex_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vertices of the model.

        Args:
            identity: ``(B, Ki)`` identity coefficients (fewer columns: the rest are zero).
            expression: ``(B, Ke)`` expression coefficients.
            pose: ``(B, J, 3)`` axis-angle joint rotations (radians) for articulated models;
                ignored for models without joints.
            vertex_indices: ``(N,)`` decode only these vertices (e.g. landmarks, for fast
                fitting); not with ``pose`` (skinning needs the whole mesh).

        Returns:
            ``(B, V, 3)`` (or ``(B, N, 3)``) vertices in millimetres in the model frame
            (+y up, +z out of the face).
        """
        b = self._batch(identity, expression, pose)
        alpha = self._coefficients(identity, self.identity_dim, b, self.mean_shape, "identity")
        beta = self._coefficients(expression, self.expression_dim, b, self.mean_shape, "expression")
        if vertex_indices is not None:
            if pose is not None and self.joint_regressor is not None:
                raise ValueError("vertex_indices cannot be combined with a skinned pose")
            idx = vertex_indices.to(self.mean_shape.device)
            mean, id_rows, ex_rows = self._basis_subset(idx)
            return mean + (alpha @ id_rows + beta @ ex_rows).view(b, len(idx), 3)
        offsets = alpha @ self.identity_basis + beta @ self.expression_basis
        verts = self.mean_shape + offsets.view(b, self.num_vertices, 3)
        if pose is not None and self.joint_regressor is not None:
            verts = lbs(verts, pose.to(verts), self.joint_regressor, self.parents, self.skinning_weights,
                        self.pose_basis)
        return verts

    def _basis_subset(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean ``(N, 3)`` and flattened identity and expression bases ``(K, 3N)`` of the vertices ``idx``.

        A fit decodes the same few hundred landmark vertices at every step; gathering their
        columns out of the ``(K, 3V)`` bases of a large mesh costs far more than the matmuls, so
        the subsets are kept per index set (while the bases are unchanged and need no gradient).
        """
        tensors = (self.mean_shape, self.identity_basis, self.expression_basis)

        def gather() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return (self.mean_shape[idx],
                    self.identity_basis.view(self.identity_dim, -1, 3)[:, idx].reshape(self.identity_dim, -1),
                    self.expression_basis.view(self.expression_dim, -1, 3)[:, idx].reshape(self.expression_dim, -1))

        if any(t.requires_grad for t in tensors) or torch.is_inference_mode_enabled():
            return gather()
        key = (idx.device, tuple(t.data_ptr() for t in tensors), tuple(t._version for t in tensors),
               idx.cpu().numpy().tobytes())
        cache = self.__dict__.setdefault("_subset_cache", {})
        if key not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[key] = gather()
        return cache[key]

    def forward(self, identity=None, expression=None, pose=None) -> torch.Tensor:  # noqa: D401
        """Same as :meth:`decode`."""
        return self.decode(identity, expression, pose)

    def vertex_normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """``(B, V, 3)`` vertices -> ``(B, V, 3)`` unit area-weighted normals."""
        return vertex_normals(vertices, self.triangles)

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """``(B, V, 3)`` -> ``(B, 68, 3)`` iBUG-68 landmark positions (NaN where the model has none)."""
        idx = self.landmarks68.clamp_min(0)
        out = vertices[:, idx]
        missing = self.landmarks68 < 0
        if not missing.any():
            return out
        return torch.where(missing[None, :, None], torch.full_like(out, float("nan")), out)

    def _linear_space(self, mean, basis, what: str, coefficients: torch.Tensor | None) -> torch.Tensor:
        if mean is None:
            raise ValueError("this face model has no such space")
        b = 1 if coefficients is None else coefficients.shape[0]
        if basis is None or coefficients is None:
            return mean.expand(b, *mean.shape)
        k = basis.shape[0]
        c = self._coefficients(coefficients, k, b, mean, what)
        return mean + (c @ basis.reshape(k, -1)).view(b, *mean.shape)

    def _map_at(self, name: str, size: int | None) -> torch.Tensor | None:
        """The model's UV map ``name`` (``(T, T, C)`` buffer) at ``size`` texels across: itself when
        ``size`` is None or not smaller, else area-averaged (kept until the buffer changes)."""
        value = getattr(self, name)
        if value is None or size is None or value.ndim != 3 or size >= value.shape[0]:
            return value
        key = (name, size, value.data_ptr(), value._version)
        cache = self.__dict__.setdefault("_map_cache", {})
        if key not in cache:
            for old in [k for k in cache if k[0] == name]:
                del cache[old]
            cache[key] = downsample_maps(value, (size, size))
        return cache[key]

    def albedo(self, coefficients: torch.Tensor | None = None, size: int | None = None) -> torch.Tensor:
        """Diffuse albedo, linear RGB (not clamped).

        A UV basis coarser than the mean is combined at its own size and upsampled bilinearly
        (upsampling is linear, so this equals upsampling every mode first).

        Args:
            coefficients: ``(B, Ka)`` albedo coefficients, or None for the mean.
            size: for a UV albedo space, the maps' size in texels (default: the mean's). A smaller
                size area-averages the mean and upsamples the modes only that far: what a fit
                whose pixels each cover several texels needs, at a fraction of the cost.

        Returns:
            ``(B, H, W, 3)`` UV maps for a UV albedo space, ``(B, V, 3)`` for a per-vertex one.
        """
        mean, basis = self._map_at("albedo_mean", size), self.albedo_basis
        if basis is None or coefficients is None or basis.shape[1:] == mean.shape:
            return self._linear_space(mean, basis, "albedo", coefficients)
        k = basis.shape[0]
        c = self._coefficients(coefficients, k, coefficients.shape[0], basis, "albedo")
        offsets = (c @ basis.reshape(k, -1)).view(-1, *basis.shape[1:])
        resize = downsample_maps if offsets.shape[-2] > mean.shape[1] else upsample_maps
        return mean + resize(offsets, mean.shape[:2])

    def specular(self, coefficients: torch.Tensor | None = None, size: int | None = None) -> torch.Tensor:
        """Specular albedo in the albedo space, ``(B, ..., 3)``; see :meth:`albedo` (a ``size`` applies to a
        specular space without modes)."""
        if self.specular_basis is not None:
            size = None
        return self._linear_space(self._map_at("specular_mean", size), self.specular_basis, "specular",
                                  coefficients)

    # ------------------------------------------------------------------ conversion
    def to_arrays(self) -> FaceModelArrays:
        """The model as plain numpy arrays (e.g. to save it in the native format)."""

        def np_(t: torch.Tensor | None) -> np.ndarray | None:
            return None if t is None else t.detach().cpu().numpy()

        v = self.num_vertices
        return FaceModelArrays(
            mean_shape=np_(self.mean_shape),
            triangles=np_(self.triangles),
            identity_basis=np_(self.identity_basis).reshape(self.identity_dim, v, 3),
            expression_basis=np_(self.expression_basis).reshape(self.expression_dim, v, 3),
            landmarks68=np_(self.landmarks68),
            identity_std=np_(self.identity_std),
            expression_std=np_(self.expression_std),
            expression_names=list(self.expression_names),
            uvs=np_(self.uvs),
            uv_triangles=np_(self.uv_triangles),
            albedo_mean=np_(self.albedo_mean),
            albedo_basis=np_(self.albedo_basis),
            albedo_std=np_(self.albedo_std),
            specular_mean=np_(self.specular_mean),
            specular_basis=np_(self.specular_basis),
            specular_std=np_(self.specular_std),
            roughness_mean=np_(self.roughness_mean),
            landmarks_mediapipe=np_(self.landmarks_mediapipe),
            regions={n: np_(self.region(n)) for n in self.region_names},
            parts={n: np_(self.part(n)) for n in self.part_names},
            landmark_embeddings={n: tuple(np_(t) for t in self.landmark_embedding(n))
                                 for n in self.landmark_embedding_names},
            joint_regressor=np_(self.joint_regressor),
            parents=np_(self.parents),
            skinning_weights=np_(self.skinning_weights),
            pose_basis=np_(self.pose_basis),
            joint_names=list(self.joint_names),
            albedo_space=self.albedo_space,
            metadata=dict(self.arrays_metadata),
        )

    def extra_repr(self) -> str:
        name = self.arrays_metadata.get("name", "unnamed")
        return (f"name={name!r}, vertices={self.num_vertices}, triangles={self.triangles.shape[0]}, "
                f"identity={self.identity_dim}, expression={self.expression_dim}, "
                f"albedo={self.albedo_space}:{self.albedo_dim}, joints={self.num_joints}")
