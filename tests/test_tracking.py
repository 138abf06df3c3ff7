"""Face tracking between video frames (:mod:`facenet3d.infer.tracking`) and the live-camera source."""

from __future__ import annotations

import numpy as np
import pytest
from facenet3d.infer.tracking import FaceTracker
from facenet3d.infer.video import camera_source
from PIL import Image

from facenet3d.errors import CameraError
from facenet3d.landmarks.align import compose_affine, transform_points
from facenet3d.landmarks.detect import FaceDetector
from tests.onnx_fixtures import real_photos

CROP = 160


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float], centre: np.ndarray) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([r, (centre + np.asarray(shift) - r @ centre)[:, None]], 1)


def _moving_clip(faces_dir, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A real photo in a 320x240 frame moving by a known similarity per frame: frames and motions
    (frame 0's pixels -> frame i's)."""
    import cv2

    photo = np.array(Image.open(real_photos(faces_dir, 2)[1]).convert("RGB").resize((200, 200)))
    base = np.full((240, 320, 3), 90, np.uint8)
    base[20:220, 60:260] = photo
    centre = np.array([160.0, 120.0])
    frames, motions = [], []
    for i in range(n):
        m = _similarity(1.5 * i, 1.0 + 0.01 * i, (4.0 * i, -2.0 * i), centre)
        frames.append(cv2.warpAffine(base, m, (320, 240), borderMode=cv2.BORDER_REPLICATE))
        motions.append(m)
    return frames, motions


def test_tracker_places_crops_from_the_last_frame_and_detects_again(faces_dir):
    frames, motions = _moving_clip(faces_dir, 8)

    def moved(points: np.ndarray, start: int, end: int) -> np.ndarray:
        """Points of frame ``start`` where the clip's motion puts them in frame ``end``."""
        back = np.linalg.inv(np.vstack([motions[start], [0.0, 0.0, 1.0]]))[:2]
        return transform_points(points, compose_affine(motions[end], back))

    # The regressor's landmarks stand in for the detection's, offset by a convention shift on the face
    # (the tracker compares the regressor with itself, so the shift must cancel).
    offset = np.array([1.5, -2.0])
    tracker = FaceTracker(FaceDetector(max_faces=1), CROP, redetect_every=4)
    kinds = []
    for i in range(8):
        placed = tracker.crop(frames[i])
        kinds.append(placed.detected)
        if placed.detected:
            first, start, points0 = placed.face, i, placed.face.detected.landmarks68
        else:
            # The crop is the detection's crop moved as the face moved up to the last frame: the
            # last frame's face lands where the detector put the detection frame's...
            assert np.allclose(transform_points(moved(points0, start, i - 1), placed.face.forward),
                               transform_points(points0, first.forward), atol=0.02)
            # ... and this frame's face, a few pixels on, is still near that place.
            shift = transform_points(moved(points0, start, i), placed.face.forward) - transform_points(
                points0, first.forward)
            assert np.abs(shift).max() < 0.06 * CROP
        confidence = tracker.update(moved(points0 + offset, start, i))
        assert confidence > 0.5, (i, confidence)
    assert kinds == [True, False, False, False, True, False, False, False]
    # A cut: the "regressed" face lands a third of the crop away; confidence 0, the next frame detects.
    tracker = FaceTracker(FaceDetector(max_faces=1), CROP)
    points0 = tracker.crop(frames[0]).face.detected.landmarks68
    tracker.update(points0)
    assert not tracker.crop(frames[1]).detected
    assert tracker.update(moved(points0, 0, 1) + 0.3 * CROP / first.forward[0, 0]) == 0.0
    assert tracker.crop(frames[2]).detected


def test_tracker_detects_while_there_is_no_face():
    tracker = FaceTracker(FaceDetector(max_faces=1), CROP)
    blank = np.full((120, 160, 3), 30, np.uint8)
    from facenet3d.errors import NoFaceError

    for _ in range(2):
        with pytest.raises(NoFaceError):
            tracker.crop(blank)
    with pytest.raises(RuntimeError):
        tracker.update(np.zeros((68, 2)))


def test_missing_camera_is_a_typed_error():
    with pytest.raises(CameraError, match="camera 57: cannot open"):
        camera_source(57)
    with pytest.raises(CameraError):
        camera_source(-1)
