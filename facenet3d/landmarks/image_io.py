"""Robust loading of photos into 8-bit RGB arrays.

Every photo of the library goes through :func:`read_image`: JPEG, PNG, WebP, BMP and TIFF
(anything Pillow decodes), with the EXIF orientation applied, every pixel format converted
to ``(H, W, 3) uint8`` RGB, and very large photos reduced while they are decoded so that a
50-megapixel file never sits in memory at full size. The reduction factor travels with the
pixels (:class:`LoadedImage`), so results computed on the reduced array are reported in the
pixels of the original, upright photo (:meth:`LoadedImage.to_original`).

Files that cannot be read (missing, truncated, not an image, an unsupported pixel format)
raise :class:`~facenet3d.errors.ImageReadError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facenet3d.errors import ImageReadError, PhotoInputError

#: File-name suffixes taken as photos when a folder is scanned.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

#: Transparent pixels are composited over this colour (white, as image viewers show them).
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

#: Pillow refuses images above twice its ``MAX_IMAGE_PIXELS`` as decompression bombs; photos
#: this large are legitimate here (panoramas, scans), so the limit is raised to 1 gigapixel.
#: JPEGs are decoded at a reduced scale anyway (see ``draft`` below).
MAX_PIXELS: int = 1_000_000_000

# EXIF orientations 5..8 swap width and height.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo and how its pixels relate to the original file.

    Attributes:
        pixels: ``(h, w, 3) uint8`` RGB, upright (EXIF orientation applied).
        original_size: ``(W, H)`` of the upright photo at full resolution, in pixels.
        path: the file it was read from.
    """

    pixels: np.ndarray
    original_size: tuple[int, int]
    path: str

    @property
    def scale(self) -> np.ndarray:
        """``(2,)`` float64: original pixels per pixel of :attr:`pixels` along x and y (>= 1)."""
        h, w = self.pixels.shape[:2]
        return np.array([self.original_size[0] / w, self.original_size[1] / h])

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map pixel coordinates of :attr:`pixels` to the original upright photo.

        Args:
            points: ``(..., 2)`` or ``(..., 3)`` pixel coordinates (pixel centres at +0.5);
                a third column (depth in pixel-like units) is scaled like x.

        Returns:
            Same shape, float32, in original pixels. Scaling about the origin is exact for
            the pixel-centre convention: pixel ``i`` covers ``[i, i + 1)`` at both resolutions.
        """
        points = np.asarray(points, dtype=np.float64)
        s = self.scale
        factors = np.array([s[0], s[1], s[0]][: points.shape[-1]])
        return (points * factors).astype(np.float32)


def read_image(path: str | os.PathLike, max_side: int | None = None) -> LoadedImage:
    """Decode a photo file to upright 8-bit RGB, optionally reduced to at most ``max_side``.

    Args:
        path: JPEG, PNG, WebP, BMP or TIFF file (any format Pillow decodes).
        max_side: if given, the longer side of the returned pixels is at most this many pixels;
            JPEGs are then decoded directly at a reduced DCT scale (``Image.draft``), so the
            full-resolution raster is never allocated. ``None`` keeps full resolution.

    Returns:
        A :class:`LoadedImage` with ``(h, w, 3) uint8`` pixels and the original size.

    Raises:
        ImageReadError: the file is missing, unreadable, truncated, not an image, or has a
            pixel format that cannot be converted to RGB.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    try:
        with Image.open(path) as im:
            size = im.size
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            if orientation in _TRANSPOSING_ORIENTATIONS:
                size = (size[1], size[0])
            if size[0] * size[1] > MAX_PIXELS:
                raise ImageReadError(path, f"{size[0]}x{size[1]} pixels is above the limit of {MAX_PIXELS}")
            if max_side is not None and im.format == "JPEG" and max(size) > max_side:
                # Requests the smallest DCT scale (1/2, 1/4, 1/8) that is still >= the target.
                im.draft("RGB", _target_size(im.size, max_side))
            im.load()  # decodes now, so a truncated file raises here rather than later
            if max_side is not None and max(im.size) >= 2 * max_side:
                # Formats without reduced decoding (PNG, TIFF, ...): shrink by an integer box
                # filter inside Pillow before any numpy copy of the full raster is made.
                with contextlib.suppress(ValueError):  # modes reduce() does not support
                    im = im.reduce(max(im.size) // max_side)
            im = ImageOps.exif_transpose(im)
            pixels = _to_rgb8(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (unknown format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError, TypeError) as e:
        # Pillow reports truncation as OSError("image file is truncated ..."), broken PNG
        # chunks as SyntaxError, unsupported modes as ValueError/TypeError.
        raise ImageReadError(path, f"cannot decode image: {e}") from e
    if max_side is not None and max(pixels.shape[:2]) > max_side:
        pixels = _resize_to_max_side(pixels, max_side)
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ImageReadError(path, "image has no pixels")
    return LoadedImage(pixels=np.ascontiguousarray(pixels), original_size=size, path=str(path))


def load_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Decode a photo to an upright ``(H, W, 3) uint8`` RGB array (see :func:`read_image`)."""
    return read_image(path, max_side).pixels


def _target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    s = max_side / max(size)
    return max(1, round(size[0] * s)), max(1, round(size[1] * s))


def _resize_to_max_side(pixels: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    h, w = pixels.shape[:2]
    tw, th = _target_size((w, h), max_side)
    # INTER_AREA averages the covered source pixels: no aliasing when shrinking.
    return cv2.resize(pixels, (tw, th), interpolation=cv2.INTER_AREA)


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to ``(H, W, 3) uint8`` RGB.

    High-bit-depth greyscale (``I;16*``, ``I``, ``F``) is rescaled from its nominal range
    (16-bit: 0..65535; float: 0..1 when it fits, else 0..255); alpha (including palette
    transparency) is composited over :data:`ALPHA_BACKGROUND`; CMYK, YCbCr, LAB and HSV go
    through Pillow's converters.
    """
    mode = im.mode
    if mode in ("RGB",):
        return np.asarray(im)
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if a.dtype.kind == "f":
            a = a.astype(np.float64)
            a = a * 255.0 if np.nanmax(a) <= 1.0 else a
        else:
            a = a.astype(np.float64) / 257.0  # 65535 -> 255 exactly
        grey = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32)
        alpha = rgba[..., 3:] / 255.0
        background = np.asarray(ALPHA_BACKGROUND, dtype=np.float32)
        return (rgba[..., :3] * alpha + background * (1.0 - alpha)).round().astype(np.uint8)
    return np.asarray(im.convert("RGB"))


def collect_photos(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Photo files from files and folders (folders searched recursively, sorted), deduplicated.

    Raises:
        PhotoInputError: an input does not exist or nothing was found.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        elif p.is_file():
            found = [p]
        else:
            raise PhotoInputError(f"{p}: no such file or folder")
        for q in found:
            r = q.resolve()
            if r not in seen:
                seen.add(r)
                out.append(r)
    if not out:
        raise PhotoInputError("no photos found (looked for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")")
    return out
