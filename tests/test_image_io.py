"""Photo loading: formats, EXIF orientation, pixel formats, large photos, bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenet3d.errors import Facenet3DError, ImageReadError
from facenet3d.landmarks.image_io import load_image, read_image


@pytest.fixture(scope="module")
def photo(faces_dir: Path) -> np.ndarray:
    """A real colour photo, ``(200, 200, 3) uint8``."""
    path = sorted((faces_dir / "utkface").glob("*.jpg"))[0]
    return np.asarray(Image.open(path).convert("RGB"))


def test_jpeg_matches_pillow_and_greyscale_becomes_rgb(faces_dir: Path):
    path = faces_dir / "lfw-expressions" / "Abdullah_Gul_0001.jpg"  # an 8-bit greyscale JPEG
    assert Image.open(path).mode == "L"
    img = load_image(path)
    ref = np.asarray(Image.open(path))
    assert img.shape == ref.shape + (3,) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], ref)


@pytest.mark.parametrize("fmt,suffix",
                         [("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_lossless_formats_round_trip(tmp_path: Path, photo: np.ndarray, fmt: str, suffix: str):
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(photo).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    np.testing.assert_array_equal(load_image(path), photo)


# The stored raster for each EXIF orientation, as a function of the upright image: the
# loader must undo it.
_STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.transpose(a, (1, 0, 2)),
    6: lambda a: np.rot90(a, 1),  # stored rotated 90 degrees counter-clockwise: view rotates it back
    7: lambda a: np.transpose(a[::-1, ::-1], (1, 0, 2)),
    8: lambda a: np.rot90(a, -1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, photo: np.ndarray, orientation: int):
    upright = np.ascontiguousarray(photo[:, :150])  # not square, so transposes show
    stored = np.ascontiguousarray(_STORED[orientation](upright))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rot.png"
    Image.fromarray(stored).save(path, exif=exif)
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.pixels, upright)
    assert loaded.original_size == (150, 200)


def test_exif_orientation_in_jpeg(tmp_path: Path, photo: np.ndarray):
    upright = np.ascontiguousarray(photo[:, :150])
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(path, quality=98, exif=exif)
    loaded = load_image(path)
    assert loaded.shape == upright.shape
    assert np.abs(loaded.astype(int) - upright).mean() < 2.0


def test_alpha_is_composited_over_white(tmp_path: Path, photo: np.ndarray):
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, :50] = 0
    alpha[:, 50:100] = 128
    path = tmp_path / "alpha.png"
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(path)
    img = load_image(path)
    np.testing.assert_array_equal(img[:, 100:], photo[:, 100:])
    assert (img[:, :50] == 255).all()
    expected = np.round(photo[:, 50:100] * (128 / 255) + 255 * (1 - 128 / 255))
    assert np.abs(img[:, 50:100].astype(float) - expected).max() <= 1


def test_palette_with_transparency(tmp_path: Path):
    im = Image.new("P", (8, 4))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    px = np.zeros((4, 8), np.uint8)
    px[:, 4:] = 1
    im.putdata(px.ravel().tolist())
    im.info["transparency"] = 0
    path = tmp_path / "pal.png"
    im.save(path, transparency=0)
    img = load_image(path)
    assert (img[:, :4] == 255).all()  # transparent red -> background white
    assert (img[:, 4:] == [0, 0, 255]).all()


def test_16bit_greyscale_png(tmp_path: Path, photo: np.ndarray):
    grey8 = photo[..., 1]
    grey16 = grey8.astype(np.uint16) * 257
    path = tmp_path / "g16.png"
    Image.fromarray(grey16).save(path)
    assert Image.open(path).mode.startswith("I")
    img = load_image(path)
    np.testing.assert_array_equal(img, np.repeat(grey8[..., None], 3, axis=-1))


def test_16bit_rgb_png(tmp_path: Path, photo: np.ndarray):
    import cv2

    rgb16 = photo.astype(np.uint16) * 257 + np.where(photo < 255, 100, 0).astype(np.uint16)  # low byte set
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), rgb16[..., ::-1])
    img = load_image(path)
    assert img.dtype == np.uint8
    assert np.abs(img.astype(int) - photo).max() <= 1


def test_cmyk_jpeg(tmp_path: Path, photo: np.ndarray):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(path, quality=98)
    img = load_image(path)
    assert img.shape == photo.shape
    assert np.abs(img.astype(int) - photo).mean() < 4.0


def test_large_jpeg_is_reduced_while_decoding_and_maps_back(tmp_path: Path):
    h, w = 3000, 4800
    big = np.zeros((h, w, 3), np.uint8)
    big[..., 1] = 60
    cx, cy = 3600, 900  # a bright square centred on pixel boundary (3600, 900)
    big[cy - 40:cy + 40, cx - 40:cx + 40] = 255
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=90)
    loaded = read_image(path, max_side=800)
    assert max(loaded.pixels.shape[:2]) == 800 and loaded.original_size == (w, h)
    np.testing.assert_allclose(loaded.scale, [6.0, 6.0], rtol=1e-3)
    bright = loaded.pixels[..., 0] > 128
    ys, xs = np.nonzero(bright)
    centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # pixel centres at +0.5
    np.testing.assert_allclose(loaded.to_original(centre), [cx, cy], atol=3.0)
    # without a limit the full raster comes back
    assert load_image(path).shape == (h, w, 3)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.99])
def test_truncated_jpeg_raises(tmp_path: Path, faces_dir: Path, keep: float):
    data = (faces_dir / "lfw-expressions" / "Abdullah_Gul_0001.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(path)
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(path, max_side=100)  # the reduced (draft) decode must fail too


def test_truncated_png_raises(tmp_path: Path, photo: np.ndarray):
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        load_image(path)


def test_not_an_image(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a text file, not a JPEG\n")
    with pytest.raises(ImageReadError, match="notes.jpg.*not an image") as e:
        load_image(path)
    assert isinstance(e.value, Facenet3DError) and e.value.path == str(path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        load_image(empty)
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
