"""Face detection, 478/68 landmarks, alignment, masks, robust image loading and the
training-photo cache.

Heavy dependencies (MediaPipe, OpenCV) are imported where they are used, so importing this
package stays cheap.
"""

from facenet3d.landmarks.align import (
    AlignedFace,
    align_face,
    alignment_matrix,
    canonical_template,
    estimate_similarity,
    invert_affine,
    transform_points,
    warp_image,
)
from facenet3d.landmarks.detect import DetectedFace, FaceDetector
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE, ibug68_from_mediapipe
from facenet3d.landmarks.image_io import LoadedImage, load_image, read_image
from facenet3d.landmarks.masks import face_and_skin_masks, face_mask, skin_mask
from facenet3d.landmarks.mean_face import CanonicalMesh, mean_face, mediapipe_canonical_mesh, mirror_indices
from facenet3d.landmarks.topology import mesh_triangles, region_polygons

__all__ = [
    "AlignedFace", "CanonicalMesh", "DetectedFace", "FaceDetector", "IBUG68_FROM_MEDIAPIPE", "LoadedImage",
    "align_face", "alignment_matrix", "canonical_template", "estimate_similarity", "face_and_skin_masks",
    "face_mask", "ibug68_from_mediapipe", "invert_affine", "load_image", "mean_face",
    "mediapipe_canonical_mesh", "mesh_triangles", "mirror_indices", "read_image", "region_polygons",
    "skin_mask", "transform_points", "warp_image",
]
