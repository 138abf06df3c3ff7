"""``facenet3d evaluate expression``: ARKit coefficients against emotion labels (within-person ROC AUC)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from facenet3d.errors import FaceModelFormatError
from facenet3d.evaluate.expression import (
    EMOTION_GROUPS,
    EMOTIONS,
    check_arkit_names,
    expression_auc,
    paired_roc_auc,
    required_names,
    roc_auc,
    round_robin_quota,
    select_expression_photos,
)


def pairs_won(pairs) -> float:
    """The definition: the fraction of (positive, negative) pairs the positive wins, ties one half."""
    pairs = list(pairs)
    return sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in pairs) / len(pairs)


def brute_force_auc(pos, neg) -> float:
    """:func:`pairs_won` over every (positive, negative) pair."""
    return pairs_won(itertools.product(pos, neg))


def test_roc_auc_known_values():
    assert roc_auc([1.0], [0.0]) == 1.0
    assert roc_auc([0.0], [1.0]) == 0.0
    assert roc_auc([0.5], [0.5]) == 0.5
    # 3 positives x 2 negatives: 3 > {1, 2} wins 2, 2 wins 1 and ties 1, 0 loses both -> 3.5 / 6.
    assert roc_auc([3, 2, 0], [1, 2]) == pytest.approx(3.5 / 6)
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


def test_roc_auc_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        # Few distinct integer values, so most draws have ties within and across the two sets.
        pos = rng.integers(0, 4, rng.integers(1, 8)).astype(float)
        neg = rng.integers(0, 4, rng.integers(1, 8)).astype(float)
        assert roc_auc(pos, neg) == pytest.approx(brute_force_auc(pos, neg), abs=1e-12)


def test_paired_roc_auc_counts_only_same_person_pairs():
    rng = np.random.default_rng(1)
    for _ in range(100):
        pos = rng.integers(0, 5, 9).astype(float)
        neg = rng.integers(0, 5, 11).astype(float)
        pg = rng.choice(["a", "b", "c"], 9)
        ng = rng.choice(["a", "b", "d"], 11)
        pairs = [(p, q) for p, g in zip(pos, pg, strict=True) for q, h in zip(neg, ng, strict=True) if g == h]
        auc, n = paired_roc_auc(pos, pg, neg, ng)
        assert n == len(pairs)
        if pairs:
            assert auc == pytest.approx(pairs_won(pairs), abs=1e-12)
        else:
            assert auc is None
    # A person whose neutral photos all score high ranks every photo of another person below it in a
    # pooled AUC, but within each person the emotional photos always win.
    auc, n = paired_roc_auc([1.0, 11.0], ["a", "b"], [0.0, 10.0], ["a", "b"])
    assert (auc, n) == (1.0, 2)
    assert roc_auc([1.0, 11.0], [0.0, 10.0]) == 0.75


def test_round_robin_quota():
    assert round_robin_quota([1, 2, 9], 5) == [1, 2, 2]
    assert round_robin_quota([1, 2, 9], 2) == [1, 1, 0]
    assert round_robin_quota([1, 2], 10) == [1, 2]
    assert round_robin_quota([1, 2], None) == [1, 2]
    assert round_robin_quota([], 3) == []


@pytest.fixture(scope="module")
def arkit_names(ict_dir: Path) -> list[str]:
    """ICT-FaceKit's 53 ARKit expression names, in its file's order."""
    return json.loads((ict_dir / "FaceXModel" / "vertex_indices.json").read_text())["expressions"]


def test_table_reads_only_arkit_names(arkit_names):
    assert set(required_names()) <= set(arkit_names)
    assert set(EMOTIONS) == {"happiness", "surprise", "anger", "sadness", "disgust", "fear", "contempt"}
    check_arkit_names(arkit_names)  # no error


def test_expression_auc_on_precomputed_coefficients(arkit_names):
    k = len(arkit_names)
    smile_l, smile_r = arkit_names.index("mouthSmile_L"), arkit_names.index("mouthSmile_R")
    rows, emotions, people = [], [], []

    def photo(who: str, emotion: str, **values: float) -> None:
        x = np.zeros(k)
        for name, v in values.items():
            x[arkit_names.index(name)] = v
        rows.append(x)
        emotions.append(emotion)
        people.append(who)

    # Person a: smiles beat both neutrals. Person b: neutral smile 0.9 (a wide resting mouth) above
    # a's smiles, and b's smile ties it: pooled this would cost a's photos, paired it does not.
    photo("a", "neutral", mouthSmile_L=0.1, mouthSmile_R=0.1)
    photo("a", "neutral", mouthSmile_L=0.0, mouthSmile_R=0.2)
    photo("a", "happiness", mouthSmile_L=0.6, mouthSmile_R=0.4, jawOpen=0.3)
    photo("a", "happiness", mouthSmile_L=0.3, mouthSmile_R=0.3)
    photo("b", "neutral", mouthSmile_L=0.9, mouthSmile_R=0.9)
    photo("b", "happiness", mouthSmile_L=1.0, mouthSmile_R=0.8)
    # c has no neutral photo: not paired, not counted. Contempt: one-sided smile.
    photo("c", "happiness", mouthSmile_L=0.9, mouthSmile_R=0.9)
    photo("a", "contempt", mouthSmile_L=0.5, mouthSmile_R=0.0)
    photo("a", "surprise", jawOpen=0.5)
    x = np.stack(rows)
    out = expression_auc(x, arkit_names, emotions, people, evaluated=("happiness", "contempt", "surprise"))

    happy = out["happiness"]
    assert (happy["n_photos"], happy["n_neutral"], happy["n_people"]) == (3, 3, 2)
    smile = happy["groups"]["mouthSmile"]
    # Pairs: a (2 happy x 2 neutral, all won) + b (1 x 1, tie 0.9 = 0.9) -> (4 + 0.5) / 5.
    assert smile["n_pairs"] == 5
    assert smile["auc"] == pytest.approx(4.5 / 5)
    assert smile["mean_emotion"] == pytest.approx((0.5 + 0.3 + 0.9) / 3)
    assert smile["coefficients"] == ["mouthSmile_L", "mouthSmile_R"] and smile["combine"] == "mean"
    # cheekSquint is 0 everywhere: every pair ties.
    assert happy["groups"]["cheekSquint"]["auc"] == 0.5
    # Contempt's |L - R| = 0.5 beats a's neutral asymmetries 0 and 0.2.
    asym = out["contempt"]["groups"]["mouthSmile |L-R|"]
    assert (asym["auc"], asym["n_pairs"]) == (1.0, 2)
    assert out["surprise"]["groups"]["jawOpen"]["auc"] == 1.0
    assert out["surprise"]["groups"]["eyeWide"]["auc"] == 0.5
    # Consistent with the primitive on the same scores.
    scores = x[:, [smile_l, smile_r]].mean(1)
    e, w = np.array(emotions), np.array(people)
    assert smile["auc"] == paired_roc_auc(scores[e == "happiness"], w[e == "happiness"],
                                          scores[e == "neutral"], w[e == "neutral"])[0]


def test_expression_auc_without_pairs_is_none(arkit_names):
    """Every photo failed, or no person has both kinds: no AUC (null in the report), no crash."""
    out = expression_auc(np.zeros((0, len(arkit_names))), arkit_names, [], [], evaluated=("happiness",))
    assert out["happiness"]["groups"]["mouthSmile"] == {**out["happiness"]["groups"]["mouthSmile"], "auc": None,
                                                        "n_pairs": 0, "mean_emotion": None}
    out = expression_auc(np.ones((2, len(arkit_names))), arkit_names, ["neutral", "happiness"], ["a", "b"])
    assert out["happiness"]["n_photos"] == 0 and out["happiness"]["groups"]["mouthSmile"]["auc"] is None


def test_expression_auc_needs_arkit_names():
    """A PCA expression space (the v1 model's ``expression_00``...) is a typed error, not a KeyError."""
    names = [f"expression_{i:02d}" for i in range(20)]
    with pytest.raises(FaceModelFormatError, match="ARKit") as err:
        expression_auc(np.zeros((2, 20)), names, ["neutral", "happiness"], ["a", "a"])
    assert "mouthSmile_L" in str(err.value)
    with pytest.raises(FaceModelFormatError, match="no expression names"):
        check_arkit_names([], ["happiness"])


def test_select_photos_pairs_neutral_with_rare_emotions_first(faces_dir):
    from facenet3d.landmarks.photo_labels import photo_labels

    folder = faces_dir / "lfw-expressions"
    photos = sorted(folder.glob("*.jpg"))
    items, eligible = select_expression_photos(photos, ("happiness", "surprise"), people=3, per_person=3)
    labels = {p.name: photo_labels(p) for p in photos}
    people = sorted({w for w, _, _ in items})
    assert len(people) == 3 and eligible > 30
    for who in people:
        mine = [(e, p) for w, e, p in items if w == who]
        assert all(labels[p.name]["identity"] == who and labels[p.name]["emotion"] == e for e, p in mine)
        kinds = [e for e, _ in mine]
        assert 1 <= kinds.count("neutral") <= 3 and 1 <= len(kinds) - kinds.count("neutral") <= 3
        # A person's surprised photos (rarer than smiles in this set) are taken first.
        has_surprise = any(v["identity"] == who and v["emotion"] == "surprise" for v in labels.values())
        assert ("surprise" in kinds) == has_surprise


# People of lfw-expressions with neutral, smiling and surprised photos (5 of the 37 that have all three).
FAST_PEOPLE = ("Bill_Simon", "James_Blake", "Lleyton_Hewitt", "Nancy_Pelosi", "Rubens_Barrichello")


def test_cli_landmarks_on_ict_smile_separates_happiness(faces_dir, ict_dir, tmp_path):
    """End to end: ``facenet3d evaluate expression --refine landmarks`` on ICT-FaceKit (stage A from the
    mean face, no regressor) over 5 people x (up to 3 neutral + 3 happy/surprised photos): 30 photos,
    plus a sixth "person" whose two photos are blank (no face: counted as failures, exit status 1).

    Measured: happiness -> mouthSmile AUC 1.00 over 18 pairs (0.91 over 20 evenly spaced people);
    the threshold 0.75 leaves room for fitting changes while failing a coefficient unrelated to smiling
    (0.5 expected) or a mislabelled/shuffled pairing.
    """
    import csv
    import shutil

    from PIL import Image

    from facenet3d.cli import main

    source = faces_dir / "lfw-expressions"
    with open(source / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["identity"] in FAST_PEOPLE]
    folder = tmp_path / "photos"
    folder.mkdir()
    for r in rows:
        shutil.copy(source / r["image"], folder / r["image"])
    for emotion in ("neutral", "happiness"):
        name = f"Blank_Person_{emotion}.jpg"
        Image.new("RGB", (250, 250), (128, 128, 128)).save(folder / name)
        rows.append({"image": name, "identity": "Blank_Person", "emotion": emotion})
    with open(folder / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "identity", "emotion"])
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "expression.json"
    status = main(["evaluate", "expression", "--photos", str(folder), "--people", "0", "--per-person", "3",
                   "--emotions", "happiness", "surprise", "--refine", "landmarks", "--model", f"ict:{ict_dir}",
                   "--weights", "none", "--threads", "1", "--quiet", "--json", str(out)])
    assert status == 1  # done, some items failed
    report = json.loads(out.read_text())
    assert report["n_failed"] == 2 and report["n_evaluated"] == report["n_items"] - 2
    assert all("Blank_Person" in f["item"] for f in report["failures"])
    assert set(report["emotions"]) == {"happiness", "surprise"}
    happy = report["emotions"]["happiness"]
    assert happy["n_people"] == len(FAST_PEOPLE)
    smile = happy["groups"]["mouthSmile"]
    assert smile["auc"] > 0.75, smile
    # The stored per-photo coefficients reproduce the reported AUC by the definition (all pairs, same person).
    names = report["photos"]["expression_names"]
    items = report["photos"]["items"]
    assert len(names) == 53 and len(items) == report["n_evaluated"]
    i, j = names.index("mouthSmile_L"), names.index("mouthSmile_R")
    score = {it["image"]: (it["expression"][i] + it["expression"][j]) / 2 for it in items}
    pairs = [(score[a["image"]], score[b["image"]]) for a in items for b in items
             if a["emotion"] == "happiness" and b["emotion"] == "neutral" and a["identity"] == b["identity"]]
    assert smile["n_pairs"] == len(pairs) >= 15
    assert smile["auc"] == pytest.approx(pairs_won(pairs))
    assert report["settings"]["refine"] == "landmarks" and report["settings"]["regressor"] is False
    assert set(report["emotions"]["surprise"]["groups"]) == {g.name for g in EMOTION_GROUPS["surprise"]}


def test_cli_model_without_arkit_names_is_a_usage_error(faces_dir, tmp_path, capsys):
    """A PCA expression space (names ``expression_00``..., as the v1 model's): exit 2 with the typed
    error's message, before any photo is fitted and without a report."""
    from dataclasses import replace

    from conftest import tiny_face_model_arrays

    from facenet3d.cli import main
    from facenet3d.facemodel.native import save_face_model

    arrays = tiny_face_model_arrays()
    model = tmp_path / "pca.npz"
    save_face_model(replace(arrays, expression_names=[f"expression_{i:02d}" for i in range(3)]), model)
    photo = faces_dir / "lfw-expressions" / "Abdullah_Gul_0001.jpg"
    out = tmp_path / "expression.json"
    status = main(["evaluate", "expression", "--photos", str(photo), "--refine", "landmarks", "--model", str(model),
                   "--weights", "none", "--quiet", "--json", str(out)])
    assert status == 2
    err = capsys.readouterr().err
    assert "ARKit" in err and "mouthSmile_L" in err and "expression_00" in err
    assert not out.exists()


def test_cli_photos_without_labels_is_a_usage_error(faces_dir, arkit_names, tmp_path, capsys):
    """Photos with no labels.csv beside them (no person with neutral + emotional photos): exit 2, no report."""
    import shutil
    from dataclasses import replace

    from conftest import tiny_face_model_arrays

    from facenet3d.cli import main
    from facenet3d.facemodel.native import save_face_model

    model = tmp_path / "arkit.npz"
    save_face_model(replace(tiny_face_model_arrays(expression_dim=len(arkit_names)), expression_names=arkit_names),
                    model)
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    shutil.copy(faces_dir / "lfw-expressions" / "Abdullah_Gul_0001.jpg", folder)
    out = tmp_path / "expression.json"
    status = main(["evaluate", "expression", "--photos", str(folder), "--refine", "landmarks", "--model", str(model),
                   "--weights", "none", "--quiet", "--json", str(out)])
    assert status == 2
    assert "no person has both a neutral photo" in capsys.readouterr().err
    assert not out.exists()
