"""How far identity and expression can be told apart in MediaPipe geometry of photos.

The build report measures separation on held-out identity-labelled people
(:func:`separation`): their neutral shapes and their within-person deviations are fitted
jointly with both bases, and we report the share of each fit that the *other* basis carries.

:func:`separation_bound` asks how small those shares could be at all with the same numbers of
modes. It chooses the split on the held-out people's own statistics, the very photos it is then
scored on, so it is optimistic: no basis built from other photos can be expected to do better.
When even this bound is large, the limit is the data (the within-person scatter of MediaPipe's
meshes), not the builder.

``python -m facenet3d.train.build_face_model.separation --cache CACHE`` prints both as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from facenet3d.train.build_face_model import geometry as geo


def attribution(vectors: np.ndarray, identity: np.ndarray, expression: np.ndarray) -> float:
    """Mean share of a joint fit's squared norm carried by the identity basis.

    Args:
        vectors: ``(N, D)`` shape offsets (mm) to explain.
        identity, expression: ``(Ki, D)``, ``(Ke, D)`` bases scaled to unit-variance coefficients;
            the fit is least squares with unit priors on every coefficient.
    """
    g = np.concatenate([identity, expression])
    coef = np.linalg.solve(g @ g.T + np.eye(len(g)), g @ vectors.T).T
    k = len(identity)
    pi, pe = coef[:, :k] @ identity, coef[:, k:] @ expression
    ni, ne = (pi ** 2).sum(1), (pe ** 2).sum(1)
    return float((ni / np.maximum(ni + ne, 1e-12)).mean())


def separation(identity: np.ndarray, expression: np.ndarray, mean: np.ndarray, neutral_means: np.ndarray,
               deltas: np.ndarray, emotional: np.ndarray | None = None) -> dict[str, float]:
    """Cross-attribution of held-out identity and expression variation.

    Args:
        identity, expression: ``(Ki, P, 3)``, ``(Ke, P, 3)`` the bases.
        mean: ``(P, 3)`` the model's mean shape.
        neutral_means: ``(Q, P, 3)`` each held-out person's mean neutral shape.
        deltas: ``(M, P, 3)`` held-out photos' deviations from their person's neutral mean.
        emotional: optional ``(E, P, 3)`` the deviations of the emotion-labelled photos only
            (:func:`expression_deviations`); ignored when empty.

    Returns:
        ``identity_variation_attributed_to_expression`` and
        ``expression_variation_attributed_to_identity`` (plus
        ``emotional_expression_attributed_to_identity`` when ``emotional`` is given), each in
        [0, 1] (0 = fully separated).
    """
    ident, expr = identity.reshape(len(identity), -1), expression.reshape(len(expression), -1)
    id_vectors = neutral_means.reshape(len(neutral_means), -1) - mean.reshape(-1)
    out = {
        "identity_variation_attributed_to_expression": 1.0 - attribution(id_vectors, ident, expr),
        "expression_variation_attributed_to_identity": attribution(deltas.reshape(len(deltas), -1), ident, expr),
    }
    if emotional is not None and len(emotional):
        out["emotional_expression_attributed_to_identity"] = attribution(
            emotional.reshape(len(emotional), -1), ident, expr)
    return out


def expression_deviations(shapes: np.ndarray, identity_ids: np.ndarray, is_neutral: np.ndarray) -> np.ndarray:
    """``(M, P, 3)`` deviations of the photos labelled with an emotion (not neutral) from their
    person's neutral mean: expression variation without the neutral photos' scatter."""
    out = []
    for pid in np.unique(identity_ids[identity_ids >= 0]):
        mine = identity_ids == pid
        if (mine & is_neutral).any():
            out.append(shapes[mine & ~is_neutral] - shapes[mine & is_neutral].mean(0))
    return np.concatenate(out) if out else np.zeros((0, *shapes.shape[1:]))


def oracle_split(neutral_means: np.ndarray, deltas: np.ndarray, sub: np.ndarray, identity_modes: int,
                 expression_modes: int, photos_per_person: float) -> geo.ModeSplit:
    """The identity/expression split that the people it is scored on would choose.

    Between-person covariance: the covariance of the people's neutral means, less the share of
    within-person scatter that averaging ``photos_per_person`` photos leaves in them.

    Args:
        neutral_means: ``(Q, P, 3)``; deltas: ``(M, P, 3)`` as in :func:`separation`.
        sub: ``(K, 3P)`` orthonormal rows, the subspace searched.
    """
    d = deltas.reshape(len(deltas), -1) @ sub.T
    m = neutral_means.reshape(len(neutral_means), -1) @ sub.T
    within = np.cov(d.T, bias=True)
    between = np.cov(m.T, bias=True) - within / photos_per_person
    return geo.split_discriminant_modes(sub, between, within, identity_modes, expression_modes)


def separation_bound(meshes: np.ndarray, identity_ids: np.ndarray, is_neutral: np.ndarray, train: np.ndarray,
                     mean: np.ndarray, identity_modes: int, expression_modes: int, subspace: int = 80) -> dict:
    """The build report's separation figures for an oracle split (see the module docstring).

    Args:
        meshes: ``(N, P, 3)`` mm, pose distortion removed.
        identity_ids, is_neutral, train: ``(N,)`` labels and the training mask.
        mean: ``(P, 3)`` the model's mean shape.
    """
    held = ~train
    deltas, neutral_means = geo.within_person_deviations(meshes[held], identity_ids[held], is_neutral[held])
    flat = meshes[train].reshape(int(train.sum()), -1)
    _, _, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    # Neutral photos averaged per person, over the people within_person_deviations kept.
    people = np.unique(identity_ids[held & (identity_ids >= 0)])
    counts = [(held & is_neutral & (identity_ids == i)).sum() for i in people
              if (held & (identity_ids == i)).sum() >= 2]
    per_person = float(np.mean([c for c in counts if c > 0]))
    split = oracle_split(neutral_means, deltas, vt[:subspace], identity_modes, expression_modes, per_person)
    shape = (-1, *meshes.shape[1:])
    ident, expr = split.identity.reshape(shape), split.expression.reshape(shape)
    emotional = expression_deviations(meshes[held], identity_ids[held], is_neutral[held])
    return {
        **separation(ident, expr, mean, neutral_means, deltas, emotional),
        "directions_between_exceeds_within": int((split.identity_ratio > 1).sum()),
        "held_out_people": len(neutral_means),
        "held_out_emotional_photos": len(emotional),
    }


def main(argv: list[str] | None = None) -> int:
    from facenet3d.train.build_face_model.build import BuildConfig, GeometryMeshes, PhotoSet, build_geometry

    from facenet3d.landmarks.cache import PhotoCache

    p = argparse.ArgumentParser(prog="python -m facenet3d.train.build_face_model.separation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="the build's photo cache")
    p.add_argument("--seed", type=int, default=0, help="the build's seed (it picks the held-out people)")
    p.add_argument("--identity-modes", type=int, default=30)
    p.add_argument("--expression-modes", type=int, default=20)
    a = p.parse_args(argv)
    cfg = BuildConfig(photos=[], output=a.cache / "unused.npz", cache=a.cache, seed=a.seed,
                      identity_modes=a.identity_modes, expression_modes=a.expression_modes)
    meshes = GeometryMeshes.from_photos(PhotoSet.from_cache(PhotoCache(a.cache), cfg))
    # The built model's figures are the build report's own (the same function computes them).
    bases, report = build_geometry(meshes, cfg)
    built = {k: v for k, v in report["separation"].items() if k != "note"}
    bound = separation_bound(meshes.without_pose_distortion(), meshes.identity, meshes.neutral, meshes.train,
                             bases.mean, a.identity_modes, a.expression_modes)
    rnd = {k: round(v, 3) if isinstance(v, float) else v for k, v in bound.items()}
    print(json.dumps({"built": built, "oracle_bound": rnd}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
