"""Pinhole camera transforms and rotation parameterisations."""

from __future__ import annotations

import math

import pytest
import torch

from facenet3d.errors import RenderError
from facenet3d.render import (
    PinholeCamera,
    apply_pose,
    euler_to_matrix,
    euler_to_rotation_6d,
    matrix_to_euler,
    matrix_to_rotation_6d,
    rasterize,
    rotation_6d_to_matrix,
)


def test_projection_follows_the_documented_pinhole_formula():
    cam = PinholeCamera.create(focal=torch.tensor([800.0, 900.0]), image_size=(200, 300),
                               principal=torch.tensor([140.0, 110.0]), near=5.0, far=5000.0)
    points = torch.tensor([[[10.0, -20.0, -400.0], [-3.0, 7.0, -50.0], [0.0, 0.0, -4000.0]]], dtype=torch.float64)
    cam = cam.to(torch.float64)
    x, y, z = points[0].unbind(-1)
    expected = torch.stack([140 + 800 * x / -z, 110 - 900 * y / -z], -1)
    torch.testing.assert_close(cam.camera_to_pixel(points)[0], expected)
    clip = cam.camera_to_clip(points)
    torch.testing.assert_close(clip[..., 3], -points[..., 2])  # w is the depth
    torch.testing.assert_close(cam.ndc_depth_to_depth(clip[..., 2] / clip[..., 3]), -points[..., 2])
    near_far = cam.camera_to_clip(torch.tensor([[[0.0, 0, -5.0], [0, 0, -5000.0]]], dtype=torch.float64))
    torch.testing.assert_close(near_far[0, :, 2] / near_far[0, :, 3], torch.tensor([-1.0, 1.0], dtype=torch.float64))
    # Back-projection inverts projection.
    torch.testing.assert_close(cam.pixel_to_camera(cam.camera_to_pixel(points), -points[..., 2]), points)


def test_rendered_images_have_row_zero_at_the_top():
    """A small triangle above and right of the optical axis lands up and right in the image, at
    the pixel the projection formula gives."""
    cam = PinholeCamera.create(focal=500.0, image_size=(64, 96))
    centre = torch.tensor([20.0, 30.0, -1000.0])  # up (+y) and right (+x) of the axis
    tri_vertices = centre + torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    rast = rasterize(cam.camera_to_clip(tri_vertices[None]), torch.tensor([[0, 1, 2]]), cam.image_size)
    rows, cols = torch.nonzero(rast[0, ..., 3] > 0, as_tuple=True)
    u = 48 + 500 * 20 / 1000
    v = 32 - 500 * 30 / 1000
    assert rows.float().mean().item() + 0.5 == pytest.approx(v, abs=0.6)
    assert cols.float().mean().item() + 0.5 == pytest.approx(u, abs=0.6)
    assert v < 32 and u > 48


def test_fov_principal_point_and_rays():
    cam = PinholeCamera.from_fov(90.0, (100, 200))
    assert cam.focal[0, 0].item() == pytest.approx(100.0)  # (W / 2) / tan(45 deg)
    torch.testing.assert_close(cam.principal[0], torch.tensor([100.0, 50.0]))
    rays = cam.pixel_rays()
    assert rays.shape == (1, 100, 200, 3)
    torch.testing.assert_close(rays.norm(dim=-1), torch.ones(1, 100, 200))
    # The ray through the last pixel's centre projects back onto that centre.
    last = cam.camera_to_pixel(rays[:, -1:, -1] * 300)
    torch.testing.assert_close(last[0, 0], torch.tensor([199.5, 99.5]), atol=1e-3, rtol=0)
    with pytest.raises(RenderError, match="near"):
        PinholeCamera.create(100.0, (10, 10), near=0.0)
    with pytest.raises(RenderError, match="focal"):
        PinholeCamera.create(torch.ones(2, 3), (10, 10))


def test_extrinsics_round_trip_and_focal_gradient():
    rotation = euler_to_matrix(torch.tensor([[20.0, -10.0, 5.0]]))
    cam = PinholeCamera.create(600.0, (50, 50), rotation=rotation, translation=torch.tensor([[5.0, 0.0, -300.0]]))
    points = torch.randn(1, 10, 3) * 30
    torch.testing.assert_close(cam.camera_to_world(cam.world_to_camera(points)), points, atol=1e-4, rtol=0)
    torch.testing.assert_close(cam.world_to_pixel(points), cam.camera_to_pixel(cam.world_to_camera(points)))
    focal = torch.tensor([[600.0, 600.0]], requires_grad=True)
    cam = PinholeCamera.create(focal, (50, 50))
    uv = cam.camera_to_pixel(torch.tensor([[[10.0, 20.0, -500.0]]]))
    grad, = torch.autograd.grad(uv.sum(), focal)
    torch.testing.assert_close(grad, torch.tensor([[10.0 / 500.0, -20.0 / 500.0]]))


def test_euler_axis_conventions():
    nose, up, right = torch.eye(3)[2], torch.eye(3)[1], torch.eye(3)[0]

    def turn(yaw: float, pitch: float, roll: float, v: torch.Tensor) -> torch.Tensor:
        return euler_to_matrix(torch.tensor([yaw, pitch, roll])) @ v

    torch.testing.assert_close(turn(90, 0, 0, nose), right, atol=1e-6, rtol=0)  # yaw about +y
    torch.testing.assert_close(turn(0, 90, 0, nose), -up, atol=1e-6, rtol=0)  # pitch about +x: looks down
    torch.testing.assert_close(turn(0, 0, 90, right), up, atol=1e-6, rtol=0)  # roll about +z
    # Order: R = R_y(yaw) R_x(pitch) R_z(roll).
    combined = euler_to_matrix(torch.tensor([30.0, 40.0, 50.0]))
    parts = [euler_to_matrix(torch.tensor(a)) for a in ([30.0, 0, 0], [0, 40.0, 0], [0, 0, 50.0])]
    torch.testing.assert_close(combined, parts[0] @ parts[1] @ parts[2])


def test_euler_round_trip_and_gimbal_lock():
    angles = torch.tensor([[30.0, -20.0, 10.0], [170.0, 80.0, -120.0], [-45.0, 0.0, 179.0]], dtype=torch.float64)
    torch.testing.assert_close(matrix_to_euler(euler_to_matrix(angles)), angles)
    locked = euler_to_matrix(torch.tensor([[25.0, 90.0, 15.0]], dtype=torch.float64))
    back = matrix_to_euler(locked)
    assert back[0, 1].item() == pytest.approx(90.0)
    torch.testing.assert_close(euler_to_matrix(back), locked)  # same rotation, yaw and roll merged


def test_rotation_6d():
    angles = torch.tensor([[30.0, -20.0, 10.0], [170.0, 80.0, -120.0]], dtype=torch.float64)
    matrices = euler_to_matrix(angles)
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(matrices)), matrices)
    torch.testing.assert_close(euler_to_rotation_6d(angles), matrices[..., :2].transpose(-1, -2).reshape(2, 6))
    # Any 6 numbers give a proper rotation; the map is differentiable.
    raw = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    r = rotation_6d_to_matrix(raw)
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(5, dtype=torch.float64))
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (raw,))


def test_apply_pose():
    vertices = torch.randn(2, 7, 3)
    rotation = euler_to_matrix(torch.tensor([[10.0, 20.0, 30.0], [0.0, 0.0, 0.0]]))
    translation = torch.tensor([[1.0, 2.0, -500.0], [0.0, 0.0, -300.0]])
    posed = apply_pose(vertices, rotation, translation)
    expected = torch.einsum("bij,bvj->bvi", rotation, vertices) + translation[:, None]
    torch.testing.assert_close(posed, expected)
    torch.testing.assert_close(apply_pose(vertices, torch.eye(3), torch.zeros(3)), vertices)
    assert math.isclose(posed[1, :, 2].mean().item(), -300 + vertices[1, :, 2].mean().item(), abs_tol=1e-4)
