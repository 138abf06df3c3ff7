"""Texture maps and PNG images: colour encoding, quantisation, sampling and atomic PNG writing.

Conventions shared by every exporter:

* A texture is an image as stored: ``(H, W, C)``, row 0 is the **top** of the image. With
  OBJ-convention UVs (origin bottom-left, ``v`` up) the texel at UV ``(u, v)`` is at pixel
  ``x = u W``, ``y = (1 - v) H``. The same PNG serves OBJ and glTF; only the glTF writer
  flips ``v`` (glTF's UV origin is the top-left).
* Float textures hold *values* in ``[0, 1]``; ``uint8`` textures are taken as the pixels of
  the file, already encoded. Colour maps (``albedo``, ``specular``) are linear RGB as the
  face models and the renderer use them, and are written sRGB-encoded, as image viewers,
  MTL readers and glTF's ``baseColorTexture`` / ``specularColorTexture`` expect. Data maps
  (``roughness``, ``normal``) are written as values, without a transfer function.
* ``normal`` maps hold tangent-space unit normals encoded as ``(n + 1) / 2`` (see
  :func:`encode_normal_map`), +X right, +Y up in the image (the "OpenGL" convention of
  glTF and Blender), in the tangent frame of :func:`facenet3d.export.mesh.vertex_tangents`
  (written into GLB files; close to the MikkTSpace frame Blender derives for OBJ files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facenet3d.atomic import write_bytes
from facenet3d.errors import ExportError
from facenet3d.export.arrays import to_numpy

__all__ = [
    "COLOR_MAPS",
    "TEXTURE_CHANNELS",
    "encode_normal_map",
    "encode_png",
    "linear_to_srgb",
    "metallic_roughness_image",
    "quantize",
    "sample_texture",
    "srgb_to_linear",
    "texture_pixels",
    "write_png",
]

#: Texture names the exporters understand and the channel counts each accepts.
TEXTURE_CHANNELS: dict[str, tuple[int, ...]] = {
    "albedo": (3,),  # diffuse albedo, linear RGB
    "specular": (1, 3),  # specular albedo = reflectance at normal incidence F0, linear
    "roughness": (1,),  # perceptual roughness (glTF's), linear data
    "normal": (3,),  # encoded tangent-space normals, linear data
}
#: Maps holding linear RGB colours, sRGB-encoded in files.
COLOR_MAPS = frozenset({"albedo", "specular"})


def linear_to_srgb(x: Any) -> np.ndarray:
    """The sRGB transfer function (IEC 61966-2-1): linear ``[0, 1]`` -> encoded ``[0, 1]``.

    Values are clipped to ``[0, 1]`` first. Shape and float dtype are kept (float32 for
    integer input).
    """
    x = np.clip(to_numpy(x), 0.0, 1.0)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055).astype(x.dtype)


def srgb_to_linear(x: Any) -> np.ndarray:
    """Inverse of :func:`linear_to_srgb`: sRGB-encoded ``[0, 1]`` -> linear ``[0, 1]``."""
    x = np.clip(to_numpy(x), 0.0, 1.0)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4)).astype(x.dtype)


def encode_normal_map(normals: Any) -> np.ndarray:
    """Unit tangent-space normals ``(H, W, 3)`` in ``[-1, 1]`` -> the ``[0, 1]`` encoding of normal maps.

    Normals are renormalised first (bilinear filtering and optimisation leave them off
    unit length); a zero vector becomes the flat normal ``(0, 0, 1)``.
    """
    n = to_numpy(normals, np.float32)
    if n.ndim != 3 or n.shape[-1] != 3:
        raise ExportError(None, f"normals must be (H, W, 3), got {n.shape}")
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(length > 1e-8, n / np.maximum(length, 1e-8), np.array([0.0, 0.0, 1.0], np.float32))
    return n * 0.5 + 0.5


def quantize(image: Any, bits: int = 8, source: str | Path | None = None) -> np.ndarray:
    """Pixels of a PNG: ``uint8`` (``bits=8``) or ``uint16`` (``bits=16``).

    Float input is a value in ``[0, 1]`` (clipped, then rounded to the nearest level);
    ``uint8``/``uint16`` input is rescaled between the two depths; bool is 0/1.

    Raises:
        ExportError: NaN/inf values, another integer dtype or an unsupported ``bits``
            (``source`` names the file in the message).
    """
    if bits not in (8, 16):
        raise ExportError(source, f"PNG bit depth must be 8 or 16, got {bits}")
    a = to_numpy(image)
    out_dtype = np.uint8 if bits == 8 else np.uint16
    top = float(np.iinfo(out_dtype).max)
    if a.dtype == bool:
        a = a.astype(np.float32)
    if a.dtype.kind == "f":
        if a.size and not np.isfinite(a).all():
            raise ExportError(source, "image holds NaN or infinite values")
        return np.round(np.clip(a, 0.0, 1.0) * top).astype(out_dtype)
    if a.dtype == np.uint8:
        return a if bits == 8 else a.astype(np.uint16) * 257
    if a.dtype == np.uint16:
        return a if bits == 16 else np.round(a / 257.0).astype(np.uint8)
    raise ExportError(source, f"image dtype {a.dtype} is not float, bool, uint8 or uint16")


def encode_png(image: Any, bits: int = 8, compression: int = 3, source: str | Path | None = None) -> bytes:
    """PNG file bytes of an image.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA; float
            in ``[0, 1]``, ``uint8`` or ``uint16`` (see :func:`quantize`). Row 0 is the top.
        bits: 8 or 16 bits per channel.
        compression: zlib level 0 (fastest) .. 9 (smallest).
        source: the destination, named in error messages.
    """
    import cv2  # imported here: OpenCV takes a while to load and only writers need it

    pixels = quantize(image, bits, source)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
        raise ExportError(source, f"image shape {pixels.shape} is not (H, W) or (H, W, 1|3|4)")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ExportError(source, f"image is empty: {pixels.shape}")
    if pixels.ndim == 3:  # OpenCV stores BGR(A)
        pixels = pixels[..., [2, 1, 0, 3][: pixels.shape[-1]]]
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(pixels), params)
    if not ok:
        raise ExportError(source, "PNG encoding failed")
    return buf.tobytes()


def write_png(image: Any, path: str | Path, bits: int = 8, compression: int = 3) -> Path:
    """Write an image as a PNG, atomically (temporary name, then rename).

    Values are written as given: convert linear colours with :func:`linear_to_srgb`
    first when the image is meant for display.

    Args:
        image: see :func:`encode_png`; numpy array or torch tensor ``(H, W[, C])``.
        path: destination ``.png``.
        bits: 8 or 16 bits per channel.
        compression: zlib level 0..9.

    Returns:
        ``path``.
    """
    return write_bytes(encode_png(image, bits, compression, source=path), path)


def texture_pixels(name: str, image: np.ndarray) -> np.ndarray:
    """The ``uint8`` pixels a texture map is stored with: colour maps sRGB-encoded, data maps as is.

    Args:
        name: a key of :data:`TEXTURE_CHANNELS`.
        image: ``(H, W, C)`` float values in ``[0, 1]`` (linear for colour maps) or ``uint8``
            pixels (already encoded; returned unchanged).
    """
    if image.dtype == np.uint8:
        return image
    return quantize(linear_to_srgb(image) if name in COLOR_MAPS else image)


def metallic_roughness_image(roughness: np.ndarray) -> np.ndarray:
    """glTF ``metallicRoughnessTexture`` pixels from roughness pixels.

    Args:
        roughness: ``(H, W, 1)`` ``uint8`` roughness pixels.

    Returns:
        ``(H, W, 3)`` ``uint8``: R = 255 (the occlusion slot of packed ORM textures: no
        occlusion), G = roughness, B = 0 (metallic: skin is a dielectric).
    """
    h, w = roughness.shape[:2]
    out = np.zeros((h, w, 3), np.uint8)
    out[..., 0] = 255
    out[..., 1] = roughness.reshape(h, w)
    return out


def sample_texture(image: Any, uv: Any) -> np.ndarray:
    """Bilinear lookup of a texture at OBJ-convention UVs, clamped at the borders.

    Args:
        image: ``(H, W, C)`` texture, row 0 at the top (float values, or ``uint8``
            which is returned as float pixel values 0..255).
        uv: ``(N, 2)`` coordinates, origin bottom-left, ``[0, 1]`` spanning the image edges;
            pixel centres sit at ``(x + 0.5) / W``, ``1 - (y + 0.5) / H``.

    Returns:
        ``(N, C)`` float32 samples.
    """
    img = to_numpy(image).astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    uv = to_numpy(uv, np.float64).reshape(-1, 2)
    h, w = img.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0.0, w - 1.0)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0.0, h - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def flatten_outside(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Texels outside ``mask`` set to the mean inside it (clean, compressible texture files)."""
    out = image.copy()
    out[~mask] = image[mask].mean(0)
    return out
