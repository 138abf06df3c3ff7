"""Rasterisation primitives against an independent brute-force reference and finite differences.

The reference (``reference_raster``) is written plainly in numpy: for every triangle, every pixel
centre, a point-in-triangle test with float64 edge functions and a depth test. The same checks
run on the nvdiffrast backend where it is installed with CUDA (they skip otherwise).
"""

from __future__ import annotations

import collections
import importlib

import numpy as np
import pytest
import torch

from facenet3d.errors import RenderError
from facenet3d.render import (
    antialias,
    antialias_topology,
    current_backend,
    interpolate,
    nvdiffrast_available,
    rasterize,
    texture,
    use_backend,
)

raster_module = importlib.import_module("facenet3d.render.rasterize")
interpolate_module = importlib.import_module("facenet3d.render.interpolate")

BACKENDS = ["torch"] + (["nvdiffrast"] if nvdiffrast_available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def device_for(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "nvdiffrast" else "cpu")


# ---------------------------------------------------------------------------- the reference
def reference_raster(pos: np.ndarray, tri: np.ndarray, h: int, w: int, margin: float = 1e-3):
    """Brute force: nearest covering triangle per pixel centre.

    Args:
        pos: ``(V, 4)`` clip-space positions, float64.
        tri: ``(F, 3)``.
        margin: pixels closer than this (in pixels) to an edge of a triangle they are tested
            against, or with two candidates closer than 1e-7 in depth, are flagged ambiguous.

    Returns:
        ``ids (H, W)`` (-1: none), ``uvz (H, W, 3)`` perspective-correct ``u, v`` and ``z/w`` of
        the winner, ``ambiguous (H, W)`` bool.
    """
    px, py = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # pixel centres in pixels
    best_z = np.full((h, w), np.inf)
    ids = np.full((h, w), -1)
    uvz = np.zeros((h, w, 3))
    ambiguous = np.zeros((h, w), bool)
    for f, corners in enumerate(tri):
        p = pos[corners]
        if np.any(p[:, 3] <= 0):
            continue  # at or behind the camera plane: culled
        sx = (p[:, 0] / p[:, 3] + 1) * w / 2
        sy = (p[:, 1] / p[:, 3] + 1) * h / 2
        sz = p[:, 2] / p[:, 3]
        area = (sx[1] - sx[0]) * (sy[2] - sy[0]) - (sx[2] - sx[0]) * (sy[1] - sy[0])
        if area == 0:
            continue
        lam = []
        dist = []
        for i in range(3):
            j, k = (i + 1) % 3, (i + 2) % 3
            edge = (sx[k] - sx[j]) * (py - sy[j]) - (sy[k] - sy[j]) * (px - sx[j])
            lam.append(edge / area)
            dist.append(edge * np.sign(area) / np.hypot(sx[k] - sx[j], sy[k] - sy[j]))
        dist = np.stack(dist)
        z = lam[0] * sz[0] + lam[1] * sz[1] + lam[2] * sz[2]
        inside = (dist >= 0).all(0) & (z >= -1) & (z <= 1)
        near_edge = (dist > -margin).all(0) & (np.abs(dist) < margin).any(0)
        ambiguous |= near_edge
        ambiguous |= inside & (np.abs(z - best_z) < 1e-7)
        win = inside & (z < best_z)
        best_z = np.where(win, z, best_z)
        ids = np.where(win, f, ids)
        persp = np.stack([lam[i] / p[i, 3] for i in range(3)])
        persp = persp / persp.sum(0)
        uvz = np.where(win[..., None], np.stack([persp[0], persp[1], z], -1), uvz)
    return ids, uvz, ambiguous


def random_scene(seed: int, num_vertices: int = 40, num_triangles: int = 60, spread: float = 1.2,
                 behind: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clip-space triangles: NDC in [-spread, spread], w in [0.5, 3], z/w in [-1.2, 1.2]."""
    g = torch.Generator().manual_seed(seed)
    ndc = (torch.rand(num_vertices, 3, generator=g, dtype=torch.float64) * 2 - 1) * torch.tensor(
        [spread, spread, 1.2], dtype=torch.float64)
    w = torch.rand(num_vertices, 1, generator=g, dtype=torch.float64) * 2.5 + 0.5
    if behind:
        w[:behind] = -w[:behind]
    pos = torch.cat([ndc * w, w], 1)
    tri = torch.stack([torch.randperm(num_vertices, generator=g)[:3] for _ in range(num_triangles)])
    return pos, tri


# ---------------------------------------------------------------------------- rasterize
@pytest.mark.parametrize("seed,size,spread", [(0, (37, 53), 1.2), (1, (64, 48), 1.2), (2, (40, 40), 0.3),
                                              (3, (31, 29), 3.0)])
def test_rasterize_matches_brute_force(backend, seed, size, spread):
    h, w = size
    scenes = [random_scene(seed * 10 + k, spread=spread, behind=3) for k in range(2)]
    # One topology, two different position sets: a batch of two images.
    tri = scenes[0][1]
    pos = torch.stack([scenes[0][0], scenes[1][0]])
    dev = device_for(backend)
    rast = rasterize(pos.float().to(dev), tri.to(dev), (h, w), backend=backend).cpu().double()
    checked = 0
    for b in range(2):
        ids, uvz, ambiguous = reference_raster(pos[b].numpy(), tri.numpy(), h, w)
        got = rast[b, ..., 3].numpy().round().astype(int) - 1
        clear = ~ambiguous
        assert clear.mean() > 0.85
        np.testing.assert_array_equal(got[clear], ids[clear])
        covered = clear & (ids >= 0)
        np.testing.assert_allclose(rast[b, ..., :3].numpy()[covered], uvz[covered], atol=2e-4)
        np.testing.assert_array_equal(rast[b].numpy()[clear & (ids < 0)], 0.0)
        checked += covered.sum()
    assert checked > 200  # the scenes really cover something


def test_rasterize_large_triangles_and_chunking(monkeypatch):
    """Few big triangles (large stencil classes) give the same result when candidates are chunked."""
    pos, tri = random_scene(7, num_vertices=12, num_triangles=10, spread=3.0)
    expected = rasterize(pos[None].float(), tri, (70, 90))
    monkeypatch.setattr(raster_module, "_MAX_CANDIDATES", 64)
    chunked = rasterize(pos[None].float(), tri, (70, 90))
    torch.testing.assert_close(chunked, expected)
    ids, _, ambiguous = reference_raster(pos.numpy(), tri.numpy(), 70, 90)
    got = expected[0, ..., 3].long().numpy() - 1
    np.testing.assert_array_equal(got[~ambiguous], ids[~ambiguous])


def test_depth_ordering_and_ties(backend):
    dev = device_for(backend)
    # Two triangles covering the same pixels: the nearer one wins whatever the order.
    quad = torch.tensor([[-0.8, -0.8], [0.8, -0.8], [0.0, 0.8]])

    def scene(z0: float, z1: float) -> torch.Tensor:
        ones = torch.ones(3, 1)
        a = torch.cat([quad, torch.full((3, 1), z0), ones], 1)
        b = torch.cat([quad * 0.9, torch.full((3, 1), z1), ones], 1)
        return torch.cat([a, b])[None].to(dev)

    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], device=dev)
    assert rasterize(scene(0.5, -0.2), tri, (32, 32), backend=backend)[0, 16, 16, 3] == 2
    assert rasterize(scene(-0.5, 0.2), tri, (32, 32), backend=backend)[0, 16, 16, 3] == 1
    rast = rasterize(scene(0.3, -0.1), tri, (32, 32), backend=backend)
    assert rast[0, 16, 16, 2].item() == pytest.approx(-0.1, abs=1e-6)
    if backend == "torch":  # equal depth: the lower index (nvdiffrast leaves ties to the hardware order)
        assert rasterize(scene(0.1, 0.1), tri, (32, 32))[0, 16, 16, 3] == 1


def test_perspective_correct_barycentrics_doc_example():
    # Vertex 1 at w = 2: the screen midpoint is not the clip-space midpoint.
    pos = torch.tensor([[[-1.0, -1, 0, 1], [3, -1, 0.5, 2], [-1, 3, 0, 1]]])
    rast = rasterize(pos, torch.tensor([[0, 1, 2]]), (2, 2))
    # Pixel (0, 0) sits at NDC (-0.5, -0.5); the NDC corners are (-1, -1), (1.5, -0.5), (-1, 3), so
    # the screen barycentrics are (0.7, 0.2, 0.1); divided by w and renormalised: (0.7, 0.1, 0.1) / 0.9.
    # z/w is affine on screen: 0.2 * 0.25.
    torch.testing.assert_close(rast[0, 0, 0], torch.tensor([0.7 / 0.9, 0.1 / 0.9, 0.05, 1.0]))


def test_clipping_culling_and_degenerate_give_no_nan(backend):
    dev = device_for(backend)
    pos = torch.tensor([[
        [-0.5, -0.5, 0.0, 1.0], [0.5, -0.5, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0],  # 0: ordinary
        [-0.5, -0.5, 0.0, -1.0], [0.5, -0.5, 0.0, -1.0], [0.0, 0.5, 0.0, -1.0],  # 1: behind the camera
        [-0.9, 0.6, 0.0, 1.0], [0.9, 0.6, 0.0, 1.0], [0.0, 0.9, 0.0, 0.0],  # 2: one vertex at w = 0
        [0.2, 0.2, 0.0, 1.0], [0.2, 0.2, 0.0, 1.0], [0.6, 0.7, 0.0, 1.0],  # 3: two equal vertices
        [-1.0, -1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0],  # 4: collinear
        [-0.9, -0.9, -3.0, 1.0], [0.9, -0.9, -3.0, 1.0], [0.0, -0.7, 2.0, 1.0],  # 5: crosses near and far
    ]], device=dev, requires_grad=True)
    tri = torch.arange(18, device=dev).view(6, 3)
    rast = rasterize(pos, tri, (48, 48), backend=backend)
    ids = set(rast[..., 3].long().unique().tolist()) - {0}
    assert 1 in ids and not ids & {2, 3, 4, 5}  # culled or degenerate
    assert 6 in ids  # clipped per pixel, not dropped
    z_of_6 = rast[..., 2][rast[..., 3] == 6]
    assert z_of_6.min() >= -1 and z_of_6.max() <= 1
    attr = torch.rand(18, 3, device=dev, requires_grad=True)
    out = interpolate(attr, rast, tri, backend=backend)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(pos.grad).all() and torch.isfinite(attr.grad).all()
    assert pos.grad[0, 3:15].abs().sum() == 0  # culled and degenerate triangles get no gradient


def test_empty_inputs(backend):
    dev = device_for(backend)
    pos = torch.tensor([[[5.0, 5.0, 0.0, 1.0], [6.0, 5.0, 0.0, 1.0], [5.0, 6.0, 0.0, 1.0]]], device=dev,
                       requires_grad=True)
    tri = torch.tensor([[0, 1, 2]], device=dev)
    rast = rasterize(pos, tri, (16, 16), backend=backend)  # entirely off-screen
    assert rast.abs().sum() == 0
    interpolate(pos[..., :3], rast, tri, backend=backend).sum().backward()
    assert torch.isfinite(pos.grad).all() and pos.grad.abs().sum() == 0
    if backend == "torch":
        no_tri = rasterize(pos, torch.zeros(0, 3, dtype=torch.long), (8, 8))
        assert no_tri.shape == (1, 8, 8, 4) and no_tri.abs().sum() == 0
        assert interpolate(torch.rand(3, 2), no_tri, torch.zeros(0, 3, dtype=torch.long)).abs().sum() == 0


def test_rasterize_rejects_bad_input():
    pos = torch.zeros(1, 3, 4)
    with pytest.raises(RenderError, match="pos must be"):
        rasterize(torch.zeros(3, 4), torch.tensor([[0, 1, 2]]), (4, 4))
    with pytest.raises(RenderError, match="tri must be"):
        rasterize(pos, torch.tensor([[0.0, 1, 2]]), (4, 4))
    with pytest.raises(RenderError, match="outside"):
        rasterize(pos, torch.tensor([[0, 1, 3]]), (4, 4))
    with pytest.raises(RenderError, match="resolution"):
        rasterize(pos, torch.tensor([[0, 1, 2]]), (0, 4))


# ---------------------------------------------------------------------------- gradients
def _smooth_scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    pos, tri = random_scene(seed, num_vertices=30, num_triangles=40, spread=0.9)
    return pos[None].clone().requires_grad_(), tri


def test_rasterize_barycentrics_gradcheck():
    pos, tri = _smooth_scene()
    assert torch.autograd.gradcheck(lambda p: rasterize(p, tri, (13, 17))[..., :2], (pos,))


def test_interpolate_gradcheck():
    pos, tri = _smooth_scene(1)
    per_vertex = torch.rand(1, 30, 5, dtype=torch.float64, requires_grad=True)
    shared = torch.rand(30, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, a: interpolate(a, rasterize(p, tri, (13, 17)), tri), (pos, per_vertex))
    assert torch.autograd.gradcheck(lambda p, a: interpolate(a, rasterize(p, tri, (11, 9)), tri), (pos, shared))


def test_interpolate_values_and_other_topology():
    """Interpolating the vertex positions gives back the surface point; a second index buffer
    (like UV triangles) is honoured."""
    pos, tri = random_scene(4, spread=0.9)
    rast = rasterize(pos[None], tri, (30, 30))
    covered = rast[0, ..., 3] > 0
    point = interpolate(pos[None], rast, tri)[0][covered]  # clip-space point on the triangle
    ndc = point[:, :2] / point[:, 3:]
    j, i = torch.meshgrid(torch.arange(30.0, dtype=torch.float64), torch.arange(30.0, dtype=torch.float64),
                          indexing="xy")
    centres = torch.stack([(j + 0.5) / 15 - 1, (i + 0.5) / 15 - 1], -1)[covered]
    torch.testing.assert_close(ndc, centres, atol=1e-9, rtol=0)  # perspective-correct
    torch.testing.assert_close(point[:, 2] / point[:, 3], rast[0, ..., 2][covered], atol=1e-9, rtol=0)
    # A table whose rows are duplicated per corner, addressed with another index buffer.
    corner_table = pos[tri.reshape(-1)]
    other = torch.arange(3 * tri.shape[0]).view(-1, 3)
    torch.testing.assert_close(interpolate(corner_table, rast, other)[0], interpolate(pos, rast, tri)[0])


def test_batch_equals_single_images():
    (pos_a, tri), (pos_b, _) = random_scene(5), random_scene(6)
    batch = rasterize(torch.stack([pos_a, pos_b]).float(), tri, (25, 35))
    torch.testing.assert_close(batch[1:], rasterize(pos_b[None].float(), tri, (25, 35)))
    attr = torch.rand(2, 40, 3)
    torch.testing.assert_close(interpolate(attr, batch, tri)[:1], interpolate(attr[:1], batch[:1], tri))


# ---------------------------------------------------------------------------- texture
@pytest.mark.parametrize("mode,padding", [("clamp", "border"), ("zero", "zeros")])
def test_texture_matches_grid_sample(mode, padding):
    tex = torch.rand(2, 5, 7, 3, dtype=torch.float64)
    uv = torch.rand(2, 4, 6, 2, dtype=torch.float64) * 1.4 - 0.2
    reference = torch.nn.functional.grid_sample(tex.permute(0, 3, 1, 2), uv * 2 - 1, mode="bilinear",
                                                padding_mode=padding, align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(texture(tex, uv, boundary_mode=mode), reference)


def test_texture_conventions_and_wrap():
    tex = torch.arange(12, dtype=torch.float64).view(1, 3, 4, 1)  # value = 4 row + column
    centre = lambda i, j: torch.tensor([(j + 0.5) / 4, (i + 0.5) / 3], dtype=torch.float64)  # noqa: E731
    uv = torch.stack([centre(0, 0), centre(2, 1), centre(1, 2) + torch.tensor([1.0, -1.0])]).view(1, 1, 3, 2)
    torch.testing.assert_close(texture(tex, uv)[0, 0, :, 0], torch.tensor([0.0, 9.0, 6.0], dtype=torch.float64))
    # Halfway between columns 3 and 0 across the wrap-around seam.
    seam = torch.tensor([[[[1.0, (1 + 0.5) / 3]]]], dtype=torch.float64)
    assert texture(tex, seam).item() == pytest.approx((7 + 4) / 2)
    assert texture(tex, seam, boundary_mode="clamp").item() == pytest.approx(7.0)
    # Batch-1 textures broadcast; non-finite coordinates do not crash.
    uv = torch.full((3, 2, 2, 2), float("nan"), dtype=torch.float64)
    assert torch.isfinite(texture(tex, uv)).all()


def test_texture_gradcheck():
    tex = torch.rand(2, 5, 7, 3, dtype=torch.float64, requires_grad=True)
    uv = (torch.rand(2, 4, 6, 2, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    for mode in ("wrap", "clamp", "zero"):
        assert torch.autograd.gradcheck(lambda t, u, m=mode: texture(t, u, boundary_mode=m), (tex, uv))


def test_texture_rejects_bad_input():
    with pytest.raises(RenderError, match="boundary_mode"):
        texture(torch.rand(1, 2, 2, 1), torch.rand(1, 2, 2, 2), boundary_mode="mirror")
    with pytest.raises(RenderError, match="texture needs"):
        texture(torch.rand(2, 2, 1), torch.rand(1, 2, 2, 2))


# ---------------------------------------------------------------------------- antialias
def _rectangle(x0: float, x1: float, y0: float, y1: float, size: int = 32, dtype=torch.float64):
    """A two-triangle rectangle with edges at the given pixel coordinates."""
    def ndc(p: float) -> float:
        return p / size * 2 - 1

    pos = torch.tensor([[[ndc(x0), ndc(y0), 0, 1], [ndc(x1), ndc(y0), 0, 1], [ndc(x1), ndc(y1), 0, 1],
                         [ndc(x0), ndc(y1), 0, 1]]], dtype=dtype)
    return pos, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_antialias_is_box_filter_coverage_at_straight_edges(backend):
    dev = device_for(backend)
    pos, tri = _rectangle(10.3, 19.8, 5.0, 27.4)
    pos, tri = pos.float().to(dev), tri.to(dev)
    rast = rasterize(pos, tri, (32, 32), backend=backend)
    out = antialias((rast[..., 3:] > 0).float(), rast, pos, tri, backend=backend)[0, ..., 0].cpu()
    row = out[15]
    torch.testing.assert_close(row[9:12], torch.tensor([0.0, 0.7, 1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(row[18:21], torch.tensor([1.0, 0.8, 0.0]), atol=1e-5, rtol=0)
    column = out[:, 15]
    torch.testing.assert_close(column[26:29], torch.tensor([1.0, 0.4, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(column[4:6], torch.tensor([0.0, 1.0]), atol=1e-5, rtol=0)


def test_antialias_leaves_interior_edges_alone():
    # A 6 x 6 grid of small triangles forming one flat square, coloured smoothly.
    n = 7
    ys, xs = torch.meshgrid(torch.linspace(-0.6, 0.6, n), torch.linspace(-0.6, 0.6, n), indexing="ij")
    pos = torch.stack([xs, ys, torch.zeros_like(xs), torch.ones_like(xs)], -1).view(1, -1, 4).double()
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    tri = torch.cat([torch.stack([a, a + 1, a + n], 1), torch.stack([a + 1, a + n + 1, a + n], 1)])
    rast = rasterize(pos, tri, (40, 40))
    color = interpolate(pos[..., :3] + 2.0, rast, tri)
    out = antialias(color, rast, pos, tri)
    covered = rast[0, ..., 3] > 0
    interior = covered.clone()
    for shift in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        interior &= torch.roll(covered, shift, (0, 1))
    torch.testing.assert_close(out[0][interior], color[0][interior])
    assert (out[0][~interior] != color[0][~interior]).any()  # the silhouette is blended


def test_antialias_gradcheck_and_silhouette_gradient():
    pos, tri = _rectangle(3.3, 11.8, 2.6, 13.4, size=16)
    pos.requires_grad_()
    rast = rasterize(pos, tri, (16, 16))
    color = torch.rand(1, 16, 16, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, c: antialias(c, rast, p, tri), (pos, color), fast_mode=True)
    assert torch.autograd.gradcheck(lambda p: antialias(color.detach(), rast, p, tri), (pos,))
    pos, tri = _rectangle(10.3, 19.8, 5.6, 27.4)
    pos.requires_grad_()
    rast = rasterize(pos, tri, (32, 32))
    # Coverage sum = area in pixels; moving the left edge right by one NDC unit (16 px) loses
    # 16 px per covered row along the edge's height (27.4 - 5.6 = 21.8 rows).
    coverage = antialias((rast[..., 3:] > 0).double(), rast, pos, tri).sum()
    grad, = torch.autograd.grad(coverage, pos)
    left_x = grad[0, 0, 0] + grad[0, 3, 0]
    assert left_x.item() == pytest.approx(-16 * 21.8, rel=0.1)
    assert antialias_topology(tri).tolist() == [[0, 3, 2], [0, 2, 1]]


# ---------------------------------------------------------------------------- backends
def test_backend_selection():
    assert current_backend() == "torch"
    with use_backend("auto"):
        assert current_backend() == "auto"
        pos, tri = _rectangle(4.0, 20.0, 4.0, 20.0)
        rasterize(pos.float(), tri, (32, 32))  # CPU tensors: auto falls back to torch
    assert current_backend() == "torch"
    with pytest.raises(RenderError, match="unknown render backend"):
        with use_backend("opengl"):
            pass
    if not nvdiffrast_available():
        with pytest.raises(RenderError, match="nvdiffrast"):
            rasterize(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]), (4, 4), backend="nvdiffrast")


@pytest.mark.skipif(not nvdiffrast_available(), reason="nvdiffrast with CUDA is not available")
def test_backends_agree():
    pos, tri = random_scene(11, spread=0.9)
    pos, tri = pos[None].float().cuda().requires_grad_(), tri.cuda()
    attr = torch.rand(1, 40, 3, device="cuda", requires_grad=True)
    outputs = {}
    for name in ("torch", "nvdiffrast"):
        rast = rasterize(pos, tri, (48, 40), backend=name)
        color = interpolate(attr, rast, tri, backend=name)
        grads = torch.autograd.grad(color.square().sum(), (pos, attr))
        outputs[name] = (rast, color, grads)
    same = outputs["torch"][0][..., 3] == outputs["nvdiffrast"][0][..., 3]
    assert same.float().mean() > 0.98
    torch.testing.assert_close(outputs["torch"][1][same], outputs["nvdiffrast"][1][same], atol=1e-4, rtol=1e-4)


def test_fragments_path_matches_dense_path():
    """The compact path the renderer takes gives the same values and gradients as the public one."""
    pos, tri = _smooth_scene(2)
    attr = torch.rand(1, 30, 4, dtype=torch.float64, requires_grad=True)
    rast, fragments = raster_module.rasterize_fragments(pos, tri, (13, 17))
    compact = interpolate_module.interpolate_fragments(attr, fragments, tri)
    dense = interpolate(attr, rasterize(pos, tri, (13, 17)), tri)
    torch.testing.assert_close(compact, dense)
    torch.testing.assert_close(rast, rasterize(pos, tri, (13, 17)))

    def both(p, a):
        r, f = raster_module.rasterize_fragments(p, tri, (13, 17))
        return interpolate_module.interpolate_fragments(a, f, tri), r[..., :2]

    assert torch.autograd.gradcheck(both, (pos, attr))


# ---------------------------------------------------------------------------- fast paths
def test_compact_interpolation_and_scatter_gradcheck():
    """The renderer's path over a batch: compact interpolation of per-image and shared attributes at
    the covered pixels, scattered into images with ``Fragments.to_image``; values equal the public
    dense path, gradients (to positions through the barycentrics, and to both attributes) match
    finite differences."""
    scene = {"num_vertices": 12, "num_triangles": 12, "spread": 0.9}
    (pos_a, tri), (pos_b, _) = random_scene(8, **scene), random_scene(9, **scene)
    pos = torch.stack([pos_a, pos_b]).requires_grad_()
    per_image = torch.rand(2, 12, 2, dtype=torch.float64, requires_grad=True)
    shared = torch.rand(12, 1, dtype=torch.float64, requires_grad=True)

    def render(p, a, s):
        _, fragments = raster_module.rasterize_fragments(p, tri, (8, 9))
        values = torch.cat([interpolate_module.interpolate_fragments(a, fragments, tri, dense=False),
                            interpolate_module.interpolate_fragments(s, fragments, tri, dense=False)], 1)
        return fragments.to_image(values)

    rast = rasterize(pos, tri, (8, 9))
    assert (rast[0, ..., 3] > 0).sum() > 15 and (rast[1, ..., 3] > 0).sum() > 15
    dense = torch.cat([interpolate(per_image, rast, tri), interpolate(shared, rast, tri)], -1)
    torch.testing.assert_close(render(pos, per_image, shared), dense)
    assert torch.autograd.gradcheck(render, (pos, per_image, shared))
    assert torch.autograd.gradcheck(lambda p: rasterize(p, tri, (8, 9))[..., :2], (pos,))


def test_pixel_centres_without_the_table(monkeypatch):
    """Images too large for the cached pixel-centre table get their centres from the pixel
    indices instead: the same raster, batch included."""
    pos, tri = random_scene(12, spread=1.0)
    pos = torch.stack([pos, pos.flip(0)]).float()
    expected = rasterize(pos, tri, (23, 31))
    assert (expected[..., 3] > 0).sum() > 100
    monkeypatch.setattr(raster_module, "_CENTRE_TABLE_MAX", 0)
    torch.testing.assert_close(rasterize(pos, tri, (23, 31)), expected, rtol=0, atol=0)


def test_topology_cache_follows_in_place_edits():
    """Constants cached per triangle tensor are rebuilt when that tensor is modified in place."""
    pos, tri = random_scene(13, spread=0.9)
    pos = pos[None]
    attr = torch.rand(40, 3, dtype=torch.float64)
    before = interpolate(attr, rasterize(pos, tri, (20, 20)), tri)
    other = random_scene(14, spread=0.9)[1]
    tri.copy_(other)  # the same tensor, new contents
    rast = rasterize(pos, tri, (20, 20))
    torch.testing.assert_close(rast, rasterize(pos, other.clone(), (20, 20)))
    after = interpolate(attr, rast, tri)
    torch.testing.assert_close(after, interpolate(attr, rast, other.clone()))
    assert not torch.equal(before, after)
    tri[0, 0] = 40
    with pytest.raises(RenderError, match="outside"):
        rasterize(pos, tri, (20, 20))


def test_sparse_stencil_classes_merge_into_larger_ones():
    """A class of few triangles is tested with a larger stencil that runs anyway when that costs
    fewer extra candidates than a pass of its own (also through a chain of merges); a populous
    class, or one without a larger stencil around it, keeps its own."""
    cost = raster_module._PASS_COST
    sizes = {(2, 2): 10_000, (3, 2): cost, (2, 3): 10, (4, 4): 100, (6, 6): 5}
    assert raster_module._merge_stencils(sizes) == {(2, 2): (2, 2), (3, 2): (3, 2), (2, 3): (6, 6),
                                                    (4, 4): (6, 6), (6, 6): (6, 6)}


def test_mixed_triangle_sizes_match_brute_force(monkeypatch):
    """A fine grid (most boxes fit 2 x 2 pixels) partly hidden by large triangles of several box
    shapes: each triangle is tested in one stencil pass, the large ones in rectangular stencils."""
    n, h, w = 30, 48, 40
    s, t = torch.meshgrid(torch.linspace(-0.8, 0.8, n, dtype=torch.float64),
                          torch.linspace(-0.8, 0.8, n, dtype=torch.float64), indexing="ij")
    grid = torch.stack([s, t, 0.3 + 0.1 * s * t, torch.ones_like(s)], -1).reshape(-1, 4)
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    grid_tri = torch.cat([torch.stack([a, a + 1, a + n], 1), torch.stack([a + 1, a + n + 1, a + n], 1)])
    big = torch.tensor([[-0.9, -0.9, 0.1, 1.0], [0.9, -0.85, 0.1, 1.0], [-0.9, -0.7, 0.1, 1.0],  # wide, thin
                        [0.3, -0.9, -0.2, 2.0], [0.5, -0.9, -0.2, 2.0], [0.4, 0.8, 0.9, 2.0],  # tall, thin
                        [-0.5, 0.0, 0.5, 1.0], [0.2, 0.1, 0.5, 1.0], [-0.1, 0.6, 0.0, 1.0]],  # crosses the grid
                       dtype=torch.float64)
    pos = torch.cat([grid, big])
    tri = torch.cat([grid_tri, torch.arange(9).view(3, 3) + n * n])
    shapes = []

    def recording(buffer, limits, planes, boxes, stencil, width, clip_z):
        shapes.append((stencil, planes.shape[-1]))
        return original(buffer, limits, planes, boxes, stencil, width, clip_z)

    original = raster_module._splat
    monkeypatch.setattr(raster_module, "_splat", recording)
    rast = rasterize(pos[None].float(), tri, (h, w))
    tested = collections.Counter()
    for stencil, count in shapes:
        tested[stencil] += count
    assert sum(tested.values()) <= tri.shape[0]  # no triangle twice
    assert tested[2, 2] > 0.9 * grid_tri.shape[0]  # the grid
    assert len({stencil for stencil in tested if stencil[0] != stencil[1]}) >= 2  # rectangular classes
    ids, uvz, ambiguous = reference_raster(pos.numpy(), tri.numpy(), h, w)
    got = rast[0, ..., 3].long().numpy() - 1
    clear = ~ambiguous
    assert clear.mean() > 0.8
    assert (got[clear] >= grid_tri.shape[0]).sum() > 100 and (got[clear] >= 0).sum() > 800  # big and grid
    np.testing.assert_array_equal(got[clear], ids[clear])
    covered = clear & (ids >= 0)
    np.testing.assert_allclose(rast[0, ..., :3].double().numpy()[covered], uvz[covered], atol=2e-4)


def test_public_interpolate_reuses_the_rasters_fragments():
    """``interpolate`` on a fresh raster works on the fragments the rasteriser found (no second
    search, gradients straight to the positions): the same values and gradients as on a copy of
    the raster, whose fragments are found again from its contents; ``covered_only`` gives the
    image's covered pixels; an in-place edit of the raster is noticed."""
    pos, tri = _smooth_scene(2)
    attr = torch.rand(1, 30, 4, dtype=torch.float64, requires_grad=True)
    rast = rasterize(pos, tri, (13, 17))
    assert raster_module.fragments_of(rast) is raster_module.fragments_of(rast)
    fresh, copied = interpolate(attr, rast, tri), interpolate(attr, rast.clone(), tri)
    torch.testing.assert_close(fresh, copied)
    grads = [torch.autograd.grad(x.square().sum(), (pos, attr), retain_graph=True) for x in (fresh, copied)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    covered = interpolate(attr, rast, tri, covered_only=True)
    torch.testing.assert_close(covered, fresh.reshape(-1, 4)[rast.reshape(-1, 4)[:, 3] > 0])
    edited = rast.detach().clone()
    before = raster_module.fragments_of(edited)
    edited[0, 0, 0] = torch.tensor([0.5, 0.5, 0.0, 1.0], dtype=edited.dtype)
    assert raster_module.fragments_of(edited) is not before


def test_kept_visibility_recomputes_barycentrics_for_moved_positions():
    """A raster that keeps an earlier raster's pixels and triangles: exactly the raster of its own
    positions while visibility is unchanged, barycentrics of the new positions (not the old ones),
    and exact gradients however far the mesh has moved."""
    pos, tri = _smooth_scene(3)
    pos = torch.cat([pos, pos.detach() * 0.9]).detach().requires_grad_()  # a batch: per-image rows
    size = (13, 17)
    rast0, kept = raster_module.rasterize_fragments(pos, tri, size)
    again, frags = raster_module.rasterize_fragments(pos, tri, size, visible=kept)
    torch.testing.assert_close(again, rast0, rtol=0, atol=0)
    assert torch.equal(frags.pixels, kept.pixels) and torch.equal(frags.triangles, kept.triangles)
    g = torch.Generator().manual_seed(0)
    nudged = (pos + 1e-7 * torch.randn(pos.shape, generator=g, dtype=pos.dtype)).detach()
    fresh = rasterize(nudged, tri, size)
    assert torch.equal(fresh[..., 3], rast0[..., 3])  # the nudge changes no pixel's triangle
    assert (fresh[..., :2] - rast0[..., :2]).abs().max() > 1e-9
    torch.testing.assert_close(raster_module.rasterize_fragments(nudged, tri, size, visible=kept)[0], fresh,
                               rtol=0, atol=1e-12)
    moved = (pos + 0.03 * torch.randn(pos.shape, generator=g, dtype=pos.dtype)).detach().requires_grad_()
    assert not torch.equal(rasterize(moved, tri, size)[..., 3], rast0[..., 3])
    assert torch.autograd.gradcheck(
        lambda p: raster_module.rasterize_fragments(p, tri, size, visible=kept)[0][..., :2], (moved,))
    with pytest.raises(RenderError):
        raster_module.rasterize_fragments(pos[:1], tri, size, visible=kept)
