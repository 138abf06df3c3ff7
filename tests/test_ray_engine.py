"""``python -m facenet3d.infer --engine ray``: the single-process runtime's results on Ray Data, resumable, safe.

One local Ray instance with two regressor actors serves the module (starting it and warming its
workers up is most of the cost). The default suite runs three files (two photos, one broken)
through every stage and checks the outputs against the single-process runtime, the failures
tables and a resumed run; the slow tests do the same on a dozen real photos read from a Parquet
manifest, check the face table, and kill an actor mid-run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from facenet3d.infer.__main__ import main as infer_main
from facenet3d.infer.inputs import expand_path_lists
from facenet3d.infer.table import FACE_TABLE, FAILURES_TABLE
from onnx_fixtures import real_photos

from facenet3d.batch import FAILURES_FILE, RESULT_RECORD

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'facenet3d[ray]')")
pq = pytest.importorskip("pyarrow.parquet")

WORKERS = 2
#: Process title of a regressor actor (Ray names actor processes ``ray::<class>``).
ACTOR_TITLE = "RegressStage"


def copy_photos(folder: Path, picks: list[Path]) -> Path:
    """``picks`` copied into ``folder`` with a file that is not a photo."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in picks:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG header and nothing else")
    return folder


@pytest.fixture(scope="module")
def few_photos(faces_dir, tmp_path_factory) -> Path:
    """Two real photos and one broken file."""
    return copy_photos(tmp_path_factory.mktemp("few"), real_photos(faces_dir, 2))


@pytest.fixture(scope="module")
def photos(faces_dir, tmp_path_factory) -> Path:
    """A dozen files: eleven real photos of three sets (each with a face) and one broken file."""
    picks = real_photos(faces_dir, 6)
    for sub, step in (("utkface", 97), ("lfw-expressions", 13), ("aflw-crops", 17)):
        picks += sorted((faces_dir / sub).glob("*.jpg"))[5::step][:2]
    return copy_photos(tmp_path_factory.mktemp("dozen"), picks[:11])


@pytest.fixture(scope="module")
def manifest(photos) -> Path:
    """A Parquet manifest of the dozen (paths relative to the manifest's folder)."""
    import pyarrow as pa

    path = photos / "manifest.parquet"
    pq.write_table(pa.table({"path": sorted(p.name for p in photos.glob("*.jpg"))}), path)
    return path


@pytest.fixture(scope="module")
def reference(tiny_graph, tmp_path_factory):
    """``reference(folder)``: the single-process runtime's output folder for a folder of photos."""
    done: dict[Path, Path] = {}

    def run(folder: Path) -> Path:
        if folder not in done:
            out = tmp_path_factory.mktemp("reference")
            assert infer_main([str(folder), "-o", str(out), "--onnx", str(tiny_graph.onnx), "--threads", "1",
                               "--quiet"]) == 1
            done[folder] = out
        return done[folder]

    return run


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for the module (the engine uses it rather than starting its own)."""
    from facenet3d.infer.ray_engine import start_ray

    assert start_ray(None, WORKERS, threads=1)
    yield ray
    ray.shutdown()


def ray_args(onnx: Path, *extra: str) -> list[str]:
    return ["--onnx", str(onnx), "--engine", "ray", "--num-workers", str(WORKERS), "--threads", "1", "--quiet",
            *extra]


def numbers(value) -> list[float]:
    """Every number of a JSON value in a fixed order, timings left out."""
    if isinstance(value, dict):
        return [x for k in sorted(value) if k != "seconds" for x in numbers(value[k])]
    if isinstance(value, list):
        return [x for v in value for x in numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


def assert_same_results(out: Path, reference: Path, photos: int) -> None:
    """Same photo folders and files as the reference; same numbers in params.json and landmarks.json."""
    def listing(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.name not in (FAILURES_FILE, FAILURES_TABLE)}

    assert listing(out) == listing(reference)
    params = sorted(reference.rglob("params.json"))
    assert len(params) == photos
    for p in params:
        for name in ("params.json", "landmarks.json"):
            got = json.loads((out / p.parent.relative_to(reference) / name).read_text())
            want = json.loads((p.parent / name).read_text())
            np.testing.assert_allclose(numbers(got), numbers(want), atol=1e-4, err_msg=str(p.parent))


def assert_failures_listed(out: Path, reference: Path) -> None:
    """The broken file in failures.json and failures.parquet, for the reason the single-process runtime gives."""
    listed = json.loads((out / FAILURES_FILE).read_text())
    table = pq.read_table(out / FAILURES_TABLE).to_pylist()
    assert [Path(f["input"]).name for f in listed] == [Path(r["input"]).name for r in table] == ["broken.jpg"]
    assert table[0]["error"] == listed[0]["error"] == json.loads((reference / FAILURES_FILE).read_text())[0]["error"]


def check_run_and_resume(inputs: Path, folder: Path, onnx: Path, reference: Path, out: Path, capsys) -> None:
    """A Ray run of ``inputs`` (the photos of ``folder``) equals ``reference``; a second run skips them all."""
    n = len(list(folder.glob("*.jpg")))
    assert infer_main([str(inputs), "-o", str(out), *ray_args(onnx)]) == 1
    assert f"{n - 1} of {n} photos reconstructed" in capsys.readouterr().out
    assert_same_results(out, reference, n - 1)
    assert_failures_listed(out, reference)
    record = json.loads(next(out.rglob(RESULT_RECORD)).read_text())
    assert record["settings"]["backend"] == "onnx" and record["input"]["sha256"]

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("params.json")}
    assert infer_main([str(inputs), "-o", str(out), *ray_args(onnx)]) == 1
    summary = capsys.readouterr().out
    assert f"0 of {n} photos reconstructed" in summary and f"{n - 1} already done" in summary and "1 failed" in summary
    assert {p: p.stat().st_mtime_ns for p in out.rglob("params.json")} == stamps
    assert_failures_listed(out, reference)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_ray_run_equals_the_single_process_run_and_resumes(local_ray, tiny_graph, few_photos, reference, tmp_path,
                                                           capsys):
    check_run_and_resume(few_photos, few_photos, tiny_graph.onnx, reference(few_photos), tmp_path / "out", capsys)


@pytest.mark.slow
def test_a_dozen_photos_from_a_manifest(local_ray, tiny_graph, photos, manifest, reference, tmp_path, capsys):
    check_run_and_resume(manifest, photos, tiny_graph.onnx, reference(photos), tmp_path / "out", capsys)


def test_list_files_and_manifests(tmp_path, photos, manifest):
    names = sorted(p.name for p in photos.glob("*.jpg"))
    listing = tmp_path / "photos.txt"
    listing.write_text(f"# a data set\n{photos / names[0]}\n\n../{tmp_path.name}/missing.jpg\n")
    (tmp_path / "empty.lst").write_text("# nothing\n")
    import pyarrow as pa

    pq.write_table(pa.table({"file": ["a.jpg"], "label": [1]}), tmp_path / "columns.parquet")
    inputs, failures = expand_path_lists([str(listing), str(manifest), str(tmp_path / "empty.lst"),
                                          str(tmp_path / "columns.parquet"), str(photos)])
    assert inputs == [str(photos / names[0]), str(tmp_path / ".." / tmp_path.name / "missing.jpg"),
                      *(str(photos / n) for n in names), str(photos)]
    assert [(p.name, "names no photos" in m or "'path' column" in m) for p, m in failures] == [
        ("empty.lst", True), ("columns.parquet", True)]


def test_usage_errors(tiny_graph, few_photos, tmp_path, monkeypatch, capsys):
    """Without ray, or with a cluster address nobody answers at: a clear error and exit status 2
    (no traceback, no minutes of retries)."""
    import sys

    from facenet3d.infer.ray_engine import ClusterUnreachableError, check_reachable

    from facenet3d.cli import main as facenet3d_main

    with pytest.raises(ClusterUnreachableError, match="no Ray cluster answers at 127.0.0.1:1"):
        check_reachable("127.0.0.1:1")

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert infer_main([str(few_photos), "-o", str(tmp_path), *ray_args(tiny_graph.onnx)]) == 2
    assert "pip install 'facenet3d[ray]'" in capsys.readouterr().err
    # facenet3d reconstruct --backend onnx hands the engine options to the runtime.
    reconstruct = ["reconstruct", str(few_photos), "-o", str(tmp_path), "--onnx", str(tiny_graph.onnx),
                   "--engine", "ray", "--quiet"]
    assert facenet3d_main([*reconstruct, "--backend", "onnx"]) == 2
    assert "pip install 'facenet3d[ray]'" in capsys.readouterr().err
    assert facenet3d_main(reconstruct) == 2  # the torch backend has no Ray engine
    assert "--backend onnx" in capsys.readouterr().err
    assert infer_main([str(few_photos / "broken.jpg"), "-o", str(tmp_path), "--onnx", str(tiny_graph.onnx),
                       "--table"]) == 2


@pytest.mark.slow
def test_face_table_holds_the_single_process_numbers(local_ray, tiny_graph, photos, reference, tmp_path, capsys):
    from facenet3d.infer.batch import detect_photo, place_photo, regress_photos
    from facenet3d.infer.pipeline import RuntimeFaceModel
    from facenet3d.infer.session import RegressorSession
    from facenet3d.infer.table import face_rows, read_table

    from facenet3d.landmarks.detect import FaceDetector

    reference = reference(photos)
    out = tmp_path / "out"
    assert infer_main([str(photos), "-o", str(out), *ray_args(tiny_graph.onnx, "--table")]) == 1
    rows = read_table(out / FACE_TABLE).to_pylist()
    assert sorted(p.name for p in out.iterdir()) == sorted([FACE_TABLE, FAILURES_FILE, FAILURES_TABLE])
    assert len(rows) == 11 and {r["face"] for r in rows} == {0}
    # The single-process runtime's stages on the same photos, unrounded: every column to 1e-4.
    session = RegressorSession(tiny_graph.onnx, threads=1)
    model = RuntimeFaceModel.load("default", session.info)
    detector = FaceDetector()
    for row in rows:
        photo = detect_photo(Path(row["input"]), out / row["name"], detector, session.crop_size)
        placed = place_photo(regress_photos(session, [photo])[0], photo, model, session.crop_size)
        record = json.loads((reference / row["name"] / RESULT_RECORD).read_text())
        assert record["input"]["sha256"] == row["input_sha256"]
        (want,) = face_rows(placed, row["name"], {**record, "settings": json.loads(row["settings"])})
        for column, value in want.items():
            if isinstance(value, str):
                assert row[column] == value, column
            else:
                np.testing.assert_allclose(row[column], value, atol=1e-4, rtol=1e-6, err_msg=column)
        # ... and they are the numbers of params.json and landmarks.json (rounded there).
        params = json.loads((reference / row["name"] / "params.json").read_text())
        marks = json.loads((reference / row["name"] / "landmarks.json").read_text())
        for column, value, decimals in (("identity", params["identity"], 9), ("sh", params["sh"], 9),
                                        ("rotation_matrix", params["rotation_matrix"], 6),
                                        ("translation_mm", params["translation_mm"], 4),
                                        ("focal_px", params["camera"]["focal_px"], 9),
                                        ("detection_box", params["detection"]["box"], 2),
                                        ("landmarks68_image_px", marks["image_px"], 3),
                                        ("landmarks68_mesh_mm", marks["mesh_mm"], 4)):
            np.testing.assert_allclose(row[column], np.ravel(value), atol=0.5 * 10.0 ** -decimals + 1e-5,
                                       rtol=1e-6, err_msg=column)
    assert_failures_listed(out, reference)
    capsys.readouterr()
    assert infer_main([str(photos), "-o", str(out), *ray_args(tiny_graph.onnx, "--table")]) == 1
    assert "11 already done" in capsys.readouterr().out
    assert len(read_table(out / FACE_TABLE)) == 11  # no row twice


def actor_pids() -> list[int]:
    """Processes of this machine's regressor actors (their titles name the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and ACTOR_TITLE in title:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_a_killed_actor_loses_nothing(local_ray, tiny_graph, photos, reference, tmp_path):
    """SIGKILL one regressor actor once the first photos are written: Ray restarts it and retries
    its batch; every photo ends written once, equal to the reference, and no temporary is left."""
    from facenet3d.infer.pipeline import RuntimeFaceModel
    from facenet3d.infer.ray_engine import RayRunOptions, reconstruct_photos_on_ray
    from facenet3d.infer.session import RegressorSession

    reference = reference(photos)
    out = tmp_path / "out"
    session = RegressorSession(tiny_graph.onnx, threads=1)
    model = RuntimeFaceModel.load("default", session.info)
    inputs = sorted(photos.glob("*.jpg"))
    result = {}

    def run() -> None:
        result["report"] = reconstruct_photos_on_ray(
            inputs, out, tiny_graph.onnx, model, session.info, options=RayRunOptions(num_workers=WORKERS),
            threads=1, batch_size=1, quiet=True)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 240
    killed = None
    while thread.is_alive() and time.monotonic() < deadline:
        pids = actor_pids()
        if pids and any(p.is_dir() and not p.name.startswith(".") for p in out.glob("*")):
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert killed is not None, "the run ended before an actor could be killed"
    alive_after_kill = thread.is_alive()
    thread.join(timeout=300)
    assert alive_after_kill and not thread.is_alive()
    report = result["report"]
    assert (len(report.written), len(report.skipped), len(report.failures)) == (11, 0, 1)
    assert killed not in actor_pids()
    assert_same_results(out, reference, 11)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
