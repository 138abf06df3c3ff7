"""AFLW2000-3D: 68-landmark NME in the protocol of 3DDFA, 3DDFA_V2 and SynergyNet.

Protocol (as in those projects' benchmark code):

- ground truth: the x-y rows of ``pt3d_68`` (3 x 68, image pixels) of each ``.mat`` file;
- error of one image: mean Euclidean distance of the 68 predicted points to the ground truth,
  divided by ``sqrt(w h)`` of the ground-truth points' bounding box;
- pose bins by ``|yaw|`` (``Pose_Para[1]``, radians in the file) in degrees: ``<= 30``,
  ``(30, 60]``, ``> 60`` (the peers' code puts an exact 30 or 60 in the lower bin and every
  yaw above 60, including the few beyond 90, in the last);
- reported: the mean NME per bin and the mean of the three bin means (the published figure;
  3DDFA_V2 3.51 %, SynergyNet 3.41 %), plus the mean over all images.

Beyond the protocol, the report breaks the error down by landmark region
(:func:`region_breakdown`): each region's mean point error per bin, and its mean signed offset
along the direction the face looks in the image, both normalised like the NME. A systematic
offset that grows with yaw is a difference in *where* the points sit in depth (a convention,
or a face too flat), not noise.

Pixel convention: the annotations were made in MATLAB, whose first pixel's centre is 1;
facenet3d puts it at 0.5 (:mod:`facenet3d.landmarks`), so :data:`AFLW_PIXEL_OFFSET` is
subtracted from the annotations before comparing.

Crops (``crop=``):

- ``"detect"``: the method runs on the whole photo; when the detector finds several faces the
  one overlapping the annotated face's box most is scored (the annotation only says *which*
  face, it never moves the detection);
- ``"gt-box"``: as the published protocol, the face region comes from the ground truth: the
  photo is cut to a square of ``box_scale`` times the longer side of the ground-truth
  landmarks' box, centred on it (black outside the photo, whole-pixel shift, no resampling),
  the method runs on that cut-out and its points are shifted back. 3DDFA crops ``sqrt(2)``
  times the box; MediaPipe's face mesh needs more context (its landmarks are markedly worse on
  tight crops), so the default is 2. Every face is scored, as the peers score them: where
  MediaPipe finds the face (overlapping the box) the face-model methods align and refine it as
  usual; where it does not, the crop is cut from the ground-truth box
  (:func:`~facenet3d.landmarks.align.box_alignment_matrix`), and the regressor's answer (or the
  mean face placed in the box) is scored as it is, unrefined, and counted
  (``n_landmarks_fallback``). The ``3ddfa-v2`` baseline runs on the whole photo with the
  published protocol's roi box of the image (``protocol_roi=``, ``dev-protocol-roi.npz``),
  else 3DDFA_V2's roi from the ground-truth box. Only ``mediapipe`` itself can still miss.

With ``crop="detect"``, faces the detector misses are counted and listed, and left out of the NME.

A second NME column (``nme_68_reannotated``) scores the same predictions against the
re-annotated 2D labels of the images ("AFLW2000-3D reannotated", same protocol, normalised by
their own box) when a file of them is given (``reannotated=``: ``names``, ``pts68`` (N, 2, 68)
in ``pt3d_68``'s pixels).

Fit to the truth (``fit_truth=``, not a method: it reads the labels): after the method, the
face model is refitted to the ground-truth points themselves (:func:`fit_to_truth`), all 68 or
the 51 inner ones, and that fit is scored. With ``"all"`` this is how close the face model and
its landmark vertices can come to the benchmark's points at best; with ``"inner"`` the 17 jaw
points are predicted from a face posed and shaped on the true inner points, so their error is
where the model's jaw vertices sit against the benchmark's jaw (its contour convention, plus
what the inner points do not say about the jaw).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facenet3d.evaluate.common import EvaluationDataError, ItemRun, environment, evenly_spaced
from facenet3d.evaluate.methods import Method, MethodUnavailableError
from facenet3d.landmarks.ibug68 import IBUG68_INNER

if TYPE_CHECKING:  # the api pulls in torch and the renderer
    from facenet3d.api import FaceReconstruction

#: Subtracted from the annotations' pixel coordinates (MATLAB's first pixel centre is 1, ours 0.5).
AFLW_PIXEL_OFFSET = 0.5
#: Upper edges (degrees, inclusive) of the first two yaw bins; the last bin takes the rest.
YAW_EDGES = (30.0, 60.0)
YAW_BIN_NAMES = ("yaw_0_30", "yaw_30_60", "yaw_60_90")
CROP_MODES = ("gt-box", "detect")
#: iBUG-68 points each ``fit_truth`` option fits: all, or all but the 17 jaw-contour points.
FIT_TRUTH_POINTS = {"all": slice(0, 68), "inner": IBUG68_INNER}
#: Stage-A settings of :func:`fit_to_truth` (a :class:`~facenet3d.refine.config.LandmarkStageConfig`'s
#: fields): the 68-point term alone, and coefficient priors so weak that they only keep the
#: coefficients finite (the pipeline's own priors, balanced against 536 points, would hold a fit
#: to 68 points back by several pixels: this is to measure what the face model can reach).
FIT_TRUTH_STAGE = {"iterations": 200, "lr": 0.02, "dense_weight": 0.0, "depth_weight": 0.0,
                   "identity_prior": 1e-5, "expression_prior": 1e-5}
#: Side of the ``gt-box`` cut-out relative to the longer side of the ground-truth box.
DEFAULT_BOX_SCALE = 2.0
#: Peers' published figures (mean of the three bins, %).
PUBLISHED_NME = {"3DDFA_V2": 3.51, "SynergyNet": 3.41}


@dataclass
class AFLWAnnotation:
    """One annotated AFLW2000-3D image.

    Attributes:
        landmarks68: ``(68, 2)`` float64 ground truth in facenet3d pixels (centres at +0.5).
        yaw_deg: head yaw in degrees (signed).
    """

    landmarks68: np.ndarray
    yaw_deg: float

    @property
    def box(self) -> np.ndarray:
        """``(4,)`` ``x0, y0, x1, y1`` of the 68 points."""
        return np.concatenate([self.landmarks68.min(0), self.landmarks68.max(0)])


def read_annotation(path: str | Path) -> AFLWAnnotation:
    """Read ``pt3d_68`` and ``Pose_Para`` from an AFLW2000-3D ``.mat`` file.

    Raises:
        EvaluationDataError: missing or unreadable file, or fields of the wrong shape.
    """
    import scipy.io
    from scipy.io.matlab import MatReadError

    path = Path(path)
    if not path.is_file():
        raise EvaluationDataError(path, "annotation file not found")
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["pt3d_68", "Pose_Para"])
    except (OSError, ValueError, TypeError, NotImplementedError, MatReadError) as e:
        raise EvaluationDataError(path, f"cannot read the .mat file ({e})") from e
    pts = np.asarray(mat.get("pt3d_68", np.empty(0)), np.float64)
    pose = np.asarray(mat.get("Pose_Para", np.empty(0)), np.float64).reshape(-1)
    if pts.shape not in ((3, 68), (2, 68)):
        raise EvaluationDataError(path, f"pt3d_68 must be 3 x 68, got {pts.shape}")
    if pose.size < 3:
        raise EvaluationDataError(path, f"Pose_Para must hold pitch, yaw, roll, ..., got {pose.size} values")
    if not np.isfinite(pts[:2]).all() or not math.isfinite(pose[1]):
        raise EvaluationDataError(path, "non-finite landmarks or yaw")
    return AFLWAnnotation(pts[:2].T - AFLW_PIXEL_OFFSET, math.degrees(float(pose[1])))


def nme_68(predicted: np.ndarray, ground_truth: np.ndarray) -> float:
    """Normalised mean error of one face (a fraction, not percent).

    Args:
        predicted: ``(68, 2)`` px.
        ground_truth: ``(68, 2)`` px.

    Returns:
        ``mean_i |p_i - g_i| / sqrt(w h)``, ``w, h`` the size of the ground truth's bounding box.
    """
    p = np.asarray(predicted, np.float64)
    g = np.asarray(ground_truth, np.float64)
    if p.shape != g.shape or p.shape[-1] != 2:
        raise ValueError(f"expected two (68, 2) arrays, got {p.shape} and {g.shape}")
    w, h = g.max(0) - g.min(0)
    return float(np.linalg.norm(p - g, axis=1).mean() / math.sqrt(w * h))


def point_errors(predicted: np.ndarray, ground_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-point error and signed offset along the face's facing direction, normalised as :func:`nme_68`.

    The facing direction is image-right when the ground truth's nose tip (point 30) lies right
    of its eyes' centre (points 36-47), else image-left.

    Args:
        predicted, ground_truth: ``(68, 2)`` px.

    Returns:
        ``(errors (68,), facing_offsets (68,))`` fractions of ``sqrt(w h)``; an offset is positive
        when the predicted point lies ahead of the true one, toward where the face looks.
    """
    p = np.asarray(predicted, np.float64)
    g = np.asarray(ground_truth, np.float64)
    w, h = g.max(0) - g.min(0)
    norm = math.sqrt(w * h)
    facing = 1.0 if g[30, 0] >= g[36:48, 0].mean() else -1.0
    return np.linalg.norm(p - g, axis=1) / norm, facing * (p[:, 0] - g[:, 0]) / norm


def region_breakdown(errors: np.ndarray, facing_offsets: np.ndarray, yaws_deg: np.ndarray) -> dict:
    """Mean error and mean facing offset of each iBUG-68 region, per yaw bin, in percent.

    Args:
        errors, facing_offsets: ``(N, 68)`` from :func:`point_errors`.
        yaws_deg: ``(N,)``.

    Returns:
        ``{"error": {bin: {region: %}}, "facing_offset": {bin: {region: %}}}`` (bins without
        images are left out).
    """
    from facenet3d.landmarks.ibug68 import IBUG68_REGIONS

    bins = yaw_bins(yaws_deg)
    out: dict = {"error": {}, "facing_offset": {}}
    for k, name in enumerate(YAW_BIN_NAMES):
        sel = bins == k
        if not sel.any():
            continue
        for key, values in (("error", errors), ("facing_offset", facing_offsets)):
            out[key][name] = {r: round(float(values[sel][:, s].mean() * 100), 3) for r, s in IBUG68_REGIONS.items()}
    return out


def yaw_bin(yaw_deg: float) -> int:
    """Bin index of a yaw (see the module docstring): 0 for ``|yaw| <= 30``, 1 for ``<= 60``, else 2."""
    a = abs(yaw_deg)
    return 0 if a <= YAW_EDGES[0] else 1 if a <= YAW_EDGES[1] else 2


def summarise_nme(nmes: np.ndarray, yaws_deg: np.ndarray) -> dict:
    """The published table row from per-image NMEs.

    Args:
        nmes: ``(N,)`` fractions.
        yaws_deg: ``(N,)`` degrees.

    Returns:
        ``{"yaw_0_30", "yaw_30_60", "yaw_60_90", "mean", "all"}`` in percent (``mean``: of the
        three bins; a bin without images is None and ``mean`` then too).
    """
    nmes = np.asarray(nmes, np.float64)
    bins = yaw_bins(yaws_deg)
    out: dict = {}
    for k, name in enumerate(YAW_BIN_NAMES):
        sel = nmes[bins == k]
        out[name] = float(sel.mean() * 100) if sel.size else None
    per_bin = [out[n] for n in YAW_BIN_NAMES]
    out["mean"] = None if any(v is None for v in per_bin) else float(np.mean(per_bin))
    out["all"] = float(nmes.mean() * 100) if nmes.size else None
    return out


def yaw_bins(yaws_deg: np.ndarray) -> np.ndarray:
    """``(N,)`` int bin index of each yaw (:func:`yaw_bin`)."""
    return np.array([yaw_bin(y) for y in np.asarray(yaws_deg, np.float64).reshape(-1)], dtype=int)


def gt_box_crop(box: np.ndarray, box_scale: float = DEFAULT_BOX_SCALE) -> tuple[np.ndarray, int]:
    """The ``gt-box`` cut-out around a ground-truth box.

    Args:
        box: ``(4,)`` ``x0, y0, x1, y1`` px.
        box_scale: cut-out side over the box's longer side.

    Returns:
        ``(forward (2, 3) photo px -> cut-out px (a whole-pixel shift), side px)``.
    """
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    side = int(math.ceil(box_scale * max(x1 - x0, y1 - y0)))
    ox = round((x0 + x1) / 2 - side / 2)
    oy = round((y0 + y1) / 2 - side / 2)
    return np.array([[1.0, 0.0, -ox], [0.0, 1.0, -oy]]), side


def list_images(data_dir: str | Path) -> list[Path]:
    """The ``.jpg`` files of an AFLW2000-3D folder that have a ``.mat`` beside them, sorted.

    Raises:
        EvaluationDataError: no such folder or no annotated image in it.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise EvaluationDataError(root, "not a folder")
    images = sorted(p for p in root.iterdir() if p.suffix.lower() == ".jpg" and p.with_suffix(".mat").is_file())
    if not images:
        raise EvaluationDataError(root, "no .jpg + .mat pairs (AFLW2000-3D layout) found")
    return images


def read_protocol_roi(path: str | Path) -> dict[str, np.ndarray]:
    """``{image name: (4,) sx, sy, ex, ey}`` from a protocol roi file (``names``, ``roi_box`` (N, 4)).

    Raises:
        EvaluationDataError: missing or unreadable file, or arrays of the wrong shape.
    """
    names, boxes = _read_named_arrays(path, "roi_box")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise EvaluationDataError(path, f"roi_box must be (N, 4), got {boxes.shape}")
    return dict(zip(names, boxes, strict=True))


def read_reannotated(path: str | Path) -> dict[str, np.ndarray]:
    """``{image name: (68, 2) px}`` from a re-annotation file (``names``, ``pts68`` (N, 2, 68)).

    The points are in ``pt3d_68``'s pixels, so :data:`AFLW_PIXEL_OFFSET` is subtracted as for the
    ground truth.

    Raises:
        EvaluationDataError: missing or unreadable file, or arrays of the wrong shape.
    """
    names, pts = _read_named_arrays(path, "pts68")
    if pts.ndim != 3 or pts.shape[1:] != (2, 68):
        raise EvaluationDataError(path, f"pts68 must be (N, 2, 68), got {pts.shape}")
    return {n: p.T - AFLW_PIXEL_OFFSET for n, p in zip(names, pts, strict=True)}


def _read_named_arrays(path: str | Path, key: str) -> tuple[list[str], np.ndarray]:
    path = Path(path)
    try:
        with np.load(path) as f:
            names, values = [str(n) for n in f["names"]], np.asarray(f[key], np.float64)
    except (OSError, KeyError, ValueError) as e:
        raise EvaluationDataError(path, f"cannot read 'names' and '{key}' ({e})") from e
    if len(names) != len(values):
        raise EvaluationDataError(path, f"{len(names)} names but {len(values)} rows of {key}")
    return names, values


def predict_landmarks(method: Method, image_path: Path, annotation: AFLWAnnotation, crop: str = "gt-box",
                      box_scale: float = DEFAULT_BOX_SCALE, fit_truth: str | None = None,
                      roi_box: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """The method's 68 points for the annotated face of one image, in photo pixels.

    Args:
        fit_truth: None, or ``"all"`` / ``"inner"``: return :func:`fit_to_truth`'s points instead.
        roi_box: ``(4,)`` the protocol's roi box of the image, for ``3ddfa-v2`` with ``gt-box``.

    Returns:
        ``((68, 2) px, landmarks_found)``: False when refinement had no MediaPipe face to fit
        and the method's starting point was scored (see the module docstring).

    Raises:
        ImageReadError, NoFaceError: unreadable photo, or (``detect``, ``mediapipe``) the face
            was not found.
    """
    from facenet3d.landmarks.align import invert_affine, transform_points, warp_image
    from facenet3d.landmarks.image_io import read_image

    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    photo = read_image(image_path).pixels
    box = annotation.box
    forward = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if crop == "gt-box" and method.teacher is None:  # the teacher cuts its own roi from the photo
        forward, side = gt_box_crop(box, box_scale)
        photo = warp_image(photo, forward, (side, side))
    in_image = transform_points(box.reshape(2, 2), forward).reshape(4)
    if crop == "gt-box":
        pred = method.run(photo, reference_box=in_image, face_box=in_image, roi_box=roi_box)
    else:
        pred = method.run(photo, reference_box=in_image)
    lm = pred.landmarks68
    if pred.reconstruction is not None and method.reconstructor is not None:
        lm = convention_landmarks(method.reconstructor.model, pred.reconstruction, lm)
    if fit_truth is not None:
        lm = fit_to_truth(method, pred.reconstruction, transform_points(annotation.landmarks68, forward), fit_truth)
    return transform_points(lm, invert_affine(forward)).astype(np.float64), pred.landmarks_found


#: The face model's landmark embedding of AFLW2000-3D's 68 points (3DDFA's convention: BFM09's mean
#: registered onto the model), used instead of the model's own iBUG-68 when it has one.
AFLW2000_EMBEDDING = "ibug68_3ddfa"


def convention_landmarks(model, reconstruction: FaceReconstruction, own: np.ndarray) -> np.ndarray:
    """``(68, 2)`` px in the image the method ran on: the reconstruction's points of
    :data:`AFLW2000_EMBEDDING` when ``model`` has that embedding, else ``own`` (its iBUG-68)."""
    import torch

    from facenet3d.decode import crop_camera, decode_face, project_embedding
    from facenet3d.landmarks.align import invert_affine, transform_points

    if AFLW2000_EMBEDDING not in model.landmark_embedding_names:
        return own
    size = reconstruction.crop_size
    device = model.mean_shape.device
    params = reconstruction.params.to(device)
    camera = crop_camera(size, device=device)
    with torch.no_grad():
        decoded = decode_face(model, params, camera)
        pts = project_embedding(model, decoded.vertices_camera, camera, AFLW2000_EMBEDDING)
    return transform_points(pts[0].double().cpu().numpy(), invert_affine(reconstruction.crop_forward))


def fit_to_truth(method: Method, reconstruction: FaceReconstruction | None, truth: np.ndarray,
                 points: str = "all") -> np.ndarray:
    """The method's face refitted to ground-truth 2D points: the face model's best match to them.

    Stage A (:func:`~facenet3d.refine.fit_landmarks` with :data:`FIT_TRUTH_STAGE`) starts from
    the method's parameters and fits the ground truth's points only: no MediaPipe points, no
    depth term, nearly free coefficients. Uses the labels, so it is a bound, not a method.

    Args:
        method: the method that made ``reconstruction`` (its face model is refitted).
        reconstruction: its :class:`~facenet3d.api.FaceReconstruction` of the image.
        truth: ``(68, 2)`` ground truth in pixels of the image the method ran on.
        points: ``"all"`` 68 points or ``"inner"`` (all but the jaw contour), see
            :data:`FIT_TRUTH_POINTS`.

    Returns:
        ``(68, 2)`` the fitted model's 68 points in those pixels.

    Raises:
        ValueError: unknown ``points``.
        MethodUnavailableError: a method without a face model (``mediapipe``).
    """
    import torch

    from facenet3d.decode import crop_camera, decode_face
    from facenet3d.landmarks.align import invert_affine, transform_points
    from facenet3d.refine import FitTarget, fit_landmarks
    from facenet3d.refine.config import LandmarkStageConfig

    if points not in FIT_TRUTH_POINTS:
        raise ValueError(f"points must be one of {tuple(FIT_TRUTH_POINTS)}, got {points!r}")
    if reconstruction is None or method.reconstructor is None:
        raise MethodUnavailableError(f"fit_truth refits a face model, and method {method.name!r} has none")
    rec, size = method.reconstructor, reconstruction.crop_size
    in_crop = transform_points(np.asarray(truth, np.float64), reconstruction.crop_forward)
    # Only the 68-point term is used; the image, MediaPipe points and mask are placeholders.
    target = FitTarget.from_arrays(np.zeros((size, size, 3), np.uint8), np.zeros((478, 3), np.float32),
                                   in_crop.astype(np.float32), np.zeros((size, size), np.float32),
                                   device=rec.device)
    config = LandmarkStageConfig(**FIT_TRUTH_STAGE)
    weights = torch.zeros(68, device=rec.device)
    weights[FIT_TRUTH_POINTS[points]] = 1.0
    params = fit_landmarks(rec.model, target, config, start=reconstruction.params, weights68=weights)
    with torch.no_grad():
        fitted = decode_face(rec.model, params, crop_camera(size, device=rec.device), landmarks_only=True)
    lm = fitted.landmarks68[0].double().cpu().numpy()
    return transform_points(lm, invert_affine(reconstruction.crop_forward))


def evaluate_aflw2000(method: Method, data_dir: str | Path, crop: str = "gt-box", limit: int | None = None,
                      box_scale: float = DEFAULT_BOX_SCALE, progress: bool = True,
                      fit_truth: str | None = None, reannotated: str | Path | None = None,
                      protocol_roi: str | Path | None = None) -> dict:
    """Run the AFLW2000-3D NME benchmark.

    Args:
        method: the method (:func:`~facenet3d.evaluate.methods.load_method`).
        data_dir: folder of ``imageNNNNN.jpg`` + ``.mat`` pairs.
        crop: ``"gt-box"`` or ``"detect"`` (module docstring).
        limit: evaluate this many images, evenly spaced over the sorted list (None: all).
        box_scale: ``gt-box`` cut-out size (module docstring).
        progress: show a progress bar.
        fit_truth: None, or ``"all"`` / ``"inner"``: score the face model refitted to the ground
            truth's points (:func:`fit_to_truth`, a bound) instead of the method's own points.
        reannotated: re-annotated labels (:func:`read_reannotated`) for the second NME column, or None.
        protocol_roi: the protocol's roi boxes (:func:`read_protocol_roi`) for ``3ddfa-v2``, or None.

    Returns:
        The report: ``{"nme_68": {...}, "nme_68_reannotated": {...} or None, "by_region": {...},
        "n_images", "n_failed", "failures", "n_landmarks_fallback", "landmarks_fallback",
        "seconds_per_image", "settings", "per_image"}`` (NME in percent; failures excluded from it;
        ``by_region`` from :func:`region_breakdown`; the re-annotated column over the evaluated
        images that have re-annotated labels).

    Raises:
        ValueError: unknown ``crop`` or ``fit_truth``.
        MethodUnavailableError: ``fit_truth`` with a method that has no face model (``mediapipe``).
        EvaluationDataError: no annotated images in ``data_dir``, or an unreadable ``reannotated``
            or ``protocol_roi`` file.
    """
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    if fit_truth is not None and fit_truth not in FIT_TRUTH_POINTS:
        raise ValueError(f"fit_truth must be one of {tuple(FIT_TRUTH_POINTS)}, got {fit_truth!r}")
    if fit_truth is not None and not method.reconstructs:
        raise MethodUnavailableError(f"fit_truth refits a face model, and method {method.name!r} has none")
    all_images = list_images(data_dir)
    images = evenly_spaced(all_images, limit)
    relabelled = read_reannotated(reannotated) if reannotated is not None else {}
    rois = read_protocol_roi(protocol_roi) if protocol_roi is not None and method.teacher is not None else {}

    annotations: dict[Path, AFLWAnnotation] = {}
    runner = ItemRun()
    for path in images:
        try:
            annotations[path] = read_annotation(path.with_suffix(".mat"))
        except EvaluationDataError as e:
            runner.failures.append({"item": path.name, "error": str(e)})
    annotated = [p for p in images if p in annotations]

    def one(path: Path) -> tuple[float, float, np.ndarray, np.ndarray, float | None, bool]:
        ann = annotations[path]
        pred, found = predict_landmarks(method, path, ann, crop, box_scale, fit_truth, rois.get(path.name))
        second = nme_68(pred, relabelled[path.name]) if path.name in relabelled else None
        return (nme_68(pred, ann.landmarks68), ann.yaw_deg, *point_errors(pred, ann.landmarks68), second, found)

    t0 = time.perf_counter()
    done = runner.run(annotated, one, name=lambda p: p.name, progress=progress, desc=f"aflw2000 {method.name}"
                      + (f" fit to truth ({fit_truth})" if fit_truth else ""))
    all_yaws = np.array([a.yaw_deg for a in annotations.values()])
    nmes = np.array([r[0] for _, r in done])
    yaws = np.array([r[1] for _, r in done])
    errors = np.array([r[2] for _, r in done]).reshape(-1, 68)
    offsets = np.array([r[3] for _, r in done]).reshape(-1, 68)
    second = np.array([np.nan if r[4] is None else r[4] for _, r in done])
    has_second = np.isfinite(second)
    fallback = [p.name for p, r in done if not r[5]]
    return {
        "benchmark": "AFLW2000-3D",
        "nme_68": summarise_nme(nmes, yaws),
        "nme_68_reannotated": summarise_nme(second[has_second], yaws[has_second]) if has_second.any() else None,
        "n_reannotated": int(has_second.sum()),
        "by_region": region_breakdown(errors, offsets, yaws),
        "n_images": len(images),
        "n_evaluated": len(done),
        "n_per_bin": dict(zip(YAW_BIN_NAMES, np.bincount(yaw_bins(yaws), minlength=3).tolist(), strict=True)),
        "n_per_bin_annotated": dict(zip(YAW_BIN_NAMES, np.bincount(yaw_bins(all_yaws), minlength=3).tolist(),
                                        strict=True)),
        "n_failed": len(runner.failures),
        "failures": runner.failures,
        "n_landmarks_fallback": len(fallback),
        "landmarks_fallback": fallback,
        "seconds_per_image": runner.seconds_per_item,
        "seconds_total": time.perf_counter() - t0,
        "published_nme_mean": PUBLISHED_NME,
        "settings": {**method.describe(), "data": str(Path(data_dir)), "crop": crop,
                     "box_scale": box_scale if crop == "gt-box" else None, "fit_truth": fit_truth,
                     "fit_truth_stage": FIT_TRUTH_STAGE if fit_truth else None,
                     "reannotated": None if reannotated is None else str(reannotated),
                     "protocol_roi": None if not rois else str(protocol_roi),
                     "limit": limit, "sampling": "all" if limit is None or limit >= len(all_images)
                     else f"{len(images)} of {len(all_images)} evenly spaced over the sorted file names",
                     "yaw_bins": "|yaw| <= 30, (30, 60], > 60 degrees (3DDFA's code)",
                     "pixel_offset_subtracted": AFLW_PIXEL_OFFSET, "environment": environment()},
        "per_image": [{"image": p.name, "yaw_deg": round(y, 3), "nme": round(n * 100, 4),
                       "nme_reannotated": round(float(n2) * 100, 4) if np.isfinite(n2) else None,
                       "landmarks_found": r[5]}
                      for (p, r), n, y, n2 in zip(done, nmes, yaws, second, strict=True)],
    }
