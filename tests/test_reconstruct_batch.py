"""``facenet3d reconstruct`` as a batch tool: bad inputs among good ones, an unwritable output
folder, SIGINT mid-folder and a resumed run, ``--overwrite``, quiet start-up, progress, honest
and bounded overlays, browser-playable overlay videos. Real photos, real files, real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenet3d.batch import (
    FAILURES_FILE,
    RESULT_RECORD,
    OutputFolderError,
    check_output_folder,
    collect_inputs,
    native_stderr_silenced,
)
from facenet3d.cli import main
from facenet3d.export.overlay import MAX_OVERLAY_SIDE

REPO = Path(__file__).resolve().parents[1]
NOISE = ("inference_feedback_manager", "XNNPACK", "absl::InitializeLog")


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def photos(faces_dir: Path, n: int, start: int = 10) -> list[Path]:
    return sorted((faces_dir / "utkface").glob("*.jpg"))[start:start + n]


def stamps(out: Path) -> dict[str, int]:
    """Output folder -> mtime of its resume record (folders finished so far). A writer's hidden
    temporary folder is no finished result (and is renamed away under the glob's feet)."""
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f"*/{RESULT_RECORD}")
            if not p.parent.name.startswith(".")}


def test_missing_path_is_one_failure_and_the_overlay_shows_the_geometry(faces_dir, tmp_path, capsys):
    """The fast end-to-end test: a missing path and an empty folder among two real photos."""
    a, b = photos(faces_dir, 2)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(b, folder / b.name)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    code = main(["reconstruct", str(a), str(tmp_path / "missing.jpg"), str(folder), str(tmp_path / "empty"),
                 "-o", str(out), "--refine", "none"])
    assert code == 1  # the photos are written, the bad inputs listed
    captured = capsys.readouterr()
    assert "2 of 2 photos reconstructed" in captured.out and "2 failed" in captured.out
    failures = json.loads((out / FAILURES_FILE).read_text())
    assert sorted(Path(f["input"]).name for f in failures) == ["empty", "missing.jpg"]
    assert any("no such file" in f["error"] for f in failures) and any("no photos" in f["error"] for f in failures)
    assert sorted(p.name for p in out.iterdir()) == sorted([a.stem, b.stem, FAILURES_FILE])
    # Stage progress for the photos (the bar's postfix on stderr), and no third-party start-up noise.
    assert "detect" in captured.err and "regress" in captured.err
    assert not any(n in captured.err for n in NOISE)
    for src in (a, b):
        record = json.loads((out / src.stem / RESULT_RECORD).read_text())
        assert record["settings"]["refine"] == "none" and len(record["input"]["sha256"]) == 64
        overlay = np.asarray(Image.open(out / src.stem / "overlay.png").convert("RGB")).astype(int)
        photo = np.asarray(Image.open(src).convert("RGB")).astype(int)
        h, w = photo.shape[:2]
        assert overlay.shape == (h, 2 * w, 3)
        textured, geometry = overlay[:, :w], overlay[:, w:]
        covered = np.abs(textured - photo).sum(-1) > 0
        assert covered.mean() > 0.2  # the face is drawn on the left
        # Right: the grey shaded mesh (grey: channels equal up to the photo showing through at 20 %)
        # plus red (model) and green (detected) landmark dots.
        spread = geometry.max(-1) - geometry.min(-1)
        photo_spread = photo.max(-1) - photo.min(-1)
        assert np.median(spread[covered]) < 0.35 * np.median(photo_spread[covered]) + 4
        red = (geometry[..., 0] > 180) & (geometry[..., 1] < 90) & (geometry[..., 2] < 90)
        green = (geometry[..., 1] > 160) & (geometry[..., 0] < 110) & (geometry[..., 2] < 120)
        assert red.sum() > 68 and green.sum() > 68
        lm = np.array(json.loads((out / src.stem / "landmarks.json").read_text())["image_px"])
        ys, xs = np.nonzero(red)
        # every red pixel sits within a dot of a projected model landmark
        d = np.hypot(xs[:, None] + 0.5 - lm[None, :, 0], ys[:, None] + 0.5 - lm[None, :, 1]).min(1)
        assert np.percentile(d, 95) < 3.0


def test_collect_inputs_and_output_folder_checks(faces_dir, tmp_path):
    a, b = photos(faces_dir, 2)
    found, failed = collect_inputs([a, tmp_path / "nope", a, b])
    assert found == [a.resolve(), b.resolve()]  # duplicates once, order kept
    assert [(p.name, "no such file" in m) for p, m in failed] == [("nope", True)]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputFolderError, match="cannot be created"):
        check_output_folder(blocker / "out")
    with pytest.raises(OutputFolderError, match="MiB free"):
        check_output_folder(tmp_path / "ok", min_free_bytes=1 << 62)
    assert check_output_folder(tmp_path / "ok").is_dir()


READ_ONLY_RUN = textwrap.dedent("""
    import sys
    from facenet3d.cli import main

    code = main(sys.argv[1:])
    heavy = sorted(m for m in ("torch", "mediapipe") if m in sys.modules)
    print(code, ",".join(heavy) or "-")
""")


def test_read_only_output_folder_is_refused_before_any_work(faces_dir, tmp_path):
    """A chmod 555 folder, for a process that honours permission bits.

    The tests run as root, and root writes into a 555 folder (CAP_DAC_OVERRIDE; ``os.access``
    says W_OK too), so for root such a folder *is* writable and must not be refused. The
    subprocess is started without CAP_DAC_OVERRIDE in its bounding set (``setpriv``), which makes
    root obey the permission bits as any user does.
    """
    ro = tmp_path / "read_only"
    ro.mkdir()
    ro.chmod(0o555)
    cmd = [sys.executable, "-c", READ_ONLY_RUN, "reconstruct", str(photos(faces_dir, 1)[0]), "-o", str(ro)]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-fowner", "--", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "-"], proc.stderr[-2000:]  # usage error; torch, mediapipe never loaded
    assert f"error: output folder {ro}: is not writable (Permission denied)" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(ro.iterdir())
    assert time.perf_counter() - t0 < 60


def test_sigint_mid_folder_then_a_resumed_run_writes_only_the_rest(faces_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in photos(faces_dir, 12):
        shutil.copy(p, inputs / p.name)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "facenet3d", "reconstruct", str(inputs), "-o", str(out), "--refine", "none",
           "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not stamps(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and not any(n in stderr for n in NOISE)
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted (SIGINT):"), stderr
    done = stamps(out)
    assert 1 <= len(done) < 12
    # No partial results: every folder is complete (it carries its record), no temporary names.
    assert sorted(p.name for p in out.iterdir()) == sorted(done)
    assert f"{len(done)} of 12 photos reconstructed" in stdout

    resumed = subprocess.run(cmd[:-1], cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{12 - len(done)} of 12 photos reconstructed" in resumed.stdout
    assert f"{len(done)} already done" in resumed.stdout
    after = stamps(out)
    assert len(after) == 12 and {k: after[k] for k in done} == done  # the finished ones untouched
    written = [line.split(" -> ")[0] for line in resumed.stdout.splitlines() if " -> " in line]
    assert sorted(Path(p).stem for p in written) == sorted(set(after) - set(done))


def test_overwrite_and_changed_settings_redo_a_finished_photo(faces_dir, tmp_path, capsys):
    photo = photos(faces_dir, 1, start=5)[0]
    args = ["reconstruct", str(photo), "-o", str(tmp_path), "--refine", "none", "--quiet"]
    assert main(args) == 0
    first = stamps(tmp_path)
    assert main(args) == 0
    assert "0 of 1 photos reconstructed" in capsys.readouterr().out and stamps(tmp_path) == first
    assert main([*args, "--overwrite"]) == 0
    second = stamps(tmp_path)
    assert second[photo.stem] != first[photo.stem]
    assert main([*args, "--max-faces", "1"]) == 0  # other settings: not the same result, redone
    third = stamps(tmp_path)
    assert third[photo.stem] != second[photo.stem]
    assert json.loads((tmp_path / photo.stem / RESULT_RECORD).read_text())["settings"]["max_faces"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refinement_reports_every_stage_and_step(faces_dir, tmp_path):
    from facenet3d.api import FaceReconstructor

    config = tmp_path / "tiny.yaml"
    config.write_text("stages: [landmarks, photometric]\nlandmarks: {iterations: 3}\nphotometric: {iterations: 2}\n")
    rec = FaceReconstructor.from_pretrained("default")
    seen: list[tuple[str, int, int]] = []
    rec.reconstruct(photos(faces_dir, 1)[0], refine=str(config), progress=lambda *a: seen.append(a))
    assert seen == [("detect", 0, 1), ("regress", 0, 1), ("landmarks", 1, 3), ("landmarks", 2, 3),
                    ("landmarks", 3, 3), ("photometric", 1, 2), ("photometric", 2, 2)]


NOISE_RUN = textwrap.dedent("""
    import sys
    from facenet3d.batch import quiet_detector
    from facenet3d.landmarks.detect import FaceDetector
    from facenet3d.landmarks.image_io import read_image

    detector = quiet_detector(FaceDetector(backend=sys.argv[3]), verbose=sys.argv[1] == "verbose")
    print(len(detector.detect(read_image(sys.argv[2]))))
""")


def test_mediapipe_start_up_messages_only_when_verbose(faces_dir):
    pytest.importorskip("mediapipe")
    photo = str(photos(faces_dir, 1)[0])
    runs = {mode: subprocess.run([sys.executable, "-c", NOISE_RUN, mode, photo, "mediapipe"], cwd=REPO, env=env(),
                                 capture_output=True, text=True, timeout=120) for mode in ("quiet", "verbose")}
    assert [r.stdout.strip() for r in runs.values()] == ["1", "1"]
    assert not any(n in runs["quiet"].stderr for n in NOISE), runs["quiet"].stderr
    assert "inference_feedback_manager" in runs["verbose"].stderr
    # the default (ONNX) back-end has no such messages at all
    onnx = subprocess.run([sys.executable, "-c", NOISE_RUN, "verbose", photo, "onnx"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert onnx.stdout.strip() == "1" and not any(n in onnx.stderr for n in NOISE), onnx.stderr


def test_native_stderr_silenced_restores_fd2(capfd):
    with native_stderr_silenced():
        os.write(2, b"hidden\n")
    os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"


def test_overlay_video_is_browser_playable_or_says_why(tmp_path, faces_dir):
    import cv2
    from facenet3d.infer.video import VIDEO_CODECS, _OverlayWriter

    frame = np.array(Image.open(photos(faces_dir, 1)[0]).convert("RGB").resize((160, 120)))
    writer = _OverlayWriter(tmp_path, 10.0)
    for i in range(6):
        writer.write(np.roll(frame, i, 1))
    writer.close()
    codecs = {c[2]: c for c in VIDEO_CODECS}
    assert writer.path is not None and writer.path.name == codecs[writer.codec][0]
    assert (writer.note == "") == (writer.codec == "H.264")
    if writer.codec != "H.264":
        assert "no H.264 encoder" in writer.note
    assert codecs[writer.codec][3] or "do not play" in writer.note
    capture = cv2.VideoCapture(str(writer.path))
    n = 0
    while capture.read()[0]:
        n += 1
    assert n == 6


BIG_RUN = textwrap.dedent("""
    import resource, sys
    from facenet3d.cli import main

    code = main(sys.argv[1:])
    print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_a_48_megapixel_photo_stays_under_1_5_gb_with_a_bounded_overlay(faces_dir, tmp_path):
    canvas = Image.new("RGB", (8000, 6000), (128, 128, 128))
    canvas.paste(Image.open(photos(faces_dir, 1)[0]).convert("RGB").resize((6000, 6000), Image.BILINEAR), (1000, 0))
    big = tmp_path / "big.jpg"
    canvas.save(big, quality=90)
    del canvas
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", BIG_RUN, "reconstruct", str(big), "-o", str(out), "--quiet"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    code, max_rss_kib = map(int, proc.stdout.split()[-2:])
    assert code == 0, proc.stderr[-2000:]
    assert max_rss_kib * 1024 < 1.5e9
    with Image.open(out / "big" / "overlay.png") as im:
        assert im.size == (2 * MAX_OVERLAY_SIDE, MAX_OVERLAY_SIDE * 6000 // 8000)
    assert (out / "big" / "overlay.png").stat().st_size < 8e6
    params = json.loads((out / "big" / "params.json").read_text())
    assert params["camera"]["image_size_hw"] == [6000, 8000]  # results in the original photo's pixels
    box = params["detection"]["box"]
    assert box[0] > 1000 and box[2] < 7000 and box[2] - box[0] > 2000  # the face, found at working resolution
    print(f"48 MP photo: peak RSS {max_rss_kib / 2**20:.2f} GiB")
