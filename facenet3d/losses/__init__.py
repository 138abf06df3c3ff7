"""Loss terms shared by the refinement stages and the regressor's training."""

from facenet3d.losses.terms import (
    coefficient_prior,
    landmark_loss,
    laplacian_smoothness,
    photometric_loss,
    quadratic_map_terms,
    robust_rho,
    symmetry_loss,
    total_variation,
)

__all__ = [
    "coefficient_prior",
    "landmark_loss",
    "laplacian_smoothness",
    "photometric_loss",
    "quadratic_map_terms",
    "robust_rho",
    "symmetry_loss",
    "total_variation",
]
