"""MediaPipe's face detection and refined face-mesh graphs in numpy + onnxruntime.

The torch-free runtime must not need the ``mediapipe`` package (it pulls in jax, matplotlib and
a second OpenCV). This module runs the networks the mediapipe wheel bundles (converted to ONNX by
:mod:`facenet3d.landmarks.convert_mediapipe`, shipped in ``data/mediapipe/``) and re-implements
the graph logic around them, following MediaPipe's calculators as the legacy
``FaceMesh(static_image_mode=True, refine_landmarks=True)`` wires them:

* detection (``FaceDetectionShortRange`` / ``FullRange``): the photo letterboxed into the model
  input, SSD anchors, box + 6 keypoint decoding, sigmoid scores, weighted non-maximum suppression;
* face ROI (``FaceDetectionFrontDetectionToRoi``): the detection box, rotated so the eyes are
  level, made square on its long side and enlarged 1.5 times;
* face mesh (``FaceLandmarkCpu`` with attention): on the 192 x 192 rotated crop, 468 mesh points,
  refined lips (80) and eye regions (71 + 71) that replace the mesh's x, y there, 2 x 5 iris points
  appended with the mean depth of their eyelids (``TensorsToFaceLandmarksWithAttention``), and a
  presence score; points projected back to the photo.

Every coordinate returned is in pixels of the photo given; depth in the same pixel scale.
Agreement with the mediapipe package: ``benchmarks/face_landmarks.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet3d.errors import WeightsError

MODEL_DIR = Path(__file__).resolve().parent / "data" / "mediapipe"

#: Mesh points replaced by the attention model's 71 eye-region points, in its order, for the
#: eye of corners 33-133 (subject's right) and of corners 263-362.
EYE_CONTOUR_INDICES = (
    np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
              130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
              226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
              35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
              156, 70, 63, 105, 66, 107, 55, 193]),
    np.array([263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
              359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
              446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
              265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
              383, 300, 293, 334, 296, 336, 285, 417]),
)
#: Mesh points replaced by the attention model's 80 lip points, in its order.
LIP_INDICES = np.array([
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
    76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306, 184, 74, 73, 72, 11, 302, 303, 304, 408,
    62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292, 183, 42, 41, 38, 12, 268, 271, 272, 407])
#: The first 16 eye-region points (the eyelids) give each iris its depth.
_EYELID_POINTS = 16


@dataclass(frozen=True)
class DetectorSpec:
    """One BlazeFace model and its decoding options (MediaPipe's graph options)."""

    file: str
    size: int
    strides: tuple[int, ...]
    anchors_per_layer: int  # one aspect ratio, plus one interpolated scale when 2


SHORT_RANGE = DetectorSpec("face_detection_short_range.onnx", 128, (8, 16, 16, 16), 2)
FULL_RANGE = DetectorSpec("face_detection_full_range.onnx", 192, (4,), 1)
NMS_IOU = 0.3


@dataclass(frozen=True)
class Detection:
    """A face detection in photo pixels: ``box`` (x0, y0, x1, y1), ``keypoints`` (6, 2) (eyes,
    nose tip, mouth, ear tragions), ``score`` in [0, 1]."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float


@dataclass(frozen=True)
class Roi:
    """A square region of a photo: centre and side in pixels, rotation in radians (y down)."""

    cx: float
    cy: float
    side: float
    rotation: float


def ssd_anchors(spec: DetectorSpec) -> np.ndarray:
    """``(N, 2)`` anchor centres in [0, 1] (MediaPipe's SsdAnchorsCalculator, fixed anchor size):
    consecutive layers of equal stride share one grid."""
    centres = []
    i = 0
    while i < len(spec.strides):
        stride, count = spec.strides[i], 0
        while i < len(spec.strides) and spec.strides[i] == stride:
            count += spec.anchors_per_layer
            i += 1
        n = math.ceil(spec.size / stride)
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], 1)
        centres.append(np.repeat(grid, count, axis=0))
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = NMS_IOU) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: the best box absorbs every box overlapping
    it by more than ``iou_threshold`` (itself included), whose coordinates are averaged with
    score weights; the result keeps the best box's score. Sorted by score, descending."""
    order = list(np.argsort(-scores, kind="stable"))
    out = []
    while order:
        best = order[0]
        x0 = np.maximum(boxes[best, 0], boxes[order, 0])
        y0 = np.maximum(boxes[best, 1], boxes[order, 1])
        x1 = np.minimum(boxes[best, 2], boxes[order, 2])
        y1 = np.minimum(boxes[best, 3], boxes[order, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        area = (boxes[order, 2] - boxes[order, 0]) * (boxes[order, 3] - boxes[order, 1])
        union = area[0] + area - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        merged = iou > iou_threshold
        members = np.array(order)[merged]
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[best])))
        order = [o for o, m in zip(order, merged, strict=True) if not m]
    return out


def crop(pixels: np.ndarray, roi: Roi, size: int, value_range: tuple[float, float], border: int) -> np.ndarray:
    """``(1, size, size, 3)`` float32 model input: the rotated square ``roi`` resampled
    bilinearly (MediaPipe's ImageToTensor: the ROI's corners go to the tensor's corners), values
    scaled to ``value_range``."""
    import cv2

    src = cv2.boxPoints(((roi.cx, roi.cy), (roi.side, roi.side), math.degrees(roi.rotation)))
    dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    matrix = cv2.getPerspectiveTransform(src.astype(np.float32), dst)
    patch = cv2.warpPerspective(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    lo, hi = value_range
    return (patch.astype(np.float32) * ((hi - lo) / 255.0) + lo)[None]


def project(points: np.ndarray, roi: Roi, size: int) -> np.ndarray:
    """Model-input points ``(N, 3)`` (pixels of the ``size`` tensor) -> photo pixels; depth
    scaled like x (MediaPipe's LandmarkProjection)."""
    p = points.astype(np.float64) / size
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    x, y = p[:, 0] - 0.5, p[:, 1] - 0.5
    out = np.empty_like(p)
    out[:, 0] = (c * x - s * y) * roi.side + roi.cx
    out[:, 1] = (s * x + c * y) * roi.side + roi.cy
    out[:, 2] = p[:, 2] * roi.side
    return out


def roi_from_points(start: np.ndarray, end: np.ndarray, centre: np.ndarray, width: float, height: float,
                    scale: float) -> Roi:
    """A square ROI rotated so ``start -> end`` is horizontal (MediaPipe's DetectionsToRects +
    RectTransformation with ``square_long``)."""
    rotation = math.atan2(float(end[1] - start[1]), float(end[0] - start[0]))
    rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
    return Roi(float(centre[0]), float(centre[1]), scale * max(width, height), rotation)


class FaceMeshOnnx:
    """Face detector + 478-point face mesh on onnxruntime (see the module docstring).

    Args:
        model_dir: folder of the converted ``.onnx`` files.

    Raises:
        WeightsError: a model file is missing.
        threads: onnxruntime intra-op threads (1: these networks are small, callers parallelise
            over photos).
    """

    def __init__(self, model_dir: str | Path = MODEL_DIR, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        model_dir = Path(model_dir)

        def session(name: str):
            path = model_dir / name
            if not path.is_file():
                raise WeightsError(f"{path}: missing; python -m facenet3d.landmarks.convert_mediapipe makes it")
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        self._detectors = {spec: (session(spec.file), ssd_anchors(spec)) for spec in (SHORT_RANGE, FULL_RANGE)}
        self._mesh = session("face_landmark_with_attention.onnx")

    # -- detection -----------------------------------------------------------------------------
    def detect(self, pixels: np.ndarray, min_score: float = 0.5, full_range: bool = False) -> list[Detection]:
        """Faces found by BlazeFace on an ``(H, W, 3) uint8`` RGB photo, best first."""
        import cv2

        spec = FULL_RANGE if full_range else SHORT_RANGE
        sess, anchors = self._detectors[spec]
        h, w = pixels.shape[:2]
        letterbox = Roi(w / 2, h / 2, float(max(w, h)), 0.0)
        x = crop(pixels, letterbox, spec.size, (-1.0, 1.0), cv2.BORDER_CONSTANT)
        raw, logits = sess.run(None, {sess.get_inputs()[0].name: x})
        raw, logits = raw[0].astype(np.float64), logits[0, :, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100.0, 100.0)))
        keep = scores >= min_score
        if not keep.any():
            return []
        raw, scores, anc = raw[keep] / spec.size, scores[keep], anchors[keep].astype(np.float64)
        centre = raw[:, :2] + anc
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], 1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
        out = []
        for box, kp, score in weighted_nms(boxes, kps, scores):
            # tensor [0, 1] -> photo pixels through the letterbox square
            to_px = lambda p: (p - 0.5) * letterbox.side + np.array([letterbox.cx, letterbox.cy])  # noqa: E731
            out.append(Detection(np.concatenate([to_px(box[:2]), to_px(box[2:])]).astype(np.float32),
                                 to_px(kp).astype(np.float32), score))
        return out

    # -- landmarks -----------------------------------------------------------------------------
    def landmarks(self, pixels: np.ndarray, detection: Detection, min_presence: float = 0.5) -> np.ndarray | None:
        """``(478, 3)`` float32 photo-pixel landmarks of the face of ``detection``; ``None`` when the
        mesh network's face-presence score is below ``min_presence``."""
        import cv2

        box, kp = detection.box, detection.keypoints
        roi = roi_from_points(kp[0], kp[1], (box[:2] + box[2:]) / 2, box[2] - box[0], box[3] - box[1], 1.5)
        outputs = self._mesh.run(None, {self._mesh.get_inputs()[0].name:
                                        crop(pixels, roi, 192, (0.0, 1.0), cv2.BORDER_REPLICATE)})
        if 1.0 / (1.0 + math.exp(-float(outputs[-1].ravel()[0]))) < min_presence:
            return None
        mesh, lips, left_eye, right_eye, left_iris, right_iris = outputs[:6]
        mesh = mesh.reshape(468, 3).copy()
        for idx, pts in ((LIP_INDICES, lips), (EYE_CONTOUR_INDICES[0], left_eye), (EYE_CONTOUR_INDICES[1], right_eye)):
            mesh[idx, :2] = pts.reshape(-1, 2)  # refined in the image plane; depth stays the mesh's
        irises = []
        for contour_idx, iris in zip(EYE_CONTOUR_INDICES, (left_iris, right_iris), strict=True):
            z = np.full((5, 1), mesh[contour_idx[:_EYELID_POINTS], 2].mean(), np.float32)
            irises.append(np.concatenate([iris.reshape(5, 2), z], 1))
        return project(np.concatenate([mesh] + irises), roi, 192).astype(np.float32)
