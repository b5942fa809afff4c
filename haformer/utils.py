"""Small helpers shared by the training, evaluation and profiling code."""

from __future__ import annotations

import random

import numpy as np
import torch


def default_device() -> torch.device:
    """The fastest device available here: CUDA if present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"360x480"`` (height x width) into ``(360, 480)``; a single ``"512"`` is square."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise ValueError(f"size must look like HEIGHTxWIDTH, for example 360x480; got {text!r}")
    return values  # type: ignore[return-value]
