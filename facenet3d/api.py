"""``FaceReconstructor``: photo in, reconstructed faces out (the library's front door).

Example:
    >>> rec = FaceReconstructor.from_pretrained("default")  # doctest: +SKIP
    >>> faces = rec.reconstruct("photo.jpg", refine="fast")  # doctest: +SKIP
    >>> faces[0].params_record()["rotation_ypr_deg"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facenet3d.camera_math import ImageCamera, photo_pose, project_points
from facenet3d.errors import NoFaceError
from facenet3d.export.bundle import FaceResult
from facenet3d.export.records import params_record
from facenet3d.facemodel import MorphableModel, load_face_model
from facenet3d.landmarks.crop import face_crop_arrays
from facenet3d.landmarks.detect import DetectedFace, FaceDetector
from facenet3d.landmarks.image_io import LoadedImage, read_image
from facenet3d.params import FaceParams
from facenet3d.refine import FitTarget, RefineConfig, initial_params, load_refine_config
from facenet3d.refine import refine as run_refinement
from facenet3d.refine.maps_stage import FaceMaps, statistical_maps
from facenet3d.render import Renderer, rotation_6d_to_matrix

#: Decoding limit for photos: faces are cropped to a few hundred pixels anyway.
MAX_DECODE_SIDE = 2048


@dataclass
class FaceReconstruction:
    """One reconstructed face.

    ``params`` are in the aligned crop's camera (:func:`facenet3d.decode.crop_camera`);
    ``rotation``/``translation``/``camera`` place the same mesh in the original photo.
    """

    params: FaceParams  # batch of 1
    maps: FaceMaps | None  # UV maps (batch of 1), None for per-vertex albedo models
    vertices: np.ndarray  # (V, 3) mm, model frame: identity + expression, no pose
    rotation: np.ndarray  # (3, 3) model -> photo camera
    translation: np.ndarray  # (3,) mm, photo camera frame
    camera: ImageCamera
    landmarks68_image: np.ndarray  # (68, 2) photo px (the model's landmarks, projected)
    landmarks68_mesh: np.ndarray  # (68, 3) mm, model frame
    detected: DetectedFace  # in photo px
    crop_forward: np.ndarray  # (2, 3) photo px -> crop px
    crop_size: int
    refine: str
    seconds: dict[str, float] = field(default_factory=dict)
    #: False when a face given by its box had no MediaPipe face: ``detected`` is then the mean
    #: face placed in the box (score 0) and the result is the regressor's (or that mean face's)
    #: as it is, unrefined.
    landmarks_found: bool = True

    def params_record(self, model_name: str = "", expression_names: Sequence[str] = ()) -> dict:
        """The JSON-able ``params.json`` content (see :func:`facenet3d.export.records.params_record`)."""
        p = self.params
        return params_record({name: t[0].detach().cpu().numpy() for name, t in vars(p).items()},
                             rotation=self.rotation, translation=self.translation, camera=self.camera,
                             crop_size=self.crop_size, crop_forward=self.crop_forward,
                             detection_box=self.detected.box, detection_score=self.detected.score,
                             refine=self.refine, seconds=self.seconds, model_name=model_name,
                             expression_names=expression_names)


class FaceReconstructor:
    """Detect faces, fit (and/or regress) the face model, and return reconstructions.

    Args:
        model: the face model.
        regressor: a trained regressor (``facenet3d.network``) or None (refinement then starts
            from the mean face, and ``refine="none"`` is unavailable).
        detector: a face detector (created when None).
        crop_size: aligned crop size in pixels.
        device: torch device for fitting.
    """

    def __init__(self, model: MorphableModel, regressor=None, detector: FaceDetector | None = None,
                 crop_size: int = 224, device: str | torch.device = "cpu", model_name: str = ""):
        self.model = model.to(device)
        self.regressor = regressor
        self.detector = detector or FaceDetector()
        self.crop_size = crop_size
        self.device = torch.device(device)
        self.model_name = model_name or str(model.metadata.get("name", ""))
        self._renderer: Renderer | None = None
        self._configs: dict[str, RefineConfig] = {}

    @classmethod
    def from_pretrained(cls, weights: str = "default", model: str = "default", device: str = "cpu",
                        **kwargs) -> FaceReconstructor:
        """The shipped face model and, when present, the regressor weights ``weights``.

        Args:
            weights: ``"default"``, ``"fast"`` or a ``.safetensors`` path; ``"none"`` for no
                regressor.
            model: face-model spec for :func:`~facenet3d.facemodel.load_face_model`;
                ``"default"`` with a regressor is the face model its weights were trained for,
                without one the shipped default head.
        """
        from facenet3d.network import PRETRAINED, load_regressor, pretrained_path
        from facenet3d.network.weights import load_pretrained

        regressor = None
        # A shipped name whose file is absent (a trimmed install) means "no regressor": refinement
        # then starts from the mean face. Anything else that fails to load is the user's error.
        absent = weights in PRETRAINED and not pretrained_path(weights).is_file()
        if weights != "none" and not absent and model == "default":
            # "default" is the face model the regressor was trained for (the weights name it).
            regressor, face_model = load_pretrained(weights, device=device)
            model = str(regressor.info.face_model or model)
        else:
            face_model = load_face_model(model)
            if weights != "none" and not absent:
                regressor = load_regressor(weights, face_model=face_model, device=device)
        return cls(face_model, regressor, device=device, model_name=str(model), **kwargs)

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer.from_model(self.model).to(self.device)
        return self._renderer

    def config(self, refine: str) -> RefineConfig:
        if refine not in self._configs:
            self._configs[refine] = load_refine_config(refine)
        return self._configs[refine]

    def reconstruct(self, image: str | os.PathLike | np.ndarray | LoadedImage, refine: str = "fast",
                    max_faces: int | None = None, face_box: np.ndarray | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> list[FaceReconstruction]:
        """Reconstruct every face of a photo, largest first.

        Args:
            image: a file path, an ``(H, W, 3)`` uint8 RGB array or a :class:`LoadedImage`.
            refine: ``"none"`` (regressor only), ``"fast"`` (A+B), ``"full"`` (A+B+C) or a
                refinement YAML path.
            max_faces: reconstruct at most this many faces.
            face_box: ``(4,)`` ``x0, y0, x1, y1`` photo px of one face's 68-point box, known from
                elsewhere (a benchmark's protocol): that face alone is reconstructed, whether or
                not the detector finds it. The detector's first face whose 68 points centre in
                the box is aligned and refined as usual; without one, the crop is cut from the
                box (:func:`~facenet3d.landmarks.align.box_alignment_matrix`) and refinement,
                which needs MediaPipe's points, is skipped (``landmarks_found=False``, see
                :class:`FaceReconstruction`).
            progress: optional callable ``(stage, step, steps)`` told of every stage (``detect``,
                ``regress``, then the refinement's ``landmarks``, ``photometric``, ``maps`` per step).

        Raises:
            ImageReadError: unreadable file.
            NoFaceError: no face in the photo.
            ValueError: ``refine="none"`` without regressor weights.
        """
        if refine == "none" and self.regressor is None:
            raise ValueError("--refine none needs trained regressor weights, and none are installed; "
                             "use --refine fast or full (fitting from the mean face)")
        if progress is not None:
            progress("detect", 0, 1)
        t0 = time.perf_counter()
        loaded = read_image(image, max_side=MAX_DECODE_SIDE) if isinstance(image, (str, os.PathLike)) else image
        source = str(image) if isinstance(image, (str, os.PathLike)) else None
        found = True
        if face_box is not None:
            face, found, forward = self._face_in_box(loaded, np.asarray(face_box, np.float64), source)
            faces, crops = [face], [face_crop_arrays(loaded, face, self.crop_size, forward)]
        else:
            faces = self.detector.detect(loaded, source=source)
            if not faces:
                raise NoFaceError(source)
            faces = faces[:max_faces] if max_faces else faces
            crops = [face_crop_arrays(loaded, f, self.crop_size) for f in faces]
        t_detect = time.perf_counter() - t0
        target = FitTarget.from_arrays(np.stack([c["crop"] for c in crops]),
                                       np.stack([c["landmarks478"] for c in crops]),
                                       np.stack([c["landmarks68"] for c in crops]),
                                       np.stack([c["skin_mask"] for c in crops]), device=self.device)
        start = None
        t1 = time.perf_counter()
        if self.regressor is not None:
            if progress is not None:
                progress("regress", 0, 1)
            start = self.regress(target.image)
        t_regress = time.perf_counter() - t1
        if refine == "none" or not found:
            # Without MediaPipe's points there is nothing to refine against: the start as it is.
            params, maps, seconds = (start if start is not None else initial_params(self.model, target)), None, {}
            if self.model.albedo_space == "uv":
                maps = statistical_maps(self.model, params)
        else:
            result = run_refinement(self.model, target, self.config(refine), start=start, renderer=self.renderer,
                                    progress=progress)
            params, maps, seconds = result.params, result.maps, result.seconds
        seconds = {"detect_align": t_detect, "regress": t_regress, **seconds}
        if isinstance(loaded, LoadedImage):
            hw = (loaded.original_size[1], loaded.original_size[0])
        else:
            hw = tuple(np.asarray(loaded).shape[:2])
        out = [self._assemble(i, params, maps, faces[i], crops[i], refine, seconds, hw) for i in range(len(faces))]
        out[0].landmarks_found = found
        return out

    def regress(self, crops: torch.Tensor) -> FaceParams | None:
        """The regressor's parameters of ``(B, 3, S, S)`` aligned crops (None without a regressor),
        expression weights inside the model's bounds: the network is trained with a soft penalty on
        them, and every consumer of its answer (refinement starts, exports) expects them kept."""
        if self.regressor is None:
            return None
        with torch.no_grad():
            start = self.regressor.predict(crops)
        self.model.clamp_expression_(start.expression)
        return start

    def _face_in_box(self, loaded, box: np.ndarray, source: str | None
                     ) -> tuple[DetectedFace, bool, np.ndarray | None]:
        """``(face, found, forward)`` for :meth:`reconstruct`'s ``face_box``: the detected face whose
        68 points centre in the box (aligned by its landmarks: ``forward`` None), else the mean
        face placed in the box's crop (score 0) with that crop's ``forward``.

        The landmark alignment is kept where there is one: the regressor was trained on it, and a
        box-only crop (no roll, another framing) doubles its error on near-frontal faces.
        """
        from facenet3d.landmarks.align import box_alignment_matrix, invert_affine

        try:
            for face in self.detector.detect(loaded, source=source):
                cx, cy = face.landmarks68.mean(0)
                if box[0] <= cx <= box[2] and box[1] <= cy <= box[3]:
                    return face, True, None
        except NoFaceError:
            pass
        forward = box_alignment_matrix(box, self.crop_size)
        return canonical_face(self.crop_size).transformed(invert_affine(forward)), False, forward

    def _assemble(self, i: int, params: FaceParams, maps: FaceMaps | None, face: DetectedFace, crop: dict,
                  refine_name: str, seconds: dict, hw: tuple[int, int]) -> FaceReconstruction:
        p = params.index(i)
        with torch.no_grad():
            verts = self.model.decode(p.identity, p.expression)[0]
            rot = rotation_6d_to_matrix(p.rotation)[0].double().cpu().numpy()
        trans = p.translation[0].double().cpu().numpy()
        r_img, t_img, focal, principal = photo_pose(rot, trans, crop["forward"], self.crop_size)
        v = verts.double().cpu().numpy()
        lm_mesh = v[self.model.landmarks68.clamp_min(0).cpu().numpy()]
        lm_img = project_points(lm_mesh @ r_img.T + t_img, focal, principal)
        h, w = hw
        return FaceReconstruction(
            params=p, maps=None if maps is None else FaceMaps(*(getattr(maps, n)[i:i + 1] for n in
                                                                 ("albedo", "specular", "roughness",
                                                                  "displacement", "normal"))),
            vertices=v.astype(np.float32), rotation=r_img, translation=t_img,
            camera=ImageCamera(focal, principal, (h, w)), landmarks68_image=lm_img, landmarks68_mesh=lm_mesh,
            detected=face, crop_forward=crop["forward"], crop_size=self.crop_size, refine=refine_name,
            seconds=dict(seconds))


def canonical_face(size: int) -> DetectedFace:
    """The mean MediaPipe face (478 points) where the canonical template puts it in a ``size`` crop, score 0."""
    from facenet3d.landmarks.align import canonical_template, estimate_similarity
    from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE
    from facenet3d.landmarks.mean_face import mean_face

    mean = mean_face().astype(np.float64) * np.array([1.0, -1.0, -1.0])  # model (+y up, +z out) -> image axes
    face = DetectedFace(mean.astype(np.float32), mean[IBUG68_FROM_MEDIAPIPE, :2].astype(np.float32),
                        np.zeros(4, np.float32), 0.0)
    return face.transformed(estimate_similarity(mean[IBUG68_FROM_MEDIAPIPE, :2], canonical_template(size)))


def default_output_dir(out: str | Path, image_path: str | Path) -> Path:
    """``OUT/<image stem>``."""
    return Path(out) / Path(image_path).stem


# -- result assembly: a reconstruction -> what is written for it ----------------------------------


def render_overlay(rec: FaceReconstruction, model: MorphableModel, renderer: Renderer,
                   photo: LoadedImage | np.ndarray) -> np.ndarray:
    """The two-panel overlay (:mod:`facenet3d.export.overlay`): the textured render and the grey shaded
    geometry with its landmarks, each over the photo at a bounded size.

    Both are rendered in the face's aligned crop camera at about the overlay's resolution there,
    then warped into the photo.

    Args:
        rec: the reconstruction.
        model: its face model.
        renderer: a renderer for the model.
        photo: the upright photo, decoded at any reduction, or ``(H, W, 3)`` uint8 RGB at full size.

    Returns:
        ``(h, 2 w, 3)`` uint8.
    """
    import torch

    from facenet3d.decode import CROP_FOCAL_PER_PX
    from facenet3d.export.overlay import (
        GEOMETRY_ALBEDO,
        geometry_sh,
        overlay_panels,
        overlay_photo,
        overlay_render_size,
        to_overlay_forward,
    )
    from facenet3d.render import PinholeCamera, apply_pose, rotation_6d_to_matrix
    from facenet3d.render.color import linear_to_srgb

    pixels, scale = overlay_photo(photo)
    size = overlay_render_size(to_overlay_forward(rec.crop_forward, scale), rec.crop_size)
    p = rec.params
    cam = PinholeCamera.create(CROP_FOCAL_PER_PX * size, (size, size))
    with torch.no_grad():
        verts = model.decode(p.identity, p.expression)
        cam_verts = apply_pose(verts, rotation_6d_to_matrix(p.rotation), p.translation)
        albedo = rec.maps.albedo if rec.maps is not None else model.albedo(p.albedo)
        grey = torch.full_like(cam_verts, GEOMETRY_ALBEDO)
        light = torch.as_tensor(geometry_sh(), dtype=cam_verts.dtype, device=cam_verts.device)[None]
        renders = []
        for sh, colour in ((p.sh, albedo.clamp(0, 1)), (light, grey)):
            out = renderer(cam_verts, cam, sh, colour)
            rgba = torch.cat([linear_to_srgb(out.image.clamp_min(0)), out.mask], -1)
            renders.append(rgba[0].cpu().numpy().astype(np.float32))
    return overlay_panels(renders[0], renders[1], rec.crop_forward, rec.crop_size, pixels, scale,
                          rec.landmarks68_image, rec.detected.landmarks68)


def face_result(rec: FaceReconstruction, model: MorphableModel, renderer: Renderer,
                photo: LoadedImage | np.ndarray, model_name: str) -> FaceResult:
    """Everything written for one face (see :mod:`facenet3d.export.bundle`); ``photo`` as for
    :func:`render_overlay`."""
    from facenet3d.export.mesh import mesh_from_face_model
    from facenet3d.export.textures import encode_normal_map, flatten_outside

    maps = rec.maps
    kwargs = {}
    if maps is not None:
        covered = chart_mask(model, maps.albedo.shape[1])
        kwargs = {"albedo": flatten_outside(maps.albedo[0].cpu().numpy(), covered),
                  "specular": flatten_outside(maps.specular[0].cpu().numpy(), covered),
                  "roughness": flatten_outside(maps.roughness[0].cpu().numpy(), covered)}
        if rec.refine == "full" or bool((maps.displacement != 0).any()):
            kwargs["normal_map"] = encode_normal_map(maps.normal[0].cpu().numpy())
    mesh = mesh_from_face_model(model, rec.vertices, expression=rec.params.expression, **kwargs)
    return FaceResult(mesh=mesh, params=rec.params_record(model_name, model.expression_names),
                      landmarks_image_px=rec.landmarks68_image, landmarks_mesh_mm=rec.landmarks68_mesh,
                      overlay=render_overlay(rec, model, renderer, photo))


def chart_mask(model: MorphableModel, size: int, border: int = 4) -> np.ndarray:
    """``(size, size)`` bool: texels of the model's UV charts grown by ``border`` texels (what
    bilinear and mip-mapped sampling can reach). Cached per model and size."""
    key = (id(model), size, border)
    if key not in _CHART_MASKS:
        import cv2

        from facenet3d.render.uv import UVRaster

        covered = UVRaster.build(model.uvs.cpu(), model.uv_triangles.cpu(), size).covered.numpy()
        grown = cv2.dilate(covered.astype(np.uint8), np.ones((2 * border + 1, 2 * border + 1), np.uint8))
        _CHART_MASKS[key] = grown.astype(bool)
    return _CHART_MASKS[key]


_CHART_MASKS: dict = {}
