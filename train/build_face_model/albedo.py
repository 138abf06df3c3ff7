"""A de-lit diffuse albedo space in UV, from photos.

For every photo:

1. **Geometry**: the photo's own MediaPipe mesh (478 landmarks in crop pixels with relative
   depth), already registered to the photo, upsampled to the render mesh with the model's
   linear operator. Projection is orthographic in crop pixels, like MediaPipe's estimate.
2. **Unwrapping** with our rasteriser: the render mesh is rasterised once in UV space (which
   triangle and barycentrics cover every texel) and, per photo, in image space (the depth
   buffer). A texel takes the photo's colour at its surface point's image position when that
   point is the visible one there and faces the camera (``n_z > 0.35``).
3. **De-lighting**: a white (monochrome) second-order SH irradiance, normalised to mean 1
   over the visible skin, is fitted by robust least squares with the renderer's SH basis to the
   luminance of the skin texels, assuming a uniform albedo; the texels' linear RGB divided by
   it is the albedo. Keeping the light colourless keeps skin colour in the albedo instead of
   letting the light absorb it.

Then over photos: mirror hole filling (the UV layout is left/right symmetric), robust
outlier rejection (hair, glasses, specular highlights: texels far from the per-texel median),
mirrored copies (no left/right bias), and EM-PCA with missing data. Colours are linear RGB.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from facenet3d.render.rasterize import rasterize
from facenet3d.render.shading import sh_basis
from facenet3d.render.uv import UVRaster

#: A texel must face the camera at least this much to be trusted.
MIN_FACING = 0.35


def nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmedian`` without the warning for all-NaN slices (texels no photo saw: NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)





def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear RGB (IEC 61966-2-1)."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def unwrap_photo(crop: np.ndarray, fine_px: np.ndarray, triangles: np.ndarray, normals: np.ndarray,
                 uv_raster: UVRaster) -> tuple[np.ndarray, np.ndarray]:
    """Unwrap one photo into UV.

    Args:
        crop: ``(S, S, 3)`` uint8 sRGB crop.
        fine_px: ``(V, 3)`` render-mesh vertices in crop pixels (x right, y down, z away
            from the camera, MediaPipe's scale).
        triangles: ``(F, 3)``.
        normals: ``(V, 3)`` unit normals in the y-up camera frame (+z toward the camera).
        uv_raster: the mesh rasterised in UV space.

    Returns:
        ``(colour (T, T, 3) linear RGB, valid (T, T) bool)``.
    """
    s = crop.shape[0]
    v = torch.as_tensor(fine_px, dtype=torch.float32)
    depth_scale = float(np.abs(fine_px[:, 2]).max() + 1.0) * 2
    # Orthographic clip space; nearer (smaller z) wins the depth test.
    pos = torch.stack([2 * v[:, 0] / s - 1, 2 * v[:, 1] / s - 1, v[:, 2] / depth_scale,
                       torch.ones_like(v[:, 0])], -1)[None]
    tri = torch.as_tensor(triangles)
    rast_img = rasterize(pos, tri, (s, s))
    attr = torch.cat([v, torch.as_tensor(normals, dtype=torch.float32)], -1)[None]
    texel = uv_raster.sample_vertices(attr)[0].numpy()  # (T, T, 6)
    x, y, z, nz = texel[..., 0], texel[..., 1], texel[..., 2], texel[..., 5]
    col = np.clip(np.floor(x).astype(int), 0, s - 1)
    row = np.clip(np.floor(y).astype(int), 0, s - 1)
    zbuf = rast_img[0, ..., 2].numpy()[row, col] * depth_scale
    hit = rast_img[0, ..., 3].numpy()[row, col] > 0
    inside = (x >= 0) & (x < s) & (y >= 0) & (y < s)
    visible = uv_raster.covered.numpy() & inside & hit & (z <= zbuf + 0.02 * depth_scale) & (nz > MIN_FACING)
    img = srgb_to_linear(crop.astype(np.float32) / 255.0)
    colour = _bilinear(img, x, y)
    return colour, visible


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``(H, W, C)`` at pixel coordinates (centres at +0.5), clamped at the border."""
    h, w = img.shape[:2]
    xf, yf = np.clip(x - 0.5, 0, w - 1), np.clip(y - 0.5, 0, h - 1)
    x0, y0 = np.floor(xf).astype(int), np.floor(yf).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (xf - x0)[..., None], (yf - y0)[..., None]
    top = img[y0, x0] * (1 - ax) + img[y0, x1] * ax
    bottom = img[y1, x0] * (1 - ax) + img[y1, x1] * ax
    return top * (1 - ay) + bottom * ay


def delight(colour: np.ndarray, valid: np.ndarray, skin: np.ndarray, normals_uv: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Divide out a fitted white SH irradiance.

    Args:
        colour: ``(T, T, 3)`` linear RGB.
        valid: ``(T, T)`` texels with a trustworthy colour.
        skin: ``(T, T)`` texels of skin (where the uniform-albedo assumption is fitted).
        normals_uv: ``(T, T, 3)`` unit normals per texel.

    Returns:
        ``(albedo (T, T, 3), shading (T, T))``; the shading has mean 1 over the fitted texels.
    """
    use = valid & skin
    lum = colour @ np.array([0.2126, 0.7152, 0.0722])
    basis = sh_basis(torch.as_tensor(normals_uv[use], dtype=torch.float32)).numpy()  # (n, 9)
    target = lum[use]
    keep = np.ones(len(target), bool)
    coef = np.zeros(9)
    for _ in range(3):  # trimmed least squares: drop the worst fifth (hair, highlights)
        coef = np.linalg.lstsq(basis[keep], target[keep], rcond=None)[0]
        resid = np.abs(basis @ coef - target)
        keep = resid <= np.quantile(resid, 0.8)
    full = sh_basis(torch.as_tensor(normals_uv.reshape(-1, 3), dtype=torch.float32)).numpy() @ coef
    shading = full.reshape(lum.shape)
    shading = shading / max(float(shading[use].mean()), 1e-6)
    albedo = colour / np.maximum(shading, 0.2)[..., None]
    return albedo, shading


def mirror_uv(maps: np.ndarray) -> np.ndarray:
    """Reflect UV maps ``(..., T, T, C)`` left/right (the layout is symmetric about u = 0.5)."""
    return maps[..., ::-1, :]


def fill_from_mirror(maps: np.ndarray, valid: np.ndarray, mirror: Callable[[np.ndarray], np.ndarray] = mirror_uv
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Fill each invalid texel of ``maps (..., T, T, C)`` (``valid (..., T, T)``) from its mirror
    texel where that one is valid; ``mirror`` reflects ``(..., T, T, C)`` maps in the layout at hand."""
    mirrored, mvalid = mirror(maps), mirror(valid[..., None])[..., 0]
    take = ~valid & mvalid
    return np.where(take[..., None], mirrored, maps), valid | mvalid


def em_pca(maps: np.ndarray, valid: np.ndarray, modes: int, iterations: int = 4, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA with missing data: fill missing texels with the current reconstruction, repeat.

    Args:
        maps: ``(N, D)`` float32 data (anything where invalid).
        valid: ``(N, D)`` bool.
        modes: number of components.

    Returns:
        ``(mean (D,), components (K, D) unit rows, variances (K,))``.
    """
    x = maps.astype(np.float32).copy()
    mean = nanmedian(np.where(valid, x, np.nan), axis=0)
    mean = np.where(np.isnan(mean), np.nanmean(mean), mean).astype(np.float32)
    x[~valid] = np.broadcast_to(mean, x.shape)[~valid]
    g = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(iterations), desc="albedo EM-PCA", leave=False):
        mean = x.mean(0)
        xt = torch.from_numpy(x - mean)
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
        _, s, v = torch.pca_lowrank(xt, q=modes + 10, center=False, niter=4)
        comps = v[:, :modes].T.contiguous()
        recon = (xt @ comps.T) @ comps
        x[~valid] = (recon.numpy() + mean)[~valid]
    var = (s[:modes] ** 2 / (len(x) - 1)).numpy()
    return mean, comps.numpy(), var


def canonical_signs(basis: np.ndarray) -> np.ndarray:
    """Flip each mode so that its third moment is positive: a PCA gives a mode only up to its sign,
    and which sign comes out can change with thread count and BLAS, so two builds from the same
    photos and seed would differ by sign flips without a convention. The third moment (rather
    than the sign of the largest entry) does not change under the float16 rounding of the stored
    model, so the convention can be checked on the shipped file.

    Args:
        basis: ``(K, ...)`` modes.

    Returns:
        ``(K, ...)`` the same modes, some negated.
    """
    flat = basis.reshape(len(basis), -1).astype(np.float64)
    signs = np.where((flat ** 3).sum(1) < 0, -1.0, 1.0).astype(basis.dtype)
    return basis * signs.reshape((-1,) + (1,) * (basis.ndim - 1))


def dilate_into_background(image: np.ndarray, covered: np.ndarray, steps: int = 24) -> np.ndarray:
    """Extend a UV map past its charts so bilinear/mip sampling at the borders never fetches
    background (``(T, T, C)`` map, ``(T, T)`` covered texels)."""
    import cv2

    out = image.copy()
    filled = covered.copy()
    kernel = np.ones((3, 3), np.float32)
    for _ in range(steps):
        w = cv2.filter2D(filled.astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
        acc = cv2.filter2D(np.where(filled[..., None], out, 0).astype(np.float32), -1, kernel,
                           borderType=cv2.BORDER_CONSTANT)
        if acc.ndim == 2:
            acc = acc[..., None]
        grow = ~filled & (w > 0)
        out[grow] = acc[grow] / w[grow][..., None]
        filled |= grow
    out[~filled] = out[filled].mean(0)
    return out
