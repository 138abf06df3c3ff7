"""Identity consistency: is the reconstructed neutral face the same across photos of one person?

On an identity-labelled collection (lfw-expressions: 10-15 photos of each person under varied
expressions), every photo is reconstructed and its *neutral* shape decoded (the fitted identity
coefficients, expression set to zero, model frame). Shapes are compared by the RMS distance
over the model's vertices, in mm:

- ``within``: mean distance between two photos of the same person;
- ``between``: mean distance between photos of two different people;
- ``ratio`` = within / between (0 would be perfect, 1 means the shape says nothing about who it
  is);
- ``identification``: the fraction of photos whose nearest person (mean neutral shape of the
  person's *other* photos) is their own; chance is one over the number of people.

The mean face has no identity (every distance is 0), so it has no row here.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from facenet3d.evaluate.common import ItemRun, environment, evenly_spaced
from facenet3d.evaluate.methods import Method, MethodUnavailableError


def identity_groups(photos: list[Path], label: str = "identity") -> dict[str, list[Path]]:
    """Photos grouped by their ``label`` (``labels.csv`` beside them; see
    :func:`~facenet3d.landmarks.photo_labels.photo_labels`), each group sorted; unlabelled photos dropped."""
    from facenet3d.landmarks.photo_labels import photo_labels

    groups: dict[str, list[Path]] = defaultdict(list)
    for p in photos:
        who = photo_labels(p).get(label)
        if who not in (None, ""):
            groups[str(who)].append(p)
    return {k: sorted(v) for k, v in sorted(groups.items())}


def shape_metric(basis: np.ndarray) -> np.ndarray:
    """``(K, K)`` Gram matrix ``G`` of a ``(K, V, 3)`` basis (mm per unit) over its ``V`` vertices:
    the squared RMS vertex distance of two shapes with coefficients ``a, b`` is
    ``(a - b)^T G (a - b)``."""
    k, v = basis.shape[0], basis.shape[1]
    b = np.asarray(basis, np.float64).reshape(k, -1)
    return b @ b.T / v


def shape_distances(x: np.ndarray, y: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """``(N, M)`` RMS vertex distances (mm) between shapes of coefficients ``x (N, K)`` and ``y (M, K)``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xx = ((x @ metric) * x).sum(1)
    yy = ((y @ metric) * y).sum(1)
    return np.sqrt(np.clip(xx[:, None] + yy[None, :] - 2 * (x @ metric) @ y.T, 0.0, None))


def identity_statistics(coefficients: np.ndarray, labels: list[str], metric: np.ndarray) -> dict:
    """Within/between-person distances and leave-one-out identification (module docstring).

    Args:
        coefficients: ``(N, K)`` identity coefficients of the photos.
        labels: ``N`` person labels.
        metric: :func:`shape_metric` of the identity basis.
    """
    x = np.asarray(coefficients, np.float64)
    who = np.asarray(labels)
    n = len(who)
    d = shape_distances(x, x, metric)
    same = who[:, None] == who[None, :]
    off = ~np.eye(n, dtype=bool)
    within, between = d[same & off], d[~same]
    people = sorted(set(labels))
    correct = 0
    for i in range(n):
        # Nearest person mean; the photo's own person is averaged without it (and a person with
        # no other photo cannot be chosen).
        candidates = [p for p in people if ((who == p) & off[i]).any()]
        means = np.stack([x[(who == p) & off[i]].mean(0) for p in candidates])
        correct += candidates[int(np.argmin(shape_distances(x[i:i + 1], means, metric)[0]))] == who[i]
    w = float(within.mean()) if within.size else None
    b = float(between.mean()) if between.size else None
    return {"within_mm": w, "between_mm": b, "ratio": (w / b) if w is not None and b else None,
            "identification": correct / n if n else None, "chance": 1.0 / len(people) if people else None,
            "n_people": len(people), "n_photos": n}


def evaluate_identity(method: Method, photos: list[Path], people: int = 20, per_person: int = 5,
                      progress: bool = True) -> dict:
    """Reconstruct ``per_person`` photos of ``people`` people and compare their neutral shapes.

    Args:
        method: a method that fits identity (not ``mediapipe`` or ``mean-face``).
        photos: photo files with identity labels.
        people: number of people, evenly spaced over the sorted labels of those with at least
            ``per_person`` photos.
        per_person: photos per person, evenly spaced over the person's sorted photos.
        progress: show a progress bar.
    """
    if not method.reconstructs or method.name == "mean-face":
        raise MethodUnavailableError(f"method {method.name!r} has no identity to compare")
    from facenet3d.api import MAX_DECODE_SIDE
    from facenet3d.landmarks.image_io import read_image

    groups = {k: v for k, v in identity_groups(photos).items() if len(v) >= per_person}
    chosen_people = evenly_spaced(list(groups), people)
    items = [(who, p) for who in chosen_people for p in evenly_spaced(groups[who], per_person)]

    def identity_of(item: tuple[str, Path]) -> np.ndarray:
        face = method.run(read_image(item[1], max_side=MAX_DECODE_SIDE)).reconstruction
        return face.params.identity[0].cpu().numpy()

    runner = ItemRun()
    t0 = time.perf_counter()
    done = runner.run(items, identity_of, name=lambda it: str(it[1]), progress=progress,
                      desc=f"identity {method.name}")
    model = method.reconstructor.model
    metric = shape_metric(model.identity_basis.view(model.identity_dim, -1, 3).cpu().numpy())
    coeffs = np.stack([c for _, c in done]) if done else np.zeros((0, model.identity_dim))
    stats = identity_statistics(coeffs, [who for (who, _), _ in done], metric)
    return {
        "benchmark": "identity consistency of the neutral shape",
        **stats,
        "n_items": len(items), "n_failed": len(runner.failures), "failures": runner.failures,
        "seconds_per_photo": runner.seconds_per_item, "seconds_total": time.perf_counter() - t0,
        "settings": {**method.describe(), "people": people, "per_person": per_person,
                     "eligible_people": len(groups), "distance": "RMS over model vertices of the neutral shape, mm",
                     "environment": environment()},
    }
