"""SH lighting and the specular lobe against closed forms and finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from facenet3d.errors import RenderError
from facenet3d.render import (
    blinn_phong,
    dominant_light,
    sh_basis,
    sh_directional,
    sh_shading,
    sh_uniform,
    shading_terms,
)


def fibonacci_sphere(n: int) -> torch.Tensor:
    """``(n, 3)`` nearly uniform unit directions (equal-area quadrature points)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = torch.sqrt(1 - z * z)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def test_sh_basis_is_orthonormal():
    d = fibonacci_sphere(20000)
    y = sh_basis(d)
    gram = y.T @ y * (4 * math.pi / d.shape[0])
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), atol=2e-3, rtol=0)


def test_uniform_light_shades_to_its_intensity():
    normals = torch.nn.functional.normalize(torch.randn(2, 50, 3), dim=-1)
    torch.testing.assert_close(sh_shading(normals, sh_uniform(0.7, 2)), torch.full((2, 50, 3), 0.7))


def test_directional_light_matches_the_order_two_cosine_lobe():
    """Ramamoorthi-Hanrahan: the 9-term irradiance of a distant light is
    I (1/4 + cos/2 + 5/16 (3 cos^2 - 1) / 2), the clamped cosine up to band 2."""
    direction = torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64)
    intensity = torch.tensor([[1.0, 0.5, 2.0]], dtype=torch.float64)
    normals = fibonacci_sphere(300)[None]
    shading = sh_shading(normals, sh_directional(direction, intensity))
    c = normals[0] @ torch.nn.functional.normalize(direction, dim=-1)[0]
    lobe = 0.25 + c / 2 + 5 / 16 * (3 * c * c - 1) / 2
    torch.testing.assert_close(shading[0], lobe[:, None] * intensity)
    # Close to the clamped cosine it approximates.
    assert (lobe - c.clamp_min(0)).abs().max() < 0.13


def test_dominant_light_recovers_a_directional_light_over_ambient():
    direction = torch.nn.functional.normalize(torch.tensor([[-0.2, 0.6, 0.7], [1.0, 0.0, 0.1]]), dim=-1)
    intensity = torch.tensor([[0.8, 0.6, 0.4], [1.5, 1.5, 1.5]])
    sh = sh_directional(direction, intensity) + sh_uniform(0.3, 2)
    found_direction, found_intensity = dominant_light(sh)
    torch.testing.assert_close(found_direction, direction)
    torch.testing.assert_close(found_intensity, intensity)
    d, i = dominant_light(sh_uniform(1.0, 1))  # ambient only: no highlight, no NaN
    assert torch.isfinite(d).all() and i.abs().max() == 0


def test_blinn_phong_peak_and_roughness():
    n = torch.tensor([[[0.0, 0.0, 1.0]]])
    light = torch.tensor([[0.0, 0.0, 1.0]])
    intensity = torch.tensor([[2.0, 1.0, 0.5]])
    for roughness in (0.3, 0.6, 1.0):
        alpha = roughness ** 2
        s = 2 / alpha ** 2 - 2
        peak = blinn_phong(n, n, light, intensity, torch.tensor([[[roughness]]]))
        torch.testing.assert_close(peak[0, 0], intensity[0] * (s + 8) / 8)
    # Off the mirror direction a rough lobe keeps more energy than a sharp one.
    view = torch.nn.functional.normalize(torch.tensor([[[0.5, 0.0, 1.0]]]), dim=-1)
    sharp = blinn_phong(n, view, light, intensity, torch.tensor([[[0.2]]]))
    rough = blinn_phong(n, view, light, intensity, torch.tensor([[[0.8]]]))
    assert (rough > sharp).all()
    # Light behind the surface: nothing.
    assert blinn_phong(n, n, -light, intensity, torch.tensor([[[0.5]]])).abs().max() == 0


def test_shading_gradcheck():
    normals = torch.nn.functional.normalize(torch.randn(2, 6, 3, dtype=torch.float64), dim=-1).requires_grad_()
    view = torch.nn.functional.normalize(torch.randn(2, 6, 3, dtype=torch.float64) + torch.tensor(
        [0, 0, 2.0], dtype=torch.float64), dim=-1).requires_grad_()
    sh = (sh_uniform(0.5, 2).double() + sh_directional(torch.tensor([[0.2, 0.3, 1.0], [0.0, 1.0, 1.0]],
                                                                    dtype=torch.float64),
                                                       torch.ones(2, 3, dtype=torch.float64))).requires_grad_()
    roughness = torch.full((2, 6, 1), 0.5, dtype=torch.float64, requires_grad=True)

    def both(n, v, s, r):
        diffuse, specular = shading_terms(n, v, s, r)
        return diffuse, specular

    assert torch.autograd.gradcheck(both, (normals, view, sh, roughness))


def test_shading_rejects_bad_lighting():
    with pytest.raises(RenderError, match="sh must be"):
        sh_shading(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3))
    with pytest.raises(RenderError, match="view"):
        shading_terms(torch.zeros(1, 4, 3), None, sh_uniform(1.0), torch.ones(1, 1, 1))


def test_shading_is_the_irradiance_expansion_in_the_basis():
    """The quadratic-form evaluation equals sum_k (A_l / pi) c_k Y_k(n) written with the basis."""
    normals = torch.nn.functional.normalize(torch.randn(3, 40, 3, dtype=torch.float64), dim=-1)
    sh = torch.randn(3, 9, 3, dtype=torch.float64)
    factors = torch.tensor([1.0, 2 / 3, 2 / 3, 2 / 3, 0.25, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    expected = sh_basis(normals) @ (sh * factors[:, None])
    torch.testing.assert_close(sh_shading(normals, sh), expected)
