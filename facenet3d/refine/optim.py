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
    beta1, beta2 = BETAS
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
            correction1, correction2 = 1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)
            for t, (m, v) in zip(leaves, moments, strict=True):
                if t.grad is None:
                    continue
                m.lerp_(t.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(t.grad, t.grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(correction2)).add_(EPS)
                t.addcdiv_(m, denom, value=-step_lr / correction1)
            if project is not None:
                project()
        if progress is not None:
            progress(step, float(loss.detach().mean()))
