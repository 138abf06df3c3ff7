"""Detection and landmarks on real photos, the iBUG-68 table, mesh topology and mean face."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenet3d.errors import NoFaceError
from facenet3d.landmarks import (
    FaceDetector,
    load_image,
    mean_face,
    mediapipe_canonical_mesh,
    mesh_triangles,
    mirror_indices,
    read_image,
    region_polygons,
)
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE, IBUG68_REGIONS

LFW = "lfw-expressions/Abdullah_Gul_0002.jpg"

# iBUG-68 index of each point's left/right partner (300-W order).
IBUG68_PAIRS = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65])


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    with FaceDetector() as d:
        yield d


@pytest.fixture(scope="module")
def upright(faces_dir: Path, detector: FaceDetector):
    """A real photo and its detected face."""
    img = load_image(faces_dir / LFW)
    return img, detector.detect(img)[0]


def _check_face_geometry(face, shape):
    lm = face.landmarks478
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    assert face.landmarks68.shape == (68, 2)
    np.testing.assert_array_equal(face.landmarks68, lm[IBUG68_FROM_MEDIAPIPE, :2])
    h, w = shape[:2]
    centre = lm[:468, :2].mean(0)
    assert 0 < centre[0] < w and 0 < centre[1] < h
    np.testing.assert_allclose(face.box, [*lm[:468, :2].min(0), *lm[:468, :2].max(0)], rtol=1e-6)
    # Anatomy in image coordinates: the subject's right eye (iBUG 36-41) is on the image left,
    # brows above eyes above nose tip above mouth above chin; the nose tip is nearest the camera.
    p = face.landmarks68
    assert p[36:42, 0].mean() < p[42:48, 0].mean()
    assert p[17:27, 1].mean() < p[36:48, 1].mean() < p[30, 1] < p[48:68, 1].mean() < p[8, 1]
    assert lm[4, 2] < lm[:468, 2].mean()


def test_detects_real_photo(upright):
    img, face = upright
    _check_face_geometry(face, img.shape)
    assert face.score > 0.5
    # the face fills a good part of this LFW-style photo
    assert 0.2 * img.shape[1] < face.box[2] - face.box[0] < img.shape[1] * 1.1


@pytest.mark.parametrize("folder", ["utkface", "aflw-crops"])
def test_tight_crops(faces_dir: Path, detector: FaceDetector, folder: str):
    """Tight chips (chin/forehead cut, turned heads) are found: 8 of the first 10 of each folder
    at least (measured over 300 random photos: UTKFace 100 %, AFLW crops 95 %)."""
    paths = sorted((faces_dir / folder).glob("*.jpg"))[:10]
    found = 0
    for p in paths:
        try:
            face = detector.detect(read_image(p))[0]
        except NoFaceError:
            continue
        found += 1
        assert np.isfinite(face.landmarks478).all()
    assert found >= 8


def test_no_face_raises_with_source(detector: FaceDetector, tmp_path: Path):
    flat = np.full((240, 320, 3), (120, 90, 60), np.uint8)
    with pytest.raises(NoFaceError, match="flat.png"):
        detector.detect(flat, source="flat.png")
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path)
    with pytest.raises(NoFaceError, match="noise.png"):
        detector.detect(read_image(path))


def test_exif_rotated_photo_lands_on_the_face(detector: FaceDetector, upright, tmp_path: Path):
    """A photo stored rotated with an EXIF orientation tag gives the upright photo's landmarks."""
    img, face = upright
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated 90 degrees counter-clockwise; viewers rotate it clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(img, 1))).save(path, quality=97, exif=exif)
    rotated = detector.detect(read_image(path))[0]
    err = np.linalg.norm(rotated.landmarks68 - face.landmarks68, axis=1)
    assert err.mean() < 2.0, err.mean()


def test_mirrored_photo_maps_consistently(detector: FaceDetector, upright):
    """Landmarks follow the pixels: mirror the photo, and the landmarks mirror with it (x -> W - x
    with pixel centres at +0.5) while each iBUG point swaps with its left/right partner."""
    img, face = upright
    w = img.shape[1]
    lm = detector.detect(np.ascontiguousarray(img[:, ::-1]))[0].landmarks68
    back = np.stack([w - lm[:, 0], lm[:, 1]], axis=1)[IBUG68_PAIRS]
    # MediaPipe is not exactly mirror-equivariant (measured 4 px mean on this 290 px face); a
    # wrong mirror pairing or coordinate flip is off by tens of pixels.
    assert np.linalg.norm(back - face.landmarks68, axis=1).mean() < 6.0


def test_two_faces_ordered_by_size(faces_dir: Path, detector: FaceDetector):
    import cv2

    big = load_image(faces_dir / LFW)  # 350 x 350
    small = cv2.resize(load_image(faces_dir / "lfw-expressions" / "Abdullah_Gul_0005.jpg"), (220, 220),
                       interpolation=cv2.INTER_AREA)
    canvas = np.full((350, 350 + 220 + 60, 3), 40, np.uint8)
    canvas[:, 220 + 60:] = big
    canvas[60:280, :220] = small
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[0] > 260 and faces[1].box[2] < 260 + 40  # big one on the right
    for f in faces:
        _check_face_geometry(f, canvas.shape)


def test_reduced_decoding_reports_original_pixels(tmp_path: Path, detector: FaceDetector, upright):
    """A 4x upscaled photo decoded at reduced size gives landmarks in the large photo's pixels."""
    import cv2

    img, face = upright
    large = cv2.resize(img, (1400, 1400), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "large.jpg"
    Image.fromarray(large).save(path, quality=95)
    loaded = read_image(path, max_side=350)
    assert loaded.pixels.shape == (350, 350, 3)
    got = detector.detect(loaded)[0].landmarks68
    err = np.linalg.norm(got - face.landmarks68 * 4.0, axis=1).mean()
    assert err < 6.0, err  # 1.5 px at the decoded size


def test_large_array_is_limited_and_mapped_back(upright):
    import cv2

    img, face = upright
    big = cv2.resize(img, (700, 700), interpolation=cv2.INTER_CUBIC)
    small_limit = FaceDetector(max_side=350)
    got = small_limit.detect(big)[0].landmarks68
    assert np.linalg.norm(got - face.landmarks68 * 2.0, axis=1).mean() < 3.0


def test_detector_pickles_without_graphs(upright):
    img, face = upright
    d = FaceDetector(max_faces=2)
    d.detect(img)
    clone = pickle.loads(pickle.dumps(d))
    assert clone.max_faces == 2
    np.testing.assert_allclose(clone.detect(img)[0].landmarks478, face.landmarks478, atol=1e-3)


def test_ibug68_on_aflw2000_3d(shared: Path, detector: FaceDetector):
    """68-point NME against AFLW2000-3D ground truth on near-frontal images: every region
    within bounds, so a swapped, shifted or mis-ordered table entry fails."""
    import scipy.io as sio

    root = shared / "data" / "aflw2000-3d" / "dev"
    errors = []
    for path in sorted(root.glob("*.jpg"))[:60]:
        mat = sio.loadmat(path.with_suffix(".mat"))
        if abs(np.degrees(mat["Pose_Para"][0, 1])) > 30:
            continue
        gt = mat["pt3d_68"][:2].T
        try:
            faces = detector.detect(read_image(path))
        except NoFaceError:
            continue
        lm = min(faces, key=lambda f: np.linalg.norm(f.landmarks68.mean(0) - gt.mean(0))).landmarks68
        norm = np.sqrt(np.prod(gt.max(0) - gt.min(0)))
        errors.append(np.linalg.norm(lm - gt, axis=1) / norm)
    errors = np.array(errors)
    assert len(errors) >= 20
    assert errors.mean() < 0.045, errors.mean()
    for name, sl in IBUG68_REGIONS.items():
        assert errors[:, sl].mean() < 0.07, (name, errors[:, sl].mean())
    # per point: no entry is far off (a wrong index is typically > 10 %)
    assert errors.mean(0).max() < 0.09


def test_ibug68_table_is_left_right_symmetric():
    m = mirror_indices()
    t = IBUG68_FROM_MEDIAPIPE
    np.testing.assert_array_equal(m[t], t[IBUG68_PAIRS])


def test_mesh_triangles_topology():
    t = mesh_triangles()
    assert t.shape == (852, 3) and t.min() == 0 and t.max() == 467
    assert len(np.unique(t)) == 468
    edges = {}
    for a, b, c in t:
        for e in ((a, b), (b, c), (c, a)):
            edges[e] = edges.get(e, 0) + 1
    assert max(edges.values()) == 1  # consistent winding: no directed edge twice
    undirected = {tuple(sorted(e)) for e in edges}
    assert 468 - len(undirected) + len(t) == -2  # a disk with 3 holes (eyes, mouth)
    boundary = [e for e in edges if (e[1], e[0]) not in edges]
    # the boundary edges form 4 loops: face oval, two eyes, mouth
    from facenet3d.landmarks.topology import edge_loops

    loops = edge_loops(boundary)
    assert sorted(len(x) for x in loops) == [16, 16, 20, 36]
    oval = set(region_polygons()["face_oval"])
    assert any(set(x) == oval for x in loops)


def test_region_polygons_are_mirror_images():
    m = mirror_indices()
    polys = region_polygons()
    for right, left in (("right_eye", "left_eye"), ("right_brow", "left_brow"),
                        ("right_nostril", "left_nostril")):
        assert set(m[list(polys[right])]) == set(polys[left])
    assert set(m[list(polys["face_oval"])]) == set(polys["face_oval"])
    assert set(m[list(polys["mouth_interior"])]) == set(polys["mouth_interior"])


def test_mean_face_frame_and_symmetry():
    v = mean_face()
    m = mirror_indices()
    assert v.shape == (478, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(m[m], np.arange(478))
    np.testing.assert_allclose(v[m] * [-1, 1, 1], v, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(v[473] - v[468]), 63.0, rtol=1e-5)  # iris centres
    assert v[468, 0] < 0 < v[473, 0]  # subject's right at -x
    assert v[10, 1] > v[4, 1] > v[152, 1]  # forehead above nose tip above chin (+y up)
    assert v[4, 2] > v[234, 2] + 50  # nose tip well in front of the cheek edges (+z out), mm
    assert 120 < v[454, 0] - v[234, 0] < 160  # face width, mm


def test_canonical_mesh():
    mesh = mediapipe_canonical_mesh()
    v, uv, t = mesh.vertices, mesh.uvs, mesh.triangles
    assert v.shape == (468, 3) and uv.shape == (468, 2) and t.shape == (852, 3)
    assert uv.min() >= 0 and uv.max() <= 1
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    assert (n[:, 2] > 0).mean() > 0.97  # counter-clockwise from the front (+z)
    e1, e2 = uv[t[:, 1]] - uv[t[:, 0]], uv[t[:, 2]] - uv[t[:, 0]]
    assert (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0).all()  # no folded UV triangle
