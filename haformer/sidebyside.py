"""Timing several networks side by side, fairly, on a shared machine (book ch. 11).

A latency measured alone drifts with whatever else the machine is doing. Ratios measured in one
process, in interleaved rounds (every model runs a few passes per round, in an order that
alternates from round to round), see the same machine load and the same thermal state, and
reproduce far better than absolute times. ``interleaved_latency`` times inference passes,
``interleaved_training`` times training steps (forward, backward, optimizer step).

``clock="thread"`` times with ``time.thread_time``, the CPU time of the calling thread: with
PyTorch on one thread (``torch.set_num_threads(1)``) all the work runs on it, and the time it
waited for a core while other processes ran is left out, which makes the figures of a busy
machine usable. The default ``"wall"`` is what a user waits.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn

Size = tuple[int, int]
Clock = Literal["wall", "thread"]
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


def _rounds(
    steps: Mapping[str, Callable[[], None]],
    rounds: int,
    per_round: int,
    warmup: int,
    clock: Clock = "wall",
) -> dict[str, list[float]]:
    """Run every step ``warmup`` times, then ``rounds`` rounds of ``per_round`` timed calls each,
    the order reversed every other round; {name: [ms per call]}."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}; got {clock!r}")
    if clock == "thread" and torch.get_num_threads() != 1:
        raise ValueError("clock='thread' needs torch.set_num_threads(1): the work must run here")
    now = CLOCKS[clock]
    if rounds < 1 or per_round < 1 or warmup < 0:
        raise ValueError(
            f"need rounds >= 1, per_round >= 1, warmup >= 0; got {rounds}, {per_round}, {warmup}"
        )
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            for _ in range(per_round):
                start = now()
                steps[name]()
                times[name].append((now() - start) * 1000.0)
    return times


def _summary(times: Mapping[str, list[float]], reference: str | None) -> dict[str, dict]:
    medians = {name: statistics.median(t) for name, t in times.items()}
    out = {}
    for name, t in times.items():
        out[name] = {"median_ms": medians[name], "min_ms": min(t), "n": len(t), "times_ms": t}
        if reference is not None:
            out[name]["ratio"] = medians[name] / medians[reference]
    return out


def interleaved_latency(
    models: Mapping[str, tuple[nn.Module, torch.Tensor]],
    *,
    rounds: int = 10,
    per_round: int = 5,
    warmup: int = 5,
    reference: str | None = None,
    clock: Clock = "wall",
) -> dict[str, dict]:
    """Median inference latency of each ``name: (module, input)``, in interleaved rounds.

    CPU only (the caller sets ``torch.set_num_threads``). Every module runs in eval mode under
    ``torch.inference_mode`` on its fixed input (for a network, a (1, 3, H, W) image; for a
    block, a feature map). Returns {name: {median_ms, min_ms, n, times_ms, ratio}}, ``ratio``
    = median / the ``reference`` module's median.
    """
    steps = {}
    for name, (model, x) in models.items():
        model.eval()

        def step(model: nn.Module = model, x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                model(x)

        steps[name] = step
    return _summary(_rounds(steps, rounds, per_round, warmup, clock), reference)


def interleaved_training(
    models: Mapping[str, tuple[nn.Module, Size]],
    *,
    batch: int = 8,
    num_classes: int = 11,
    rounds: int = 5,
    per_round: int = 2,
    warmup: int = 2,
    reference: str | None = None,
    clock: Clock = "wall",
) -> dict[str, dict]:
    """Training throughput of each ``name: (model, (H, W))``: forward, cross-entropy, backward and
    an Adam step on a fixed random batch, in interleaved rounds. Adds ``images_per_s`` (batch /
    median step time) to what :func:`interleaved_latency` returns."""
    steps = {}
    for name, (model, size) in models.items():
        model.train()
        x = torch.randn(batch, 3, *size)
        y = torch.randint(0, num_classes, (batch, *size))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(
            model: nn.Module = model,
            x: torch.Tensor = x,
            y: torch.Tensor = y,
            optimizer: torch.optim.Optimizer = optimizer,
        ) -> None:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

        steps[name] = step
    result = _summary(_rounds(steps, rounds, per_round, warmup, clock), reference)
    for entry in result.values():
        entry["images_per_s"] = batch * 1000.0 / entry["median_ms"]
    return result
