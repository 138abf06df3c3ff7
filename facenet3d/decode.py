"""From :class:`~facenet3d.params.FaceParams` to geometry in the camera and in the image.

The regressor's training, the refinement stages and the ONNX graph all decode parameters
the same way, through :func:`decode_face`.

Camera convention for aligned crops: a pinhole camera with the principal point at the crop
centre and a focal length of :data:`CROP_FOCAL_PER_PX` times the crop size in pixels
(1015 px for a 224 px crop, as in Deep3DFaceRecon: a 12.6 degree field of view, so a face
fills the crop at about 0.8 m). The true focal length of a photo is unknown; a long one
keeps perspective mild, which is what a face filling a crop usually has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facenet3d.camera_math import CROP_FOCAL_PER_PX
from facenet3d.facemodel import MorphableModel
from facenet3d.params import FaceParams
from facenet3d.render.camera import PinholeCamera
from facenet3d.render.pose import apply_pose, rotation_6d_to_matrix


def crop_camera(size: int, batch: int = 1, device: torch.device | str | None = None) -> PinholeCamera:
    """The fixed camera of an aligned ``size x size`` crop (see the module docstring)."""
    focal = torch.full((batch, 2), CROP_FOCAL_PER_PX * size, device=device)
    principal = torch.full((batch, 2), size / 2.0, device=device)
    return PinholeCamera(focal, principal, (size, size))


def default_distance_mm(size: int, face_width_mm: float = 150.0, face_fraction: float = 0.75) -> float:
    """Distance at which a face ``face_width_mm`` wide spans ``face_fraction`` of a crop."""
    return CROP_FOCAL_PER_PX * size * face_width_mm / (face_fraction * size)


@dataclass
class DecodedFace:
    """Geometry of a batch of faces.

    Attributes:
        vertices: ``(B, V, 3)`` mm, model frame (identity and expression, no pose).
        vertices_camera: ``(B, V, 3)`` mm, camera frame.
        rotation: ``(B, 3, 3)`` model-to-camera rotation.
        landmarks68: ``(B, 68, 2)`` projected iBUG-68 landmarks, pixels.
        landmarks_dense: ``(B, L, 2)`` projected MediaPipe-correspondence vertices (``L = 468``
            for the default model), pixels; None when the model has no such correspondence.
    """

    vertices: torch.Tensor
    vertices_camera: torch.Tensor
    rotation: torch.Tensor
    landmarks68: torch.Tensor
    landmarks_dense: torch.Tensor | None
    #: ``(B, L, 3)`` mm, camera frame: the dense points before projection (None as above).
    landmarks_dense_camera: torch.Tensor | None = None


def decode_face(model: MorphableModel, params: FaceParams, camera: PinholeCamera,
                landmarks_only: bool = False) -> DecodedFace:
    """Decode shape, apply the pose, project the landmarks.

    Args:
        model: the face model.
        params: ``B`` faces.
        camera: the camera (``B`` or 1 cameras).
        landmarks_only: decode only the landmark vertices (much faster on large meshes);
            ``vertices`` and ``vertices_camera`` then hold the 68 landmarks followed by the
            dense ones.
    """
    lm68_idx = model.landmarks68.clamp_min(0)
    dense_rows = model.dense_landmark_rows()
    if landmarks_only:
        dense_idx = None if dense_rows is None else dense_rows[0].reshape(-1)
        idx = lm68_idx if dense_idx is None else torch.cat([lm68_idx, dense_idx])
        verts = model.decode(identity=params.identity, expression=params.expression, vertex_indices=idx)
        n68 = len(lm68_idx)
        lm68_idx = torch.arange(n68, device=verts.device)
        if dense_rows is not None:
            dense_rows = (torch.arange(n68, len(idx), device=verts.device).view(dense_rows[0].shape), dense_rows[1])
    else:
        verts = model.decode(identity=params.identity, expression=params.expression)
    rot = rotation_6d_to_matrix(params.rotation)
    cam = apply_pose(verts, rot, params.translation)
    lm68 = camera.camera_to_pixel(cam[:, lm68_idx])
    # Weighted vertices first, projection after: a barycentric point of the posed surface.
    dense_cam = None if dense_rows is None else model.gather_points(cam, *dense_rows)
    dense = None if dense_cam is None else camera.camera_to_pixel(dense_cam)
    return DecodedFace(verts, cam, rot, lm68, dense, dense_cam)


def project_embedding(model: MorphableModel, vertices_camera: torch.Tensor, camera: PinholeCamera,
                      name: str) -> torch.Tensor:
    """``(B, V, 3)`` camera-frame vertices (mm) -> ``(B, N, 2)`` px: the points of the model's landmark
    embedding ``name`` (e.g. ``"ibug68_3ddfa"``, ``"aflw21"``), projected.

    Barycentric points are taken on the posed surface (a rigid pose keeps barycentric weights).
    """
    return camera.camera_to_pixel(model.landmark_points(vertices_camera, name))
