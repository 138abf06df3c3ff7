"""Stage A: head pose, identity and expression from the 68 + 468 MediaPipe landmarks.

Initialisation is closed-form: MediaPipe's landmarks carry a relative depth, so the model's
mean shape at the 468 corresponding vertices is similarity-aligned to them (Umeyama); the
rotation is the head pose, the scale (pixels per millimetre) gives the distance through the
focal length. Then Adam minimises the 2D reprojection error of the 68 and 468 points, a weak
term on MediaPipe's relative depth, and Gaussian priors on the coefficients.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import torch

from facenet3d.decode import crop_camera, decode_face
from facenet3d.facemodel import MorphableModel
from facenet3d.losses import coefficient_prior, landmark_loss
from facenet3d.params import FaceParams
from facenet3d.refine.config import LandmarkStageConfig
from facenet3d.refine.optim import minimise
from facenet3d.refine.target import FitTarget
from facenet3d.render.pose import matrix_to_rotation_6d

#: :func:`detector_offsets` runs this many times stage A's iterations.
OFFSET_ITERATIONS = 3


def mediapipe_points_camera_like(landmarks478: torch.Tensor) -> torch.Tensor:
    """``(B, 478, 3)`` crop-pixel landmarks -> a y-up, z-towards-camera frame (still pixels)."""
    return landmarks478 * landmarks478.new_tensor([1.0, -1.0, -1.0])


def depth_pixels(z_camera: torch.Tensor, focal: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Camera-space depths ``(B, N)`` (mm, negative in front) -> MediaPipe's kind of relative depth:
    pixels at the face's distance (``focal`` ``(B, 2)``, ``translation`` ``(B, 3)`` mm), positive away
    from the camera (up to an offset per face, which the comparisons take out)."""
    return -z_camera * focal[:, :1] / (-translation[:, 2:3])


def _umeyama(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched similarity ``dst ~ s R src + t``: ``(B, N, 3)`` each -> ``(R (B,3,3), s (B,))``."""
    ms, md = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    a, b = src - ms, dst - md
    u, sig, vt = torch.linalg.svd(b.transpose(1, 2) @ a)
    d = torch.sign(torch.linalg.det(u @ vt))
    fix = torch.ones_like(sig)
    fix[:, 2] = d
    r = u @ torch.diag_embed(fix) @ vt
    s = (sig * fix).sum(1) / (a ** 2).sum((1, 2))
    return r, s


def initial_params(model: MorphableModel, target: FitTarget, start: FaceParams | None = None) -> FaceParams:
    """Pose from a closed-form similarity fit of the shape to the MediaPipe points.

    Args:
        model: the face model (needs a MediaPipe correspondence,
            :meth:`~facenet3d.facemodel.MorphableModel.dense_landmark_rows`, else only the 68
            points' 2D positions fix the pose, with the face assumed frontal).
        target: the crops.
        start: parameters whose coefficients are kept (e.g. the regressor's); their pose is
            replaced. None: the mean face.
    """
    b, size = target.batch_size, target.size
    device = target.image.device
    params = start.clone() if start is not None else FaceParams.neutral(
        b, model.identity_dim, model.expression_dim, model.albedo_dim, device=device)
    cam = crop_camera(size, device=device)
    f = cam.focal[0, 0]
    verts = model.decode(identity=params.identity, expression=params.expression)
    dense_rows = model.dense_landmark_rows()
    if dense_rows is not None:
        src = model.gather_points(verts, *dense_rows)
        dst = mediapipe_points_camera_like(target.landmarks478[:, : src.shape[1]])
        rot, scale = _umeyama(src, dst)
        centre_px = target.landmarks478[:, : src.shape[1], :2].mean(1)
        centre_model = src.mean(1)
    else:
        idx = model.landmarks68.clamp_min(0)
        src, dst2 = verts[:, idx, :2], target.landmarks68
        rot = torch.eye(3, device=device).expand(b, 3, 3).clone()
        scale = (dst2 - dst2.mean(1, keepdim=True)).norm(dim=-1).mean(1) / (
            src - src.mean(1, keepdim=True)).norm(dim=-1).mean(1)
        centre_px = dst2.mean(1)
        centre_model = verts[:, idx].mean(1)
    depth = f / scale  # pixels per mm = f / depth
    centre_cam = torch.stack([(centre_px[:, 0] - size / 2) * depth / f,
                              -(centre_px[:, 1] - size / 2) * depth / f, -depth], -1)
    params.rotation = matrix_to_rotation_6d(rot)
    params.translation = centre_cam - (rot @ centre_model[..., None])[..., 0]
    return params


def regressor_target(model: MorphableModel, target: FitTarget, start: FaceParams) -> FitTarget:
    """The target with the landmarks of ``start`` (a regressor's answer) in place of MediaPipe's.

    The dense points (with MediaPipe's kind of relative depth) and the 68 are the face model's own
    landmarks of ``start`` projected into the crop, so the landmark terms keep the fit where the
    regressor put the face and the photometric stage refines from there instead of pulling the
    face back toward a detector measured less accurate (MediaPipe fails most on profiles). Points
    the model does not embed keep MediaPipe's values (unused by the terms).
    """
    camera = crop_camera(target.size, device=target.image.device)
    with torch.no_grad():
        dec = decode_face(model, start, camera, landmarks_only=True)
        lm478 = target.landmarks478.clone()
        if dec.landmarks_dense is not None:
            n = dec.landmarks_dense.shape[1]
            z_px = depth_pixels(dec.landmarks_dense_camera[..., 2], camera.focal, start.translation)
            lm478[:, :n] = torch.cat([dec.landmarks_dense, z_px[..., None]], -1)
        return target.with_landmarks(lm478, dec.landmarks68.clone())


def fit_landmarks(model: MorphableModel, target: FitTarget, config: LandmarkStageConfig,
                  start: FaceParams | None = None, progress=None,
                  weights68: torch.Tensor | None = None, fixed: Collection[str] = (),
                  offsets: torch.Tensor | None = None) -> FaceParams:
    """Run stage A.

    Args:
        model: the face model.
        target: ``B`` aligned crops.
        config: the stage's settings.
        start: initial parameters (e.g. :func:`initial_params`' or the regressor's); None: the
            mean face posed by :func:`initial_params`.
        progress: optional callable ``(step, loss)`` for progress reporting.
        weights68: ``(68,)`` or ``(B, 68)`` weights of the 68 points in their term (default 1;
            0 leaves a point out).
        fixed: parameter names kept as in ``start`` (e.g. ``("identity",)``: a video's identity,
            estimated once per clip).
        offsets: ``(468 + 68, 2)`` offsets taken off the dense then the iBUG-68 targets, shared by
            the batch, in hundredths of the crop side (the unit in which one learning rate suits
            them and the coefficients); fitted in place (with ``config.offset_prior``) when it
            requires grad (:func:`detector_offsets`).

    Returns:
        Fitted parameters (identity, expression, rotation, translation changed; the others
        as in ``start``).
    """
    size = target.size
    camera = crop_camera(size, device=target.image.device)
    init = start.clone() if start is not None else initial_params(model, target)
    identity = init.identity.clone().requires_grad_(True)
    expression = init.expression.clone().requires_grad_(True)
    rotation = init.rotation.clone().requires_grad_(True)
    # Translation is optimised in decimetres so one learning rate suits every parameter.
    translation = (init.translation / 100.0).clone().requires_grad_(True)
    norm = 0.5 * size  # losses in units of half the crop: resolution independent
    depth_target = target.landmarks478[:, :468, 2]
    fit_offsets = offsets is not None and offsets.requires_grad

    def loss_fn() -> torch.Tensor:
        params = FaceParams(identity, expression, init.albedo, rotation, translation * 100.0, init.sh,
                            init.specular, init.roughness)
        dec = decode_face(model, params, camera, landmarks_only=True)
        dense_target, target68 = target.landmarks478[:, :468, :2], target.landmarks68
        if offsets is not None:
            px = offsets * (size / 100.0)
            dense_target, target68 = dense_target - px[:468], target68 - px[468:]
        loss = config.landmarks68_weight * landmark_loss(dec.landmarks68, target68, weights68, normaliser=norm)
        if dec.landmarks_dense is not None and config.dense_weight > 0:
            n = dec.landmarks_dense.shape[1]
            loss = loss + config.dense_weight * landmark_loss(dec.landmarks_dense, dense_target[:, :n],
                                                              normaliser=norm)
            if config.depth_weight > 0:
                # MediaPipe's z is relative, in pixel scale, positive away from the camera:
                # compare centred depths.
                z_px = depth_pixels(dec.landmarks_dense_camera[..., 2], camera.focal, params.translation)
                z_px = z_px - z_px.mean(1, keepdim=True)
                z_t = depth_target[:, :n] - depth_target[:, :n].mean(1, keepdim=True)
                loss = loss + config.depth_weight * ((z_px - z_t) ** 2).mean(1) / norm ** 2
        if fit_offsets:  # once for the batch, shared out over its faces
            loss = loss + config.offset_prior * (offsets ** 2).sum(-1).mean() * (size / 100.0 / norm) ** 2 / len(loss)
        return loss + config.identity_prior * coefficient_prior(identity) \
            + config.expression_prior * coefficient_prior(expression)

    model.clamp_expression_(expression.data)
    leaves = {"identity": identity, "expression": expression, "rotation": rotation, "translation": translation,
              **({"offsets": offsets} if fit_offsets else {})}
    minimise([t for n, t in leaves.items() if n not in fixed], loss_fn, config.iterations, config.lr, progress,
             project=lambda: model.clamp_expression_(expression))
    return FaceParams(identity.detach(), expression.detach(), init.albedo, rotation.detach(),
                      translation.detach() * 100.0, init.sh, init.specular, init.roughness)


def detector_offsets(model: MorphableModel, target: FitTarget, config: LandmarkStageConfig,
                     start: FaceParams | None = None) -> torch.Tensor:
    """Where the detector puts each landmark apart from the model's point, over the frames of a clip.

    MediaPipe's points and the face model's landmark embedding follow conventions that differ by a
    few pixels, by region (on the model's own renders: 2.5 px RMS at 224 px, brows and mouth
    corners most). Fitted frame by frame, that offset is explained by expression (raised brows,
    squinted eyes) and, being the same in every frame, it hides the small expressions of the
    same region under the blendshapes' lower bound (a smile starting from a detector that puts the
    mouth corners low stays at 0). Fitted over the frames of a clip at once with one shared offset
    per landmark, as the clip's identity is, the offset takes what every frame has in common: the
    expressions, which cannot go below 0, keep what changes above it. Like the identity, an
    expression held through every frame is taken as the face at rest.

    Args:
        model: the face model.
        target: frames of one clip (a few, spread over it).
        config: stage A settings (its ``offset_prior``).
        start: initial parameters (None: the mean face posed by :func:`initial_params`).

    Returns:
        ``(468 + 68, 2)`` crop px to take off the dense and iBUG-68 targets (:func:`offset_target`),
        without their affine part (which is head pose and the crop's placement, per frame).
    """
    offsets = torch.zeros(468 + 68, 2, device=target.image.device, requires_grad=True)
    # Longer than a frame's fit: one batch per clip, and the offsets start from nothing.
    fit_landmarks(model, target, replace(config, iterations=OFFSET_ITERATIONS * config.iterations), start=start,
                  offsets=offsets)
    b = offsets.detach() * (target.size / 100.0)
    points = torch.cat([target.landmarks478[:, :468, :2], target.landmarks68], 1).mean(0)
    design = torch.cat([points, torch.ones_like(points[:, :1])], 1)
    affine = torch.linalg.lstsq(design, b).solution
    return b - design @ affine


def offset_target(target: FitTarget, offsets: torch.Tensor) -> FitTarget:
    """The target with :func:`detector_offsets` taken off its landmarks (depth kept)."""
    import dataclasses

    lm478 = target.landmarks478.clone()
    lm478[:, :468, :2] -= offsets[:468]
    return dataclasses.replace(target, landmarks478=lm478, landmarks68=target.landmarks68 - offsets[468:])
