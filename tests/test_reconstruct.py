"""The main job end to end: ``facenet3d reconstruct`` on real photos and on bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from gltf_validation import assert_valid_gltf
from PIL import Image

from facenet3d.api import FaceReconstructor, photo_pose
from facenet3d.batch import FAILURES_FILE
from facenet3d.cli import main
from facenet3d.decode import crop_camera
from facenet3d.facemodel import load_face_model
from facenet3d.facemodel.registry import shipped_model_path
from facenet3d.render import PinholeCamera, euler_to_matrix


def test_photo_pose_projects_like_the_crop_mapped_back():
    """The photo camera from :func:`photo_pose` projects exactly where the crop camera's
    projection lands after the crop's inverse similarity."""
    rng = np.random.default_rng(0)
    size = 224
    theta, s = 0.4, 0.37
    a = np.array([[s * np.cos(theta), -s * np.sin(theta), 31.0], [s * np.sin(theta), s * np.cos(theta), -12.0]])
    rot = euler_to_matrix(torch.tensor([25.0, -10.0, 7.0])).double().numpy()
    trans = np.array([12.0, -30.0, -850.0])
    pts = rng.normal(scale=60.0, size=(50, 3))
    crop_px = crop_camera(size).camera_to_pixel(torch.as_tensor(pts @ rot.T + trans)[None].float())[0].double().numpy()
    inv = np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]
    expected = crop_px @ inv[:, :2].T + inv[:, 2]
    r2, t2, focal, principal = photo_pose(rot, trans, a, size)
    cam = PinholeCamera.create(torch.tensor(focal, dtype=torch.float64), (2000, 2000),
                               principal=torch.tensor([principal], dtype=torch.float64))
    got = cam.camera_to_pixel(torch.as_tensor(pts @ r2.T + t2)[None])[0].numpy()
    assert np.abs(got - expected).max() < 1e-3


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, faces_dir) -> Path:
    """Two real photos, a two-face photo, an unreadable file and a photo without a face."""
    folder = tmp_path_factory.mktemp("inputs")
    photos = sorted((faces_dir / "utkface").glob("*.jpg"))
    for p in photos[10:12]:
        shutil.copy(p, folder / p.name)
    a = np.array(Image.open(photos[20]).convert("RGB").resize((200, 200)))
    b = np.array(Image.open(photos[30]).convert("RGB").resize((140, 140)))
    pair = np.full((220, 380, 3), 128, np.uint8)
    pair[10:210, 0:200], pair[40:180, 220:360] = a, b
    Image.fromarray(pair).save(folder / "two_faces.png")
    (folder / "not_a_photo.jpg").write_text("this is text, not a JPEG")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "noise.png")
    return folder


@pytest.fixture(scope="module")
def cli_run(photo_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code = main(["reconstruct", str(photo_folder), "-o", str(out), "--quiet"])
    return code, out


def test_reconstruct_writes_every_output_and_reports_bad_inputs(cli_run, photo_folder):
    code, out = cli_run
    assert code == 1  # two inputs failed, the rest went on
    good = sorted(p.stem for p in photo_folder.glob("*.jpg") if p.stem != "not_a_photo")
    names = {p.name for p in out.iterdir()}
    # nothing for the bad inputs (listed in failures.json), no temporary folders
    assert names == set(good) | {"two_faces", FAILURES_FILE}
    for stem in good:
        folder = out / stem
        for f in ("mesh.obj", "mesh.mtl", "albedo.png", "mesh.glb", "params.json", "landmarks.json", "overlay.png"):
            assert (folder / f).is_file(), f
        with Image.open(folder / "overlay.png") as im, Image.open(photo_folder / f"{stem}.jpg") as src:
            assert im.size == (2 * src.size[0], src.size[1])  # textured | shaded geometry, photo-sized panels


def test_two_faces_get_one_folder_each_largest_first(cli_run):
    _, out = cli_run
    faces = sorted(p.name for p in (out / "two_faces").iterdir() if p.is_dir())
    assert faces == ["face_0", "face_1"]  # beside them the photo's run.json
    box0 = json.loads((out / "two_faces/face_0/params.json").read_text())["detection"]["box"]
    box1 = json.loads((out / "two_faces/face_1/params.json").read_text())["detection"]["box"]
    assert (box0[2] - box0[0]) > (box1[2] - box1[0])
    assert box0[0] < 200 <= box1[0]  # the big face is the left one


def test_landmarks_land_on_the_face_and_mesh_files_load(cli_run, photo_folder):
    _, out = cli_run
    for folder in sorted(p for p in out.iterdir() if (p / "landmarks.json").is_file()):
        lm = json.loads((folder / "landmarks.json").read_text())
        params = json.loads((folder / "params.json").read_text())
        model = load_face_model(shipped_model_path(params["face_model"]))  # the model used, named in params.json
        image_px, mesh_mm = np.array(lm["image_px"]), np.array(lm["mesh_mm"])
        assert image_px.shape == (68, 2) and mesh_mm.shape == (68, 3)
        x0, y0, x1, y1 = params["detection"]["box"]
        inside = (image_px[:, 0] > x0 - 10) & (image_px[:, 0] < x1 + 10) & (image_px[:, 1] > y0 - 10) & \
            (image_px[:, 1] < y1 + 10)
        assert inside.all()
        # The mesh is in the model frame: mm, face towards +z, eyes above the mouth.
        assert mesh_mm[36:48, 1].mean() > mesh_mm[48:68, 1].mean() + 30
        # Re-projecting the mesh landmarks with the saved pose and camera gives image_px.
        r, t = np.array(params["rotation_matrix"]), np.array(params["translation_mm"])
        (fx, fy), (cx, cy) = params["camera"]["focal_px"], params["camera"]["principal_px"]
        cam = mesh_mm @ r.T + t
        proj = np.stack([cx + fx * cam[:, 0] / -cam[:, 2], cy - fy * cam[:, 1] / -cam[:, 2]], -1)
        assert np.abs(proj - image_px).max() < 0.05
        # A head writes its parts (eyes, teeth, mouth socket) as groups of the same OBJ; vertices are
        # split along UV seams, triangles are the model's.
        obj = trimesh.load(folder / "mesh.obj", process=False, force="mesh")
        triangles = len(model.triangles) + sum(len(model.part(n)) for n in model.part_names)
        assert len(obj.faces) == triangles
        assert len(obj.vertices) >= model.num_vertices
        assert_valid_gltf(folder / "mesh.glb")


def test_refine_none_without_weights_is_a_clear_error(faces_dir):
    model = load_face_model("default")
    rec = FaceReconstructor(model, regressor=None)
    photo = sorted((faces_dir / "utkface").glob("*.jpg"))[0]
    with pytest.raises(ValueError, match="regressor"):
        rec.reconstruct(photo, refine="none")


def test_full_refinement_writes_uv_maps(faces_dir, tmp_path):
    photo = sorted((faces_dir / "lfw-expressions").glob("*.jpg"))[3]
    code = main(["reconstruct", str(photo), "-o", str(tmp_path), "--refine", "full", "--quiet"])
    assert code == 0
    folder = tmp_path / photo.stem
    for name in ("albedo.png", "specular.png", "roughness.png", "normal.png"):
        assert (folder / name).is_file()
    mtl = (folder / "mesh.mtl").read_text()
    assert "map_Kd albedo.png" in mtl and "normal.png" in mtl
    normal = np.asarray(Image.open(folder / "normal.png").convert("RGB"), np.float32) / 255 * 2 - 1
    assert (normal[..., 2] > 0).all()  # tangent-space normals point out of the surface
    assert_valid_gltf(folder / "mesh.glb")


def test_rerun_replaces_a_result_folder_whole(faces_dir, tmp_path):
    photo = sorted((faces_dir / "utkface").glob("*.jpg"))[5]
    folder = tmp_path / photo.stem
    folder.mkdir()
    (folder / "stale.txt").write_text("from an earlier run")
    assert main(["reconstruct", str(photo), "-o", str(tmp_path), "--quiet"]) == 0
    assert not (folder / "stale.txt").exists() and (folder / "params.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
