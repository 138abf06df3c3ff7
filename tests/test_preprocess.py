"""``facenet3d preprocess`` and the PhotoCache reader, on real photos and bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenet3d.cli import main
from facenet3d.landmarks import cache as cache_mod
from facenet3d.landmarks import load_image, transform_points, warp_image
from facenet3d.landmarks.cache import PhotoCache, photo_labels, preprocess

LFW_NAMES = ["Abdullah_Gul_0001.jpg", "Abdullah_Gul_0002.jpg", "Abdullah_Gul_0003.jpg"]


@pytest.fixture()
def photo_dir(faces_dir: Path, tmp_path: Path) -> Path:
    """Three LFW photos with their labels.csv rows, a UTKFace chip, and two bad files."""
    d = tmp_path / "photos"
    d.mkdir()
    src = faces_dir / "lfw-expressions"
    for name in LFW_NAMES:
        shutil.copy(src / name, d / name)
    keep = ["image", *LFW_NAMES]
    rows = [r for r in (src / "labels.csv").read_text().splitlines() if r.split(",")[0] in keep]
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    utk = sorted((faces_dir / "utkface").glob("*.chip.jpg"))[0]
    shutil.copy(utk, d / utk.name)
    (d / "notes.jpg").write_text("not a photo")
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(d / "flat.png")
    return d


def _run(*args: str) -> int:
    return main(["preprocess", *args, "--no-progress"])


def test_preprocess_cli_cache_contents(photo_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "cache"
    assert _run(str(photo_dir), "-o", str(out), "--size", "128", "--workers", "1", "--shard-size", "3") == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["size"] == 128
    assert sorted(Path(it["source"]).name for it in manifest["items"]) == sorted(
        LFW_NAMES + [next(photo_dir.glob("*.chip.jpg")).name])
    failures = {Path(f["source"]).name: f["error"] for f in manifest["failures"]}
    assert set(failures) == {"notes.jpg", "flat.png"}
    assert "not an image" in failures["notes.jpg"] and "no face" in failures["flat.png"]
    assert [s["count"] for s in manifest["shards"]] == [3, 1]
    assert "failed:" in capsys.readouterr().out

    cache = PhotoCache(out)
    assert len(cache) == 4 and cache.size == 128
    for i, meta in enumerate(cache.items):
        item = cache[i]
        assert isinstance(item["crop"], np.memmap)  # memory-mapped, no JPEG decoding
        assert item["crop"].shape == (128, 128, 3) and item["crop"].dtype == np.uint8
        assert item["landmarks478"].shape == (478, 3) and item["landmarks68"].shape == (68, 2)
        assert item["face_mask"].dtype == bool and 0.3 < item["face_mask"].mean() < 0.9
        assert (item["skin_mask"] <= item["face_mask"]).all()
        # the crop is the source photo warped by the stored forward matrix
        photo = load_image(meta["source"])
        assert (meta["width"], meta["height"]) == (photo.shape[1], photo.shape[0])
        # (the cache pre-shrinks with an area filter; a plain warp differs by aliasing only,
        # while a registration error of one crop pixel doubles the difference)
        expected = warp_image(photo, item["forward"], (128, 128)).astype(int)
        diff = np.abs(expected - item["crop"]).mean()
        shifted = item["forward"] + [[0, 0, 1.0], [0, 0, 0]]
        assert diff < 1.5 and diff < 0.5 * np.abs(warp_image(photo, shifted, (128, 128)) - expected).mean()
        # landmarks are stored in crop pixels; inverse maps them back onto the photo's face box
        back = transform_points(item["landmarks478"][:468, :2], item["inverse"])
        np.testing.assert_allclose([*back.min(0), *back.max(0)], meta["box"], atol=0.02)
        np.testing.assert_allclose(item["landmarks68"], item["landmarks478"][cache_mod_ibug(), :2])
        assert meta["faces"] == 1 and 0 <= meta["score"] <= 1
    labels = {Path(it["source"]).name: it["labels"] for it in cache.items}
    assert labels["Abdullah_Gul_0001.jpg"] == {"identity": "Abdullah_Gul", "emotion": "neutral"}
    utk = next(v for k, v in labels.items() if k.endswith(".chip.jpg"))
    assert set(utk) == {"age", "gender", "race"}


def cache_mod_ibug():
    from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE

    return IBUG68_FROM_MEDIAPIPE


def test_rerun_skips_finished_and_retries_failures(photo_dir: Path, tmp_path: Path):
    out = tmp_path / "cache"
    first = preprocess([photo_dir], out, size=96, workers=1, progress=False)
    assert first.cached == 4 and len(first.failed) == 2
    shards = sorted(p.name for p in (out / "shards").iterdir())
    (photo_dir / "notes.jpg").unlink()  # fix one bad input; the flat image still has no face
    again = preprocess([photo_dir], out, size=96, workers=1, progress=False)
    assert again.cached == 0 and again.skipped == 4 and len(again.failed) == 1
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(f["source"]).name for f in manifest["failures"]] == ["flat.png"]
    assert len(manifest["items"]) == 4
    # all good now: exit status 0
    (photo_dir / "flat.png").unlink()
    assert _run(str(photo_dir), "-o", str(out), "--size", "96", "--workers", "1") == 0


def test_interrupted_run_keeps_finished_work(photo_dir: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "cache"
    real_work = cache_mod._work
    calls = {"n": 0}

    def work_then_interrupt(path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_work(path)

    monkeypatch.setattr(cache_mod, "_work", work_then_interrupt)
    report = preprocess([photo_dir], out, size=64, workers=1, shard_size=100, progress=False)
    assert report.interrupted
    done = PhotoCache(out)
    finished = len(done) + len(done.failures)
    assert finished == 2  # the two photos before Ctrl-C were written (partial shard flushed)
    monkeypatch.setattr(cache_mod, "_work", real_work)
    report = preprocess([photo_dir], out, size=64, workers=1, progress=False)
    assert not report.interrupted and report.skipped == len(done)
    assert len(PhotoCache(out)) == 4


def test_worker_processes(photo_dir: Path, tmp_path: Path):
    """The multiprocessing path (one MediaPipe per worker) gives the same cache as in-process."""
    a, b = tmp_path / "a", tmp_path / "b"
    preprocess([photo_dir], a, size=64, workers=1, progress=False)
    report = preprocess([photo_dir], b, size=64, workers=2, progress=False)
    assert report.cached == 4 and len(report.failed) == 2
    ca, cb = PhotoCache(a), PhotoCache(b)
    order = {it["source"]: i for i, it in enumerate(cb.items)}
    for i, it in enumerate(ca.items):
        j = order[it["source"]]
        np.testing.assert_allclose(ca[i]["landmarks68"], cb[j]["landmarks68"], atol=1e-3)
        np.testing.assert_array_equal(ca[i]["crop"], cb[j]["crop"])


def test_usage_errors(photo_dir: Path, tmp_path: Path, capsys):
    assert _run(str(tmp_path / "missing"), "-o", str(tmp_path / "c")) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(str(empty), "-o", str(tmp_path / "c")) == 2
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert _run(str(photo_dir / LFW_NAMES[0]), "-o", str(a_file)) == 2
    out = tmp_path / "c"
    assert _run(str(photo_dir / LFW_NAMES[0]), "-o", str(out), "--size", "64", "--workers", "1") == 0
    assert _run(str(photo_dir / LFW_NAMES[0]), "-o", str(out), "--size", "96", "--workers", "1") == 2
    assert "64 px crops" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # argparse: missing -o
        main(["preprocess", str(photo_dir)])
    assert e.value.code == 2


def test_photo_labels_from_utkface_name(tmp_path: Path):
    utk = tmp_path / "26_1_3_20170119180403311.jpg.chip.jpg"
    assert photo_labels(utk) == {"age": 26, "gender": 1, "race": 3}
    assert photo_labels(tmp_path / "holiday.jpg") == {}
