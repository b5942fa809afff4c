"""Optimizer, learning-rate schedule and training budget (book ch. 9).

The recipe: Adam (or AdamW, SGD), a linear warm-up from ``warmup_start * lr``, then poly
decay ``(1 - t) ** power`` down to 0, stepped every iteration. ``t`` is the fraction of the
run after the warm-up: of the steps when the run is ``epochs`` long, or of the budget when
``max_minutes`` (training time) or ``max_images`` (images seen) limit it, whichever is
used up first. :class:`Budget` measures that fraction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import lr_scheduler

if TYPE_CHECKING:
    from haformer.config import TrainConfig


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (Nesterov-free, momentum ``cfg.momentum``) over all parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class Budget:
    """How long a run may train: ``max_steps`` (epochs x steps per epoch), and optionally
    ``max_minutes`` of training time (validation excluded) and ``max_images`` seen."""

    max_steps: int
    max_minutes: float | None = None
    max_images: int | None = None

    @classmethod
    def of(cls, cfg: TrainConfig, steps_per_epoch: int) -> Budget:
        return cls(cfg.epochs * steps_per_epoch, cfg.max_minutes, cfg.max_images)

    @property
    def limited(self) -> bool:
        """Whether a time or image budget is set (then ``epochs`` is only an upper bound)."""
        return self.max_minutes is not None or self.max_images is not None

    def fraction(self, steps: int, seconds: float, images: int) -> float:
        """The share of the budget used, in [0, 1]: the largest of the three."""
        used = steps / self.max_steps
        if self.max_minutes is not None:
            used = max(used, seconds / (60.0 * self.max_minutes))
        if self.max_images is not None:
            used = max(used, images / self.max_images)
        return min(1.0, used)


def warmup_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Warm-up iterations: ``warmup_epochs`` worth of steps, at most half of the epochs."""
    total = cfg.epochs * steps_per_epoch
    return min(round(cfg.warmup_epochs * steps_per_epoch), total // 2)


def build_scheduler(
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    used: Callable[[], float] | None = None,
) -> lr_scheduler.LRScheduler:
    """Per-iteration schedule: LinearLR warm-up from ``warmup_start * lr``, then poly decay
    (power ``poly_power``) down to 0 at the end of the run.

    Without a budget that is PolynomialLR over the remaining steps, joined to the warm-up by
    SequentialLR. With ``cfg.max_minutes`` or ``cfg.max_images`` it is a
    :class:`BudgetPolyLR` that reads the share of the budget from ``used()`` (required then).
    """
    warmup = warmup_steps(cfg, steps_per_epoch)
    if cfg.max_minutes is not None or cfg.max_images is not None:
        if used is None:
            raise ValueError("a run with a budget needs used(): the share of the budget used")
        return BudgetPolyLR(optimizer, used, warmup, cfg.warmup_start, cfg.poly_power)
    total = cfg.epochs * steps_per_epoch
    poly = lr_scheduler.PolynomialLR(optimizer, total_iters=total - warmup, power=cfg.poly_power)
    if warmup == 0:
        return poly
    ramp = lr_scheduler.LinearLR(optimizer, cfg.warmup_start, 1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, poly], milestones=[warmup])


class BudgetPolyLR(lr_scheduler.LRScheduler):
    """Linear warm-up over ``warmup`` steps, then ``lr * (1 - t) ** power``, where ``t`` is the
    share of the budget used since the warm-up ended: ``(u - u0) / (1 - u0)`` with ``u =
    used()`` now and ``u0`` its value when the warm-up ended. When ``used()`` grows by one
    step's share per step this is exactly PolynomialLR; with a time budget it follows the
    clock. The lr reaches 0 when the budget is used up.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        used: Callable[[], float],
        warmup: int,
        warmup_start: float,
        power: float,
    ) -> None:
        self.used = used
        self.warmup = warmup
        self.warmup_start = warmup_start
        self.power = power
        self.used_at_warmup_end: float | None = None
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        step = self.last_epoch
        if step < self.warmup:
            factor = self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup
        else:
            used = self.used()
            if self.used_at_warmup_end is None:
                self.used_at_warmup_end = used
            start = self.used_at_warmup_end
            share = 1.0 if start >= 1.0 else (used - start) / (1.0 - start)
            factor = (1.0 - min(1.0, max(0.0, share))) ** self.power
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        """Everything but ``used`` (a function, restored by whoever builds the scheduler)."""
        return {k: v for k, v in super().state_dict().items() if k != "used"}
