"""The face renderer end to end: exact values on simple scenes, UV maps, optimisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet3d.errors import RenderError
from facenet3d.facemodel.model import FaceModelArrays, MorphableModel
from facenet3d.render import (
    PinholeCamera,
    Renderer,
    apply_pose,
    euler_to_matrix,
    sh_directional,
    sh_uniform,
)

SIZE = 64


def cap_mesh(n: int = 25, radius: float = 80.0, flat: bool = False):
    """An ``n x n`` grid over a sphere cap (or a plane) facing +z around the origin, mm.

    Returns vertices ``(V, 3)``, triangles ``(F, 3)`` counter-clockwise seen from +z, and uvs
    ``(V, 2)`` in ``[0.1, 0.9]`` (v up).
    """
    s, t = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    x, y = s * radius * 0.6, -t * radius * 0.6
    z = torch.zeros_like(x) if flat else torch.sqrt(radius ** 2 - x ** 2 - y ** 2) - radius
    vertices = torch.stack([x, y, z], -1).reshape(-1, 3)
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    triangles = torch.cat([torch.stack([a, a + 1, a + n], 1), torch.stack([a + 1, a + n + 1, a + n], 1)])
    uvs = torch.stack([(s + 1) / 2 * 0.8 + 0.1, (-t + 1) / 2 * 0.8 + 0.1], -1).reshape(-1, 2)
    return vertices, triangles, uvs


def camera(size: int = SIZE) -> PinholeCamera:
    return PinholeCamera.create(focal=size * 4.0, image_size=(size, size))


def posed(vertices: torch.Tensor, batch: int = 1) -> torch.Tensor:
    return apply_pose(vertices.expand(batch, -1, -1), torch.eye(3), torch.tensor([0.0, 0.0, -500.0]))


@pytest.mark.parametrize("shading", ["vertex", "pixel"])
def test_flat_plane_exact_values(shading):
    vertices, triangles, _ = cap_mesh(flat=True)
    renderer = Renderer(triangles, shading=shading)
    albedo = torch.tensor([[0.5, 0.4, 0.3]])
    out = renderer(posed(vertices), camera(), sh_uniform(0.8), albedo)
    inside = out.mask[0, ..., 0] > 0
    assert inside.float().mean() > 0.3
    torch.testing.assert_close(out.image[0][inside], (albedo * 0.8).expand(int(inside.sum()), 3))
    assert out.image[0][~inside].abs().max() == 0
    torch.testing.assert_close(out.depth[0][inside], torch.full((int(inside.sum()), 1), 500.0))
    torch.testing.assert_close(out.normals[0][inside], torch.tensor([[0.0, 0.0, 1.0]]).expand(int(inside.sum()), 3))
    torch.testing.assert_close(out.albedo[0][inside], albedo.expand(int(inside.sum()), 3))
    assert torch.equal(out.mask[..., 0] > 0, out.rast[..., 3] > 0)
    # The plane spans +-48 mm at 500 mm with f = 256 px: +-24.6 px around the centre.
    rows = torch.nonzero(inside.any(1)).view(-1)
    assert rows.min().item() == pytest.approx(32 - 24.6, abs=1) and rows.max().item() == pytest.approx(32 + 24.6, abs=1)


def analytic_sphere_normals(size: int, radius: float, centre_z: float, focal: float):
    """Unit normals of the sphere seen through each pixel centre (nan where the ray misses)."""
    v, u = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    d = np.stack([(u - size / 2) / focal, -(v - size / 2) / focal, -np.ones_like(u)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    c = np.array([0.0, 0.0, centre_z])
    b = d @ c
    disc = b * b - (c @ c - radius ** 2)
    t = b - np.sqrt(np.where(disc > 0, disc, np.nan))
    return (d * t[..., None] - c) / radius


@pytest.mark.parametrize("shading", ["vertex", "pixel"])
def test_sphere_shading_matches_analytic_lambert(shading):
    vertices, triangles, _ = cap_mesh(n=41)
    renderer = Renderer(triangles, shading=shading)
    light = torch.tensor([[0.4, 0.5, 0.8]])
    sh = sh_directional(light, torch.ones(1, 3)) + sh_uniform(0.2)
    albedo = torch.tensor([[0.6, 0.5, 0.4]])
    out = renderer(posed(vertices), camera(), sh, albedo)
    normals = analytic_sphere_normals(SIZE, 80.0, -580.0, SIZE * 4.0)
    c = normals @ (light / light.norm()).numpy()[0]
    expected = (0.2 + 0.25 + c / 2 + 5 / 16 * (3 * c * c - 1) / 2)[..., None] * albedo.numpy()
    inside = (out.mask[0, ..., 0] > 0).numpy() & np.isfinite(c)
    error = np.abs(out.image[0].numpy()[inside] - expected[inside])
    assert inside.sum() > 500
    assert error.mean() < 0.004 and error.max() < 0.03


def test_specular_highlight_and_uv_maps_match_per_vertex_values():
    vertices, triangles, uvs = cap_mesh(n=31)
    renderer = Renderer(triangles, uvs=uvs, uv_triangles=triangles, shading="pixel")
    sh = sh_directional(torch.tensor([[0.0, 0.0, 1.0]]), torch.ones(1, 3)) + sh_uniform(0.2)
    # A UV map linear in (u, v): bilinear sampling and barycentric interpolation are both exact.
    th, tw = 32, 48
    u = (torch.arange(tw) + 0.5) / tw
    v_up = 1 - (torch.arange(th) + 0.5) / th  # row 0 is the top of the map, v = 1
    uv_map = torch.stack([u[None].expand(th, tw), v_up[:, None].expand(th, tw), torch.full((th, tw), 0.5)], -1)[None]
    per_vertex = torch.cat([uvs, torch.full((uvs.shape[0], 1), 0.5)], -1)[None]
    from_map = renderer(posed(vertices), camera(), sh, uv_map, torch.full((1, 3), 0.3), torch.full((1, 1), 0.3))
    from_vertices = renderer(posed(vertices), camera(), sh, per_vertex, torch.full((1, 3), 0.3),
                             torch.full((1, 1), 0.3))
    torch.testing.assert_close(from_map.image, from_vertices.image, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_map.albedo, from_vertices.albedo, atol=1e-5, rtol=0)
    matte = renderer(posed(vertices), camera(), sh, per_vertex)
    highlight = from_vertices.image - matte.image
    # Light and camera both along +z: the highlight peaks where the normal faces the camera.
    peak = torch.nonzero(highlight[0].sum(-1) == highlight[0].sum(-1).max())[0]
    assert (peak.float() - 31.5).abs().max() <= 2
    assert highlight.min() >= 0 and highlight.max() > 0.1


def test_background_antialiased_mask_and_batches():
    vertices, triangles, _ = cap_mesh()
    renderer = Renderer(triangles, antialias=True)
    background = torch.rand(2, SIZE, SIZE, 3)
    translation = torch.tensor([[0.0, 0.0, -500.0], [10.3, -5.1, -520.0]], requires_grad=True)
    verts = apply_pose(vertices.expand(2, -1, -1), euler_to_matrix(torch.tensor([[0.0, 0, 0], [20.0, 10, 5]])),
                       translation)
    albedo = torch.full((2, vertices.shape[0], 3), 0.5)
    out = renderer(verts, camera(), sh_uniform(1.0, 2), albedo, background=background)
    outside = out.mask[..., 0] == 0
    torch.testing.assert_close(out.image[outside], background[outside])
    fractional = (out.mask > 0) & (out.mask < 1)
    assert fractional.sum() > 50  # blended silhouette pixels
    out.mask.sum().backward()
    assert translation.grad.abs().sum() > 0 and torch.isfinite(translation.grad).all()
    single = renderer(verts[1:].detach(), camera(), sh_uniform(1.0, 1), albedo[1:], background=background[1:])
    torch.testing.assert_close(single.image, out.image[1:].detach())


def test_vertices_drive_towards_a_target_render():
    """Gradients with respect to vertex positions alone fit a displaced, shrunken mesh to a target."""
    vertices, triangles, _ = cap_mesh(n=17)
    renderer = Renderer(triangles, antialias=True)
    sh = sh_directional(torch.tensor([[0.3, 0.4, 1.0]]), torch.ones(1, 3)) + sh_uniform(0.3)
    albedo = torch.full((1, vertices.shape[0], 3), 0.7)
    with torch.no_grad():
        target = renderer(posed(vertices), camera(), sh, albedo).image
    start = posed(vertices * 0.85 + torch.tensor([6.0, -4.0, 0.0]))
    moving = start.clone().requires_grad_()
    optimiser = torch.optim.Adam([moving], lr=0.6)
    losses = []
    for _ in range(40):
        loss = (renderer(moving, camera(), sh, albedo).image - target).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert torch.isfinite(moving).all()


def test_behind_camera_and_degenerate_meshes_stay_finite():
    vertices, triangles, _ = cap_mesh()
    verts = posed(vertices).clone()
    verts[0, : vertices.shape[0] // 2, 2] += 700.0  # half the mesh behind the camera
    verts[0, -5:] = verts[0, -1]  # a few collapsed vertices
    verts.requires_grad_()
    renderer = Renderer(triangles, shading="pixel", antialias=True)
    out = renderer(verts, camera(), sh_uniform(1.0), torch.full((1, 3), 0.5), torch.full((1, 3), 0.2))
    (out.image.sum() + out.depth.sum() + out.normals.sum()).backward()
    assert torch.isfinite(out.image).all() and torch.isfinite(verts.grad).all()


def test_renderer_from_model_and_errors():
    vertices, triangles, uvs = cap_mesh(n=9)
    v = vertices.shape[0]
    arrays = FaceModelArrays(
        mean_shape=vertices.numpy(), triangles=triangles.numpy(), identity_basis=np.zeros((2, v, 3), np.float32),
        expression_basis=np.zeros((1, v, 3), np.float32), landmarks68=np.full(68, -1), uvs=uvs.numpy(),
        uv_triangles=triangles.numpy(), albedo_mean=np.full((8, 8, 3), 0.5, np.float32), albedo_space="uv")
    model = MorphableModel(arrays)
    renderer = Renderer.from_model(model)
    out = renderer(posed(model.decode()), camera(), sh_uniform(1.0), model.albedo())
    inside = out.mask[0, ..., 0] > 0
    torch.testing.assert_close(out.image[0][inside], torch.full((int(inside.sum()), 3), 0.5))
    with pytest.raises(RenderError, match="vertices must be"):
        renderer(model.decode()[0], camera(), sh_uniform(1.0), model.albedo())
    with pytest.raises(RenderError, match="albedo must be"):
        renderer(posed(model.decode()), camera(), sh_uniform(1.0), torch.ones(1, 5, 3))
    with pytest.raises(RenderError, match="no uvs"):
        Renderer(triangles)(posed(model.decode()), camera(), sh_uniform(1.0), model.albedo())
    with pytest.raises(RenderError, match="shading='pixel'"):
        renderer(posed(model.decode()), camera(), sh_uniform(1.0), model.albedo(), torch.ones(1, 3),
                 torch.ones(1, 8, 8, 1))
    with pytest.raises(RenderError, match="shading must be"):
        Renderer(triangles, shading="flat")


@pytest.mark.parametrize("shading", ["vertex", "pixel"])
def test_batches_with_per_image_lighting_and_maps_equal_single_renders(shading):
    vertices, triangles, uvs = cap_mesh(n=21)
    renderer = Renderer(triangles, uvs=uvs, uv_triangles=triangles, shading=shading)
    verts = apply_pose(vertices.expand(2, -1, -1), euler_to_matrix(torch.tensor([[0.0, 0, 0], [25.0, -10, 5]])),
                       torch.tensor([[0.0, 0.0, -500.0], [8.0, 3.0, -560.0]]))
    sh = sh_uniform(0.3, 2) + sh_directional(torch.tensor([[0.0, 0.3, 1.0], [0.8, 0.1, 0.5]]),
                                             torch.tensor([[1.0, 0.9, 0.8], [0.4, 0.5, 0.6]]))
    maps = torch.rand(2, 16, 16, 3)
    specular, roughness = torch.tensor([[0.2, 0.2, 0.2], [0.4, 0.3, 0.2]]), torch.tensor([[0.3], [0.6]])
    both = renderer(verts, camera(), sh, maps, specular, roughness)
    for i in range(2):
        one = renderer(verts[i:i + 1], camera(), sh[i:i + 1], maps[i:i + 1], specular[i:i + 1], roughness[i:i + 1])
        torch.testing.assert_close(both.image[i:i + 1], one.image)
        torch.testing.assert_close(both.depth[i:i + 1], one.depth)
        torch.testing.assert_close(both.albedo[i:i + 1], one.albedo)


@pytest.mark.parametrize("shading", ["vertex", "pixel"])
@pytest.mark.parametrize("form", ["constant", "vertex", "uv"])
def test_grey_specular_equals_its_rgb_copy_with_gradients(shading, form):
    """A one-channel specular albedo is the same albedo in R, G and B: the image under a coloured
    light, and the gradients to the albedo and the vertices, are those of its three-channel copy."""
    vertices, triangles, uvs = cap_mesh(n=21)
    renderer = Renderer(triangles, uvs=uvs, uv_triangles=triangles, shading=shading)
    sh = sh_uniform(0.3, 2) + sh_directional(torch.tensor([[0.0, 0.3, 1.0], [0.5, -0.2, 0.8]]),
                                             torch.tensor([[1.0, 0.6, 0.3], [0.2, 0.5, 0.9]]))
    g = torch.Generator().manual_seed(1)
    shape = {"constant": (2, 1), "vertex": (2, vertices.shape[0], 1), "uv": (2, 16, 16, 1)}[form]
    grey = 0.2 + 0.5 * torch.rand(shape, generator=g)
    albedo = torch.rand(2, 16, 16, 3, generator=g)
    weights = torch.rand(2, SIZE, SIZE, 3, generator=g)
    results = []
    for spec in (grey, grey.expand(*shape[:-1], 3)):
        spec = spec.clone().requires_grad_(True)
        verts = posed(vertices, 2).clone().requires_grad_(True)
        out = renderer(verts, camera(), sh, albedo, spec, torch.tensor([[0.3], [0.6]]))
        (out.image * weights).sum().backward()
        results.append((out.image, spec.grad.sum(-1, keepdim=True), verts.grad))
    (image1, spec1, verts1), (image3, spec3, verts3) = results
    assert image3.amax() > 0.1 and spec3.abs().amax() > 0
    torch.testing.assert_close(image1, image3)
    torch.testing.assert_close(spec1, spec3)
    torch.testing.assert_close(verts1, verts3)


def test_render_keeping_an_earlier_renders_visibility():
    """Rendering with the pixels' triangles of an earlier render of the same vertices gives its image
    and gradients; after a sub-pixel move, the image of the moved mesh wherever its triangles are
    still the earlier ones."""
    from facenet3d.render.rasterize import fragments_of

    vertices, triangles, uvs = cap_mesh(n=21)
    renderer = Renderer(triangles, uvs=uvs, uv_triangles=triangles, shading="pixel")
    sh = sh_uniform(0.3) + sh_directional(torch.tensor([[0.3, 0.2, 1.0]]), torch.tensor([[1.0, 0.7, 0.4]]))
    albedo = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    verts = posed(vertices).requires_grad_(True)
    first = renderer(verts, camera(), sh, albedo, torch.full((1, 1), 0.3), torch.full((1, 1), 0.4))
    first.image.sum().backward()
    grad, verts.grad = verts.grad, None
    kept = renderer(verts, camera(), sh, albedo, torch.full((1, 1), 0.3), torch.full((1, 1), 0.4),
                    visible=fragments_of(first.rast))
    kept.image.sum().backward()
    torch.testing.assert_close(kept.image, first.image, rtol=0, atol=0)
    torch.testing.assert_close(verts.grad, grad)
    with torch.no_grad():
        moved = verts + torch.tensor([0.02, -0.01, 0.0])  # a few hundredths of a pixel
        fresh = renderer(moved, camera(), sh, albedo)
        again = renderer(moved, camera(), sh, albedo, visible=fragments_of(first.rast))
    same = fresh.rast[..., 3] == first.rast[..., 3]  # pixels whose triangle the move did not change
    assert same.float().mean() > 0.99
    assert (fresh.image - first.image)[same].abs().max() > 1e-5
    torch.testing.assert_close(again.image[same], fresh.image[same], rtol=0, atol=1e-6)
