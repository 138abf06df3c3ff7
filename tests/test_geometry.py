"""facenet3d.geometry: vertex and face normals against finite differences and a plain reference."""

from __future__ import annotations

import pytest
import torch

from facenet3d.geometry import face_normals, vertex_normals


def reference_vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """The definition written plainly: cross products summed onto the corners, then normalised."""
    v0, v1, v2 = (vertices[:, triangles[:, k]] for k in range(3))
    n = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)  # length 2 * area: the area weighting
    acc = torch.zeros_like(vertices)
    for k in range(3):
        acc = acc.index_add(1, triangles[:, k], n)
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def grid_mesh(n: int = 90, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, n * n, 3)`` mm: a face-sized bumpy cap (8,100 vertices, 15,842 triangles at n = 90)."""
    s, t = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    depth = torch.sqrt((1.6 - s * s - t * t).clamp_min(0.0)) * 70.0
    vertices = torch.stack([s * 90.0, -t * 110.0, depth], -1).reshape(1, -1, 3)
    vertices = vertices + 0.3 * torch.randn(vertices.shape, generator=torch.Generator().manual_seed(seed))
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    triangles = torch.cat([torch.stack([a, a + 1, a + n], 1), torch.stack([a + 1, a + n + 1, a + n], 1)])
    return vertices, triangles


def random_mesh(batch: int, num_vertices: int, num_triangles: int, seed: int = 0):
    """Random float64 vertices and triangles with three distinct corners that never use the last
    vertex."""
    gen = torch.Generator().manual_seed(seed)
    vertices = torch.randn(batch, num_vertices, 3, generator=gen, dtype=torch.float64)
    triangles = torch.stack([torch.randperm(num_vertices - 1, generator=gen)[:3] for _ in range(num_triangles)])
    return vertices, triangles


def test_docstring_example():
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    assert torch.equal(vertex_normals(v, torch.tensor([[0, 1, 2]]))[0, 0], torch.tensor([0.0, 0, 1]))


def test_vertex_normals_gradcheck_batch_with_unused_vertex():
    vertices, triangles = random_mesh(batch=2, num_vertices=30, num_triangles=40)
    vertices.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: vertex_normals(v, triangles), (vertices,))
    # The unused vertex gets no gradient, and batch items do not leak into each other.
    (grad,) = torch.autograd.grad(vertex_normals(vertices, triangles)[0].sum(), vertices)
    assert torch.equal(grad[:, -1], torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(grad[1], torch.zeros(30, 3, dtype=torch.float64))


@pytest.mark.parametrize("normalize", [True, False])
def test_face_normals_gradcheck(normalize: bool):
    vertices, triangles = random_mesh(batch=2, num_vertices=20, num_triangles=25, seed=1)
    vertices.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: face_normals(v, triangles, normalize), (vertices,))


def test_face_normals_match_cross_products():
    vertices, triangles = random_mesh(batch=3, num_vertices=40, num_triangles=60, seed=2)
    v0, v1, v2 = (vertices[:, triangles[:, k]] for k in range(3))
    n = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    torch.testing.assert_close(face_normals(vertices, triangles, normalize=False), n)
    torch.testing.assert_close(face_normals(vertices, triangles), n / n.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("batch", [1, 3])
def test_vertex_normals_match_reference_on_face_sized_mesh(batch: int):
    vertices, triangles = grid_mesh()
    vertices = vertices + torch.randn(batch, 1, 3, generator=torch.Generator().manual_seed(batch)) * 50.0
    ours = vertex_normals(vertices, triangles)
    assert ours.dtype == torch.float32 and ours.shape == vertices.shape and ours.is_contiguous()
    torch.testing.assert_close(ours, reference_vertex_normals(vertices, triangles), rtol=0, atol=1e-6)

    # The hand-written backward against autograd through the reference (float64, so the
    # comparison is not limited by float32 rounding), for a random upstream gradient.
    leaf = vertices.double().requires_grad_()
    upstream = torch.randn(vertices.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (ours_grad,) = torch.autograd.grad(vertex_normals(leaf, triangles), leaf, upstream)
    (ref_grad,) = torch.autograd.grad(reference_vertex_normals(leaf, triangles), leaf, upstream)
    assert ours_grad.is_contiguous()
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_unused_and_degenerate_vertices_get_zero_normals():
    # Vertex 3 is in no triangle; vertices 4 and 5 only in a triangle with a repeated corner
    # (zero area), whose cross product must be exactly zero, not a rounding residue.
    vertices = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5], [0.1, 0.7, 0.3], [2.3, 0.9, 1.7]]])
    triangles = torch.tensor([[0, 1, 2], [4, 5, 5]], dtype=torch.int32)
    out = vertex_normals(vertices.requires_grad_(), triangles)
    assert torch.equal(out[0, 3:], torch.zeros(3, 3))
    torch.testing.assert_close(out[0, :3], torch.tensor([[0.0, 0, 1]] * 3))
    (grad,) = torch.autograd.grad(out.sum(), vertices)
    assert torch.isfinite(grad).all() and torch.equal(grad[0, 3], torch.zeros(3))


def test_strided_input_and_gradient():
    vertices, triangles = random_mesh(batch=2, num_vertices=25, num_triangles=30, seed=3)
    strided = vertices.transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    assert not strided.is_contiguous()
    out = vertex_normals(strided, triangles)
    torch.testing.assert_close(out, reference_vertex_normals(vertices, triangles))
    upstream = torch.randn(25, 3, 2, dtype=torch.float64).permute(2, 0, 1)  # a non-contiguous gradient
    (grad,) = torch.autograd.grad(out, strided, upstream)
    leaf = vertices.clone().requires_grad_()
    (ref,) = torch.autograd.grad(reference_vertex_normals(leaf, triangles), leaf, upstream)
    torch.testing.assert_close(grad, ref)


def test_tiny_triangles_follow_the_eps_clamp():
    # |n| = 1e-8 (above eps = 1e-12): unit normals. |n| = 1e-14 (below): n / eps, whose gradient
    # has no radial projection. Both against autograd through the plain reference.
    corner = torch.tensor([[0.0, 0, 0], [1, 0.2, 0.1], [0.3, 1, -0.2]], dtype=torch.float64)
    vertices = torch.cat([corner * 1e-4, corner * 1e-7 + 1.0])[None].requires_grad_()
    triangles = torch.tensor([[0, 1, 2], [3, 4, 5]])
    ours, ref = vertex_normals(vertices, triangles), reference_vertex_normals(vertices, triangles)
    torch.testing.assert_close(ours.norm(dim=-1)[0, :3], torch.ones(3, dtype=torch.float64))
    assert (ours.norm(dim=-1)[0, 3:] < 0.1).all()
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    upstream = torch.randn(vertices.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (ours_grad,) = torch.autograd.grad(ours, vertices, upstream)
    (ref_grad,) = torch.autograd.grad(ref, vertices, upstream)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-9, atol=0)
