"""The default head model's geometry from ICT-FaceKit Light's original files.

``python -m facenet3d.train.build_face_model.ict_head --ict DIR --shared SHARED -o weights/facenet3d_head_v2.npz``

What the converter keeps of ICT-FaceKit (``facenet3d.facemodel.loaders.ict`` reads the files):

* **Vertices** 0..24590: face, head and neck (ears included), mouth socket, eye sockets,
  gums and tongue, teeth, eyeballs. The remaining ICT parts (lacrimal fluid, eye blend and
  occlusion shells, eyelashes) are screen-space helpers of ICT's own renderer and are left out.
* **Render surface** (``triangles``): the skin, i.e. ICT's face and head-and-neck regions. The
  other parts share the vertex array as separate ``parts`` that exports include, so
  expressions move teeth and eyelids together with the skin.
* **Identity**: the 100 modes as shipped. They are mutually orthogonal and their size falls
  from 4.7 mm RMS (mode 0) to 0.09 mm (mode 99): PCA modes already scaled by their standard
  deviation, so coefficients have unit prior variance (``identity_std`` = 1).
* **Expression**: the 53 shapes ICT lists, named as ARKit blendshapes (ICT splits
  ``browInnerUp`` and ``cheekPuff`` into ``_L``/``_R`` and has no ``tongueOut``), coefficients
  are blendshape weights in [0, 1].
* **UV atlas**: ICT lays the skin out in two UDIM tiles, the face in tile 1001 (u in [0, 1])
  and head, neck and sockets in 1002 (u in [1, 2]), each symmetric about its centre. One square
  map holds both: tile 1001 in the top-left two thirds (512 px of a 768 px map), tile 1002 in the
  top-right third (256 px); :data:`ATLAS_BLOCKS` states the placement. The bottom third is unused.

Millimetres, +x the subject's left, +y up, +z out of the face (ICT's axes, scaled from cm).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from facenet3d.facemodel import FaceModelArrays
from facenet3d.facemodel.loaders.ict import ICT_PARTS, read_ict_arrays

#: ICT vertices kept: everything up to the right eyeball (the parts after it are render helpers).
KEPT_VERTICES = ICT_PARTS["iris_right"][1] + 1
#: Separate mesh parts (not rendered by the fitting, included by exports), by ICT region.
HEAD_PARTS = ("mouth_socket", "eye_socket_left", "eye_socket_right", "gums_tongue", "teeth",
              "sclera_left", "iris_left", "sclera_right", "iris_right")
#: Regions stored with the model (per-vertex masks over the kept vertices).
HEAD_REGIONS = ("face", "narrow_face", "head_neck", "skin", "mouth_socket", "gums_tongue", "teeth",
                "eyeball_left", "eyeball_right", "eyes", "mouth", "fitting", "rigid")
#: UDIM tile -> (u offset, v offset, scale) of its square in the atlas, in UV units (v up).
ATLAS_BLOCKS: dict[int, tuple[float, float, float]] = {0: (0.0, 1.0 / 3.0, 2.0 / 3.0),
                                                       1: (2.0 / 3.0, 2.0 / 3.0, 1.0 / 3.0)}
ATLAS_SIZE = 768


def pack_uvs(uvs: np.ndarray) -> np.ndarray:
    """ICT's UDIM coordinates ``(T, 2)`` (u in [0, 2)) -> the square atlas ``(T, 2)`` in [0, 1]."""
    tile = np.floor(uvs[:, 0]).astype(int)
    out = np.empty_like(uvs)
    for t, (du, dv, s) in ATLAS_BLOCKS.items():
        sel = tile == t
        out[sel, 0] = du + (uvs[sel, 0] - t) * s
        out[sel, 1] = dv + uvs[sel, 1] * s
    if not np.isin(tile, list(ATLAS_BLOCKS)).all():
        raise ValueError("UVs outside the two skin tiles")
    return out.astype(np.float32)


def atlas_mirror(maps: np.ndarray) -> np.ndarray:
    """Reflect atlas maps ``(..., S, S, C)`` left/right within each tile's square: the ICT
    layout is symmetric about each tile's centre, so this maps a texel to the subject's other
    side."""
    out = maps.copy()
    size = maps.shape[-2]
    for du, dv, s in ATLAS_BLOCKS.values():
        c0, c1 = round(du * size), round((du + s) * size)
        r0, r1 = round((1 - dv - s) * size), round((1 - dv) * size)
        out[..., r0:r1, c0:c1, :] = maps[..., r0:r1, c0:c1, :][..., ::-1, :]
    return out


def head_geometry(ict_dir: str | Path) -> FaceModelArrays:
    """The head's geometry, parts, regions and UV atlas (no albedo, no landmark embeddings)."""
    ict = read_ict_arrays(ict_dir)
    v = KEPT_VERTICES
    tri = ict.triangles
    skin = ict.regions["skin"]
    render = skin[tri].all(1)
    parts = {}
    for name in HEAD_PARTS:
        first, last = ICT_PARTS[name]
        parts[name] = tri[((tri >= first) & (tri <= last)).all(1)].astype(np.int64)
    uv_tri = ict.uv_triangles[render]
    used = np.unique(uv_tri)
    remap = np.full(len(ict.uvs), -1, np.int64)
    remap[used] = np.arange(len(used))
    regions = {n: ict.regions[n][:v].copy() for n in HEAD_REGIONS if n in ict.regions}
    metadata = {
        **ict.metadata,
        "name": "facenet3d_head_v2",
        "region": "head (skin rendered; mouth, teeth, eyes as parts)",
        "identity_coefficients": "unit prior variance (ICT's PCA modes, scaled by their std as shipped)",
        "expression_coefficients": "ARKit blendshape weights in [0, 1] (ICT's 53 shapes)",
        "uv_layout": "ICT tiles 1001 (face) and 1002 (head, neck, sockets) packed into one square atlas: "
                     f"{ {t: list(b) for t, b in ATLAS_BLOCKS.items()} } (tile -> u offset, v offset, scale)",
    }
    return FaceModelArrays(
        mean_shape=ict.mean_shape[:v].copy(),
        triangles=tri[render].astype(np.int64),
        identity_basis=ict.identity_basis[:, :v].copy(),
        expression_basis=ict.expression_basis[:, :v].copy(),
        landmarks68=ict.landmarks68.copy(),
        identity_std=np.ones(ict.identity_basis.shape[0], np.float32),
        expression_std=np.ones(ict.expression_basis.shape[0], np.float32),
        expression_names=list(ict.expression_names),
        uvs=pack_uvs(ict.uvs[used]),
        uv_triangles=remap[uv_tri],
        regions=regions,
        parts=parts,
        metadata=metadata,
    )


def with_embeddings(arrays: FaceModelArrays, embeddings: dict[str, tuple[np.ndarray, np.ndarray]]
                    ) -> FaceModelArrays:
    """Attach landmark embeddings computed on ICT's full topology (indices below
    :data:`KEPT_VERTICES` carry over unchanged) and the MediaPipe vertex correspondence the
    fitting uses (each point's heaviest vertex)."""
    for name, (index, _) in embeddings.items():
        if index.max() >= KEPT_VERTICES:
            raise ValueError(f"embedding {name!r} uses a vertex the head model leaves out")
    out = replace(arrays, landmark_embeddings=dict(embeddings))
    if "mediapipe478" in embeddings:
        index, weights = embeddings["mediapipe478"]
        out = replace(out, landmarks_mediapipe=index[np.arange(468), weights[:468].argmax(1)].astype(np.int64))
    return out
