"""Similarity alignment, the pixel-centre convention of warps, and face/skin masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facenet3d.landmarks import (
    FaceDetector,
    align_face,
    canonical_template,
    estimate_similarity,
    face_and_skin_masks,
    invert_affine,
    read_image,
    transform_points,
    warp_image,
)
from facenet3d.landmarks.align import FACE_FRACTION
from facenet3d.landmarks.masks import fill_polygons


@pytest.fixture(scope="module")
def photo_and_face(faces_dir: Path):
    image = read_image(faces_dir / "lfw-expressions" / "Abdullah_Gul_0002.jpg")
    with FaceDetector() as det:
        return image, det.detect(image)[0]


def _similarity(angle: float, scale: float, t) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, t[0]], [scale * s, scale * c, t[1]]])


def test_estimate_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, (68, 2))
    m = _similarity(0.3, 0.7, (12.5, -40.0))
    got = estimate_similarity(src, transform_points(src, m).astype(np.float64))
    np.testing.assert_allclose(got, m, atol=1e-4)
    # a reflection is never returned: mirrored targets give a proper rotation
    got = estimate_similarity(src, src * [-1, 1])
    assert np.linalg.det(got[:, :2]) > 0


def test_invert_affine():
    m = _similarity(-1.1, 2.5, (3.0, 4.0))
    p = np.random.default_rng(1).uniform(-50, 50, (10, 2))
    np.testing.assert_allclose(transform_points(transform_points(p, m), invert_affine(m)), p, atol=1e-4)


def test_warp_uses_pixel_centres_at_half():
    """A single bright pixel at (i, j) has its centre at (j + 0.5, i + 0.5): after a warp by
    2x scale plus a rotation, the blob's centroid sits where the matrix sends that centre."""
    img = np.zeros((40, 40), np.float32)
    img[10, 25] = 1.0
    m = _similarity(0.4, 2.0, (7.3, -3.1))
    out = warp_image(img, m, (100, 100))
    ys, xs = np.nonzero(out > 0)
    w = out[ys, xs]
    centroid = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()]) + 0.5
    np.testing.assert_allclose(centroid, transform_points(np.array([25.5, 10.5]), m), atol=0.05)


def test_template_geometry():
    t = canonical_template(224)
    assert t.shape == (68, 2)
    # eyes level and symmetric about the vertical centre line; mouth below eyes; face inside
    np.testing.assert_allclose(t[36:42, 1].mean(), t[42:48, 1].mean(), atol=1e-6)
    np.testing.assert_allclose(t[36:42, 0].mean() + t[42:48, 0].mean(), 224.0, atol=1e-4)
    assert t[36:48, 1].mean() < t[48:68, 1].mean()
    lo, hi = 224 * (1 - FACE_FRACTION) / 2, 224 * (1 + FACE_FRACTION) / 2
    assert (t >= lo - 1e-6).all() and (t <= hi + 1e-6).all()
    np.testing.assert_allclose(t[8, 1], hi, atol=1e-6)  # the chin is the mean mesh's lowest point
    np.testing.assert_allclose(canonical_template(112), t / 2, atol=1e-9)


def test_align_round_trip_and_crop_content(photo_and_face):
    image, face = photo_and_face
    al = align_face(image, face.landmarks68, size=224)
    assert al.crop.shape == (224, 224, 3) and al.crop.dtype == np.uint8
    back = al.to_photo(al.to_crop(face.landmarks478[:, :2]))
    assert np.abs(back - face.landmarks478[:, :2]).max() < 1e-3
    np.testing.assert_allclose(al.forward @ np.vstack([al.inverse, [0, 0, 1]]),
                               [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    # the aligned landmarks lie near the template (a neutral, frontal face)
    err = np.linalg.norm(al.to_crop(face.landmarks68) - canonical_template(224), axis=1).mean()
    assert err < 0.04 * 224, err
    # crop pixels are the photo's pixels at the mapped positions: sample photo at the
    # inverse-mapped crop pixel centres
    ij = np.array([[60, 80], [112, 112], [150, 170]])
    centres = np.stack([ij[:, 1] + 0.5, ij[:, 0] + 0.5], axis=1)
    src = al.to_photo(centres)
    import cv2

    sampled = cv2.remap(image.pixels.astype(np.float32), (src[:, 0:1] - 0.5).astype(np.float32),
                        (src[:, 1:2] - 0.5).astype(np.float32), cv2.INTER_LINEAR)[:, 0]
    np.testing.assert_allclose(al.crop[ij[:, 0], ij[:, 1]].astype(float), sampled, atol=1.0)


def test_align_from_reduced_decoding_matches_full(photo_and_face, tmp_path: Path):
    """A photo decoded at reduced size gives the same crop and matrices in original pixels."""
    import cv2
    from PIL import Image

    image, face = photo_and_face
    big = cv2.resize(image.pixels, (1050, 1050), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big.png"
    Image.fromarray(big).save(path)
    lm = face.landmarks68 * 3.0
    full = align_face(read_image(path), lm, 160)
    reduced = align_face(read_image(path, max_side=525), lm, 160)
    np.testing.assert_allclose(reduced.forward, full.forward, atol=1e-9)
    assert np.abs(reduced.crop.astype(int) - full.crop).mean() < 3.0


def test_fill_polygons_pixel_centres():
    """A disc's mask is centred on the disc in the +0.5 pixel-centre convention, with its
    area within the half-pixel outline growth of OpenCV's filling."""
    theta = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    centre = np.array([100.3, 80.7])
    disc = centre + 40 * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    mask = fill_polygons((200, 200), [disc])
    ys, xs = np.nonzero(mask)
    np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], centre, atol=0.15)
    assert np.pi * 40**2 <= mask.sum() <= np.pi * 40.5**2
    square = fill_polygons((10, 10), [np.array([[2.0, 2.0], [6.0, 2.0], [6.0, 6.0], [2.0, 6.0]])])
    assert square[2:6, 2:6].all()
    assert not square[:2].any() and not square[:, :2].any() and not square[7:].any()


def test_face_and_skin_masks(photo_and_face):
    image, face = photo_and_face
    al = align_face(image, face.landmarks68, 224)
    lm = al.to_crop(face.landmarks478[:, :2])
    face_m, skin_m = face_and_skin_masks(lm, (224, 224))
    assert face_m.dtype == bool and face_m.shape == (224, 224)
    assert not (skin_m & ~face_m).any()
    assert 0.35 < face_m.mean() < 0.75
    def at(p):
        return int(p[1]), int(p[0])

    # points inside each excluded region: iris centres, between the lips, midway between the
    # upper and lower brow lines
    inside = {"right_eye": lm[468], "left_eye": lm[473], "mouth_interior": (lm[13] + lm[14]) / 2,
              "right_brow": (lm[52] + lm[105]) / 2, "left_brow": (lm[282] + lm[334]) / 2}
    for region, point in inside.items():
        assert face_m[at(point)] and not skin_m[at(point)], region
    for cheek in (lm[205], lm[425], lm[151]):  # cheeks and forehead are skin
        assert skin_m[at(cheek)]
    outside = np.array([2.0, 2.0])
    assert not face_m[at(outside)]
    # holes are a modest part of the face
    assert 0.8 < skin_m.sum() / face_m.sum() < 0.97


def test_compose_affine_applies_inner_then_outer():
    from facenet3d.landmarks.align import compose_affine

    rng = np.random.default_rng(0)
    inner, outer = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    pts = rng.normal(size=(5, 2))
    np.testing.assert_allclose(transform_points(pts, compose_affine(outer, inner)),
                               transform_points(transform_points(pts, inner), outer), atol=1e-5)
