"""Build the open default face model from photos (geometry, render mesh, albedo) and its report.

``python -m facenet3d.train.build_face_model --photos DIR... -o weights/facenet3d_face_v1.npz``

The photos are preprocessed once into a photo cache (``facenet3d preprocess``); the build is
deterministic for a given cache and ``--seed``. Held out for the report: a fraction of the
single-photo people (stratified by UTKFace race group) and whole identities of the
identity-labelled set, none of which enters the model.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from facenet3d.train.build_face_model import albedo as alb
from facenet3d.train.build_face_model import geometry as geo
from facenet3d.train.build_face_model import separation as sep
from facenet3d.train.build_face_model.mesh import RenderMesh, build_render_mesh
from facenet3d.train.build_face_model.renders import write_model_card_images
from tqdm import tqdm

from facenet3d.export import write_json
from facenet3d.facemodel import FaceModelArrays, load_native, save_face_model
from facenet3d.geometry import vertex_normals
from facenet3d.landmarks.cache import PhotoCache, preprocess
from facenet3d.landmarks.mean_face import generalized_procrustes
from facenet3d.refine.priors import SKIN_F0, SKIN_ROUGHNESS
from facenet3d.render.uv import UVRaster

RACE_NAMES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other"}


@dataclass
class BuildConfig:
    photos: list[str]
    output: Path
    cache: Path
    seed: int = 0
    identity_modes: int = 30
    expression_modes: int = 20
    albedo_modes: int = 40
    albedo_size: int = 256
    albedo_per_group: int = 300  # UTKFace photos per race group used for albedo
    held_out_identities: int = 20
    held_out_fraction: float = 0.1
    workers: int = 2
    limit: int | None = None  # use only the first N cached photos (tests)
    report: dict = field(default_factory=dict)


@dataclass
class PhotoSet:
    """The cached photos, their labels and the held-out split."""

    cache: PhotoCache
    dataset: np.ndarray  # (N,) "utkface" / "lfw-expressions" / ... (parent folder name)
    identity: np.ndarray  # (N,) int, -1 unknown
    neutral: np.ndarray  # (N,) bool
    race: np.ndarray  # (N,) int, -1 unknown
    held_out: np.ndarray  # (N,) bool

    @classmethod
    def from_cache(cls, cache: PhotoCache, cfg: BuildConfig) -> PhotoSet:
        items = cache.items[: cfg.limit] if cfg.limit else cache.items
        n = len(items)
        dataset = np.array([Path(it["source"]).parent.name for it in items])
        names: dict[str, int] = {}
        identity = np.full(n, -1)
        neutral = np.zeros(n, bool)
        race = np.full(n, -1)
        for i, it in enumerate(items):
            lab = it.get("labels", {})
            if lab.get("identity"):
                identity[i] = names.setdefault(lab["identity"], len(names))
                neutral[i] = lab.get("emotion") == "neutral"
            if "race" in lab:
                race[i] = int(lab["race"])
        rng = np.random.default_rng(cfg.seed)
        held = np.zeros(n, bool)
        if names:
            ids = rng.choice(len(names), min(cfg.held_out_identities, len(names) // 4), replace=False)
            held |= np.isin(identity, ids)
        single = identity < 0
        for r in np.unique(race[single]):  # stratified by race group (-1: other sets)
            idx = np.flatnonzero(single & (race == r))
            held[rng.choice(idx, int(round(cfg.held_out_fraction * len(idx))), replace=False)] = True
        return cls(cache, dataset, identity, neutral, race, held)

    def __len__(self) -> int:
        return len(self.dataset)

    def landmarks(self, index: np.ndarray) -> np.ndarray:
        return np.stack([self.cache[int(i)]["landmarks478"] for i in index]).astype(np.float64)


@dataclass
class GeometryMeshes:
    """The near-frontal photos' MediaPipe meshes in the model frame, and their labels."""

    shapes: np.ndarray  # (N, 468, 3) mm, model frame
    poses: np.ndarray  # (N, 3) pose sines (geometry.head_pose_sines)
    mirror: np.ndarray  # (468,) mirror vertex of each vertex
    identity: np.ndarray  # (N,) int, -1 unknown
    neutral: np.ndarray  # (N,) bool
    train: np.ndarray  # (N,) bool: not held out

    @classmethod
    def from_photos(cls, photos: PhotoSet) -> GeometryMeshes:
        # Large-pose crops (AFLW) give MediaPipe meshes dominated by its pose-dependent depth
        # error; geometry comes from the near-frontal sets.
        use = np.flatnonzero(photos.dataset != "aflw-crops")
        raw = geo.mediapipe_to_model_frame(photos.landmarks(use))
        aligned, mean = generalized_procrustes(raw, subset=np.arange(geo.NUM_MEDIAPIPE_VERTICES))
        shapes, canonical, mirror = geo.to_canonical(aligned, mean)
        return cls(shapes=shapes[:, : geo.NUM_MEDIAPIPE_VERTICES], poses=geo.head_pose_sines(raw, canonical),
                   mirror=mirror[: geo.NUM_MEDIAPIPE_VERTICES], identity=photos.identity[use],
                   neutral=photos.neutral[use], train=~photos.held_out[use])

    def without_pose_distortion(self) -> np.ndarray:
        """``(N, 468, 3)`` every mesh with the training meshes' pose-dependent distortion removed."""
        phi = geo.pose_features(self.poses)
        flat = self.shapes.reshape(len(self.shapes), -1)
        coef, *_ = np.linalg.lstsq(phi[self.train], flat[self.train], rcond=None)
        return (flat - phi[:, :-1] @ coef[:-1]).reshape(self.shapes.shape)


def build_geometry(meshes: GeometryMeshes, cfg: BuildConfig) -> tuple[geo.ShapeBases, dict]:
    """Identity/expression bases on the 468 MediaPipe vertices, plus their quality report."""
    train, ids, neutral = meshes.train, meshes.identity, meshes.neutral
    bases = geo.build_shape_bases(meshes.shapes[train], ids[train], neutral[train], meshes.mirror,
                                  poses=meshes.poses[train], identity_modes=cfg.identity_modes,
                                  expression_modes=cfg.expression_modes)
    clean = meshes.without_pose_distortion()
    held = ~train
    single = held & (ids < 0)
    counts = sorted({0, 5, 10, 20, cfg.identity_modes})
    gen = geo.generalisation_error(clean[single][:300], bases, counts)
    deltas, neutral_means = geo.within_person_deviations(clean[held], ids[held], neutral[held])
    report = {
        "photos_used": int(train.sum()),
        "photos_held_out": int(held.sum()),
        "held_out_identities": int(len(neutral_means)),
        "identity_modes": len(bases.identity),
        "expression_modes": len(bases.expression),
        "pca_variance_mm2": np.round(bases.pca_variance[:60], 4).tolist(),
        "pca_cumulative_fraction": np.round(np.cumsum(bases.pca_variance)[:60] / bases.pca_variance.sum(),
                                            4).tolist(),
        "rms_per_vertex_std_mm": float(np.sqrt(bases.pca_variance.sum() / geo.NUM_MEDIAPIPE_VERTICES)),
        "identity_between_within_ratio": np.round(bases.identity_ratio, 3).tolist(),
        "pose_distortion_rms_mm": round(bases.pose_rms_mm, 3),
        "generalisation_rms_mm_by_identity_modes": {str(k): round(v, 3) for k, v in gen.items()},
        "separation": {
            **{k: round(v, 3) for k, v in sep.separation(
                bases.identity, bases.expression, bases.mean, neutral_means, deltas,
                sep.expression_deviations(clean[held], ids[held], neutral[held])).items()},
            "note": "joint least-squares fit (unit priors) of held-out people's neutral shapes and of "
                    "their within-person deviations (all photos, and the emotion-labelled ones only); "
                    "fraction of the fitted squared norm carried by the other basis",
        },
        "mouth_opening_mm": _mouth_opening(bases),
        "variation_rms_mm": _variation_rms(clean[train], ids[train], neutral[train]),
    }
    return bases, report


def _variation_rms(shapes: np.ndarray, ids: np.ndarray, neutral: np.ndarray) -> dict:
    """Between- and within-person RMS per-vertex variation of the training meshes, and how much
    of the between-person variation plain PCA's top-15 within-person directions would hold."""
    deltas, means = geo.within_person_deviations(shapes, ids, neutral)
    d = deltas.reshape(len(deltas), -1)
    m = means.reshape(len(means), -1)
    m = m - m.mean(0)
    p = geo.NUM_MEDIAPIPE_VERTICES
    _, _, vt = np.linalg.svd(d, full_matrices=False)
    return {"between_person": round(float(np.sqrt((m ** 2).sum(1).mean() / p)), 3),
            "within_person": round(float(np.sqrt((d ** 2).sum(1).mean() / p)), 3),
            "between_person_fraction_in_top15_within_pca": round(geo.subspace_fraction(m, vt[:15]), 3)}


def _mouth_opening(bases: geo.ShapeBases) -> dict:
    """Largest inner-lip gap (vertices 13/14) reachable with one expression mode at +-3 sd."""
    gaps = []
    for k, mode in enumerate(bases.expression):
        for sign in (-3, 3):
            shape = bases.mean + sign * mode
            gaps.append((float(shape[13, 1] - shape[14, 1]), k, sign))
    best = max(gaps)
    return {"neutral_gap": round(float(bases.mean[13, 1] - bases.mean[14, 1]), 2),
            "max_gap": round(best[0], 2), "mode": best[1], "sd": best[2]}


def build_albedo(photos: PhotoSet, mesh: RenderMesh, cfg: BuildConfig) -> tuple[dict, dict]:
    """UV albedo mean + basis (std-scaled), and the per-race-group held-out report."""
    rng = np.random.default_rng(cfg.seed + 1)
    colour = np.array([not _is_grey(photos.cache[i]["crop"]) for i in range(len(photos))])
    train_idx, held_idx = [], []
    for r in sorted(set(photos.race[photos.race >= 0].tolist())):
        pool = np.flatnonzero((photos.race == r) & colour & ~photos.held_out)
        train_idx += rng.choice(pool, min(cfg.albedo_per_group, len(pool)), replace=False).tolist()
        hold = np.flatnonzero((photos.race == r) & colour & photos.held_out)
        held_idx += rng.choice(hold, min(40, len(hold)), replace=False).tolist()
    lfw = np.flatnonzero((photos.dataset == "lfw-expressions") & colour & ~photos.held_out)
    train_idx += rng.choice(lfw, min(cfg.albedo_per_group, len(lfw)), replace=False).tolist()

    t = cfg.albedo_size
    uvr = UVRaster.build(mesh.uvs, mesh.triangles, t)
    tri_t = torch.as_tensor(mesh.triangles)
    skin_uv = _region_uv(mesh, uvr, "skin")

    def unwrap(i: int) -> tuple[np.ndarray, np.ndarray]:
        item = photos.cache[int(i)]
        coarse = item["landmarks478"][: geo.NUM_MEDIAPIPE_VERTICES].astype(np.float64)
        fine = mesh.apply(coarse)
        up = torch.as_tensor(geo.mediapipe_to_model_frame(fine), dtype=torch.float32)[None]
        normals = vertex_normals(up, tri_t)[0].numpy()
        col, valid = alb.unwrap_photo(item["crop"], fine, mesh.triangles, normals, uvr)
        n_uv = uvr.sample_vertices(torch.as_tensor(normals)[None])[0].numpy()
        n_uv /= np.maximum(np.linalg.norm(n_uv, axis=-1, keepdims=True), 1e-6)
        a, _ = alb.delight(col, valid, skin_uv, n_uv)
        return a.astype(np.float32), valid

    maps, valids = [], []
    for i in tqdm(train_idx, desc="unwrapping photos"):
        a, v = unwrap(i)
        a, v = alb.fill_from_mirror(a, v)
        maps.append(a)
        valids.append(v)
    maps, valids = np.stack(maps), np.stack(valids)
    # Robust outlier rejection against the per-texel median.
    med = alb.nanmedian(np.where(valids[..., None], maps, np.nan), axis=0)
    med = np.where(np.isnan(med), np.nanmean(med), med)
    dev = np.abs(maps - med).max(-1)
    mad = alb.nanmedian(np.where(valids, dev, np.nan), axis=0)
    valids &= dev <= 4 * np.maximum(np.nan_to_num(mad, nan=1.0), 0.02)
    maps = np.concatenate([maps, alb.mirror_uv(maps)])
    valids = np.concatenate([valids, valids[:, :, ::-1]])
    n = len(maps)
    flat_valid = np.repeat(valids.reshape(n, -1), 3, axis=1)
    mean, comps, var = alb.em_pca(maps.reshape(n, -1), flat_valid, cfg.albedo_modes, seed=cfg.seed)
    covered = uvr.covered.numpy()
    mean_map = alb.dilate_into_background(mean.reshape(t, t, 3), covered)
    basis = comps * np.sqrt(var)[:, None]
    basis_maps = alb.canonical_signs(np.stack([alb.dilate_into_background(b.reshape(t, t, 3), covered)
                                               for b in basis]))

    # Held-out reconstruction error per race group (RMSE over valid texels, linear RGB).
    per_group: dict[str, list[float]] = {}
    flat_basis = basis_maps.reshape(len(basis_maps), -1)
    for i in tqdm(held_idx, desc="held-out albedo"):
        a, v = unwrap(i)
        m = np.repeat(v.reshape(-1), 3)
        b = flat_basis[:, m]
        coef = np.linalg.solve(b @ b.T + np.eye(len(b)), b @ (a.reshape(-1)[m] - mean_map.reshape(-1)[m]))
        rec = mean_map.reshape(-1)[m] + coef @ b
        per_group.setdefault(RACE_NAMES[int(photos.race[i])], []).append(
            float(np.sqrt(((rec - a.reshape(-1)[m]) ** 2).mean())))
    groups = {k: round(float(np.mean(v)), 4) for k, v in sorted(per_group.items())}
    report = {
        "photos_used": len(train_idx),
        "photos_per_race_group": cfg.albedo_per_group,
        "map_size": t,
        "modes": cfg.albedo_modes,
        "variance_cumulative_fraction": np.round(np.cumsum(var) / var.sum(), 4).tolist(),
        "held_out_rmse_linear_rgb_by_race_group": groups,
        "worst_to_best_ratio": round(max(groups.values()) / min(groups.values()), 3) if groups else None,
        "mean_albedo_linear_rgb_by_race_group": {
            RACE_NAMES[r]: np.round(np.nanmean(np.where(
                valids[: len(train_idx)][photos.race[train_idx] == r][..., None],
                maps[: len(train_idx)][photos.race[train_idx] == r], np.nan), axis=(0, 1, 2)), 4).tolist()
            for r in sorted(set(photos.race[train_idx].tolist())) if r >= 0},
    }
    arrays = {"albedo_mean": np.clip(mean_map, 0, 1).astype(np.float32),
              "albedo_basis": basis_maps.astype(np.float32)}
    return arrays, report


def _is_grey(crop: np.ndarray) -> bool:
    c = crop.astype(np.int16)
    return bool(np.abs(c[..., 0] - c[..., 1]).mean() < 2 and np.abs(c[..., 1] - c[..., 2]).mean() < 2)


def _region_uv(mesh: RenderMesh, uvr: UVRaster, name: str) -> np.ndarray:
    attr = torch.as_tensor(mesh.regions[name], dtype=torch.float32)[None, :, None]
    return uvr.sample_vertices(attr)[0, ..., 0].numpy() > 0.5


def build(cfg: BuildConfig) -> Path:
    """Run the whole build; returns the written model path (report JSON beside it)."""
    start = time.time()
    torch.manual_seed(cfg.seed)
    preprocess(cfg.photos, cfg.cache, workers=cfg.workers)
    photos = PhotoSet.from_cache(PhotoCache(cfg.cache), cfg)
    bases, geo_report = build_geometry(GeometryMeshes.from_photos(photos), cfg)
    mesh = build_render_mesh(bases.mean)
    albedo_arrays, albedo_report = build_albedo(photos, mesh, cfg)
    t = cfg.albedo_size
    arrays = FaceModelArrays(
        mean_shape=mesh.apply(bases.mean).astype(np.float32),
        triangles=mesh.triangles,
        identity_basis=mesh.apply(bases.identity).astype(np.float32),
        expression_basis=mesh.apply(bases.expression).astype(np.float32),
        landmarks68=mesh.landmarks68,
        expression_names=[f"expression_{k:02d}" for k in range(len(bases.expression))],
        uvs=mesh.uvs,
        uv_triangles=mesh.triangles,
        albedo_space="uv",
        **albedo_arrays,
        specular_mean=np.full((t, t, 3), SKIN_F0, np.float32),
        roughness_mean=np.full((t, t, 1), SKIN_ROUGHNESS, np.float32),
        landmarks_mediapipe=mesh.landmarks_mediapipe,
        regions=mesh.regions,
        metadata={
            "name": cfg.output.stem,
            "description": "facenet3d open default face model, built from photos by train.build_face_model",
            "license": "MIT (model); built from research photo sets, see weights/README.md",
            "units": "mm",
            "frame": "+x subject's left, +y up, +z out of the face; origin "
                     f"{geo.ORIGIN_BEHIND_NOSE_MM} mm behind the nose tip",
            "albedo": "linear RGB, de-lit, UV space (row 0 = v 1)",
            "specular": f"constant F0 {SKIN_F0} (skin refractive index 1.4)",
            "roughness": f"constant {SKIN_ROUGHNESS} (Weyrich et al. 2006)",
            "seed": cfg.seed,
            # The cylindrical layout of a mirror-symmetric mean: u and 1 - u are mirror points.
            "uv_symmetric": True,
        },
    )
    path = save_face_model(arrays, cfg.output, half_bases=True)
    card = write_model_card_images(load_native(path), path.parent / f"{path.stem}_card")
    report = {
        "card_images": [str(p.relative_to(path.parent)) for p in card],
        "model": str(path),
        "file_size_mb": round(path.stat().st_size / 2**20, 2),
        "render_mesh": {"vertices": mesh.num_vertices, "triangles": int(len(mesh.triangles))},
        "photos_cached": len(photos),
        "geometry": geo_report,
        "albedo": albedo_report,
        "seconds": round(time.time() - start, 1),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items() if k != "report"},
    }
    write_json(report, path.with_suffix(".report.json"))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facenet3d.train.build_face_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", nargs="+", required=True, help="folders or files of face photos")
    p.add_argument("-o", "--output", type=Path, required=True, help="model .npz to write")
    p.add_argument("--cache", type=Path, help="photo cache folder (default: OUTPUT.cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identity-modes", type=int, default=30)
    p.add_argument("--expression-modes", type=int, default=20)
    p.add_argument("--albedo-modes", type=int, default=40)
    p.add_argument("--albedo-size", type=int, default=256)
    p.add_argument("--albedo-per-group", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, help="use only the first N photos (quick builds)")
    a = p.parse_args(argv)
    cfg = BuildConfig(photos=a.photos, output=a.output, cache=a.cache or a.output.with_suffix(".cache"),
                      seed=a.seed, identity_modes=a.identity_modes, expression_modes=a.expression_modes,
                      albedo_modes=a.albedo_modes, albedo_size=a.albedo_size,
                      albedo_per_group=a.albedo_per_group, workers=a.workers, limit=a.limit)
    path = build(cfg)
    print(json.dumps({"model": str(path), "report": str(path.with_suffix(".report.json"))}))
    return 0
