"""The 3DDFA_V2 teacher: 68 3D landmarks and head pose from a photo and a face's roi box.

Follows ``shared/data/teachers/3ddfa_v2/README.md``:

- crop: the roi box ``(sx, sy, ex, ey)`` rounded to whole pixels is cut from the photo (zero
  outside it) and resized to 120x120 with OpenCV's bilinear; the network sees it as **BGR**,
  ``(x - 127.5) / 128``, CHW;
- decoding: ``p = out * param_std + param_mean``; ``P = p[:12].reshape(3, 4)``; the 68 points
  ``R @ (u + W_shp a_shp + W_exp a_exp) + t`` in the 120 crop, then 3DDFA's flips
  (``x -= 1``, ``z -= 1``, ``y = 120 - y``) and the crop's scale and offset back to the photo
  (z by the mean of the two scales);
- two passes (3DDFA_V2's landmark crop policy): the second pass re-crops around the first
  pass's landmarks (:func:`roi_box_from_landmarks`).

Pixel conventions: 3DDFA works in array-index pixels (the first pixel's centre at 0): a roi
box's ``sx`` is the first column cut (as the protocol's ``dev-protocol-roi.npz`` gives them),
and the decoding's ``x -= 1`` takes the model's 1-based (MATLAB) output to that frame. The
points returned are in facenet3d pixels (centres at +0.5), so :data:`INDEX_TO_PIXEL` is added.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facenet3d.teacher.mobilenet_v1 import INPUT_SIZE, NUM_PARAMS, TeacherWeightsError, load_mobilenet_v1

WEIGHTS_FILE = "mb05_120x120.safetensors"
BASES_FILE = "bfm68.npz"
#: Added to 3DDFA's array-index coordinates to give facenet3d pixels (pixel centres at +0.5).
INDEX_TO_PIXEL = 0.5
#: Arrays of ``bfm68.npz`` with their shapes.
BASES_SHAPES = {"u_base": (204,), "w_shp_base": (204, 40), "w_exp_base": (204, 10),
                "param_mean": (NUM_PARAMS,), "param_std": (NUM_PARAMS,)}


@dataclass
class TeacherResult:
    """The teacher's answer for one face.

    Attributes:
        landmarks68: ``(68, 3)`` float32 iBUG-68 points: x, y in photo pixels (facenet3d
            convention, centres at +0.5; jaw = fixed 3D model points as in AFLW2000-3D), z in
            the same pixel scale, larger toward the camera (3DDFA's sign after its y flip).
        pose: ``(3,)`` float32 pitch, yaw, roll in degrees (3DDFA_V2's ``calc_pose``; yaw has
            the sign of AFLW2000-3D's ``Pose_Para``, pitch and roll the opposite sign).
        params: ``(62,)`` float32 de-normalised parameters (12 pose matrix, 40 shape, 10
            expression), in the last pass's 120x120 crop.
        roi_box: ``(4,)`` float64 the last pass's roi box ``sx, sy, ex, ey`` (3DDFA frame).
        pass_change: mean 2D distance between the first and the last pass's points over the
            last roi's side (0 for one pass): the teacher's self-consistency, small when the
            first crop already framed the face as the network expects.
    """

    landmarks68: np.ndarray
    pose: np.ndarray
    params: np.ndarray
    roi_box: np.ndarray
    pass_change: float = 0.0


def roi_box_from_face_box(box: np.ndarray) -> np.ndarray:
    """3DDFA_V2's roi from a face detector's box.

    Args:
        box: ``(4,)`` ``left, top, right, bottom`` px.

    Returns:
        ``(4,)`` float64 ``sx, sy, ex, ey``: a square of side ``int(1.58 size)``, ``size`` the
        mean of width and height, centred ``0.14 size`` below the box's centre.
    """
    left, top, right, bottom = np.asarray(box, np.float64)[:4]
    size = (right - left + bottom - top) / 2
    cx, cy = (left + right) / 2, (top + bottom) / 2 + 0.14 * size
    side = int(1.58 * size)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def roi_box_from_landmarks(points: np.ndarray) -> np.ndarray:
    """3DDFA_V2's roi from 68 landmarks (its second pass).

    Args:
        points: ``(68, 2+)`` px (3DDFA frame).

    Returns:
        ``(4,)`` float64: the points' box made square about its centre (side = the larger
        extent), then the square whose side is that square's diagonal, same centre.
    """
    p = np.asarray(points, np.float64)[:, :2]
    lo, hi = p.min(0), p.max(0)
    centre = (lo + hi) / 2
    half = max(hi - lo) * math.sqrt(2.0) / 2  # half the diagonal of the square of side max extent
    return np.concatenate([centre - half, centre + half])


def crop_roi(image: np.ndarray, roi_box: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Cut ``roi_box`` (rounded to whole pixels) from a photo, zero outside it, resize bilinearly.

    Args:
        image: ``(H, W, C)`` uint8.
        roi_box: ``(4,)`` ``sx, sy, ex, ey`` (3DDFA frame).

    Returns:
        ``(size, size, C)`` uint8.
    """
    import cv2

    h, w = image.shape[:2]
    sx, sy, ex, ey = (int(round(float(v))) for v in roi_box)
    if ex <= sx or ey <= sy:
        raise ValueError(f"empty roi box {roi_box}")
    out = np.zeros((ey - sy, ex - sx, image.shape[2]), np.uint8)
    x0, y0, x1, y1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if x1 > x0 and y1 > y0:
        out[y0 - sy:y1 - sy, x0 - sx:x1 - sx] = image[y0:y1, x0:x1]
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)


def pose_from_params(params: np.ndarray) -> np.ndarray:
    """``(3,)`` pitch, yaw, roll in degrees from the 3x4 pose matrix (3DDFA_V2's ``calc_pose``).

    The matrix's first two rows are normalised (scale removed), the third is their cross product.
    """
    p = np.asarray(params, np.float64)[:12].reshape(3, 4)
    r1, r2 = p[0, :3] / np.linalg.norm(p[0, :3]), p[1, :3] / np.linalg.norm(p[1, :3])
    r = np.stack([r1, r2, np.cross(r1, r2)])
    if r[2, 0] > 0.998:  # gimbal lock, as in 3DDFA_V2's matrix2angle
        yaw, pitch, roll = math.pi / 2, math.atan2(-r[0, 1], -r[0, 2]), 0.0
    elif r[2, 0] < -0.998:
        yaw, pitch, roll = -math.pi / 2, math.atan2(r[0, 1], r[0, 2]), 0.0
    else:
        yaw = math.asin(r[2, 0])
        c = math.cos(yaw)
        pitch, roll = math.atan2(r[2, 1] / c, r[2, 2] / c), math.atan2(r[1, 0] / c, r[0, 0] / c)
    return np.degrees([pitch, yaw, roll]).astype(np.float32)


class Teacher3DDFA:
    """The 3DDFA_V2 MobileNet x0.5 with its 68-point bases.

    Args:
        net: the :class:`~facenet3d.teacher.mobilenet_v1.MobileNetV1` with the teacher's weights.
        bases: the arrays of ``bfm68.npz`` (:data:`BASES_SHAPES`).
        device: torch device.
        source: where the weights came from (reports name it).
    """

    def __init__(self, net: torch.nn.Module, bases: dict[str, np.ndarray], device: str | torch.device = "cpu",
                 source: str = ""):
        self.source = source
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.param_mean = np.asarray(bases["param_mean"], np.float64)
        self.param_std = np.asarray(bases["param_std"], np.float64)
        self.u_base = np.asarray(bases["u_base"], np.float64)
        self.w_shp = np.asarray(bases["w_shp_base"], np.float64)
        self.w_exp = np.asarray(bases["w_exp_base"], np.float64)

    @classmethod
    def from_dir(cls, path: str | Path, device: str | torch.device = "cpu") -> Teacher3DDFA:
        """Load ``mb05_120x120.safetensors`` and ``bfm68.npz`` from a folder.

        Raises:
            TeacherWeightsError: a file missing, unreadable or of the wrong layout.
        """
        root = Path(path)
        net = load_mobilenet_v1(root / WEIGHTS_FILE)
        bases_path = root / BASES_FILE
        try:
            with np.load(bases_path) as f:
                bases = {k: f[k] for k in BASES_SHAPES if k in f}
        except (OSError, ValueError) as e:
            raise TeacherWeightsError(f"{bases_path}: cannot read the bases ({e})") from e
        wrong = {k: bases[k].shape if k in bases else None for k, s in BASES_SHAPES.items()
                 if k not in bases or bases[k].shape != s}
        if wrong:
            raise TeacherWeightsError(f"{bases_path}: arrays missing or of the wrong shape: {wrong}")
        return cls(net, bases, device, str(root))

    def predict(self, image_rgb: np.ndarray, roi_box: np.ndarray, passes: int = 2) -> TeacherResult:
        """The teacher on one face (see :meth:`predict_batch`)."""
        return self.predict_batch([image_rgb], np.asarray(roi_box, np.float64)[None], passes)[0]

    def predict_batch(self, images_rgb: Sequence[np.ndarray], roi_boxes: np.ndarray, passes: int = 2
                      ) -> list[TeacherResult]:
        """The teacher on several faces, one network call per pass.

        Args:
            images_rgb: ``B`` photos, each ``(H, W, 3)`` uint8 RGB (sizes may differ).
            roi_boxes: ``(B, 4)`` first-pass roi boxes ``sx, sy, ex, ey`` in the photos (3DDFA
                frame, see the module docstring), e.g. :func:`roi_box_from_face_box` or the
                protocol's boxes.
            passes: 1 (the roi as given) or 2 (then re-cropped around the first pass's points).

        Returns:
            ``B`` :class:`TeacherResult`.
        """
        if passes not in (1, 2):
            raise ValueError(f"passes must be 1 or 2, got {passes}")
        rois = np.asarray(roi_boxes, np.float64).reshape(-1, 4)
        if len(rois) != len(images_rgb):
            raise ValueError(f"{len(images_rgb)} images but {len(rois)} roi boxes")
        if len(rois) == 0:
            return []
        points: list[np.ndarray] = []
        first: list[np.ndarray] = []
        for k in range(passes):
            if k:
                rois = np.stack([roi_box_from_landmarks(p) for p in points])
            params = self._params(images_rgb, rois)
            points = [self._decode(p, r) for p, r in zip(params, rois, strict=True)]
            first = first or points
        out = []
        for p, pts, p0, r in zip(params, points, first, rois, strict=True):
            lm = pts.copy()
            lm[:, :2] += INDEX_TO_PIXEL
            change = float(np.linalg.norm(pts[:, :2] - p0[:, :2], axis=1).mean() / max(r[2] - r[0], 1e-6))
            out.append(TeacherResult(lm.astype(np.float32), pose_from_params(p), p.astype(np.float32), r, change))
        return out

    def _params(self, images: Sequence[np.ndarray], rois: np.ndarray) -> np.ndarray:
        """``(B, 62)`` float64 de-normalised parameters of the crops."""
        crops = np.stack([crop_roi(_rgb(im), r) for im, r in zip(images, rois, strict=True)])
        x = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2)))  # RGB -> BGR, CHW
        x = (x.to(self.device, torch.float32) - 127.5) / 128.0
        with torch.no_grad():
            out = self.net(x).double().cpu().numpy()
        return out * self.param_std + self.param_mean

    def _decode(self, params: np.ndarray, roi: np.ndarray) -> np.ndarray:
        """``(68, 3)`` float64 points in the photo (3DDFA frame) from one parameter vector."""
        pm = params[:12].reshape(3, 4)
        shape = (self.u_base + self.w_shp @ params[12:52] + self.w_exp @ params[52:62]).reshape(68, 3).T
        pts = pm[:, :3] @ shape + pm[:, 3:]
        pts[0] -= 1
        pts[2] -= 1
        pts[1] = INPUT_SIZE - pts[1]
        sx, sy, ex, ey = roi
        fx, fy = (ex - sx) / INPUT_SIZE, (ey - sy) / INPUT_SIZE
        pts[0] = pts[0] * fx + sx
        pts[1] = pts[1] * fy + sy
        pts[2] *= (fx + fy) / 2
        return pts.T


def _rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 or raise (the teacher takes colour photos; grey ones are stacked first)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {a.shape} {a.dtype}")
    return a
