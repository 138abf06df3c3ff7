"""``overlay.png``: what a reconstruction looks like over its photo, composed so errors show.

The textured render painted back over the photo looks right even when the shape is wrong (the
photo's own mouth and profile are on it), so the overlay has two panels side by side::

    [ textured render over the photo | grey shaded geometry over the photo, with landmarks ]

The right panel renders the mesh with a constant grey albedo under a fixed light
(:func:`geometry_sh`), blended over the photo at :data:`GEOMETRY_ALPHA`, with the model's 68
landmarks projected (red) and the detector's 68 points (green): a closed mouth on an open one,
a wrong jaw line or a turned pose is visible at a glance. Each panel is the photo reduced to at
most :data:`MAX_OVERLAY_SIDE` pixels (:func:`overlay_photo`), so a 48-megapixel photo gives a
few-megabyte PNG.

numpy + OpenCV only: the torch path (which renders with :mod:`facenet3d.render`) and the
torch-free runtime (:func:`crop_overlay` and :func:`photo_overlay`, rendered by
:mod:`facenet3d.export.software_render`) compose their renders with these functions.
"""

from __future__ import annotations

import numpy as np

from facenet3d.camera_math import CROP_FOCAL_PER_PX
from facenet3d.export.software_render import SH_CONSTANTS, render_face
from facenet3d.landmarks.image_io import LoadedImage

#: Largest side of a render in the crop camera before it is warped into the photo.
MAX_OVERLAY_RENDER = 1024
#: Largest side of each overlay panel (the photo is reduced to it).
MAX_OVERLAY_SIDE = 1280
#: Linear grey of the shaded-geometry render.
GEOMETRY_ALBEDO = 0.7
#: Opacity of the shaded geometry over the photo (the photo's features stay faintly visible).
GEOMETRY_ALPHA = 0.8
#: Direction towards the light of the shaded geometry, camera frame (+x right, +y up, +z towards
#: the viewer): from the upper left in front, so relief casts shading on the far side.
GEOMETRY_LIGHT = (-0.4, 0.5, 1.0)
#: Directional and ambient shading of the geometry light.
GEOMETRY_LIGHT_INTENSITY, GEOMETRY_AMBIENT = 0.75, 0.3
#: RGB of the model's projected landmarks and of the detected ones.
MODEL_LANDMARK_COLOUR, DETECTED_LANDMARK_COLOUR = (230, 40, 40), (40, 210, 60)


def geometry_sh() -> np.ndarray:
    """``(9, 3)`` float32 SH lighting of the shaded geometry: :data:`GEOMETRY_AMBIENT` plus a
    directional light (``pi I Y_k(d)``, as :func:`facenet3d.render.shading.sh_directional`)."""
    x, y, z = np.asarray(GEOMETRY_LIGHT, np.float64) / np.linalg.norm(GEOMETRY_LIGHT)
    basis = SH_CONSTANTS * np.array([1.0, y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y])
    sh = np.pi * basis * GEOMETRY_LIGHT_INTENSITY
    sh[0] += GEOMETRY_AMBIENT / SH_CONSTANTS[0]
    return np.repeat(sh[:, None], 3, 1).astype(np.float32)


def overlay_photo(image: LoadedImage | np.ndarray, max_side: int = MAX_OVERLAY_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The photo at the overlay's size.

    Args:
        image: a decoded photo (possibly already reduced) or an ``(H, W, 3)`` uint8 array at full size.
        max_side: largest side of the result.

    Returns:
        ``(pixels (h, w, 3) uint8, scale (2,))``: ``scale`` is original photo px per overlay px along x, y.
    """
    import cv2

    if isinstance(image, LoadedImage):
        pixels, original = image.pixels, image.original_size
    else:
        pixels = np.asarray(image)
        original = (pixels.shape[1], pixels.shape[0])
    h, w = pixels.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        pixels = cv2.resize(pixels, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return pixels, np.array([original[0] / pixels.shape[1], original[1] / pixels.shape[0]])


def to_overlay_forward(crop_forward: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(2, 3)`` overlay px -> crop px, from ``crop_forward`` (photo px -> crop px) and the
    overlay's ``scale`` (photo px per overlay px along x, y)."""
    fwd = np.asarray(crop_forward, np.float64).copy()
    fwd[:, :2] = fwd[:, :2] * np.asarray(scale, np.float64)[None, :]
    return fwd


def overlay_render_size(crop_forward: np.ndarray, crop_size: int) -> int:
    """Side of a render in the crop camera: about the target image's resolution at the face,
    at least the crop size, at most :data:`MAX_OVERLAY_RENDER`.

    Args:
        crop_forward: ``(2, 3)`` target px -> crop px.
        crop_size: the crop size it maps to.
    """
    fwd = np.asarray(crop_forward, np.float64)
    photo_per_crop = 1.0 / np.sqrt(abs(np.linalg.det(fwd[:, :2])))
    return int(np.clip(round(crop_size * photo_per_crop), crop_size, MAX_OVERLAY_RENDER))


def composite_crop_render(rgba: np.ndarray, crop_forward: np.ndarray, crop_size: int, photo: np.ndarray,
                          opacity: float = 1.0) -> np.ndarray:
    """Warp a render made in the aligned crop's camera into the photo and alpha-composite it.

    Args:
        rgba: ``(S, S, 4)`` float32 sRGB colour and coverage in ``[0, 1]``, rendered with the crop
            camera scaled to ``S`` pixels (focal ``CROP_FOCAL_PER_PX * S``, centre ``S / 2``).
        crop_forward: ``(2, 3)`` photo px -> crop px.
        crop_size: the crop size ``crop_forward`` maps to.
        photo: ``(H, W, 3)`` uint8 RGB.
        opacity: coverage multiplier (1: the render hides the photo where it covers it).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    import cv2

    size = rgba.shape[0]
    fwd = np.asarray(crop_forward, np.float64)
    # render px -> crop px -> photo px
    scale = np.diag([crop_size / size, crop_size / size, 1.0])
    inv = np.linalg.inv(np.vstack([fwd, [0, 0, 1]]))
    to_photo = (inv @ scale)[:2]
    h, w = photo.shape[:2]
    warped = cv2.warpAffine(np.asarray(rgba, np.float32), to_photo, (w, h), flags=cv2.INTER_LINEAR,
                            borderValue=0)
    alpha = warped[..., 3:4] * np.float32(opacity)
    blended = photo.astype(np.float32) / 255.0 * (1 - alpha) + warped[..., :3] * alpha
    return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)


def draw_points(image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], radius: int) -> np.ndarray:
    """Filled dots at ``points (N, 2)`` px (pixel centres at +0.5) on a copy of ``image (H, W, 3)`` uint8."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    shift = 4  # sub-pixel positions: cv2 draws in 1/16 px
    for x, y in np.asarray(points, np.float64):
        if np.isfinite(x) and np.isfinite(y):
            centre = (int(round((x - 0.5) * 16)), int(round((y - 0.5) * 16)))
            cv2.circle(out, centre, radius << shift, colour, -1, cv2.LINE_AA, shift)
    return out


def overlay_panels(textured: np.ndarray, geometry: np.ndarray, crop_forward: np.ndarray, crop_size: int,
                   photo: np.ndarray, scale: np.ndarray, landmarks_model: np.ndarray,
                   landmarks_detected: np.ndarray | None = None) -> np.ndarray:
    """The two-panel overlay (see the module docstring).

    Args:
        textured: ``(S, S, 4)`` the textured render in the crop camera (:func:`composite_crop_render`).
        geometry: ``(S', S', 4)`` the grey shaded render in the same camera.
        crop_forward: ``(2, 3)`` photo px -> crop px (original photo).
        crop_size: the crop size.
        photo: ``(h, w, 3)`` uint8, the photo at the overlay's size (:func:`overlay_photo`).
        scale: ``(2,)`` original px per overlay px (:func:`overlay_photo`).
        landmarks_model: ``(68, 2)`` the model's landmarks projected, original photo px.
        landmarks_detected: ``(68, 2)`` the detector's points, original photo px, or None.

    Returns:
        ``(h, 2 w, 3)`` uint8.
    """
    fwd = to_overlay_forward(crop_forward, scale)
    scale = np.asarray(scale, np.float64)
    left = composite_crop_render(textured, fwd, crop_size, photo)
    right = composite_crop_render(geometry, fwd, crop_size, photo, opacity=GEOMETRY_ALPHA)
    radius = max(1, round(max(photo.shape[:2]) / 400))
    if landmarks_detected is not None:
        right = draw_points(right, np.asarray(landmarks_detected, np.float64) / scale, DETECTED_LANDMARK_COLOUR,
                            radius)
    right = draw_points(right, np.asarray(landmarks_model, np.float64) / scale, MODEL_LANDMARK_COLOUR, radius)
    return np.concatenate([left, right], 1)


def crop_overlay(vertices: np.ndarray, triangles: np.ndarray, vertex_albedo: np.ndarray, sh: np.ndarray,
                 crop_forward: np.ndarray, crop_size: int, photo: np.ndarray, scale: np.ndarray,
                 landmarks_model: np.ndarray, landmarks_detected: np.ndarray | None = None) -> np.ndarray:
    """The two-panel overlay of ``facenet3d reconstruct`` (:func:`overlay_panels`).

    Both renders are made in the aligned crop's camera at about the overlay's resolution at the
    face (:func:`overlay_render_size`), then warped into the photo.

    Args:
        vertices: ``(V, 3)`` mm in the crop camera (the graph's ``vertices``).
        triangles, vertex_albedo, sh: see :func:`~facenet3d.export.software_render.render_face`.
        crop_forward: ``(2, 3)`` original photo px -> crop px.
        crop_size: crop size ``crop_forward`` maps to.
        photo: ``(h, w, 3)`` uint8 RGB at the overlay's size (:func:`overlay_photo`).
        scale: ``(2,)`` original photo px per overlay px.
        landmarks_model: ``(68, 2)`` projected model landmarks, original px.
        landmarks_detected: ``(68, 2)`` detected points, original px.

    Returns:
        ``(h, 2 w, 3)`` uint8.
    """
    size = overlay_render_size(to_overlay_forward(crop_forward, scale), crop_size)
    f = CROP_FOCAL_PER_PX * size
    textured, geometry = render_face(vertices, triangles, vertex_albedo, sh, (f, f), (size / 2.0, size / 2.0),
                                     (size, size), geometry_sh=geometry_sh(), geometry_albedo=GEOMETRY_ALBEDO)
    return overlay_panels(textured, geometry, crop_forward, crop_size, photo, scale, landmarks_model,
                          landmarks_detected)


def photo_overlay(vertices: np.ndarray, triangles: np.ndarray, vertex_albedo: np.ndarray, sh: np.ndarray,
                  focal: tuple[float, float], principal: tuple[float, float], photo: np.ndarray) -> np.ndarray:
    """The face rendered straight in the photo's camera and composited over it (video frames).

    Args:
        vertices: ``(V, 3)`` mm in the photo camera.
        triangles, vertex_albedo, sh: see :func:`~facenet3d.export.software_render.render_face`.
        focal, principal: the photo camera.
        photo: ``(H, W, 3)`` uint8 RGB.
    """
    rgba = render_face(vertices, triangles, vertex_albedo, sh, focal, principal, photo.shape[:2])
    alpha = rgba[..., 3:]
    blended = photo.astype(np.float32) / 255.0 * (1 - alpha) + rgba[..., :3] * alpha
    return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)
