"""The optimisation loop every refinement stage runs."""

from __future__ import annotations

from collections.abc import Callable

import torch


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
    """
    opt = torch.optim.Adam(leaves, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iterations, 1), eta_min=lr * 0.05) if anneal else None
    for step in range(iterations):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if project is not None:
            with torch.no_grad():
                project()
        if sched is not None:
            sched.step()
        if progress is not None:
            progress(step, float(loss.detach().mean()))
