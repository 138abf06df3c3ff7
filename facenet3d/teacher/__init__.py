"""The 3DDFA_V2 teacher (training labels and an evaluation baseline; never used at inference)."""

from facenet3d.teacher.mobilenet_v1 import MobileNetV1, TeacherWeightsError, load_mobilenet_v1
from facenet3d.teacher.tddfa import (
    Teacher3DDFA,
    TeacherResult,
    crop_roi,
    pose_from_params,
    roi_box_from_face_box,
    roi_box_from_landmarks,
)

__all__ = ["MobileNetV1", "Teacher3DDFA", "TeacherResult", "TeacherWeightsError", "crop_roi", "load_mobilenet_v1",
           "pose_from_params", "roi_box_from_face_box", "roi_box_from_landmarks"]
