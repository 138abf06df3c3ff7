"""Photo -> aligned crop: the one step every path takes (the command, the API, video, evaluation,
the training caches), so a face is cropped, masked and placed the same way everywhere."""

from __future__ import annotations

import numpy as np

from facenet3d.landmarks.align import DEFAULT_CROP_SIZE


def face_crop_arrays(image, face, size: int = DEFAULT_CROP_SIZE, forward: np.ndarray | None = None
                     ) -> dict[str, np.ndarray]:
    """The aligned crop of one detected face with its landmarks, masks and transforms.

    Args:
        image: the photo (``(H, W, 3)`` uint8 or a ``LoadedImage``).
        face: a :class:`~facenet3d.landmarks.detect.DetectedFace` in original photo pixels.
        size: crop side, px.
        forward: ``(2, 3)`` photo px -> crop px to crop with instead of aligning the face's
            landmarks (e.g. :func:`~facenet3d.landmarks.align.box_alignment_matrix`).

    Returns:
        The arrays of :func:`array_specs` (without the leading item axis).
    """
    from facenet3d.landmarks.align import align_face, crop_image
    from facenet3d.landmarks.masks import face_and_skin_masks

    aligned = align_face(image, face.landmarks68, size) if forward is None else crop_image(image, forward, size)
    in_crop = face.transformed(aligned.forward)
    face_m, skin_m = face_and_skin_masks(in_crop.landmarks478, (size, size))
    return {"crop": aligned.crop, "landmarks478": in_crop.landmarks478, "landmarks68": in_crop.landmarks68,
            "face_mask": face_m, "skin_mask": skin_m, "forward": aligned.forward, "inverse": aligned.inverse}
