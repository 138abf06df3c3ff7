"""A face over the frames of a clip: one identity, per-frame expression and head pose, smoothed.

Torch-free (numpy), shared by ``facenet3d reconstruct clip.mp4`` and ``python -m facenet3d.infer clip.mp4``:

* :func:`clip_identity`: the clip's one identity, the per-coefficient median of per-frame
  estimates (robust to the frames where a blink, a turn or motion blur misleads the fit);
  the per-frame fits then keep it fixed.
* :class:`OneEuroFilter` and :func:`smooth_track`: expression and pose smoothed in time with
  the one-euro filter (Casiez, Roussel and Vogel, CHI 2012: a low-pass filter whose cut-off
  rises with the signal's speed, so jitter at rest is removed and fast motion is followed).
  :data:`TRACK_SMOOTHING` is tuned so a step in ``jawOpen`` reaches 90 % within 2 frames at
  30 fps (``tests/test_animation.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from facenet3d.camera_math import matrix_to_rotation_6d, rotation_6d_to_matrix


class OneEuroFilter:
    """The one-euro filter on a vector (each component filtered independently).

    Args:
        min_cutoff: cut-off frequency at rest, Hz (lower: smoother, more lag when slow).
        beta: how fast the cut-off rises with speed, per unit/s (higher: less lag when fast).
        d_cutoff: cut-off of the speed estimate, Hz.

    ``x_hat = x_hat' + a (x - x_hat')`` with ``a = 1 / (1 + tau / dt)``, ``tau = 1 / (2 pi f_c)`` and
    ``f_c = min_cutoff + beta |dx/dt|`` (the speed itself low-passed at ``d_cutoff``).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("need min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next sample passes unchanged."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter sample ``x`` (any shape, float) taken at time ``t`` seconds; returns the estimate."""
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        dx = (x - self._x) / dt
        self._dx = self._dx + self._alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        self._t = float(t)
        return self._x.copy()


@dataclass(frozen=True)
class TrackSmoothing:
    """One-euro settings of :func:`smooth_track`, each group filtered in its own unit.

    Attributes:
        min_cutoff, beta, d_cutoff: :class:`OneEuroFilter` settings (speeds in the units below).
        rotation_unit: 6D rotation entries per unit (0.02 is about 1.1 degrees).
        translation_unit: mm per unit.
        expression_unit: expression coefficient per unit for models with bounded (blendshape)
            coefficients; :attr:`pca_expression_unit` for unbounded (unit-variance PCA) ones.
        enabled: False passes everything through.
    """

    min_cutoff: float = 1.0
    beta: float = 0.5
    d_cutoff: float = 1.0
    rotation_unit: float = 0.02
    translation_unit: float = 10.0
    expression_unit: float = 0.1
    pca_expression_unit: float = 0.3
    enabled: bool = True


#: The default smoothing of a clip's track. With blendshape weights in units of 0.1, a step of
#: 1 in ``jawOpen`` at 30 fps reaches 85 % of the way in one frame and 98 % in two, while a
#: +-0.02 jitter at rest is filtered with a cut-off near 4 Hz. Rotation in units of about a
#: degree: a head shaken at 200 degrees/s is followed within about a degree (0.1, six times
#: coarser, lagged 2.7 degrees behind on the known-answer clip of ``tests/test_animation.py``),
#: while 0.5 degrees of jitter at rest is halved.
TRACK_SMOOTHING = TrackSmoothing()


@dataclass
class FaceTrack:
    """One face over the ``N`` frames of a clip in which it was found.

    Attributes:
        frames: ``(N,)`` int frame indices (increasing).
        times: ``(N,)`` seconds.
        identity: ``(Ki,)`` the clip's one identity.
        expression: ``(N, Ke)`` expression coefficients per frame.
        rotation: ``(N, 3, 3)`` model -> photo camera per frame.
        translation: ``(N, 3)`` mm, photo camera per frame.
        expression_names: the model's ``Ke`` expression mode names (empty without names).
        fps: the clip's frame rate.
        expression_bounds: the coefficients' bounds (blendshape models), None when unbounded.
    """

    frames: np.ndarray
    times: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    expression_names: tuple[str, ...] = ()
    fps: float = 30.0
    expression_bounds: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self.frames)


def clip_identity(identities: np.ndarray) -> np.ndarray:
    """The clip's identity from per-frame estimates: ``(F, Ki)`` -> ``(Ki,)`` per-coefficient median."""
    x = np.asarray(identities, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"need (F, Ki) identity estimates with F >= 1, got {x.shape}")
    return np.median(x, axis=0)


def smooth_track(track: FaceTrack, settings: TrackSmoothing = TRACK_SMOOTHING) -> FaceTrack:
    """The track with expression, rotation and translation one-euro filtered in time.

    The filter restarts after a gap (frames without the face). Rotations are filtered in their
    6D form and re-orthonormalised; bounded expressions are clipped back into their bounds.
    """
    if not settings.enabled or len(track) == 0:
        return track
    unit_e = settings.expression_unit if track.expression_bounds is not None else settings.pca_expression_unit
    rot6 = matrix_to_rotation_6d(track.rotation)
    k = track.expression.shape[1]
    units = np.concatenate([np.full(6, settings.rotation_unit), np.full(3, settings.translation_unit),
                            np.full(k, unit_e)])
    x = np.concatenate([rot6, track.translation, track.expression], 1) / units
    f = OneEuroFilter(settings.min_cutoff, settings.beta, settings.d_cutoff)
    y = np.empty_like(x)
    for i in range(len(x)):
        if i > 0 and track.frames[i] != track.frames[i - 1] + 1:
            f.reset()
        y[i] = f(x[i], float(track.times[i]))
    y = y * units
    expression = y[:, 9:]
    if track.expression_bounds is not None:
        expression = np.clip(expression, *track.expression_bounds)
    return replace(track, rotation=rotation_6d_to_matrix(y[:, :6]), translation=y[:, 6:9], expression=expression)
