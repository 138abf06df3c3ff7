"""Expression semantics: do the fitted ARKit coefficients respond to the labelled emotion?

For a face model whose expression modes are ARKit blendshapes (ICT-FaceKit: ``mouthSmile_L``,
``jawOpen``, ...), every emotion of lfw-expressions' ``labels.csv`` has a few coefficient groups
that should rise when a person shows it (:data:`EMOTION_GROUPS`, from the FACS action units of
the emotion's prototype and the ARKit shape that plays each unit). A group's *score* on a photo
is the mean of its coefficients (``mean``) or, for one-sided expressions, the absolute
difference of its left and right coefficient (``asymmetry``).

Each (emotion, group) is scored by a within-person ROC AUC: over every pair (photo of the
emotion, neutral photo of the *same* person), the fraction where the emotional photo scores
higher, ties counting one half (:func:`paired_roc_auc`). 0.5 means the coefficient says
nothing about the emotion, 1 that it always rises; pairing within a person keeps identity
(a wide mouth, a low brow) from being read as expression.

The scoring (:func:`expression_auc`) takes per-photo coefficient arrays and labels, so it runs
on any fit; :func:`evaluate_expression` reconstructs the photos with a method first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet3d.errors import FaceModelFormatError
from facenet3d.evaluate.common import EvaluationDataError, ItemRun, environment, evenly_spaced
from facenet3d.evaluate.identity import identity_groups
from facenet3d.evaluate.methods import Method, MethodUnavailableError

NEUTRAL = "neutral"


@dataclass(frozen=True)
class CoefficientGroup:
    """ARKit coefficients read together as one score per photo.

    Attributes:
        name: the group's name in reports (``mouthSmile``, ``mouthSmile |L-R|``).
        coefficients: ARKit blendshape names; for ``asymmetry`` exactly two (left, right).
        combine: ``"mean"`` of the coefficients, or ``"asymmetry"``: ``|left - right|``.
        facs: the FACS action unit(s) the group plays, for the report.
    """

    name: str
    coefficients: tuple[str, ...]
    combine: str = "mean"
    facs: str = ""

    def __post_init__(self):
        if self.combine not in ("mean", "asymmetry"):
            raise ValueError(f"unknown combine {self.combine!r}")
        if self.combine == "asymmetry" and len(self.coefficients) != 2:
            raise ValueError("an asymmetry group needs exactly two coefficients (left, right)")

    def score(self, coefficients: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """``(N,)`` scores of ``(N, K)`` expression coefficients named ``names`` (``K``)."""
        x = np.asarray(coefficients, np.float64)
        cols = x[:, [list(names).index(c) for c in self.coefficients]]
        if self.combine == "asymmetry":
            return np.abs(cols[:, 0] - cols[:, 1])
        return cols.mean(1)


def _pair(stem: str, facs: str) -> CoefficientGroup:
    """The mean of ``<stem>_L`` and ``<stem>_R``."""
    return CoefficientGroup(stem, (f"{stem}_L", f"{stem}_R"), "mean", facs)


def _one_sided(stem: str, facs: str) -> CoefficientGroup:
    """``|<stem>_L - <stem>_R|``."""
    return CoefficientGroup(f"{stem} |L-R|", (f"{stem}_L", f"{stem}_R"), "asymmetry", facs)


#: The coefficient groups expected to rise with each emotion, from the emotion's FACS prototype
#: (Ekman & Friesen's EMFACS) and the ARKit shape that plays each action unit:
#:
#: ==========  ==============================================  ==========================
#: emotion     groups (ARKit)                                  action units
#: ==========  ==============================================  ==========================
#: happiness   mouthSmile, cheekSquint                         AU12 lip corner puller, AU6
#: surprise    jawOpen, browInnerUp, browOuterUp, eyeWide      AU26/27, AU1, AU2, AU5
#: anger       browDown, eyeSquint, mouthPress                 AU4, AU7, AU24
#: sadness     mouthFrown, browInnerUp                         AU15, AU1
#: disgust     noseSneer, mouthUpperUp                         AU9, AU10
#: fear        eyeWide, mouthStretch, browInnerUp              AU5, AU20, AU1
#: contempt    mouthSmile |L-R|, mouthDimple |L-R|             unilateral AU12, AU14
#: ==========  ==============================================  ==========================
#:
#: Left/right pairs are averaged (an emotion is mostly symmetric), except for contempt, whose
#: mark is a one-sided lip corner: there the score is the left-right difference.
EMOTION_GROUPS: dict[str, tuple[CoefficientGroup, ...]] = {
    "happiness": (_pair("mouthSmile", "AU12 lip corner puller"), _pair("cheekSquint", "AU6 cheek raiser")),
    "surprise": (CoefficientGroup("jawOpen", ("jawOpen",), "mean", "AU26 jaw drop / AU27 mouth stretch"),
                 _pair("browInnerUp", "AU1 inner brow raiser"), _pair("browOuterUp", "AU2 outer brow raiser"),
                 _pair("eyeWide", "AU5 upper lid raiser")),
    "anger": (_pair("browDown", "AU4 brow lowerer"), _pair("eyeSquint", "AU7 lid tightener"),
              _pair("mouthPress", "AU24 lip presser")),
    "sadness": (_pair("mouthFrown", "AU15 lip corner depressor"), _pair("browInnerUp", "AU1 inner brow raiser")),
    "disgust": (_pair("noseSneer", "AU9 nose wrinkler"), _pair("mouthUpperUp", "AU10 upper lip raiser")),
    "fear": (_pair("eyeWide", "AU5 upper lid raiser"), _pair("mouthStretch", "AU20 lip stretcher"),
             _pair("browInnerUp", "AU1 inner brow raiser")),
    "contempt": (_one_sided("mouthSmile", "unilateral AU12"), _one_sided("mouthDimple", "unilateral AU14 dimpler")),
}

#: The emotions of lfw-expressions' ``labels.csv`` besides neutral, in table order.
EMOTIONS = tuple(EMOTION_GROUPS)


def required_names(emotions: Sequence[str] = EMOTIONS,
                   table: Mapping[str, Sequence[CoefficientGroup]] = EMOTION_GROUPS) -> list[str]:
    """The ARKit names the groups of ``emotions`` read, sorted."""
    return sorted({c for e in emotions for g in table[e] for c in g.coefficients})


def check_arkit_names(names: Sequence[str], emotions: Sequence[str] = EMOTIONS,
                      table: Mapping[str, Sequence[CoefficientGroup]] = EMOTION_GROUPS,
                      source: str | None = None) -> None:
    """Raise unless ``names`` (a face model's expression names) hold every coefficient the groups read.

    Raises:
        FaceModelFormatError: a name is missing (e.g. a PCA expression space, whose modes have
            no names or no ARKit ones).
    """
    missing = [n for n in required_names(emotions, table) if n not in set(names)]
    if missing:
        what = f"expression names {list(names)[:4]}..." if names else "no expression names"
        raise FaceModelFormatError(source, f"the face model has {what}; the expression evaluation needs ARKit "
                                           f"blendshape coefficients, and these are missing: "
                                           + ", ".join(missing))


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of ``positive`` (``(P,)``) over ``negative`` (``(Q,)``) scores.

    The probability that a positive scores above a negative, ties counting one half (the
    Mann-Whitney U over ``P * Q``), by counting per positive how many negatives lie below and
    at it in the sorted negatives: ``O((P + Q) log Q)``.

    Raises:
        ValueError: an empty input (the AUC is undefined).
    """
    pos = np.asarray(positive, np.float64).ravel()
    neg = np.sort(np.asarray(negative, np.float64).ravel())
    if pos.size == 0 or neg.size == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    below = np.searchsorted(neg, pos, side="left")
    at_or_below = np.searchsorted(neg, pos, side="right")
    return float((below + 0.5 * (at_or_below - below)).sum() / (pos.size * neg.size))


def paired_roc_auc(positive: np.ndarray, positive_groups: Sequence, negative: np.ndarray,
                   negative_groups: Sequence) -> tuple[float | None, int]:
    """ROC AUC over the pairs (positive, negative) *of the same group* only.

    Each group ``g`` contributes its ``P_g * Q_g`` pairs, so the result is the pooled fraction
    of within-group pairs where the positive scores higher (ties one half), not a mean of
    per-group AUCs.

    Args:
        positive: ``(P,)`` scores; ``positive_groups`` their ``P`` group labels (a person).
        negative: ``(Q,)`` scores; ``negative_groups`` their ``Q`` group labels.

    Returns:
        ``(auc, n_pairs)``; ``auc`` is None when no group has both a positive and a negative.
    """
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    pg, ng = np.asarray(positive_groups), np.asarray(negative_groups)
    if pos.shape != pg.shape or neg.shape != ng.shape:
        raise ValueError(f"scores and group labels differ in shape: {pos.shape} vs {pg.shape}, "
                         f"{neg.shape} vs {ng.shape}")
    wins, pairs = 0.0, 0
    for g in np.intersect1d(pg, ng):
        p, q = pos[pg == g], neg[ng == g]
        wins += roc_auc(p, q) * p.size * q.size
        pairs += p.size * q.size
    return (wins / pairs if pairs else None), pairs


def expression_auc(coefficients: np.ndarray, names: Sequence[str], emotions: Sequence[str],
                   people: Sequence[str], evaluated: Sequence[str] = EMOTIONS,
                   table: Mapping[str, Sequence[CoefficientGroup]] = EMOTION_GROUPS) -> dict:
    """Within-person ROC AUC of every (emotion, coefficient group) against neutral photos.

    Args:
        coefficients: ``(N, K)`` expression coefficients of ``N`` photos.
        names: the ``K`` ARKit names of the coefficients (the face model's ``expression_names``).
        emotions: ``N`` emotion labels (``"neutral"`` for the reference photos; others ignored
            unless in ``evaluated``).
        people: ``N`` person labels; pairs are formed only within a person.
        evaluated: the emotions to score.
        table: the coefficient groups of each emotion (:data:`EMOTION_GROUPS`).

    Returns:
        ``{emotion: {"n_photos", "n_neutral", "n_people", "groups": {group: {"auc", "n_pairs",
        "mean_emotion", "mean_neutral", "coefficients", "combine", "facs"}}}}``; counts are of the
        photos in at least one pair.

    Raises:
        FaceModelFormatError: ``names`` lack a coefficient of the table (not an ARKit model).
        ValueError: inconsistent lengths or an emotion not in ``table``.
    """
    x = np.asarray(coefficients, np.float64)
    label, who = np.asarray(emotions, dtype=str), np.asarray(people, dtype=str)
    if x.ndim != 2 or not (len(label) == len(who) == x.shape[0]) or x.shape[1] != len(names):
        raise ValueError(f"{x.shape} coefficients for {len(names)} names, {len(label)} emotions, {len(who)} people")
    unknown = [e for e in evaluated if e not in table]
    if unknown:
        raise ValueError(f"no coefficient groups for {unknown}; known: {sorted(table)}")
    check_arkit_names(names, evaluated, table)
    neutral = label == NEUTRAL
    out: dict[str, dict] = {}
    for emotion in evaluated:
        emo = label == emotion
        # Only photos with a counterpart of the same person enter a pair; count just those.
        paired = np.isin(who, np.intersect1d(who[emo], who[neutral]))
        emo_in, neu_in = emo & paired, neutral & paired
        groups: dict[str, dict] = {}
        for g in table[emotion]:
            s = g.score(x, names)
            auc, pairs = paired_roc_auc(s[emo], who[emo], s[neutral], who[neutral])
            groups[g.name] = {"auc": auc, "n_pairs": pairs,
                              "mean_emotion": float(s[emo_in].mean()) if emo_in.any() else None,
                              "mean_neutral": float(s[neu_in].mean()) if neu_in.any() else None,
                              "coefficients": list(g.coefficients), "combine": g.combine, "facs": g.facs}
        out[emotion] = {"n_photos": int(emo_in.sum()), "n_neutral": int(neu_in.sum()),
                        "n_people": len(set(who[emo_in])), "groups": groups}
    return out


def round_robin_quota(sizes: Sequence[int], total: int | None) -> list[int]:
    """How many of each of ``len(sizes)`` lists to take, dealing ``total`` one at a time in turn
    (skipping exhausted lists); ``None`` takes everything. E.g. ``([1, 2, 9], 5) -> [1, 2, 2]``."""
    quota = [0] * len(sizes)
    left = sum(sizes) if total is None else min(total, sum(sizes))
    while left > 0:
        for i, n in enumerate(sizes):
            if left > 0 and quota[i] < n:
                quota[i] += 1
                left -= 1
    return quota


def select_expression_photos(photos: Sequence[Path], emotions: Sequence[str] = EMOTIONS, people: int | None = 20,
                             per_person: int | None = 5) -> tuple[list[tuple[str, str, Path]], int]:
    """The photos to reconstruct: ``[(person, emotion, path)]`` and the number of eligible people.

    People with at least one neutral photo and one photo of ``emotions`` are eligible; ``people``
    of them are taken evenly spaced over their sorted names. Of each, up to ``per_person``
    neutral photos (evenly spaced over the sorted files) and up to ``per_person`` emotional
    ones. The emotional quota is dealt round-robin over the person's emotions, rarest first, so
    a person's one surprised photo is not crowded out by ten smiling ones; within an emotion
    the photos are evenly spaced. ``None`` (or 0) takes every person / photo.
    """
    from facenet3d.landmarks.photo_labels import photo_labels

    wanted = set(emotions)
    by_person: dict[str, dict[str, list[Path]]] = {}
    for who, files in identity_groups(list(photos)).items():
        split: dict[str, list[Path]] = {}
        for p in files:
            e = photo_labels(p).get("emotion")
            if e == NEUTRAL or e in wanted:
                split.setdefault(str(e), []).append(p)
        if NEUTRAL in split and len(split) > 1:
            by_person[who] = split
    chosen = evenly_spaced(sorted(by_person), people or None)
    items: list[tuple[str, str, Path]] = []
    for who in chosen:
        split = by_person[who]
        items += [(who, NEUTRAL, p) for p in evenly_spaced(split[NEUTRAL], per_person or None)]
        kinds = sorted((e for e in split if e != NEUTRAL), key=lambda e: (len(split[e]), e))
        quota = round_robin_quota([len(split[e]) for e in kinds], per_person or None)
        items += [(who, e, p) for e, q in zip(kinds, quota, strict=True) for p in evenly_spaced(split[e], q)]
    return items, len(by_person)


def evaluate_expression(method: Method, photos: Sequence[Path], people: int | None = 20,
                        per_person: int | None = 5, emotions: Sequence[str] = EMOTIONS,
                        progress: bool = True) -> dict:
    """Reconstruct neutral and emotional photos of ``people`` people and score the ARKit coefficients.

    Args:
        method: a method that fits expressions (not ``mediapipe`` or ``mean-face``) on a face
            model with ARKit-named expressions (ICT-FaceKit).
        photos: photo files with identity and emotion labels (lfw-expressions' ``labels.csv``).
        people, per_person: the selection of :func:`select_expression_photos`.
        emotions: the emotions to score (of :data:`EMOTIONS`).
        progress: show a progress bar.

    Raises:
        MethodUnavailableError: the method fits no expression.
        FaceModelFormatError: the method's face model has no ARKit expression names.
        EvaluationDataError: no person has both a neutral and an emotional photo.
    """
    if not method.reconstructs or method.name == "mean-face":
        raise MethodUnavailableError(f"method {method.name!r} has no expression to evaluate")
    unknown = [e for e in emotions if e not in EMOTION_GROUPS]
    if unknown:
        raise ValueError(f"unknown emotion(s) {unknown}; choose from {list(EMOTIONS)}")
    model = method.reconstructor.model
    names = list(model.expression_names)
    # Checked before any photo is fitted: a PCA model would only fail after the whole run.
    check_arkit_names(names, emotions, source=method.reconstructor.model_name)
    from facenet3d.api import MAX_DECODE_SIDE
    from facenet3d.landmarks.image_io import read_image

    items, eligible = select_expression_photos(photos, emotions, people, per_person)
    if not eligible:
        where = Path(photos[0]).parent if photos else Path(".")
        raise EvaluationDataError(where, "no person has both a neutral photo and one of " + ", ".join(emotions)
                                  + " (identity and emotion come from a labels.csv beside the photos)")

    def expression_of(item: tuple[str, str, Path]) -> np.ndarray:
        face = method.run(read_image(item[2], max_side=MAX_DECODE_SIDE)).reconstruction
        return face.params.expression[0].detach().cpu().numpy().astype(np.float64)

    runner = ItemRun()
    t0 = time.perf_counter()
    done = runner.run(items, expression_of, name=lambda it: str(it[2]), progress=progress,
                      desc=f"expression {method.name}")
    coeffs = np.stack([c for _, c in done]) if done else np.zeros((0, len(names)))
    scores = expression_auc(coeffs, names, [e for (_, e, _), _ in done], [w for (w, _, _), _ in done], emotions)
    return {
        "benchmark": "expression coefficients against emotion labels (within-person ROC AUC)",
        "emotions": scores,
        "n_items": len(items), "n_evaluated": len(done), "n_failed": len(runner.failures),
        "failures": runner.failures,
        "seconds_per_photo": runner.seconds_per_item, "seconds_total": time.perf_counter() - t0,
        "photos": {"expression_names": names,
                   "items": [{"image": p.name, "identity": w, "emotion": e, "expression": c.tolist()}
                             for (w, e, p), c in done]},
        "settings": {**method.describe(), "people": people, "per_person": per_person, "emotions": list(emotions),
                     "eligible_people": eligible,
                     "auc": "within-person: P(emotional photo's score > same person's neutral photo's), ties 1/2",
                     "environment": environment()},
    }
