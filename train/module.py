"""The LightningModule that trains a :class:`~facenet3d.network.FaceRegressor` self-supervised.

Per face, the loss is a weighted sum (weights in :class:`LossWeights`):

- **landmarks**: squared distance between the projected model landmarks and MediaPipe's,
  iBUG-68 and the 468 dense mesh points, in units of the crop side (so ``1e-4`` is an error of
  1 % of the crop); cheap, and it fixes pose, identity and expression first;
- **photometric**: masked robust colour error between the render (linear RGB turned into sRGB,
  like the photo; turned grey for greyscale photos, which say nothing about skin colour) and
  the clean photo over the skin mask times the render's coverage; it is
  switched on after ``photometric_start`` steps and ramped in over ``photometric_ramp`` steps,
  because a render far from the face gives useless colour gradients;
- **priors**: Gaussian priors on identity, expression and albedo coefficients (in units of
  the model's prior std), and a penalty on coloured light (SH channels that differ), which
  keeps skin tone in the albedo rather than in the lighting;
- **albedo**: left/right symmetry and total variation (flatness) of the UV albedo map, inside
  the UV charts;
- **distillation** (optional): the teacher's (e.g. ``refine``'s) projected landmarks, moved by
  the sample's augmentation warp, and its identity/expression/albedo coefficients (not on
  flipped samples, whose mirrored face has other coefficients).
- **labelled landmarks** (labelled crop caches, :mod:`facenet3d.train.crops`): the 3DDFA_V2 teacher's 68
  points against the model's ``ibug68_3ddfa`` embedding (AFLW2000-3D's convention), weighted by
  the teacher's confidence, and AFLW's human 21 points (visible ones) against its ``aflw21``
  embedding; same units as the landmark terms.
- **expression bounds**: models whose expression coefficients are bounded (blendshape weights in
  [0, 1]) decode the clamped coefficients, so every loss sees a face the product can show, and a
  squared hinge pulls the raw outputs back inside the bounds (where the clamp passes no gradient).

Validation logs the normalised mean errors of those labels (``val/teacher68_nme``,
``val/aflw21_nme``: percent of the square root of the teacher points' box area, as AFLW2000-3D's
NME) and their mean ``val/landmark_nme``, what checkpoints are selected by.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from facenet3d.train.data import mirror_maps
from facenet3d.train.materials import uv_spaces, vertex_spaces

from facenet3d.decode import DecodedFace, crop_camera, decode_face, project_embedding
from facenet3d.errors import WeightsError
from facenet3d.facemodel import MorphableModel, load_face_model
from facenet3d.losses import coefficient_prior, landmark_loss, photometric_loss, symmetry_loss, total_variation
from facenet3d.network import FaceRegressor, create_regressor, face_model_fingerprint, get_variant, load_regressor
from facenet3d.network.weights import face_model_for
from facenet3d.params import FaceParams
from facenet3d.render import Renderer, use_backend
from facenet3d.render.color import linear_to_srgb


@dataclass
class LossWeights:
    """Weights of the loss terms (see the module docstring). Zero switches a term off."""

    landmarks68: float = 2000.0
    landmarks_dense: float = 1000.0
    photometric: float = 1.0
    identity_prior: float = 0.05
    expression_prior: float = 0.05
    albedo_prior: float = 0.02
    light_colour: float = 0.1
    albedo_symmetry: float = 10.0
    albedo_flatness: float = 1.0
    distill_landmarks: float = 0.0
    distill_coefficients: float = 0.0
    teacher68: float = 0.0
    aflw21: float = 0.0
    expression_bounds: float = 0.0


#: Landmark embeddings of the labelled landmark terms.
TEACHER_EMBEDDING, AFLW_EMBEDDING = "ibug68_3ddfa", "aflw21"


def initial_state(weights: str, regressor: FaceRegressor, model: MorphableModel
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict of saved regressor ``weights`` to fine-tune ``regressor`` from, and their
    provenance (file name, tensor checksum, steps they were trained for) for the exported header.

    Raises:
        WeightsError: unreadable weights, another face model, or another architecture.
    """
    saved = load_regressor(weights, face_model=model)
    meta = saved.weights_metadata
    provenance = {"name": str(weights), "file": saved.weights_path.name,
                  "tensors_sha256": meta.get("tensors_sha256"),
                  "trained_steps": meta.get("extra", {}).get("trained_steps")}
    a, b = saved.info, regressor.info
    if (a.backbone, a.crop_size, a.dims) != (b.backbone, b.crop_size, b.dims):
        raise WeightsError(f"{weights}: weights of a {a.backbone} regressor at {a.crop_size} px "
                           f"cannot start a {b.backbone} one at {b.crop_size} px")
    return saved.state_dict(), provenance


def initial_backbone(weights: str | Path, regressor: FaceRegressor) -> dict:
    """Load the ``backbone.*`` tensors of a regressor ``.safetensors`` into ``regressor``'s backbone;
    returns their provenance (file name, tensor checksum) for the exported header.

    Raises:
        WeightsError: unreadable file, or a backbone of another architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(weights)
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise WeightsError(f"{path}: cannot read regressor weights ({e})") from e
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        regressor.backbone.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsError(f"{path}: its backbone is not a {regressor.info.backbone} ({e})") from e
    import hashlib

    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
    return {"name": str(weights), "file": path.name, "backbone_only": True, "backbone_sha256": digest}


def initial_matching_state(path: str | Path, regressor: FaceRegressor) -> dict:
    """Load every tensor of a training checkpoint (``.ckpt``, its ``regressor.*`` entries) or regressor
    ``.safetensors`` whose name and shape match ``regressor``'s; returns the provenance (file,
    loaded tensor count, the checkpoint's step).

    Raises:
        WeightsError: unreadable file, or no tensor matches.
    """
    path = Path(path)
    step = None
    try:
        if path.suffix == ".ckpt":
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            step = ckpt.get("global_step")
            prefix = "regressor."
            tensors = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        else:
            from safetensors.torch import load_file

            tensors = load_file(str(path))
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise WeightsError(f"{path}: cannot read a regressor state ({e})") from e
    own = regressor.state_dict()
    matching = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise WeightsError(f"{path}: no tensor matches a {regressor.info.backbone} regressor")
    regressor.load_state_dict(matching, strict=False)
    return {"name": str(path), "file": path.name, "matching_tensors": len(matching), "of": len(own),
            "trained_steps": step}


class FaceRegressorModule(pl.LightningModule):
    """Self-supervised training of the regressor through the differentiable renderer.

    Args:
        face_model: face-model spec for :func:`~facenet3d.facemodel.load_face_model`.
        variant: regressor variant (:func:`~facenet3d.network.available_regressors`).
        backbone: override the variant's timm backbone.
        crop_size: override the variant's crop size, px (the data module follows it).
        losses: loss weights.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps; then cosine decay to ``lr * min_lr_ratio`` at
            ``max_steps``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        photometric_start: step at which the photometric term starts.
        photometric_ramp: steps over which its weight grows linearly to ``losses.photometric``.
        antialias: antialiased renders (silhouette gradients; slower).
        albedo_sampling: ``"vertex"``: render the albedo (and specular) spaces sampled at the
            vertices (:mod:`facenet3d.train.materials`; cheaper on CPU); ``"uv"``: texture-map them.
        regulariser_size: side of the UV maps the albedo symmetry and flatness are measured on.
        channels_last: run the backbone in channels-last memory format (about 15 % faster
            convolutions on CPU; the weights are the same).
        render_backend: ``"auto"`` (nvdiffrast on CUDA when installed), ``"torch"`` or ``"nvdiffrast"``.
        image_every_n_steps: write an image grid every this many training steps (0: never).
        image_count: faces per image grid.
        init_weights: start from these regressor weights (a shipped name such as ``"default"`` or a
            ``.safetensors`` path; same variant and face model) instead of the backbone's fresh
            initialisation: fine-tuning. A resumed checkpoint overrides them.
        init_backbone: start the backbone (only) from a regressor ``.safetensors`` of any face model
            with the same backbone (e.g. the previous release's): face features learnt before, a new
            head for this face model. Ignored when ``init_weights`` is given; a resumed checkpoint
            overrides it.
        init_state: start every regressor tensor whose name and shape match from a training
            checkpoint (``.ckpt``) or regressor ``.safetensors`` of any face model, e.g. a run whose
            face model was rebuilt with the same dimensions (its checkpoints no longer resume).
            Applied after ``init_weights`` / ``init_backbone``; a resumed checkpoint overrides it.
        render_size: side of the photometric term's renders, px (the target and mask are
            area-downsampled to it); None renders at the crop size. Smaller is much cheaper on CPU.
    """

    def __init__(self, face_model: str = "default", variant: str = "resnet18", backbone: str | None = None,
                 crop_size: int | None = None, losses: LossWeights | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, warmup_steps: int = 200, min_lr_ratio: float = 0.05,
                 photometric_start: int = 500, photometric_ramp: int = 1000, antialias: bool = False,
                 albedo_sampling: str = "vertex", regulariser_size: int = 64, channels_last: bool = True,
                 render_backend: str = "auto", image_every_n_steps: int = 500, image_count: int = 4,
                 init_weights: str | None = None, init_backbone: str | None = None,
                 init_state: str | None = None, render_size: int | None = None):
        super().__init__()
        # Loss weights are kept in the checkpoint as a plain dict: checkpoints load with
        # torch.load(weights_only=True), which refuses to unpickle arbitrary classes.
        if isinstance(losses, dict):
            losses = LossWeights(**losses)
        self.save_hyperparameters(ignore=["losses"])
        self.hparams["losses"] = asdict(losses or LossWeights())
        if albedo_sampling not in ("vertex", "uv"):
            raise ValueError(f"albedo_sampling must be 'vertex' or 'uv', got {albedo_sampling!r}")
        self.weights = LossWeights(**self.hparams["losses"])
        # Fine-tuning decodes with the face model its weights were trained for ("default").
        model = face_model_for(init_weights, face_model) if init_weights else load_face_model(face_model)
        self.regressor: FaceRegressor = create_regressor(variant, model, backbone=backbone, crop_size=crop_size)
        # Where fine-tuning started (kept in checkpoints and in the exported header).
        self.initial_weights: dict | None = None
        if init_weights:
            state, self.initial_weights = initial_state(init_weights, self.regressor, model)
            self.regressor.load_state_dict(state)
        elif init_backbone:
            self.initial_weights = initial_backbone(init_backbone, self.regressor)
        if init_state:
            self.initial_weights = initial_matching_state(init_state, self.regressor)
        self.crop_size = self.regressor.crop_size
        self.render_size = int(render_size or self.crop_size)
        self._val_sums: dict[str, list[float]] = {}
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.regressor.backbone.to(memory_format=self.memory_format)
        self.renderer = Renderer.from_model(model, shading="vertex", antialias=antialias, backend=render_backend)
        self.render_backend = render_backend
        # The face model is fixed data, not a parameter: kept out of the module tree so it is not
        # written to every checkpoint nor broadcast by DDP at every step (it is reloaded by name).
        vertex_albedo, vertex_specular = vertex_spaces(model)
        self._face = {"model": model, "vertex_albedo": vertex_albedo, "vertex_specular": vertex_specular,
                      "uv_small": uv_spaces(model, regulariser_size)}
        self.face_model_fingerprint = face_model_fingerprint(model)

    # ------------------------------------------------------------------ face data on the device
    def _face_data(self) -> dict:
        """The face model and its resampled spaces, moved to this module's device on first use."""
        face = self._face
        if face["model"].mean_shape.device != self.device:
            face["model"].to(self.device)
            face["vertex_albedo"] = face["vertex_albedo"].to(self.device)
            if face["vertex_specular"] is not None:
                face["vertex_specular"] = face["vertex_specular"].to(self.device)
            if face["uv_small"] is not None:
                face["uv_small"] = (face["uv_small"][0].to(self.device), face["uv_small"][1].to(self.device))
        return face

    @property
    def face_model(self) -> MorphableModel:
        return self._face_data()["model"]

    def setup(self, stage: str) -> None:
        # ``trainer.log_dir`` is a collective under DDP: ask on every rank, here, not in rank 0 only.
        self._image_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "images"

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor) -> FaceParams:
        """``(B, 3, S, S)`` RGB in [0, 1] -> :class:`FaceParams`."""
        return self.regressor(images.contiguous(memory_format=self.memory_format))

    def photometric_weight(self, step: int) -> float:
        """The photometric weight at a training step (0 before the start, then a linear ramp)."""
        h = self.hparams
        if step < h.photometric_start:
            return 0.0
        ramp = max(1, h.photometric_ramp)
        return self.weights.photometric * min(1.0, (step - h.photometric_start + 1) / ramp)

    def render(self, params: FaceParams, decoded: DecodedFace) -> tuple[torch.Tensor, torch.Tensor]:
        """Render faces as sRGB images ``(B, S, S, 3)`` and their coverage ``(B, S, S)``."""
        face = self._face_data()
        model = face["model"]
        b = params.batch_size
        # The crop's camera at another resolution: the same view, every pixel coordinate scaled.
        camera = crop_camera(self.render_size, 1, self.device)
        if self.hparams.albedo_sampling == "vertex":
            albedo, specular = face["vertex_albedo"](params.albedo), face["vertex_specular"]
        else:
            albedo, specular = model.albedo(params.albedo), model.specular_mean
        if specular is not None:
            specular = specular[None] * params.specular.clamp_min(0.0).view(b, *([1] * specular.ndim))
        with use_backend(self.render_backend):
            out = self.renderer(decoded.vertices_camera, camera, params.sh, albedo, specular, params.roughness)
        return linear_to_srgb(out.image), out.mask[..., 0]

    # ------------------------------------------------------------------ losses
    def compute_losses(self, params: FaceParams, batch: dict, photometric_weight: float, render: bool = False
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        """Total loss, per-term batch means (unweighted) and intermediate results.

        Args:
            params: predicted parameters of the batch.
            batch: a collated batch of :class:`~facenet3d.train.data.CachedFaceDataset` samples.
            photometric_weight: weight of the photometric term now (0 skips the render).
            render: render even when the photometric weight is 0 (image grids, validation).
        """
        model, w, s = self.face_model, self.weights, float(self.crop_size)
        camera = crop_camera(self.crop_size, 1, self.device)
        terms: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []

        def add(name: str, value: torch.Tensor, weight: float) -> None:
            terms[name] = value.mean()
            if weight:
                weighted.append(weight * terms[name])

        bounds = model.expression_bounds
        if bounds is not None:
            add("expression_bounds", bounds_penalty(params.expression, bounds), w.expression_bounds)
            params = replace(params, expression=clamp_straight_through(params.expression, bounds))
        decoded = decode_face(model, params, camera)
        extras: dict = {"decoded": decoded, "lm_pred": decoded.landmarks68, "lm_target": batch["landmarks68"]}
        names = model.landmark_embedding_names
        if "teacher68" in batch and TEACHER_EMBEDDING in names:
            pred = project_embedding(model, decoded.vertices_camera, camera, TEACHER_EMBEDDING)
            add("teacher68", batch["teacher_weight"] * landmark_loss(pred, batch["teacher68"], normaliser=s),
                w.teacher68)
            extras.update(lm_pred=pred, lm_target=batch["teacher68"], teacher68_pred=pred)
        if "aflw21" in batch and AFLW_EMBEDDING in names:
            pred = project_embedding(model, decoded.vertices_camera, camera, AFLW_EMBEDDING)
            target, visible = _visible(batch["aflw21"])
            add("aflw21", batch["aflw21_weight"] * landmark_loss(pred, target, visible, normaliser=s), w.aflw21)
            extras["aflw21_pred"] = pred

        present = (model.landmarks68 >= 0).to(decoded.landmarks68.dtype)  # models may lack some iBUG points
        trusted = batch["landmark_weight"].to(decoded.landmarks68.dtype) if "landmark_weight" in batch else 1.0
        add("landmarks68", trusted * landmark_loss(decoded.landmarks68, batch["landmarks68"], present, normaliser=s),
            w.landmarks68)
        if decoded.landmarks_dense is not None:
            add("landmarks_dense",
                trusted * landmark_loss(decoded.landmarks_dense, batch["landmarks_dense"], normaliser=s),
                w.landmarks_dense)
        add("identity_prior", coefficient_prior(params.identity, model.identity_std), w.identity_prior)
        add("expression_prior", coefficient_prior(params.expression, model.expression_std), w.expression_prior)
        add("albedo_prior", coefficient_prior(params.albedo, model.albedo_std), w.albedo_prior)
        add("light_colour", _light_colour(params.sh), w.light_colour)
        uv_small = self._face_data()["uv_small"]
        if uv_small is not None and (w.albedo_symmetry or w.albedo_flatness):
            space, mask = uv_small
            maps = space(params.albedo)
            add("albedo_symmetry", symmetry_loss(maps, mask), w.albedo_symmetry)
            add("albedo_flatness", total_variation(maps, mask), w.albedo_flatness)
        if photometric_weight > 0 or render:
            image, coverage = self.render(params, decoded)
            target, skin = batch["target"], batch["skin_mask"]
            if self.render_size != self.crop_size:
                size = (self.render_size, self.render_size)
                target = torch.nn.functional.interpolate(target, size=size, mode="area")
                skin = torch.nn.functional.interpolate(skin[:, None], size=size, mode="area")[:, 0]
            target = target.permute(0, 2, 3, 1)
            add("photometric", photometric_loss(match_greyscale(image, target), target, skin * coverage),
                photometric_weight)
            extras.update(render=image, coverage=coverage)
        if batch["has_teacher"].any() and (w.distill_landmarks or w.distill_coefficients):
            for name, value in self.distillation_terms(params, decoded, batch).items():
                add(name, value, getattr(w, name))
        total = torch.stack(weighted).sum() if weighted else params.identity.sum() * 0.0
        return total, terms, extras

    def teacher_params(self, batch: dict) -> tuple[FaceParams, FaceParams]:
        """The batch's teacher parameters (zero where unknown) and a same-shaped 0/1 mask of the known values."""
        model = self.face_model
        dims = (model.identity_dim, model.expression_dim, model.albedo_dim)
        vec = batch["teacher"]
        known = torch.isfinite(vec) & batch["has_teacher"][:, None]
        return (FaceParams.from_vector(torch.where(known, vec, torch.zeros_like(vec)), *dims),
                FaceParams.from_vector(known.to(vec.dtype), *dims))

    def teacher_landmarks(self, teacher: FaceParams, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's iBUG-68 ``(B, 68, 2)`` and dense ``(B, L, 2)`` landmarks in training-crop px.

        The teacher fitted the cache crop: its landmarks are projected with the cache crop's camera
        and moved by the sample's augmentation warp, and relabelled left/right on flipped samples,
        exactly as the detected landmarks were. Dense landmarks are None when the model has none,
        or when they are not the 468 MediaPipe points and a sample is flipped.
        """
        source = int(batch["source_size"][0])
        decoded = decode_face(self.face_model, teacher, crop_camera(source, 1, self.device))
        a, t = batch["warp"][:, :, :2], batch["warp"][:, :, 2]
        flipped = batch["flipped"].to(torch.bool)
        out = []
        for points, mirror in zip((decoded.landmarks68, decoded.landmarks_dense), mirror_maps(), strict=True):
            if points is None:
                out.append(None)
                continue
            moved = points @ a.transpose(1, 2) + t[:, None]
            if flipped.any():
                if mirror.shape[0] != moved.shape[1]:
                    out.append(None)
                    continue
                moved = torch.where(flipped[:, None, None], moved[:, torch.as_tensor(mirror, device=self.device)],
                                    moved)
            out.append(moved)
        return out[0], out[1]

    def distillation_terms(self, params: FaceParams, decoded: DecodedFace, batch: dict) -> dict[str, torch.Tensor]:
        """Per-face distillation losses ``(B,)`` (zero where the teacher has no value)."""
        model, s = self.face_model, float(self.crop_size)
        teacher, known_p = self.teacher_params(batch)
        flipped = batch["flipped"].to(torch.bool)
        out = {}
        # Landmarks need every field that moves one.
        pose_known = torch.stack([getattr(known_p, f).flatten(1).amin(1)
                                  for f in ("rotation", "translation", "identity", "expression")
                                  if getattr(known_p, f).shape[1]]).amin(0)
        lm = params.identity.new_zeros(params.batch_size)
        for student, target in zip((decoded.landmarks68, decoded.landmarks_dense),
                                   self.teacher_landmarks(teacher, batch), strict=True):
            if student is not None and target is not None:
                lm = lm + landmark_loss(student, target.detach(), normaliser=s)
        out["distill_landmarks"] = lm * pose_known
        coeff = params.identity.new_zeros(params.batch_size)
        keep = (~flipped).to(coeff.dtype)
        for field, std in (("identity", model.identity_std), ("expression", model.expression_std),
                           ("albedo", model.albedo_std)):
            pred, ref, k = getattr(params, field), getattr(teacher, field), getattr(known_p, field)
            if pred.shape[1]:
                coeff = coeff + (((pred - ref) / std) ** 2 * k).sum(1) / k.sum(1).clamp_min(1.0)
        out["distill_coefficients"] = coeff * keep
        return out

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = self.global_step
        pw = self.photometric_weight(step)
        log_images = self._image_step(step)
        params = self(batch["image"])
        loss, terms, extras = self.compute_losses(params, batch, pw, render=log_images)
        b = params.batch_size
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log("train/photometric_weight", pw, batch_size=b)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=b)
        self.log("train/lm68_err_pct", _landmark_error_pct(extras["decoded"].landmarks68, batch, self.crop_size),
                 prog_bar=True, batch_size=b)
        for name, (value, count) in label_nmes(extras, batch).items():
            if count:
                self.log(f"train/{name}", value, prog_bar=name == "teacher68_nme", batch_size=count)
        if log_images:
            self.write_image_grid("train", batch, extras)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        params = self(batch["image"])
        loss, terms, extras = self.compute_losses(params, batch, self.weights.photometric, render=True)
        b = params.batch_size
        self.log("val/loss", loss, prog_bar=True, batch_size=b, sync_dist=True)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=b, sync_dist=True)
        self.log("val/lm68_err_pct", _landmark_error_pct(extras["decoded"].landmarks68, batch, self.crop_size),
                 batch_size=b, sync_dist=True)
        for name, (value, count) in label_nmes(extras, batch).items():
            total = self._val_sums.setdefault(name, [0.0, 0.0])
            total[0] += float(value) * count
            total[1] += count
        if batch_idx == 0 and self.hparams.image_every_n_steps:
            self.write_image_grid("val", batch, extras)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def on_validation_epoch_end(self) -> None:
        # Means over faces (batches hold different numbers of labelled faces), then their mean.
        means = {name: total / count for name, (total, count) in self._val_sums.items() if count}
        for name, value in means.items():
            self.log(f"val/{name}", value)
        if means:
            self.log("val/landmark_nme", sum(means.values()) / len(means), prog_bar=True)

    def _image_step(self, step: int) -> bool:
        n = self.hparams.image_every_n_steps
        return bool(n) and step % n == 0

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        h = self.hparams
        decay, no_decay = [], []
        for name, p in self.regressor.named_parameters():
            # Norm layers and biases are not weights to shrink.
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": h.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=h.lr)
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 \
            else int(self.trainer.estimated_stepping_batches)

        def factor(step: int) -> float:
            if step < h.warmup_steps:
                return (step + 1) / max(1, h.warmup_steps)
            progress = min(1.0, (step - h.warmup_steps) / max(1, total - h.warmup_steps))
            return h.min_lr_ratio + (1 - h.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["facenet3d"] = {"regressor": self.regressor.info.to_dict(),
                                   "face_model_fingerprint": self.face_model_fingerprint,
                                   "initial_weights": self.initial_weights}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "initial_weights" in checkpoint.get("facenet3d", {}):
            self.initial_weights = checkpoint["facenet3d"]["initial_weights"]
        saved = checkpoint.get("facenet3d", {}).get("face_model_fingerprint")
        if saved and saved != self.face_model_fingerprint:
            raise WeightsError(f"the checkpoint was trained with another face model (fingerprint {saved[:12]}) "
                               f"than {self.hparams.face_model!r} ({self.face_model_fingerprint[:12]})")

    def export(self, path: str | Path, trained_steps: int | None = None) -> Path:
        """Write the regressor as safetensors (:func:`~facenet3d.network.save_regressor`) with the
        training provenance (steps, hyper-parameters) in its header."""
        from facenet3d.network import save_regressor

        hp = dict(self.hparams)
        steps = self.global_step if trained_steps is None else trained_steps
        extra = {"trained_steps": int(steps), "hyperparameters": _jsonable(hp)}
        if self.initial_weights is not None:
            extra["initial_weights"] = self.initial_weights
        return save_regressor(self.regressor, path, extra=extra)

    # ------------------------------------------------------------------ image grids
    def write_image_grid(self, stage: str, batch: dict, extras: dict) -> Path | None:
        """Write ``input | render | overlay`` rows (landmarks: detected green, predicted red) as a PNG
        under ``<log dir>/images/``; returns its path (None on other ranks than 0)."""
        if self.trainer is None or not self.trainer.is_global_zero or "render" not in extras:
            return None
        import cv2

        from facenet3d.atomic import write_bytes

        render, coverage = extras["render"], extras["coverage"]
        if render.shape[1] != self.crop_size:  # renders at render_size: shown at the crop's size
            size = (self.crop_size, self.crop_size)
            render = torch.nn.functional.interpolate(render.permute(0, 3, 1, 2), size=size).permute(0, 2, 3, 1)
            coverage = torch.nn.functional.interpolate(coverage[:, None], size=size)[:, 0]
        grid = image_grid(batch["image"], render, coverage, extras["lm_target"], extras["lm_pred"],
                          self.hparams.image_count)
        _, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        path = self._image_dir / f"{stage}_step{self.global_step:07d}.png"
        write_bytes(png.tobytes(), path)
        return path


def image_grid(images: torch.Tensor, renders: torch.Tensor, coverage: torch.Tensor, target_lm: torch.Tensor,
               predicted_lm: torch.Tensor, count: int) -> np.ndarray:
    """``(n S, 3 S, 3)`` uint8 RGB grid: per face, input | render | render over input with landmarks.

    Args:
        images: ``(B, 3, S, S)`` in [0, 1]; renders ``(B, S, S, 3)`` sRGB; coverage ``(B, S, S)``;
            target_lm, predicted_lm ``(B, 68, 2)`` px.
        count: faces to show (at most ``B``).
    """
    import cv2

    n = min(count, images.shape[0])
    inp = images[:n].detach().permute(0, 2, 3, 1).float().cpu()
    ren = renders[:n].detach().float().cpu()
    cov = coverage[:n].detach().float().cpu()[..., None]
    over = ren * cov * 0.7 + inp * (1 - cov * 0.7)

    def to8(x: torch.Tensor) -> np.ndarray:
        return (x.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)

    rows = []
    for i in range(n):
        o = np.ascontiguousarray(to8(over[i]))
        for pts, colour in ((target_lm[i], (0, 255, 0)), (predicted_lm[i], (255, 0, 0))):
            for u, v in pts.detach().cpu().numpy():
                if np.isfinite(u) and np.isfinite(v):
                    # Pixel centres are at +0.5; OpenCV's at integers.
                    cv2.circle(o, (int(round((u - 0.5) * 4)), int(round((v - 0.5) * 4))), 4, colour, -1,
                               lineType=cv2.LINE_AA, shift=2)
        rows.append(np.concatenate([to8(inp[i]), to8(ren[i]), o], 1))
    return np.concatenate(rows, 0)


#: Rec. 601 luma weights, what greyscale conversions (PIL's ``"L"``, OpenCV) use.
LUMA = (0.299, 0.587, 0.114)


def match_greyscale(rendered: torch.Tensor, target: torch.Tensor, tolerance: float = 2.0 / 255) -> torch.Tensor:
    """Renders of faces whose photo is greyscale, turned into grey (luma); others unchanged.

    A grey photo says nothing about skin colour: comparing it with a colour render would drag
    the albedo towards grey. Both ``(B, H, W, 3)``; a photo is grey when its channels differ by
    less than ``tolerance`` everywhere.
    """
    grey = (target.amax(-1) - target.amin(-1)).flatten(1).amax(1) < tolerance
    if not grey.any():
        return rendered
    luma = (rendered * rendered.new_tensor(LUMA)).sum(-1, keepdim=True).expand_as(rendered)
    return torch.where(grey[:, None, None, None], luma, rendered)


def _light_colour(sh: torch.Tensor) -> torch.Tensor:
    """``(B,)`` mean squared difference of the SH channels from their grey mean, relative to the
    ambient coefficient of unit shading (coloured light explains skin tone too easily)."""
    from facenet3d.render import sh_uniform

    unit = float(sh_uniform(1.0)[0, 0, 0])
    return ((sh - sh.mean(-1, keepdim=True)) / unit).pow(2).flatten(1).mean(1)


def bounds_penalty(coefficients: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """``(B, K)`` coefficients -> ``(B,)`` mean squared excess beyond ``(low, high)`` (0 inside)."""
    low, high = bounds
    excess = (low - coefficients).clamp_min(0.0) + (coefficients - high).clamp_min(0.0)
    return excess.pow(2).mean(1)


def clamp_straight_through(coefficients: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Coefficients clamped into ``(low, high)`` in the forward pass, their gradient passed through
    unchanged. A plain clamp's gradient is zero outside the bounds *and on them*: blendshape weights
    start at the lower bound 0 (the neutral face), so they would never receive a gradient from the
    landmarks; :func:`bounds_penalty` brings the raw values back inside."""
    return coefficients + (coefficients.clamp(*bounds) - coefficients).detach()


def _visible(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, N, 2)`` points with NaN for invisible ones -> (points with 0 there, ``(B, N)`` 0/1 weights)."""
    visible = torch.isfinite(points).all(-1)
    return torch.where(visible[..., None], points, torch.zeros_like(points)), visible.to(points.dtype)


def normalised_error(predicted: torch.Tensor, target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(B,)`` percent mean point error (visible ``target`` points, NaN = invisible) over the square root
    of the area of ``reference``'s ``(B, M, 2)`` bounding box (AFLW2000-3D's NME); NaN without points."""
    target, visible = _visible(target)
    d = (predicted - target).norm(dim=-1)
    mean = (d * visible).sum(1) / visible.sum(1)
    size = (reference.amax(1) - reference.amin(1)).clamp_min(1e-6).prod(-1).sqrt()
    return 100.0 * mean / size


def label_nmes(extras: dict, batch: dict) -> dict[str, tuple[torch.Tensor, int]]:
    """``{name: (mean NME over the batch's faces that have the label, their count)}`` of the
    labelled landmark terms present (see :func:`normalised_error`)."""
    out = {}
    if "teacher68" not in batch:
        return out
    reference = batch["teacher68"]
    for name, pred, target, weight in (
            ("teacher68_nme", extras.get("teacher68_pred"), batch["teacher68"], batch["teacher_weight"]),
            ("aflw21_nme", extras.get("aflw21_pred"), batch["aflw21"], batch["aflw21_weight"])):
        keep = weight > 0
        if pred is None or not keep.any():
            continue
        err = normalised_error(pred[keep].detach(), target[keep], reference[keep])
        out[name] = (err.mean(), int(keep.sum()))
    return out


def _landmark_error_pct(predicted: torch.Tensor, batch: dict, crop_size: int) -> torch.Tensor:
    """Mean iBUG-68 point error as a percentage of the crop side (resolution independent)."""
    return (predicted - batch["landmarks68"]).norm(dim=-1).mean() * (100.0 / crop_size)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def crop_size_of(variant: str, crop_size: int | None) -> int:
    """The crop size a module configured with ``variant`` and ``crop_size`` trains at (CLI link)."""
    return int(crop_size) if crop_size else get_variant(variant).crop_size


class ExportRegressor(pl.Callback):
    """Write the trained regressor as safetensors when training ends (rank 0 only).

    Args:
        path: destination ``.safetensors``.
    """

    def __init__(self, path: str):
        self.path = path

    def on_train_end(self, trainer: pl.Trainer, pl_module: FaceRegressorModule) -> None:
        if trainer.is_global_zero:
            pl_module.export(self.path)
