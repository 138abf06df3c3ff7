"""The optimisation loop every refinement stage runs."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

#: Adam's defaults (Kingma and Ba), as ``torch.optim.Adam`` has them.
BETAS = (0.9, 0.999)
EPS = 1e-8


def minimise(leaves: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], iterations: int, lr: float,
             progress: Callable[[int, float], None] | None = None, anneal: bool = True,
             project: Callable[[], None] | None = None) -> None:
    """Adam on ``leaves`` (tensors that require grad), in place.

    Args:
        leaves: the optimised tensors.
        loss_fn: returns the per-face losses ``(B,)`` for the current leaves; faces are
            independent, so their sum is minimised.
        iterations: number of steps.
        lr: learning rate (cosine-annealed to 5 % of it when ``anneal``).
        progress: optional callable ``(step, mean loss)``.
        project: optional callable run after every step (without gradients) that moves the
            leaves back into their feasible set, e.g. blendshape weights into [0, 1].

    The update is ``torch.optim.Adam``'s, written out: constructing a ``torch.optim`` optimiser
    imports ``torch._dynamo`` on first use, which costs a one-photo run seconds.
    """
    moments = [(torch.zeros_like(t), torch.zeros_like(t)) for t in leaves]
    eta_min = lr * 0.05
    for step in range(iterations):
        step_lr = eta_min + (lr - eta_min) * (1 + math.cos(math.pi * step / max(iterations, 1))) / 2 if anneal \
            else lr
        loss = loss_fn()
        for t in leaves:
            t.grad = None
        loss.sum().backward()
        with torch.no_grad():
            live = [(t, m, v) for t, (m, v) in zip(leaves, moments, strict=True) if t.grad is not None]
            if live:
                _adam_step([t for t, _, _ in live], [t.grad for t, _, _ in live], [m for _, m, _ in live],
                           [v for _, _, v in live], step, step_lr)
            if project is not None:
                project()
        if progress is not None:
            progress(step, float(loss.detach().mean()))


def _adam_step(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avg: list[torch.Tensor],
               exp_avg_sq: list[torch.Tensor], step: int, lr: float) -> None:
    """One Adam update of ``params`` in place (``step`` counts from 0).

    ``m / c1 / (sqrt(v / c2) + eps)`` is computed as ``m (sqrt(c2) / c1) / (sqrt(v) + eps sqrt(c2))``:
    the same value with one pass less over the moments, and every operation runs on all leaves at
    once (``torch._foreach_*``), which saves a fit of a few small tensors most of its per-step
    overhead and a fit of large maps several passes over them.
    """
    beta1, beta2 = BETAS
    correction1, root2 = 1 - beta1 ** (step + 1), math.sqrt(1 - beta2 ** (step + 1))
    torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sq, beta2)
    torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sq)
    torch._foreach_add_(denom, EPS * root2)
    torch._foreach_addcdiv_(params, exp_avg, denom, value=-lr * root2 / correction1)
