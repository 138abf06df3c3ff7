"""``FaceParams``: the typed parameter set of one reconstructed face.

The regressor predicts it in one pass, the refinement stages optimise it, the exporters
write it. Coefficients are in the face model's own units (the shipped default model has
unit-variance coefficients); pose is a rotation in the 6D form of Zhou et al. (2019) —
continuous, so networks and optimisers handle it well — plus a translation in millimetres
in camera space (the camera looks down -z, so a visible face has ``translation_z < 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

#: Lighting: 9 second-order spherical-harmonics coefficients per RGB channel.
SH_COEFFICIENTS = 9
#: The constant real SH basis function Y_0 = 1 / (2 sqrt(pi)).
SH_Y0 = 0.282095


@dataclass
class FaceParams:
    """Parameters of a batch of ``B`` faces (all float32 tensors on one device).

    Attributes:
        identity: ``(B, Ki)`` identity coefficients.
        expression: ``(B, Ke)`` expression coefficients.
        albedo: ``(B, Ka)`` diffuse-albedo coefficients.
        rotation: ``(B, 6)`` first two columns of the model-to-camera rotation matrix.
        translation: ``(B, 3)`` model origin in camera space, mm.
        sh: ``(B, 9, 3)`` spherical-harmonics lighting (irradiance coefficients per channel).
        specular: ``(B, 1)`` scale of the model's specular albedo (1 = the prior).
        roughness: ``(B, 1)`` microfacet roughness in (0, 1].
    """

    identity: torch.Tensor
    expression: torch.Tensor
    albedo: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    sh: torch.Tensor
    specular: torch.Tensor
    roughness: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.identity.shape[0]

    @classmethod
    def sizes(cls, identity_dim: int, expression_dim: int, albedo_dim: int) -> dict[str, tuple[int, ...]]:
        """Per-face shape of every field, in the order of the flat vector."""
        return {
            "identity": (identity_dim,),
            "expression": (expression_dim,),
            "albedo": (albedo_dim,),
            "rotation": (6,),
            "translation": (3,),
            "sh": (SH_COEFFICIENTS, 3),
            "specular": (1,),
            "roughness": (1,),
        }

    @classmethod
    def neutral(cls, batch: int, identity_dim: int, expression_dim: int, albedo_dim: int,
                distance_mm: float = 800.0, ambient: float = 0.8, roughness: float = 0.4,
                device: torch.device | str | None = None) -> FaceParams:
        """The mean face looking into the camera at ``distance_mm``, under uniform white light
        whose shading is ``ambient``."""
        z = torch.zeros
        # SH radiance of a uniform environment whose Lambertian shading is ``ambient``
        # (see facenet3d.render.shading).
        sh0 = ambient * 4.0 * math.pi * SH_Y0
        rotation = torch.tensor([1.0, 0, 0, 0, 1, 0], device=device).expand(batch, 6).clone()
        translation = torch.tensor([0.0, 0.0, -distance_mm], device=device).expand(batch, 3).clone()
        sh = z(batch, SH_COEFFICIENTS, 3, device=device)
        sh[:, 0] = sh0
        return cls(
            identity=z(batch, identity_dim, device=device),
            expression=z(batch, expression_dim, device=device),
            albedo=z(batch, albedo_dim, device=device),
            rotation=rotation,
            translation=translation,
            sh=sh,
            specular=torch.ones(batch, 1, device=device),
            roughness=torch.full((batch, 1), roughness, device=device),
        )

    def to_vector(self) -> torch.Tensor:
        """``(B, D)`` all fields flattened in :meth:`sizes` order."""
        return torch.cat([getattr(self, f.name).reshape(self.batch_size, -1) for f in fields(self)], dim=1)

    @classmethod
    def from_vector(cls, vector: torch.Tensor, identity_dim: int, expression_dim: int, albedo_dim: int
                    ) -> FaceParams:
        """Inverse of :meth:`to_vector` for ``(B, D)``."""
        sizes = cls.sizes(identity_dim, expression_dim, albedo_dim)
        out, i = {}, 0
        for name, shape in sizes.items():
            n = int(torch.tensor(shape).prod())
            out[name] = vector[:, i:i + n].reshape(vector.shape[0], *shape)
            i += n
        if i != vector.shape[1]:
            raise ValueError(f"vector has {vector.shape[1]} values, the parameters need {i}")
        return cls(**out)

    def map(self, fn) -> FaceParams:
        """A copy with ``fn`` applied to every tensor (e.g. ``lambda t: t.detach()``)."""
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str) -> FaceParams:
        return self.map(lambda t: t.to(device))

    def detach(self) -> FaceParams:
        return self.map(lambda t: t.detach())

    def clone(self) -> FaceParams:
        return self.map(lambda t: t.detach().clone())

    def index(self, i: int | slice) -> FaceParams:
        """The faces ``i`` of the batch (keeps the batch dimension)."""
        sl = slice(i, i + 1) if isinstance(i, int) else i
        return self.map(lambda t: t[sl])

    @classmethod
    def cat(cls, items: list[FaceParams]) -> FaceParams:
        """Concatenate along the batch dimension."""
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in items]) for f in fields(cls)})

    def as_lists(self) -> dict[str, list]:
        """Plain nested lists (for JSON)."""
        return {f.name: getattr(self, f.name).detach().cpu().tolist() for f in fields(self)}
