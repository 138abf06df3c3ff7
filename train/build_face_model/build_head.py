"""Assemble the default head model: ICT-FaceKit geometry, landmark embeddings, our albedo space,
regional specular/roughness priors; write it with its report and model-card renders.

``python -m facenet3d.train.build_face_model.build_head --ict DIR --albedo ALBEDO.npz -o weights/facenet3d_head_v2.npz``

``--albedo`` is the output of :mod:`facenet3d.train.build_face_model.head_albedo` (built from the shared
photos); without it the model has no albedo space. Deterministic for the same inputs and thread
count (the registrations' floating-point sums depend on BLAS threading in the last bits).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from facenet3d.train.build_face_model.head_reflectance import reflectance_maps
from facenet3d.train.build_face_model.ict_head import ATLAS_SIZE, head_geometry, with_embeddings

from facenet3d.facemodel import FaceModelArrays, load_native, read_face_model_arrays, save_face_model


def default_shared() -> Path:
    return Path(os.environ.get("FACENET3D_SHARED", Path(__file__).resolve().parents[3] / "shared"))


def assemble(ict_dir: str | Path, shared: str | Path, albedo: dict[str, np.ndarray] | None) -> FaceModelArrays:
    """The head model's arrays (see the module docstring)."""
    from facenet3d.train.build_face_model.ict_landmarks import ict_landmark_embeddings

    from facenet3d.facemodel.loaders.ict import read_ict_arrays

    arrays = head_geometry(ict_dir)
    arrays = with_embeddings(arrays, ict_landmark_embeddings(read_ict_arrays(ict_dir), Path(shared)))
    if albedo is not None:
        size = albedo["albedo_mean"].shape[0]
        specular, roughness = reflectance_maps(arrays, size)
        arrays = replace(arrays, albedo_space="uv", albedo_mean=albedo["albedo_mean"].astype(np.float32),
                         albedo_basis=albedo["albedo_basis"].astype(np.float32),
                         albedo_std=np.ones(len(albedo["albedo_basis"]), np.float32),
                         specular_mean=specular, roughness_mean=roughness)
    arrays.metadata = {
        **arrays.metadata,
        "albedo": ("linear RGB, de-lit, UV atlas (row 0 = v 1); modes coarser than the mean, upsampled "
                   "bilinearly" if albedo is not None else "none"),
        "specular": "regional prior map (train.build_face_model.head_reflectance)",
        "license": "geometry: MIT (ICT-FaceKit, USC ICT); albedo statistics from research photo sets",
    }
    arrays.validate("head model")
    return arrays


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facenet3d.train.build_face_model.build_head", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ict", required=True, help="ICT-FaceKit folder (holding FaceXModel/)")
    p.add_argument("--shared", default=str(default_shared()), help="the shared data folder (conventions)")
    p.add_argument("--albedo", help="albedo arrays from train.build_face_model.head_albedo (.npz)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--card", help="folder for the model-card renders")
    a = p.parse_args(argv)
    start = time.time()
    albedo = None
    if a.albedo:
        with np.load(a.albedo, allow_pickle=False) as npz:
            albedo = {k: npz[k] for k in ("albedo_mean", "albedo_basis")}
    arrays = assemble(a.ict, a.shared, albedo)
    out = save_face_model(arrays, a.output, half_bases=True)
    # The fingerprint of the file as it loads (bases rounded to float16), as regressors record it.
    report = {"output": str(out), "bytes": out.stat().st_size, "fingerprint": read_face_model_arrays(out).fingerprint(),
              "vertices": int(len(arrays.mean_shape)), "triangles": int(len(arrays.triangles)),
              "parts": {k: int(len(v)) for k, v in arrays.parts.items()},
              "landmark_embeddings": sorted(arrays.landmark_embeddings), "atlas_size": ATLAS_SIZE,
              "seconds": round(time.time() - start, 1)}
    Path(out).with_suffix(".report.json").write_text(json.dumps(report, indent=1))
    if a.card:
        from facenet3d.train.build_face_model.renders import write_model_card_images

        write_model_card_images(load_native(out), a.card)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
