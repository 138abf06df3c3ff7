"""numpy pre- and post-processing around the ONNX graph: photo -> crops -> graph outputs -> results.

The steps are those of the torch path with ``--refine none`` (:mod:`facenet3d.api`,
:mod:`facenet3d.reconstruct`), built from the same numpy pieces so the outputs agree:
detection and alignment (:mod:`facenet3d.landmarks`), the photo camera
(:func:`facenet3d.camera_math.photo_pose`), ``params.json`` (:func:`facenet3d.export.records.params_record`),
meshes and the output folder (:mod:`facenet3d.export`). What the torch path computes with torch
has a numpy twin here, held equal by the tests: the statistical UV maps and the UV chart mask
(:class:`RuntimeFaceModel`), and shape decoding for smoothed video parameters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facenet3d.camera_math import ImageCamera, photo_pose, project_points
from facenet3d.errors import FaceModelFormatError, NoFaceError, WeightsError
from facenet3d.export.bundle import FaceResult
from facenet3d.export.mesh import mesh_from_face_model
from facenet3d.export.overlay import crop_overlay
from facenet3d.export.records import params_record
from facenet3d.export.software_render import rasterize
from facenet3d.facemodel.arrays import FaceModelArrays
from facenet3d.facemodel.uvmaps import upsample_maps_np
from facenet3d.landmarks.detect import DetectedFace, FaceDetector
from facenet3d.landmarks.image_io import LoadedImage
from facenet3d.onnx.metadata import PARAM_OUTPUTS, OnnxModelInfo, face_model_fingerprint

#: Decoding limit for photos (as :data:`facenet3d.api.MAX_DECODE_SIDE`): faces are cropped to a
#: few hundred pixels anyway.
MAX_DECODE_SIDE = 2048
#: Largest specular albedo (F0) of the statistical maps (:data:`facenet3d.refine.maps_stage.MAX_SPECULAR`).
MAX_SPECULAR = 0.08
#: Specular albedo of skin, used by models without a specular prior.
SKIN_SPECULAR = 0.028
#: Texels kept around the UV charts (:func:`facenet3d.api.chart_mask`'s border).
CHART_BORDER = 4


class RuntimeFaceModel:
    """The face model as the runtime needs it: numpy arrays, no torch.

    Args:
        arrays: the model's arrays (:func:`~facenet3d.facemodel.read_face_model_arrays`).
        name: the name written into ``params.json`` (the face-model spec).

    Load one with :meth:`load`, which checks it is the model the graph decodes.
    """

    def __init__(self, arrays: FaceModelArrays, name: str = "default"):
        self.arrays = arrays
        self.name = name
        self.triangles = np.asarray(arrays.triangles, np.int64)
        self.landmark_index = np.maximum(np.asarray(arrays.landmarks68, np.int64), 0)
        v = arrays.mean_shape.shape[0]
        self._identity = arrays.identity_basis.reshape(len(arrays.identity_basis), v * 3).astype(np.float32)
        self._expression = arrays.expression_basis.reshape(len(arrays.expression_basis), v * 3).astype(np.float32)
        self._albedo_basis: np.ndarray | None = None
        self._chart: np.ndarray | None = None
        self._landmark_bases: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def load(cls, spec: str | os.PathLike, info: OnnxModelInfo | None = None) -> RuntimeFaceModel:
        """Read a native ``.npz`` face model (``"default"``: the shipped one).

        Raises:
            FaceModelFormatError: missing or unreadable file, or a format that needs torch to
                read (convert it with ``facenet3d convert-face-model``).
            WeightsError: it is not the face model ``info``'s graph was exported with.
        """
        from facenet3d.facemodel.native import read_face_model_arrays
        from facenet3d.facemodel.registry import default_model_path, shipped_model_path

        spec = str(spec)
        if spec == "default":
            # The graph's own face model when it is shipped (a regressor is tied to its model).
            named = shipped_model_path(info.face_model) if info is not None and info.face_model else None
            path = named if named is not None and named.is_file() else default_model_path()
        elif ":" in spec and len(spec.partition(":")[0]) > 1:
            raise FaceModelFormatError(spec, "the torch-free runtime reads native .npz face models only; "
                                             "convert this one with `facenet3d convert-face-model`")
        else:
            path = Path(spec).expanduser()
        arrays = read_face_model_arrays(path)
        if info is not None and face_model_fingerprint(arrays) != info.face_model_fingerprint:
            raise WeightsError(f"{path}: this face model is not the one the ONNX graph was exported with "
                               f"({info.face_model!r}); pass that model with --model")
        return cls(arrays, spec)

    def decode(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """``(B, Ki)``, ``(B, Ke)`` coefficients -> ``(B, V, 3)`` float32 mm, model frame.

        The numpy twin of :meth:`facenet3d.facemodel.MorphableModel.decode` (no skinning).
        """
        offsets = (np.asarray(identity, np.float32) @ self._identity
                   + np.asarray(expression, np.float32) @ self._expression)
        return self.arrays.mean_shape.astype(np.float32) + offsets.reshape(len(offsets), -1, 3)

    def decode_landmarks(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """``(Ki,)``, ``(Ke,)`` coefficients -> ``(68, 3)`` float64 mm, model frame: :meth:`decode` at the
        landmark vertices alone (a video frame that draws no mesh needs nothing more)."""
        if self._landmark_bases is None:
            rows = (self.landmark_index[:, None] * 3 + np.arange(3)).reshape(-1)
            self._landmark_bases = (self._identity[:, rows].astype(np.float64),
                                    self._expression[:, rows].astype(np.float64),
                                    self.arrays.mean_shape[self.landmark_index].astype(np.float64))
        ident, expr, mean = self._landmark_bases
        offsets = np.asarray(identity, np.float64) @ ident + np.asarray(expression, np.float64) @ expr
        return mean + offsets.reshape(-1, 3)

    def chart_mask(self) -> np.ndarray | None:
        """``(T, T)`` bool texels of the UV charts grown by :data:`CHART_BORDER` (numpy twin of
        :func:`facenet3d.api.chart_mask`); None without a UV albedo map."""
        if self.arrays.albedo_space != "uv":
            return None
        if self._chart is None:
            import cv2

            size = self.arrays.albedo_mean.shape[0]
            uv = np.asarray(self.arrays.uvs, np.float64)
            xy = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], -1)  # row 0 is v = 1
            covered = rasterize(xy, np.ones(len(xy)), self.arrays.uv_triangles, (size, size)).mask
            k = 2 * CHART_BORDER + 1
            self._chart = cv2.dilate(covered.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
        return self._chart

    def texture_maps(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The UV maps written with the mesh for one face's parameters (``--refine none``).

        The numpy twin of :func:`facenet3d.refine.maps_stage.statistical_maps` followed by
        :func:`facenet3d.api.face_result`'s clean-up: albedo from the coefficients
        (clamped to ``[0, 1]``), the specular prior times the predicted scale (clamped to
        ``[0, 0.08]``), constant roughness, each flattened to its mean outside the UV charts.

        Returns:
            ``mesh_from_face_model`` keyword arguments (empty for models without a UV albedo map,
            which the torch path writes with the model's mean vertex colours too).
        """
        from facenet3d.export.textures import flatten_outside

        a = self.arrays
        if a.albedo_space != "uv":
            return {}
        t = a.albedo_mean.shape[0]
        albedo = a.albedo_mean.astype(np.float32)
        coefficients = np.asarray(params["albedo"], np.float32).reshape(-1)
        if a.albedo_basis is not None and len(coefficients):
            if self._albedo_basis is None:
                self._albedo_basis = a.albedo_basis.reshape(len(a.albedo_basis), -1).astype(np.float32)
            k = min(len(coefficients), len(self._albedo_basis))
            offsets = (coefficients[:k] @ self._albedo_basis[:k]).reshape(a.albedo_basis.shape[1:])
            albedo = albedo + upsample_maps_np(offsets, albedo.shape[:2])
        albedo = np.clip(albedo, 0.0, 1.0)
        scale = float(np.asarray(params["specular"]).reshape(-1)[0])
        specular = (np.clip(a.specular_mean * scale, 0.0, MAX_SPECULAR) if a.specular_mean is not None
                    else np.full((t, t, 3), SKIN_SPECULAR, np.float32))
        roughness = np.full((t, t, 1), float(np.asarray(params["roughness"]).reshape(-1)[0]), np.float32)
        covered = self.chart_mask()
        return {"albedo": flatten_outside(albedo, covered), "specular": flatten_outside(specular, covered),
                "roughness": flatten_outside(roughness, covered)}


@dataclass
class FaceCrop:
    """One detected face and its aligned crop.

    Attributes:
        detected: the detection, photo px.
        crop: ``(S, S, 3)`` uint8 RGB aligned crop.
        forward: ``(2, 3)`` photo px -> crop px.
    """

    detected: DetectedFace
    crop: np.ndarray
    forward: np.ndarray


def detect_faces(detector: FaceDetector, image: LoadedImage | np.ndarray, crop_size: int,
                 max_faces: int | None = None, source: str | None = None) -> list[FaceCrop]:
    """Every face of a photo (largest first), aligned to ``crop_size`` crops.

    Raises:
        NoFaceError: no face.
    """
    from facenet3d.landmarks.align import align_face

    faces = detector.detect(image, source=source)
    if not faces:
        raise NoFaceError(source)
    faces = faces[:max_faces] if max_faces else faces
    out = []
    for face in faces:
        aligned = align_face(image, face.landmarks68, crop_size)
        out.append(FaceCrop(face, aligned.crop, aligned.forward))
    return out


def crops_to_input(crops: np.ndarray) -> np.ndarray:
    """``(B, S, S, 3)`` uint8 RGB crops -> ``(B, 3, S, S)`` float32 in ``[0, 1]`` (the graph's input,
    as :meth:`facenet3d.network.FaceRegressor.prepare_images` makes it)."""
    x = np.asarray(crops)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"crops must be (B, S, S, 3) uint8, got {x.shape} {x.dtype}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


@dataclass
class PhotoFace:
    """One face reconstructed by the graph, placed in its photo (the numpy counterpart of
    :class:`facenet3d.api.FaceReconstruction`).

    Attributes:
        params: the face's :class:`~facenet3d.params.FaceParams` fields (crop camera), no batch axis.
        vertices: ``(V, 3)`` float32 mm, model frame (identity + expression, no pose).
        vertices_crop: ``(V, 3)`` mm in the crop camera.
        vertex_albedo: ``(V, 3)`` linear RGB.
        rotation: ``(3, 3)`` model -> photo camera.
        translation: ``(3,)`` mm, photo camera.
        camera: the photo's camera.
        landmarks68_image: ``(68, 2)`` photo px.
        landmarks68_mesh: ``(68, 3)`` mm, model frame.
        face: the detection and crop.
        crop_size: the graph's crop size.
        seconds: time per stage.
    """

    params: dict[str, np.ndarray]
    vertices: np.ndarray
    vertices_crop: np.ndarray
    vertex_albedo: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    camera: ImageCamera
    landmarks68_image: np.ndarray
    landmarks68_mesh: np.ndarray
    face: FaceCrop
    crop_size: int
    seconds: dict[str, float] = field(default_factory=dict)

    def params_record(self, model_name: str = "", expression_names: Sequence[str] = ()) -> dict:
        """``params.json`` content (the torch path's, with ``refine = "none"``)."""
        return params_record(self.params, rotation=self.rotation, translation=self.translation, camera=self.camera,
                             crop_size=self.crop_size, crop_forward=self.face.forward,
                             detection_box=self.face.detected.box, detection_score=self.face.detected.score,
                             refine="none", seconds=self.seconds, model_name=model_name,
                             expression_names=expression_names)


def place_faces(outputs: dict[str, np.ndarray], faces: list[FaceCrop], model: RuntimeFaceModel,
                crop_size: int, image_size: tuple[int, int], seconds: dict[str, float] | None = None
                ) -> list[PhotoFace]:
    """Turn the graph's outputs for ``faces`` (rows in order) into :class:`PhotoFace` s.

    Args:
        outputs: graph outputs with ``len(faces)`` rows.
        faces: the crops they were computed from.
        model: the face model.
        crop_size: the graph's crop size.
        image_size: ``(H, W)`` of the original upright photo.
        seconds: time per stage, recorded with every face.
    """
    out = []
    for i, face in enumerate(faces):
        params = {name: outputs[name][i] for name in PARAM_OUTPUTS}
        rot = outputs["rotation_matrix"][i].astype(np.float64)
        trans = params["translation"].astype(np.float64)
        r_img, t_img, focal, principal = photo_pose(rot, trans, face.forward, crop_size)
        v = outputs["vertices_model"][i]
        lm_mesh = v.astype(np.float64)[model.landmark_index]
        out.append(PhotoFace(
            params=params, vertices=v.astype(np.float32), vertices_crop=outputs["vertices"][i],
            vertex_albedo=outputs["vertex_albedo"][i], rotation=r_img, translation=t_img,
            camera=ImageCamera(focal, principal, (int(image_size[0]), int(image_size[1]))),
            landmarks68_image=project_points(lm_mesh @ r_img.T + t_img, focal, principal),
            landmarks68_mesh=lm_mesh, face=face, crop_size=crop_size, seconds=dict(seconds or {})))
    return out


def face_result(face: PhotoFace, model: RuntimeFaceModel, photo: LoadedImage | np.ndarray) -> FaceResult:
    """Everything written for one face (the layout of :func:`facenet3d.api.face_result`).

    Args:
        face: the reconstruction.
        model: the face model.
        photo: the upright photo, decoded at any reduction (a :class:`LoadedImage`) or an
            ``(H, W, 3)`` uint8 RGB array at full size; the overlay is drawn at
            :func:`facenet3d.export.overlay.overlay_photo`'s bounded size.
    """
    from facenet3d.export.overlay import overlay_photo

    mesh = mesh_from_face_model(model.arrays, face.vertices, expression=face.params["expression"],
                                **model.texture_maps(face.params))
    pixels, scale = overlay_photo(photo)
    overlay = crop_overlay(face.vertices_crop, model.triangles, face.vertex_albedo, face.params["sh"],
                           face.face.forward, face.crop_size, pixels, scale, face.landmarks68_image,
                           face.face.detected.landmarks68)
    return FaceResult(mesh=mesh, params=face.params_record(model.name, model.arrays.expression_names),
                      landmarks_image_px=face.landmarks68_image, landmarks_mesh_mm=face.landmarks68_mesh,
                      overlay=overlay)


def reconstruct_image(image: LoadedImage, session, model: RuntimeFaceModel, detector: FaceDetector,
                      max_faces: int | None = None) -> list[PhotoFace]:
    """Detect, align, regress and place every face of one decoded photo (no files written).

    Args:
        image: the decoded photo (:func:`~facenet3d.landmarks.image_io.read_image`).
        session: an :class:`facenet3d.infer.session.RegressorSession`.
        model: its face model.
        detector: a face detector.
        max_faces: at most this many faces.

    Raises:
        NoFaceError: no face.
    """
    t0 = time.perf_counter()
    faces = detect_faces(detector, image, session.crop_size, max_faces, source=image.path or None)
    t1 = time.perf_counter()
    outputs = session.run(crops_to_input(np.stack([f.crop for f in faces])))
    t2 = time.perf_counter()
    hw = (image.original_size[1], image.original_size[0])
    return place_faces(outputs, faces, model, session.crop_size, hw,
                       {"detect_align": t1 - t0, "regress": t2 - t1})
