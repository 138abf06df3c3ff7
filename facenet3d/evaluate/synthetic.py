"""Photos of faces whose 3D shape is known: ICT-FaceKit heads rendered by facenet3d's renderer.

One :class:`SyntheticFace` per index and seed (reproducible, independent of how many are drawn):

- **shape**: ICT-FaceKit identity coefficients ``~ N(0, 1)`` (ICT's own ``randomize_identity``),
  and an expression: neutral with probability 1/4, else 1-3 ARKit blendshapes at weights
  ``U(0.15, 0.7)``;
- **pose**: yaw ``U(-40, 40)``, pitch ``U(-15, 15)``, roll ``U(-10, 10)`` degrees, the face centre
  ``U(550, 800)`` mm in front of a camera whose focal length makes the face about 45 % of the
  image width (jittered +-15 mm sideways);
- **light**: second-order SH: an ambient level ``U(0.45, 0.85)`` plus a directional light
  ``U(0.15, 0.6)`` from the camera's half-space, slightly tinted;
- **reflectance**: a skin albedo interpolated between a light and a dark skin tone (sRGB (235,
  190, 165) and (92, 60, 45)), with redder lips, darker brows, low-frequency variation; white
  sclera, brown irises, a dark mouth, teeth; a weak specular lobe;
- **background**: a random colour gradient with noise.

Rendered parts: face, head and neck, eyeballs, mouth socket, gums, tongue and teeth (ICT's
eyelashes, eye-blend, occlusion and tear-film shells are see-through and are left out).
The ground truth is ICT's ``face`` region (vertices 0..9408) in the model frame, less what a
scanner could not see (nostril, mouth and eye-socket interiors), with ICT's 68 landmark vertices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

#: ICT-FaceKit parts that are drawn.
RENDERED_PARTS = ("face", "head_neck", "eyeball_left", "eyeball_right", "mouth_socket", "gums_tongue", "teeth")
#: Head poses (yaw, pitch, roll; degrees) from which the ground-truth "scanner" sees the mean head:
#: frontal, from both sides and from above (a view from below would look into the nostrils and
#: under the chin, which a face scan hardly records and which no face-only mesh covers).
SCANNER_VIEWS = ((0, 0, 0), (35, 0, 0), (-35, 0, 0), (0, 20, 0))
#: Image side in pixels.
DEFAULT_IMAGE_SIZE = 320

_LIGHT_SKIN_SRGB = np.array([235.0, 190.0, 165.0]) / 255.0
_DARK_SKIN_SRGB = np.array([92.0, 60.0, 45.0]) / 255.0


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: which ``(N, 2)`` points lie inside a closed ``(M, 2)`` polygon (even-odd rule)."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    x_at = x0 + (y - y0) * (x1 - x0) / np.where(y1 != y0, y1 - y0, 1.0)
    return (crosses & (x < x_at)).sum(1) % 2 == 1


@dataclass
class SyntheticFace:
    """A rendered face with its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 sRGB.
        face_vertices: ``(N, 3)`` mm, the ground-truth "scan": the face-region vertices a scanner
            sees (:meth:`ICTFaceRenderer._scanner_visible`), model frame (pose removed).
        landmarks68: ``(68, 3)`` mm, the ground truth's iBUG-68 landmark vertices, model frame.
        landmarks68_image: ``(68, 2)`` the same projected into the image, px.
        record: JSON-able sampling parameters (yaw/pitch/roll, expression, light, skin tone).
    """

    image: np.ndarray
    face_vertices: np.ndarray
    landmarks68: np.ndarray
    landmarks68_image: np.ndarray
    record: dict = field(default_factory=dict)


class ICTFaceRenderer:
    """Samples and renders ICT-FaceKit faces (see the module docstring).

    Args:
        ict_dir: the ICT-FaceKit folder (with ``FaceXModel/``).
        image_size: rendered image side, px.
        device: torch device for rendering.
    """

    def __init__(self, ict_dir: str | Path, image_size: int = DEFAULT_IMAGE_SIZE, device: str = "cpu"):
        from facenet3d.facemodel import load_face_model
        from facenet3d.render import Renderer

        self.model = load_face_model(f"ict:{Path(ict_dir)}").to(device)
        self.device = torch.device(device)
        self.image_size = int(image_size)
        v = self.model.num_vertices
        drawn = np.zeros(v, bool)
        for part in RENDERED_PARTS:
            drawn |= self.model.region(part).cpu().numpy()
        tri = self.model.triangles.cpu().numpy()
        self.triangles = tri[drawn[tri].all(1)]
        face = self.model.region("face").cpu().numpy()
        self.face_index = np.flatnonzero(face)
        self.landmarks = self.model.landmarks68.cpu().numpy()
        self.renderer = Renderer(torch.as_tensor(self.triangles), shading="pixel", antialias=True).to(device)
        self._parts = {p: self.model.region(p).cpu().numpy() for p in RENDERED_PARTS}
        neutral = self.model.decode()[0].cpu().numpy()
        self._neutral = neutral
        self._features = self._feature_masks(neutral)
        self._features.update(self._eye_masks(neutral))
        self.scan_index = self.face_index[self._scanner_visible(neutral)[self.face_index]]

    def _feature_masks(self, neutral: np.ndarray) -> dict[str, np.ndarray]:
        """Lip and brow vertices of the face region (from the neutral mesh seen from the front)."""
        lm = neutral[self.landmarks]
        skin = self._parts["face"]
        xy = neutral[:, :2]
        front = neutral[:, 2] > lm[48:60, 2].min() - 12.0
        lips = skin & front & _inside_polygon(xy, lm[48:60, :2])
        brow_pts = np.concatenate([np.linspace(lm[i], lm[i + 1], 8) for i in (*range(17, 21), *range(22, 26))])
        from scipy.spatial import cKDTree

        d, _ = cKDTree(brow_pts[:, :2]).query(xy)
        brow_front = neutral[:, 2] > lm[17:27, 2].min() - 15.0
        brows = skin & brow_front & (d < 3.5)
        return {"lips": lips, "brows": brows}

    def _scanner_visible(self, neutral: np.ndarray, resolution: int = 512) -> np.ndarray:
        """``(V,)`` bool: vertices a face scanner would see on the mean head.

        ICT's face region continues into the nostrils, the mouth and around the eyeballs;
        a scan (NoW's come from a multi-view stereo rig) has no such surfaces. A vertex counts
        as seen when a drawn triangle of it is the nearest one at some pixel of one of five
        views: frontal, yaw +-35 and pitch +-25 degrees.
        """
        from facenet3d.render import PinholeCamera, euler_to_matrix, rasterize

        tri = torch.as_tensor(self.triangles, device=self.device)
        lm = neutral[self.landmarks]
        centre = lm.mean(0)
        seen = np.zeros(len(neutral), bool)
        cam = PinholeCamera.create(6.0 * resolution, (resolution, resolution)).to(self.device)
        for ypr in SCANNER_VIEWS:
            rot = euler_to_matrix(torch.tensor(ypr, dtype=torch.float64)).numpy()
            pts = (neutral - centre) @ rot.T + np.array([0.0, 0.0, -1500.0])
            clip = cam.camera_to_clip(torch.as_tensor(pts, dtype=torch.float32, device=self.device)[None])
            ids = rasterize(clip, tri, (resolution, resolution))[0, ..., 3].long()
            visible = torch.unique(ids[ids > 0]) - 1
            seen[self.triangles[visible.cpu().numpy()].reshape(-1)] = True
        return seen

    def _eye_masks(self, neutral: np.ndarray) -> dict[str, np.ndarray]:
        """Iris and pupil vertices of the eyeball shells.

        ICT's outer eyeball shell hides its inner eye meshes (the cornea is meant to be
        see-through), so iris and pupil are painted onto the shell: the vertices within 28 and 10
        degrees of the forward (+z) axis through the eyeball's centre (an 11.7 mm iris and a
        4 mm pupil on a 12 mm eyeball).
        """
        iris = np.zeros(len(neutral), bool)
        pupil = np.zeros(len(neutral), bool)
        for side in ("left", "right"):
            ball = self.model.region(f"eyeball_{side}").cpu().numpy()
            d = neutral[ball] - neutral[ball].mean(0)
            angle = np.degrees(np.arccos(np.clip(d[:, 2] / np.linalg.norm(d, axis=1), -1.0, 1.0)))
            iris[np.flatnonzero(ball)[angle < 28.0]] = True
            pupil[np.flatnonzero(ball)[angle < 10.0]] = True
        return {"iris": iris, "pupil": pupil}

    def sample(self, seed: int, index: int) -> SyntheticFace:
        """Face number ``index`` of the sequence ``seed`` (reproducible)."""
        from facenet3d.render import PinholeCamera, euler_to_matrix, sh_directional, sh_uniform
        from facenet3d.render.color import linear_to_srgb

        rng = np.random.default_rng([int(seed), int(index)])
        m, dev = self.model, self.device
        identity = rng.normal(size=m.identity_dim)
        expression = np.zeros(m.expression_dim)
        if rng.random() >= 0.25:
            chosen = rng.choice(m.expression_dim, size=int(rng.integers(1, 4)), replace=False)
            expression[chosen] = rng.uniform(0.15, 0.7, size=len(chosen))
        ypr = np.array([rng.uniform(-40, 40), rng.uniform(-15, 15), rng.uniform(-10, 10)])
        distance = rng.uniform(550.0, 800.0)
        shift = rng.uniform(-15.0, 15.0, size=2)
        ambient = rng.uniform(0.45, 0.85)
        light_dir = np.array([rng.uniform(-1, 1), rng.uniform(-0.4, 1), rng.uniform(0.4, 1.5)])
        light = rng.uniform(0.15, 0.6)
        tint = rng.uniform(0.93, 1.07, size=3)
        tone = rng.uniform()

        with torch.no_grad():
            verts = m.decode(torch.tensor(identity[None], dtype=torch.float32, device=dev),
                             torch.tensor(expression[None], dtype=torch.float32, device=dev))
            vnp = verts[0].double().cpu().numpy()
            lm = vnp[self.landmarks]
            rot = euler_to_matrix(torch.tensor(ypr, dtype=torch.float64)).numpy()
            centre = lm.mean(0)
            trans = np.array([shift[0], shift[1], -distance]) - rot @ centre
            size = self.image_size
            face_width = np.linalg.norm(lm[0] - lm[16])
            focal = 0.45 * size * distance / max(face_width, 1.0)
            cam = PinholeCamera.create(float(focal), (size, size)).to(dev)
            cam_verts = (verts.double() @ torch.as_tensor(rot.T) + torch.as_tensor(trans)).float().to(dev)
            sh = sh_uniform(float(ambient)) + sh_directional(torch.tensor(light_dir[None], dtype=torch.float32),
                                                             torch.full((1, 1), float(light)))
            sh = (sh * torch.tensor(tint, dtype=torch.float32)).to(dev)
            albedo = torch.tensor(self._albedo(rng, tone)[None], dtype=torch.float32, device=dev)
            background = torch.tensor(_srgb_to_linear(self._background(rng))[None], dtype=torch.float32, device=dev)
            out = self.renderer(cam_verts, cam, sh, albedo, specular=torch.full((1, 3), 0.04, device=dev),
                                roughness=torch.full((1, 1), 0.45, device=dev), background=background)
            image = (linear_to_srgb(out.image[0]).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
            lm_img = cam.camera_to_pixel(torch.as_tensor(lm @ rot.T + trans, dtype=torch.float32)[None].to(dev))
        return SyntheticFace(
            image=image, face_vertices=vnp[self.scan_index], landmarks68=lm,
            landmarks68_image=lm_img[0].cpu().numpy().astype(np.float64),
            record={"seed": int(seed), "index": int(index), "yaw_pitch_roll_deg": ypr.round(3).tolist(),
                    "distance_mm": round(float(distance), 2), "focal_px": round(float(focal), 2),
                    "expression": {m.expression_names[i]: round(float(expression[i]), 3)
                                   for i in np.flatnonzero(expression)} if m.expression_names else {},
                    "ambient": round(float(ambient), 3), "light": round(float(light), 3),
                    "skin_tone": round(float(tone), 3)})

    def _albedo(self, rng: np.random.Generator, tone: float) -> np.ndarray:
        """``(V, 3)`` linear per-vertex albedo."""
        v = self.model.num_vertices
        skin = _srgb_to_linear((1 - tone) * _LIGHT_SKIN_SRGB + tone * _DARK_SKIN_SRGB)
        # Smooth blotchiness: a few random low-frequency waves over the head, +-6 %.
        p = self._neutral / 100.0
        waves = sum(np.sin(p @ rng.normal(size=3) * rng.uniform(2, 6) + rng.uniform(0, 6.3)) for _ in range(4))
        albedo = np.broadcast_to(skin, (v, 3)) * (1.0 + 0.015 * waves)[:, None]
        albedo = np.where(self._features["lips"][:, None], albedo * np.array([1.0, 0.62, 0.62]), albedo)
        albedo = np.where(self._features["brows"][:, None], albedo * 0.35, albedo)
        eyes = self._parts["eyeball_left"] | self._parts["eyeball_right"]
        albedo = np.where(eyes[:, None], np.array([0.62, 0.6, 0.58]), albedo)
        iris = _srgb_to_linear(np.array([90.0, 60.0, 40.0]) / 255.0 * rng.uniform(0.5, 1.3))
        albedo = np.where(self._features["iris"][:, None], iris, albedo)
        albedo = np.where(self._features["pupil"][:, None], np.array([0.01, 0.01, 0.01]), albedo)
        albedo = np.where(self._parts["mouth_socket"][:, None] | self._parts["gums_tongue"][:, None],
                          np.array([0.12, 0.03, 0.03]), albedo)
        albedo = np.where(self._parts["teeth"][:, None], np.array([0.6, 0.58, 0.5]), albedo)
        return np.clip(albedo, 0.0, 1.0)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """``(H, W, 3)`` sRGB in [0, 1]: a colour gradient with noise."""
        s = self.image_size
        a, b = rng.uniform(0.05, 0.95, size=(2, 3))
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
        t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
        return np.clip(a + (b - a) * t + rng.normal(0, 0.02, size=(s, s, 3)), 0, 1)
