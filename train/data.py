"""Training data: aligned crops from ``facenet3d preprocess`` caches, augmented, at the training crop size.

Each sample is one cached photo (224 px crop, 478 landmarks, masks), warped once to the
training crop size ``S`` through a random similarity (scale, rotation, shift about the crop
centre; a left/right flip), so the landmarks and masks move exactly with the image. The
warp is done here rather than with albumentations' ``Affine`` because resizing and jitter are
one resampling and the landmarks must follow facenet3d's pixel-centre-at-+0.5 convention to
the sub-pixel (:func:`facenet3d.landmarks.align.warp_image`).

**Large poses** (``augment.profile``): a near-frontal face may instead be turned in depth to a
large yaw and re-rendered (:mod:`facenet3d.train.profiling`, "face profiling" as 300W-LP was made), its
landmarks turned with it, and cropped as the pipeline crops a photo. MediaPipe's own landmarks of
strongly turned faces, which underestimate the yaw, can be kept out of the landmark terms
(``label_max_yaw``: the sample's ``landmark_weight`` is then 0).

Appearance augmentations are split in two, because the photometric loss needs a target:

- **Colour** (albumentations ``ColorJitter``) changes what the network must explain (another
  skin tone, another light), so it is applied to the input *and* to the photometric target.
- **Degradations** (synthetic occluders, Gaussian/motion blur, sensor noise, JPEG artefacts)
  are applied to the network input only: the target stays the clean photo, so the network
  learns to predict the face *behind* an occluder and through blur, instead of fitting them.

A sample (all ``torch`` tensors, ``S`` = crop size)::

    image            (3, S, S) float32 [0, 1]   network input (degraded)
    target           (3, S, S) float32 [0, 1]   photometric target
    skin_mask        (S, S) float32 [0, 1]      skin pixels (eyes, brows, mouth excluded)
    landmarks68      (68, 2) float32 px         iBUG-68 from MediaPipe
    landmarks_dense  (468, 2) float32 px        MediaPipe mesh landmarks (z dropped)
    warp             (2, 3) float32             cache-crop px -> training-crop px
    source_size      int                        cache crop side, px
    flipped          bool
    index            int64                      item index in the dataset
    teacher          (D,) float32               distillation target (zeros without one)
    has_teacher      bool
    landmark_weight  float32                    1, or 0 where MediaPipe's landmarks are not trusted (or absent)
    turn_deg         float32                    yaw the face was turned by (``augment.profile``), 0 if not
    teacher68        (68, 2) float32 px         the 3DDFA_V2 teacher's points (AFLW2000-3D convention)
    teacher_weight   float32                    the teacher's confidence; 0 without teacher points
    aflw21           (21, 2) float32 px         AFLW's human points, NaN where invisible or absent
    aflw21_weight    float32                    1 where the photo has human points, else 0

The last four come from labelled crop caches (:mod:`facenet3d.train.crops`); turned faces (``augment.profile``)
have no teacher or human points (weights 0: those labels are of the unturned face). Photo caches
without them give zeros / NaN and weight 0, so both kinds of cache mix in one batch.

Distillation targets (``FaceDataModule(distill=...)``): an ``.npz`` with a ``source`` array
(``(N,)`` str, the photo paths as in the cache manifest) and any of the
:class:`~facenet3d.params.FaceParams` fields as ``(N, ...)`` float arrays (``identity``,
``expression``, ``albedo``, ``rotation``, ``translation``, ``sh``, ``specular``, ``roughness``),
fitted to the *cache* crop (e.g. by ``refine``'s landmark stage, or a full refinement), plus
``dims`` = ``[identity_dim, expression_dim, albedo_dim]``. Missing fields are filled with
NaN and not supervised.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from facenet3d.train.profiling import NUM_LANDMARKS, estimate_yaw, profile_vertices, source_map
from torch.utils.data import DataLoader, Dataset

from facenet3d.errors import Facenet3DError, NoFaceError
from facenet3d.landmarks.align import alignment_matrix, compose_affine, invert_affine, transform_points, warp_image
from facenet3d.landmarks.cache import PhotoCache
from facenet3d.landmarks.detect import FaceDetector
from facenet3d.landmarks.ibug68 import IBUG68_FROM_MEDIAPIPE, ibug68_from_mediapipe
from facenet3d.landmarks.mean_face import mirror_indices
from facenet3d.landmarks.topology import NUM_MESH_VERTICES
from facenet3d.params import FaceParams

#: AFLW's 21 points after a left/right flip (order of ``aflw21.npz``, see shared/README.md): the point
#: where landmark ``i`` should be is the old ``AFLW21_MIRROR[i]`` (brows, eyes, ear lobes, nostrils,
#: mouth corners swap sides; nose tip, mouth centre and chin stay).
AFLW21_MIRROR = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20], np.int64)
#: AFLW points beyond this many face sizes outside the teacher's box are not used (another face, mislabelled):
#: 1,368 points of 175 of the 15,949 AFLW crops.
AFLW21_MAX_OUTSIDE = 0.5
#: Indices of ``label_info`` in labelled crop caches (:data:`facenet3d.train.crops.LABEL_INFO`).
_TEACHER_CONF, _MP_SCORE, _YAW = 0, 1, 5


class TrainingDataError(Facenet3DError, ValueError):
    """The training data (caches, distillation targets) cannot be used as configured."""


@dataclass
class AugmentConfig:
    """Augmentation strengths and probabilities (set ``enabled: false`` to switch all off).

    Attributes:
        enabled: apply any augmentation at all (validation never does).
        flip: probability of a left/right flip.
        scale: relative scale jitter, uniform in ``[1 - scale, 1 + scale]``.
        rotate_deg: in-plane rotation jitter, uniform in ``[-rotate_deg, rotate_deg]`` degrees.
        translate: shift jitter as a fraction of the crop side, per axis.
        colour: probability of brightness/contrast/saturation/hue jitter.
        occluder: probability of 1-2 synthetic occluders.
        blur: probability of Gaussian or motion blur.
        noise: probability of Gaussian sensor noise.
        jpeg: probability of JPEG re-compression (quality 25-90).
        profile: probability of turning a near-frontal face in depth (:mod:`facenet3d.train.profiling`) to a
            yaw of ``profile_min_yaw``..``profile_max_yaw`` degrees (same side as it faces).
        profile_source_yaw: only faces within this yaw (degrees; MediaPipe's labels are good
            there) are turned.
        profile_min_yaw: smallest yaw after the turn, degrees.
        profile_max_yaw: largest yaw after the turn, degrees.
        profile_crop: how a turned face is re-cropped: ``"detector"``, as the pipeline crops a
            photo (from MediaPipe's landmarks of the turned face; the turn is skipped when
            MediaPipe finds none), or ``"labels"``, from the turned landmarks.
    """

    enabled: bool = True
    flip: float = 0.5
    scale: float = 0.08
    rotate_deg: float = 12.0
    translate: float = 0.04
    colour: float = 0.8
    occluder: float = 0.3
    blur: float = 0.2
    noise: float = 0.2
    jpeg: float = 0.3
    profile: float = 0.0
    profile_source_yaw: float = 30.0
    profile_min_yaw: float = 30.0
    profile_max_yaw: float = 80.0
    profile_crop: str = "detector"

    def __post_init__(self) -> None:
        if self.profile_crop not in ("detector", "labels"):
            raise ValueError(f"profile_crop must be 'detector' or 'labels', got {self.profile_crop!r}")


@lru_cache(maxsize=1)
def mirror_maps() -> tuple[np.ndarray, np.ndarray]:
    """Left/right relabelling after a flip: ``(mirror68 (68,), mirror468 (468,))`` index arrays.

    After mirroring an image, the point that lies where landmark ``i`` should be is the old
    landmark ``mirror[i]``.
    """
    mirror = mirror_indices()[:NUM_MESH_VERTICES]
    where = {int(v): i for i, v in enumerate(IBUG68_FROM_MEDIAPIPE)}
    mirror68 = np.array([where[int(mirror[v])] for v in IBUG68_FROM_MEDIAPIPE], dtype=np.int64)
    return mirror68, mirror.astype(np.int64)


def similarity_matrix(source_size: int, size: int, scale: float = 1.0, angle_deg: float = 0.0,
                      shift: tuple[float, float] = (0.0, 0.0), flip: bool = False) -> np.ndarray:
    """``(2, 3)`` map from ``source_size`` crop px to ``size`` crop px (pixel centres at +0.5).

    Resize by ``size / source_size``, then about the crop centre: scale, rotate by ``angle_deg``
    (counter-clockwise on screen), shift by ``shift`` px, and mirror left/right when ``flip``.
    """
    c = size / 2.0
    a = math.radians(angle_deg)
    s = scale * size / source_size
    # Image v points down, so a counter-clockwise turn on screen is a clockwise one in (u, v).
    rot = s * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    if flip:
        rot = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ rot
    src_c = source_size / 2.0
    t = np.array([c + shift[0], c + shift[1]]) - rot @ np.array([src_c, src_c])
    return np.concatenate([rot, t[:, None]], 1)


def draw_occluders(image: np.ndarray, landmarks68: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Paint ``count`` random occluders over the face, in place.

    Each is a random convex polygon (a hand, a microphone, a strand of hair, sunglasses...)
    about 15-45 % of the face width, centred on a random landmark, filled with a flat colour
    plus a random gradient and texture noise, or with a patch of the same photo from elsewhere.

    Args:
        image: ``(S, S, 3)`` uint8.
        landmarks68: ``(68, 2)`` px, where the face is.
        rng: the random generator.
        count: number of occluders.
    """
    s = image.shape[0]
    face_width = float(np.ptp(landmarks68[:, 0])) or s / 2.0
    for _ in range(count):
        centre = landmarks68[rng.integers(68)] + rng.normal(0, 0.05 * face_width, 2)
        radius = face_width * rng.uniform(0.15, 0.45) / 2.0
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 9)))
        radii = radius * rng.uniform(0.5, 1.5, angles.shape)
        pts = centre + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
        hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
        mask = np.zeros((s, s), np.uint8)
        cv2.fillPoly(mask, [hull], 1, lineType=cv2.LINE_AA, shift=4)
        if rng.random() < 0.3:  # a patch of the photo itself: plausible texture and colour
            dx, dy = rng.integers(-s // 2, s // 2, 2)
            fill = np.roll(image, (int(dy), int(dx)), (0, 1)).astype(np.float32)
        else:
            colour = rng.uniform(0, 255, 3).astype(np.float32)
            gradient = np.linspace(-1, 1, s, dtype=np.float32)[None, :, None] * rng.uniform(-40, 40, 3)
            fill = colour + gradient + rng.normal(0, rng.uniform(0, 20), (s, s, 1)).astype(np.float32)
        m = mask[..., None].astype(bool)
        image[:] = np.where(m, np.clip(fill, 0, 255), image).astype(np.uint8)


class CachedFaceDataset(Dataset):
    """Photo-cache items as training samples (see the module docstring).

    Args:
        caches: photo caches (their crop size must agree).
        items: ``(cache_index, item_index)`` pairs to use.
        crop_size: training crop side ``S``, px.
        augment: augmentations, or None for none (validation).
        teachers: ``(N, D)`` distillation vectors aligned with ``items`` (NaN: unsupervised), or None.
        label_max_yaw: MediaPipe's landmarks of faces turned farther than this (degrees, by the
            teacher's pose in labelled crop caches, else by :func:`~facenet3d.train.profiling.estimate_yaw`
            of those landmarks) get ``landmark_weight`` 0:
            beyond ~45 degrees MediaPipe underestimates the yaw, and its labels would teach the
            regressor to do the same (turned near-frontal faces supervise large yaw instead).
            None trusts every face.
        label_min_score: in labelled crop caches, MediaPipe's landmarks of faces its detector
            scored below this get ``landmark_weight`` 0.
    """

    def __init__(self, caches: list[PhotoCache], items: list[tuple[int, int]], crop_size: int,
                 augment: AugmentConfig | None = None, teachers: np.ndarray | None = None,
                 label_max_yaw: float | None = None, label_min_score: float = 0.0):
        self.caches = caches
        self.items = items
        self.crop_size = int(crop_size)
        self.source_size = caches[0].size
        self.augment = augment if augment is not None and augment.enabled else None
        self.teachers = teachers
        self.label_max_yaw = label_max_yaw
        self.label_min_score = label_min_score
        self._detector: FaceDetector | None = None
        self.teacher_dim = 0 if teachers is None else teachers.shape[1]
        a = self.augment
        if a is not None:
            self.colour = A.Compose([A.ColorJitter(brightness=(0.7, 1.3), contrast=(0.7, 1.3),
                                                   saturation=(0.6, 1.4), hue=(-0.04, 0.04), p=a.colour)])
            self.degrade = A.Compose([
                A.OneOf([A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.5, 2.0)),
                         A.MotionBlur(blur_limit=(3, 9))], p=a.blur),
                A.GaussNoise(std_range=(0.01, 0.06), p=a.noise),
                A.ImageCompression(quality_range=(25, 90), p=a.jpeg),
            ])

    def __len__(self) -> int:
        return len(self.items)

    def _geometry(self, rng: np.random.Generator | None) -> tuple[np.ndarray, bool]:
        a = self.augment
        if rng is None or a is None:
            return similarity_matrix(self.source_size, self.crop_size), False
        flip = bool(rng.random() < a.flip)
        shift = rng.uniform(-a.translate, a.translate, 2) * self.crop_size
        return similarity_matrix(self.source_size, self.crop_size, scale=rng.uniform(1 - a.scale, 1 + a.scale),
                                 angle_deg=rng.uniform(-a.rotate_deg, a.rotate_deg), shift=(shift[0], shift[1]),
                                 flip=flip), flip

    def _profile_yaw(self, yaw: float, rng: np.random.Generator | None) -> float:
        """The yaw (degrees) to turn a face of yaw ``yaw`` by, 0 for none (see :class:`AugmentConfig`)."""
        a = self.augment
        if rng is None or a is None or not a.profile or not math.isfinite(yaw) or rng.random() >= a.profile:
            return 0.0
        if abs(yaw) > a.profile_source_yaw:
            return 0.0
        # Away from frontal on the side the face already turns to (either side when nearly frontal).
        side = math.copysign(1.0, yaw) if abs(yaw) > 5.0 else float(rng.choice((-1.0, 1.0)))
        return side * rng.uniform(a.profile_min_yaw, a.profile_max_yaw) - yaw

    def __getitem__(self, index: int) -> dict:
        cache_index, row = self.items[index]
        item = self.caches[cache_index][row]
        rng = None
        if self.augment is not None:
            # One seed per sample from torch's generator, which PyTorch/Lightning seed per worker:
            # reproducible under seed_everything, different in every worker and epoch.
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            rng = np.random.default_rng(seed)
        m, flip = self._geometry(rng)
        s = self.crop_size
        points = np.asarray(item["landmarks478"], dtype=np.float64)
        found = bool(np.isfinite(points).all())  # labelled crop caches: NaN where MediaPipe found no face
        yaw = estimate_yaw(points) if found else math.nan
        trusted = found and self._trusted(item, yaw)
        turn = self._profile_yaw(yaw, rng)
        turned = self._turned(item, points, turn, m) if turn else None
        if turned is not None:
            crop, skin, m, points = turned
            lm68 = transform_points(ibug68_from_mediapipe(points)[:, :2], m)
        else:
            crop = warp_image(np.asarray(item["crop"]), m, (s, s))
            skin = warp_image(np.asarray(item["skin_mask"], dtype=np.float32), m, (s, s))
            lm68 = transform_points(np.asarray(item["landmarks68"], dtype=np.float64), m)
        dense = transform_points(points[:NUM_MESH_VERTICES, :2], m)
        teacher68, aflw21 = self._labels(item, m)
        if flip:
            mirror68, mirror468 = mirror_maps()
            lm68, dense = lm68[mirror68], dense[mirror468]
            # The teacher's points are iBUG-68 too: the same relabelling.
            teacher68, aflw21 = teacher68[mirror68], aflw21[AFLW21_MIRROR]
        if not found:
            lm68, dense = np.zeros_like(lm68), np.zeros_like(dense)  # no target (landmark_weight 0)
        info = item.get("label_info")
        labelled = info is not None and turned is None
        teacher_weight = float(info[_TEACHER_CONF]) if labelled else 0.0
        aflw21_weight = 1.0 if labelled and np.isfinite(aflw21).any() else 0.0
        target = crop
        if rng is not None:
            self.colour.set_random_seed(seed)
            target = self.colour(image=crop)["image"]
            crop = target.copy()
            if rng.random() < self.augment.occluder:
                draw_occluders(crop, lm68 if found else teacher68, rng, int(rng.integers(1, 3)))
            self.degrade.set_random_seed(seed + 1)
            crop = self.degrade(image=crop)["image"]
        teacher = np.zeros(self.teacher_dim, np.float32)
        has_teacher = self.teachers is not None and turned is None  # the teacher fitted the unturned face
        if has_teacher:
            teacher = self.teachers[index]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() / 255.0,
            "target": torch.from_numpy(np.ascontiguousarray(target)).permute(2, 0, 1).float() / 255.0,
            "skin_mask": torch.from_numpy(np.clip(skin, 0, 1)),
            "landmarks68": torch.from_numpy(lm68.astype(np.float32)),
            "landmarks_dense": torch.from_numpy(dense.astype(np.float32)),
            "warp": torch.from_numpy(m.astype(np.float32)),
            "source_size": self.source_size,
            "flipped": flip,
            "index": index,
            "teacher": torch.from_numpy(np.asarray(teacher, np.float32)),
            "has_teacher": has_teacher,
            "landmark_weight": torch.tensor(1.0 if trusted else 0.0),
            "turn_deg": torch.tensor(float(turn) if turned is not None else 0.0),
            "teacher68": torch.from_numpy(teacher68.astype(np.float32)),
            "teacher_weight": torch.tensor(teacher_weight),
            "aflw21": torch.from_numpy(aflw21.astype(np.float32)),
            "aflw21_weight": torch.tensor(aflw21_weight),
        }

    def _trusted(self, item: dict, yaw: float) -> bool:
        """Whether MediaPipe's landmarks of a cache item (found, estimated ``yaw`` degrees) supervise."""
        info = item.get("label_info")
        if info is not None:
            # The teacher's yaw: MediaPipe's own underestimates large ones.
            yaw = float(info[_YAW])
            if float(info[_MP_SCORE]) < self.label_min_score:
                return False
        return self.label_max_yaw is None or abs(yaw) <= self.label_max_yaw

    def _labels(self, item: dict, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The teacher's ``(68, 2)`` and AFLW's ``(21, 2)`` points of a cache item moved by ``m``
        (cache-crop px -> training-crop px); zeros / NaN for photo caches without them.

        AFLW points farther than :data:`AFLW21_MAX_OUTSIDE` face sizes (square root of the area of
        the teacher points' box) outside that box are dropped (NaN): some lie on another face of
        the photo than the one cropped, or far off their face, and a squared loss would let them
        dominate a batch.
        """
        if "teacher68" not in item:
            return np.zeros((68, 2), np.float32), np.full((21, 2), np.nan, np.float32)
        teacher = np.asarray(item["teacher68"])[:, :2]
        aflw = np.array(item["aflw21"], np.float32)
        lo, hi = teacher.min(0), teacher.max(0)
        outside = np.maximum(np.maximum(lo - aflw, aflw - hi), 0.0).max(1) / np.sqrt(np.prod(hi - lo))
        aflw[outside > AFLW21_MAX_OUTSIDE] = np.nan
        return transform_points(teacher, m), transform_points(aflw, m)

    def _turned(self, item: dict, points: np.ndarray, yaw: float, m: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """A cached face turned in depth by ``yaw`` degrees (:mod:`facenet3d.train.profiling`), then cropped.

        The turned face is re-aligned to the canonical crop before the sample's similarity ``m``,
        the way the pipeline crops a photo (``profile_crop: detector``: from MediaPipe's landmarks
        of the turned face, whose crops of profiles differ from a crop by the true landmarks) or
        from the turned landmarks themselves (``labels``). Returns the crop, skin mask, the
        cache-crop px -> training-crop px map (the turned face's) and the turned landmarks
        ``(478, 3)`` in cache-crop px; None when MediaPipe finds no face in the turned photo.
        """
        source, turned = profile_vertices(points, yaw)
        if self.augment.profile_crop == "detector":
            view, _ = turned_view(item, source, turned, np.eye(2, 3), self.source_size)
            try:
                lm68 = self.detector.detect(view)[0].landmarks68
            except NoFaceError:
                return None
        else:
            lm68 = ibug68_from_mediapipe(turned[:, :2])
        realign = alignment_matrix(lm68, self.source_size)
        m = compose_affine(m, realign)
        crop, skin = turned_view(item, source, turned, m, self.crop_size)
        return crop, skin, m, turned[:NUM_LANDMARKS]

    @property
    def detector(self) -> FaceDetector:
        """MediaPipe, made on first use in each data-loader process (its graphs do not survive a fork)."""
        if self._detector is None:
            self._detector = FaceDetector(max_faces=1)
        return self._detector


def turned_view(item: dict, source: np.ndarray, turned: np.ndarray, matrix: np.ndarray, size: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Render a cache item's crop and skin mask with its face turned
    (:func:`~facenet3d.train.profiling.profile_vertices`).

    Args:
        item: the cache item (``crop``, ``skin_mask``).
        source, turned: the profiling mesh before and after the turn, cache-crop px.
        matrix: ``(2, 3)`` cache-crop px -> output px, applied after the turn.
        size: output side, px.

    Returns:
        ``(size, size, 3)`` uint8 image and ``(size, size)`` float32 skin mask (skin only where
        the face mesh shows, not on the stretched rings around it).
    """
    where, on_face = source_map(source, transform_points(turned[:, :2], matrix), turned[:, 2], size)
    # Pixels no triangle covers (none, normally: the last ring lies far outside) keep the plain warp.
    plain = transform_points(np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1),
                             invert_affine(matrix))
    where = np.where(np.isnan(where), plain, where) - 0.5  # pixel centres at +0.5 -> cv2's at 0
    maps = (where[..., 0].astype(np.float32), where[..., 1].astype(np.float32))
    black = {"interpolation": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    crop = cv2.remap(np.asarray(item["crop"]), *maps, **black)
    skin = cv2.remap(np.asarray(item["skin_mask"], dtype=np.float32), *maps, **black) * on_face
    return crop, skin


def split_key(item: dict) -> str:
    """What must not be split between training and validation: the person when known, else the photo."""
    identity = item.get("labels", {}).get("identity")
    return f"identity:{identity}" if identity else f"source:{item['source']}"


def is_validation(key: str, fraction: float, seed: int) -> bool:
    """Deterministic split by hashing ``key`` (same answer in every process and run)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64 < fraction


def load_teachers(path: str | Path, sources: list[str]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Distillation vectors for ``sources`` from an ``.npz`` (see the module docstring).

    Returns:
        ``(N, D)`` float32 (NaN where a photo or field has no target) and the coefficient dims.

    Raises:
        TrainingDataError: unreadable file, no ``source``/``dims`` arrays, or wrong shapes.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise TrainingDataError(f"{path}: cannot read distillation targets ({e})") from e
    if "source" not in data or "dims" not in data:
        raise TrainingDataError(f"{path}: distillation targets need 'source' and 'dims' arrays")
    dims = tuple(int(d) for d in data["dims"])
    sizes = FaceParams.sizes(*dims)
    row_of = {str(s): i for i, s in enumerate(data["source"])}
    n_file = len(data["source"])
    columns = []
    for name, shape in sizes.items():
        width = int(np.prod(shape))
        if name in data:
            arr = np.asarray(data[name], np.float32)
            if arr.shape != (n_file, *shape):
                raise TrainingDataError(f"{path}: {name} has shape {arr.shape}, expected {(n_file, *shape)}")
            columns.append(arr.reshape(n_file, width))
        else:
            columns.append(np.full((n_file, width), np.nan, np.float32))
    table = np.concatenate(columns, 1)
    out = np.full((len(sources), table.shape[1]), np.nan, np.float32)
    for i, s in enumerate(sources):
        j = row_of.get(s)
        if j is not None:
            out[i] = table[j]
    return out, dims


class FaceDataModule(pl.LightningDataModule):
    """Photo caches split into training and validation sets of augmented crops.

    Args:
        cache: photo cache folder(s) made by ``facenet3d preprocess``.
        crop_size: training crop side, px (the regressor's; linked to the model's by the CLI).
        batch_size: faces per step and device.
        num_workers: data-loader processes.
        val_fraction: share of people/photos held out (by hash: stable across runs).
        val_max: at most this many validation faces (validation renders cost time).
        split_seed: seed of the hash split.
        limit: use only the first ``limit`` items (smoke runs).
        augment: see :class:`AugmentConfig`.
        distill: ``.npz`` of distillation targets (module docstring) or None.
        label_max_yaw: see :class:`CachedFaceDataset` (training set only; validation trusts all).
        label_min_score: see :class:`CachedFaceDataset` (training set only).
    """

    def __init__(self, cache: str | list[str] = "../cache/faces224", crop_size: int = 160, batch_size: int = 16,
                 num_workers: int = 1, val_fraction: float = 0.02, val_max: int = 256, split_seed: int = 0,
                 limit: int | None = None, augment: AugmentConfig | None = None, distill: str | None = None,
                 label_max_yaw: float | None = None, label_min_score: float = 0.0):
        super().__init__()
        self.cache_dirs = [cache] if isinstance(cache, str | Path) else list(cache)
        self.crop_size = int(crop_size)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.val_max = val_max
        self.split_seed = split_seed
        self.limit = limit
        self.augment = augment or AugmentConfig()
        self.distill = distill
        self.label_max_yaw = label_max_yaw
        self.label_min_score = label_min_score
        self._detector: FaceDetector | None = None
        self.teacher_dims: tuple[int, int, int] | None = None
        self.train_set: CachedFaceDataset | None = None
        self.val_set: CachedFaceDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        caches = []
        for d in self.cache_dirs:
            if not Path(d, "manifest.json").is_file():
                raise TrainingDataError(f"{d}: no photo cache here; make one with "
                                        f"`facenet3d preprocess PHOTOS -o {d}`")
            caches.append(PhotoCache(d))
        if len({c.size for c in caches}) > 1:
            raise TrainingDataError(f"caches with different crop sizes: {[c.size for c in caches]}")
        items = [(ci, r) for ci, c in enumerate(caches) for r in range(len(c))][: self.limit]
        if not items:
            raise TrainingDataError(f"the photo caches {self.cache_dirs} are empty")
        meta = [caches[ci].items[r] for ci, r in items]
        val = [is_validation(split_key(m), self.val_fraction, self.split_seed) for m in meta]
        train_idx = [i for i, v in enumerate(val) if not v]
        val_idx = [i for i, v in enumerate(val) if v]
        # An even stride over the held-out photos, so that every cache (photo set) is represented.
        val_idx = [val_idx[int(k)] for k in np.linspace(0, len(val_idx), min(len(val_idx), self.val_max),
                                                        endpoint=False)]
        if not train_idx:
            train_idx = list(range(len(items)))  # tiny caches: train on everything
        if not val_idx:
            val_idx = train_idx[:1]
        teachers = None
        if self.distill:
            teachers, self.teacher_dims = load_teachers(self.distill, [m["source"] for m in meta])

        def subset(idx: list[int], augment: AugmentConfig | None, label_max_yaw: float | None,
                   label_min_score: float) -> CachedFaceDataset:
            t = None if teachers is None else teachers[idx]
            return CachedFaceDataset(caches, [items[i] for i in idx], self.crop_size, augment, t, label_max_yaw,
                                     label_min_score)

        self.train_set = subset(train_idx, self.augment, self.label_max_yaw, self.label_min_score)
        self.val_set = subset(val_idx, None, None, 0.0)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # Dropping the last partial batch keeps BatchNorm statistics sane, unless that is all there is.
        drop_last = shuffle and len(dataset) >= self.batch_size
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=drop_last,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
