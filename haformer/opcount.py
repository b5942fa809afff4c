"""Counting the tensor operations a forward pass dispatches (book ch. 11).

MACs say how much arithmetic a network does; they do not say how many separate operations it
takes to do it, and at batch 1 every operation has a fixed cost (a Python call, a dispatch, a
kernel launch on a GPU) that is independent of its size. ``count_ops`` counts them exactly: a
``TorchDispatchMode`` sees every ATen operator call that reaches the dispatcher, so the count is
the same on every run and every machine (for one torch version), unlike a timing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


class OpCounter(TorchDispatchMode):
    """A dispatch mode that counts ATen operator calls by name (``counts``) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        self.counts[func.__name__.split(".")[0]] += 1  # "conv2d.default" -> "conv2d"
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_ops(module: nn.Module, *inputs: torch.Tensor, warmup: int = 1) -> Counter[str]:
    """ATen operations one inference forward of ``module`` dispatches: {name: count}.

    Runs ``module(*inputs)`` in eval mode under ``torch.inference_mode()`` (restoring the
    mode after), ``warmup`` times uncounted first, so that work done once per model (a kernel
    built on the first call and reused) is not counted. ``sum(result.values())`` is the total.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                module(*inputs)
            with OpCounter() as counter:
                module(*inputs)
    finally:
        module.train(was_training)
    return counter.counts
