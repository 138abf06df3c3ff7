"""The reconstruction methods the evaluations compare, each one configuration of the real pipeline.

=============  ==================================================================================
name           what it is
=============  ==================================================================================
``mediapipe``  MediaPipe's own iBUG-68 points (:data:`~facenet3d.landmarks.IBUG68_FROM_MEDIAPIPE`),
               no face model: a landmark baseline only (NME).
``mean-face``  The model's mean shape and mean albedo under a uniform light matched to the skin
               brightness, posed by stage A fitted to the landmarks with the identity and
               expression bases set to zero (:func:`mean_face_model`): what the face model gives
               before it learns anything about the person.
``landmarks``  Stage A alone (pose, identity, expression from the landmarks).
``none``       The regressor alone (needs trained weights; :class:`MethodUnavailableError`
               otherwise).
``fast``       Stages A + B (the default of ``facenet3d reconstruct``).
``full``       Stages A + B + C (UV maps).
``3ddfa-v2``   The 3DDFA_V2 MobileNet x0.5 teacher (``facenet3d.teacher``, weights from ``--teacher DIR``;
               a landmark baseline only, never part of the product): on the protocol's roi box
               when one is given, else 3DDFA_V2's crop from the 68-point box or the detection.
=============  ==================================================================================

Every method but ``mediapipe`` and ``3ddfa-v2`` is a :class:`~facenet3d.api.FaceReconstructor`, so an evaluation
measures exactly what ``facenet3d reconstruct`` returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facenet3d.errors import Facenet3DError, NoFaceError
from facenet3d.landmarks.detect import DetectedFace, FaceDetector

if TYPE_CHECKING:  # the api pulls in torch and the renderer; imported when a method is built
    from facenet3d.api import FaceReconstruction, FaceReconstructor
    from facenet3d.facemodel import MorphableModel

#: Method names, cheapest first.
METHODS = ("mediapipe", "3ddfa-v2", "mean-face", "landmarks", "none", "fast", "full")
#: Landmark-only baselines (no face model).
LANDMARK_METHODS = ("mediapipe", "3ddfa-v2")
#: Methods that reconstruct a face.
FACE_METHODS = tuple(m for m in METHODS if m not in LANDMARK_METHODS)


class MethodUnavailableError(Facenet3DError):
    """A method cannot run here (e.g. ``none`` without trained regressor weights)."""


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(4,)`` boxes ``x0, y0, x1, y1``."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class ReferenceFaceDetector(FaceDetector):
    """A :class:`FaceDetector` that can be told which face is wanted.

    Inside :meth:`preferring`, :meth:`detect` returns the detected face whose box overlaps the
    reference box most first (and raises :class:`NoFaceError` when none overlaps it): a
    benchmark annotates one face per photo, and a photo may show several. The box only picks
    among the detector's faces; it never moves or resizes them.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reference: np.ndarray | None = None

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._reference = None

    @contextlib.contextmanager
    def preferring(self, box: np.ndarray | None) -> Iterator[None]:
        """Within the block, put the face overlapping ``box`` (``x0, y0, x1, y1`` px) first."""
        previous, self._reference = self._reference, None if box is None else np.asarray(box, np.float64)
        try:
            yield
        finally:
            self._reference = previous

    def detect(self, image, source: str | None = None) -> list[DetectedFace]:
        faces = super().detect(image, source)
        if self._reference is None:
            return faces
        overlaps = [box_iou(f.box, self._reference) for f in faces]
        best = int(np.argmax(overlaps))
        if overlaps[best] <= 0.0:
            raise NoFaceError(f"{source or 'image'} (no detected face overlaps the annotated one)")
        return [faces[best]] + [f for i, f in enumerate(faces) if i != best]


def mean_face_model(model: MorphableModel) -> MorphableModel:
    """The same face model with its identity and expression bases zeroed.

    Fitting it moves only the pose (and, in stage B, light and albedo), so stage A on it is the
    least-squares pose of the mean face; its coefficients are inert.

    Args:
        model: a :class:`~facenet3d.facemodel.MorphableModel`.

    Returns:
        A new :class:`~facenet3d.facemodel.MorphableModel` (same topology, landmarks, albedo).
    """
    from facenet3d.facemodel import MorphableModel

    arrays = model.to_arrays()
    arrays = replace(arrays, identity_basis=np.zeros_like(arrays.identity_basis),
                     expression_basis=np.zeros_like(arrays.expression_basis),
                     metadata={**arrays.metadata, "name": f"{arrays.metadata.get('name', 'model')} (mean face)"})
    return MorphableModel(arrays, source="mean_face_model").to(model.mean_shape.device)


@dataclass
class Prediction:
    """What a method returns for one image.

    Attributes:
        landmarks68: ``(68, 2)`` iBUG-68 points in pixels of the image given.
        face: the detected face it started from (None when none was needed: ``3ddfa-v2`` on a
            given box).
        reconstruction: the :class:`~facenet3d.api.FaceReconstruction` (None for the landmark
            baselines).
        landmarks_found: False when a face given by its box had no MediaPipe face, so a
            refining method returned its starting point unrefined.
    """

    landmarks68: np.ndarray
    face: DetectedFace | None
    reconstruction: FaceReconstruction | None
    landmarks_found: bool = True


@dataclass
class Method:
    """One evaluated method.

    Attributes:
        name: one of :data:`METHODS`, or a refinement YAML file (a preset with other settings;
            the pipeline then runs it like ``fast``).
        detector: the detector (shared by the reconstructor).
        reconstructor: a :class:`~facenet3d.api.FaceReconstructor`; None for the landmark baselines.
        refine: the ``refine=`` argument given to the reconstructor.
        face_model_sha256: fingerprint of the face model the method is built from (for
            ``mean-face``, the model before its bases were zeroed).
        teacher: the ``3ddfa-v2`` baseline's ``facenet3d.teacher.Teacher3DDFA``, else None.
        teacher_passes: its crops: 1 (the roi as given, the published protocol) or 2 (re-cropped
            around the first pass's points).
    """

    name: str
    detector: ReferenceFaceDetector
    reconstructor: FaceReconstructor | None = None
    refine: str = "fast"
    face_model_sha256: str | None = None
    teacher: object | None = None
    teacher_passes: int = 1

    @property
    def reconstructs(self) -> bool:
        """Whether the method returns a face model fit (all but ``mediapipe``)."""
        return self.reconstructor is not None

    def run(self, image, reference_box: np.ndarray | None = None, face_box: np.ndarray | None = None,
            roi_box: np.ndarray | None = None) -> Prediction:
        """Run the method on one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB or a :class:`~facenet3d.landmarks.LoadedImage`
                (``3ddfa-v2``: an array).
            reference_box: ``(4,)`` box of the wanted face in the image's pixels (see
                :class:`ReferenceFaceDetector`), or None for the largest face.
            face_box: ``(4,)`` the face's 68-point box when it is known (a benchmark's ground
                truth): the face is then cropped from it without needing a detection
                (:meth:`~facenet3d.api.FaceReconstructor.reconstruct`'s ``face_box``; for
                ``3ddfa-v2``, 3DDFA_V2's roi from landmarks of the box). ``mediapipe`` ignores it.
            roi_box: ``(4,)`` ``sx, sy, ex, ey`` the protocol's roi for ``3ddfa-v2`` (3DDFA's
                array-index frame); ignored by the other methods.

        Raises:
            NoFaceError: no (matching) face where one is needed.
        """
        if self.teacher is not None:
            return self._run_teacher(image, reference_box, face_box, roi_box)
        with self.detector.preferring(reference_box):
            if self.reconstructor is None:
                face = self.detector.detect(image)[0]
                return Prediction(face.landmarks68.astype(np.float64), face, None)
            rec = self.reconstructor.reconstruct(image, refine=self.refine, max_faces=1, face_box=face_box)[0]
        return Prediction(np.asarray(rec.landmarks68_image, np.float64), rec.detected, rec, rec.landmarks_found)

    def _run_teacher(self, image, reference_box: np.ndarray | None, face_box: np.ndarray | None,
                     roi_box: np.ndarray | None) -> Prediction:
        from facenet3d.teacher import roi_box_from_face_box, roi_box_from_landmarks
        from facenet3d.teacher.tddfa import INDEX_TO_PIXEL

        face = None
        if roi_box is None and face_box is not None:
            roi_box = roi_box_from_landmarks(np.asarray(face_box, np.float64).reshape(2, 2) - INDEX_TO_PIXEL)
        elif roi_box is None:
            with self.detector.preferring(reference_box):
                face = self.detector.detect(image)[0]
            roi_box = roi_box_from_face_box(face.box - INDEX_TO_PIXEL)
        pixels = getattr(image, "pixels", image)
        result = self.teacher.predict(pixels, roi_box, self.teacher_passes)
        return Prediction(result.landmarks68[:, :2].astype(np.float64), face, None)

    def describe(self) -> dict:
        """JSON-able settings of the method."""
        out = {"method": self.name}
        if self.teacher is not None:
            out.update(teacher=str(getattr(self.teacher, "source", "")), teacher_passes=self.teacher_passes)
        if self.reconstructor is not None:
            rec = self.reconstructor
            out.update(refine=self.refine, face_model=rec.model_name, face_model_sha256=self.face_model_sha256,
                       crop_size=rec.crop_size, regressor=rec.regressor is not None)
        return out


def load_method(name: str, model: str = "default", weights: str = "default", device: str = "cpu",
                teacher: str | None = None, teacher_passes: int = 1) -> Method:
    """Build a method by name (see the module docstring).

    Args:
        name: one of :data:`METHODS`, or a refinement YAML file (a preset with other settings;
            the pipeline then runs it like ``fast``).
        model: face-model spec (:func:`~facenet3d.facemodel.load_face_model`).
        weights: regressor weights (``"default"``, a path, or ``"none"``); used by every method
            that fits (refinement starts from the regressor when there is one), required by
            ``none``.
        device: torch device for fitting.
        teacher: folder of the 3DDFA_V2 teacher (``mb05_120x120.safetensors`` + ``bfm68.npz``),
            required by ``3ddfa-v2``.
        teacher_passes: ``3ddfa-v2``'s passes (see :class:`Method`).

    Raises:
        ValueError: unknown method name.
        MethodUnavailableError: ``none`` without regressor weights; ``3ddfa-v2`` without a
            loadable teacher (or without the training package).
        FaceModelFormatError: the face model cannot be loaded.
    """
    if name not in METHODS and not is_refine_yaml(name):
        raise ValueError(f"unknown method {name!r}; choose one of {METHODS} or a refinement YAML file")
    detector = ReferenceFaceDetector()
    if name == "mediapipe":
        return Method(name, detector)
    if name == "3ddfa-v2":
        return Method(name, detector, teacher=_load_teacher(teacher, device), teacher_passes=teacher_passes)
    from facenet3d.api import FaceReconstructor
    from facenet3d.network import face_model_fingerprint

    if name == "mean-face":
        rec = FaceReconstructor.from_pretrained("none", model, device=device, detector=detector)
        fingerprint = face_model_fingerprint(rec.model)[:16]
        rec = FaceReconstructor(mean_face_model(rec.model), None, detector=detector, device=device,
                                model_name=f"{model} (mean face)")
        return Method(name, detector, rec, "landmarks", fingerprint)
    rec = FaceReconstructor.from_pretrained(weights, model, device=device, detector=detector)
    if name == "none" and rec.regressor is None:
        raise MethodUnavailableError("method 'none' (regressor only) needs trained regressor weights and none "
                                     f"are installed (weights={weights!r})")
    return Method(name, detector, rec, name, face_model_fingerprint(rec.model)[:16])


def is_refine_yaml(name: str) -> bool:
    """A refinement settings file (``configs/refine/*.yaml``'s format) given as the method."""
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()


def _load_teacher(folder: str | None, device: str):
    """The ``3ddfa-v2`` baseline's teacher, loaded only when that baseline is asked for."""
    if not folder:
        raise MethodUnavailableError("method '3ddfa-v2' needs the teacher's folder (--teacher DIR)")
    from facenet3d.teacher import Teacher3DDFA

    try:
        return Teacher3DDFA.from_dir(folder, device=device)
    except Facenet3DError as e:
        raise MethodUnavailableError(f"method '3ddfa-v2': {e}") from e
