"""Batch-1 CPU latency of every model, unfused vs fused, side by side in one run (issue 5).

For each model (``haformer_b0/b1/b2`` at 360x480, the seed on EfficientViT-B1 at 384x512: it
only takes sides that are multiples of 32) these variants are timed:

* ``eager``: the model as built, eval mode; ``eager + CL``: model and input in channels_last;
* with ``--steps``, the steps of ``haformer.fuse.STEPS`` one after the other (each row adds
  one), so each step shows what it buys;
* ``fused``: ``haformer.fuse(model)``; ``fused + CL``: that, all in channels_last;
* with ``--compile``: ``torch.compile`` (inductor) of ``eager`` and of ``fused``; the compile
  time is reported, and ``--compile-timeout`` gives up on a compile that takes longer.

Method: every pass under ``torch.inference_mode``, ``--warmup`` untimed passes per variant,
then ``--rounds`` rounds; each round times ``--iters`` passes of every variant in turn, so a
change of machine load hits all variants alike. Reported: the median (and 10th-90th
percentile) of all timed passes. ``--clock thread`` times with ``time.thread_time`` (CPU time
of this thread: it ignores time lost to other processes, for a busy machine; only with
``--threads 1``). Each variant's output is compared with ``eager``'s (max abs difference).

The bound: fvcore's GMACs (it counts one multiply-add as one FLOP) divided by the GMAC/s this
CPU sustains on a plain 3x3 convolution (64 -> 64 channels on 90x120) with the same threads:
the time the model would take if all of it ran as efficiently as one large convolution.

    python benchmarks/bench_fuse.py --steps --compile --json bench_fuse.json
    python benchmarks/bench_fuse.py --models haformer_b1 --threads 1 --clock thread
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from haformer.fuse import STEPS, fuse
from haformer.model import create_model
from haformer.profile import flop_analysis
from haformer.utils import parse_size

# model name -> (create_model kwargs, input size)
MODELS: dict[str, tuple[dict[str, str], tuple[int, int]]] = {
    "haformer_b0": ({}, (360, 480)),
    "haformer_b1": ({}, (360, 480)),
    "haformer_b2": ({}, (360, 480)),
    "hapeformer_seed": ({"backbone": "efficientvit_b1"}, (384, 512)),
}
TARGET = ("haformer_b1", 0.85)  # fused / eager latency at most this
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


class Variant:
    """One way of running a model: a callable on the input and how to prepare the input."""

    def __init__(self, name: str, model: nn.Module, channels_last: bool = False) -> None:
        self.name = name
        self.model = model
        self.channels_last = channels_last
        self.times_ms: list[float] = []
        self.note = ""
        self.max_diff = 0.0

    def input(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)


def _channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def _cumulative_steps(model: nn.Module) -> list[Variant]:
    """One variant per fusion step, each with all the steps before it applied too."""
    variants = []
    current = copy.deepcopy(model).eval().requires_grad_(False)
    for name, step in STEPS:
        current = step(copy.deepcopy(current))
        variants.append(Variant(f"+ {name}", current))
    return variants


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (SIGALRM: main thread, POSIX)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"gave up after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _compiled(name: str, model: nn.Module, x: torch.Tensor, timeout: float) -> Variant:
    """``torch.compile(model)``, compiled now (first pass) within ``timeout`` seconds."""
    variant = Variant(name, torch.compile(model))
    start = time.perf_counter()
    try:
        with _time_limit(timeout), torch.inference_mode():
            variant.model(x)
        variant.note = f"compile {time.perf_counter() - start:.0f} s"
    except Exception as err:  # a compile failure must not stop the other measurements
        variant.note = f"skipped: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
        variant.model = None  # type: ignore[assignment]
    return variant


def conv_gmacs_per_s(clock: Callable[[], float], iters: int = 40) -> float:
    """GMAC/s this CPU sustains on a plain 3x3 conv, 64 -> 64 channels, 90x120, batch 1."""
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 64, 90, 120)
    macs = 64 * 64 * 9 * 90 * 120
    times = []
    with torch.inference_mode():
        for i in range(iters + 3):
            start = clock()
            conv(x)
            if i >= 3:
                times.append(clock() - start)
    return macs / statistics.median(times) / 1e9


def _check(variant: Variant, x: torch.Tensor, reference: torch.Tensor) -> None:
    """Run ``variant`` once and record its max abs difference to ``reference``; a variant
    that fails (the seed's ``view`` cannot read channels_last memory) is dropped."""
    try:
        variant.max_diff = (variant.model(variant.input(x)) - reference).abs().max().item()
    except RuntimeError as err:
        variant.note = f"fails: {str(err).splitlines()[0][:60]}"
        variant.model = None  # type: ignore[assignment]


def measure_model(name: str, size: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    """Build ``name`` and time all its variants, interleaved; returns one result dict."""
    kwargs, _ = MODELS[name]
    model = create_model(name, **kwargs).eval().requires_grad_(False)
    fused = fuse(model)
    torch.manual_seed(0)
    x = torch.randn(1, 3, *size)
    variants = [Variant("eager", model), Variant("eager + CL", _channels_last(model), True)]
    if args.steps:
        variants += _cumulative_steps(model)
    else:
        variants.append(Variant("fused", fused))
    variants.append(Variant("fused + CL", _channels_last(fused), True))
    if args.compile:
        for label, net in (("eager + compile", model), ("fused + compile", fused)):
            variants.append(_compiled(label, net, x, args.compile_timeout))
            print(f"  {name} {label}: {variants[-1].note}", file=sys.stderr)
    clock = CLOCKS[args.clock]
    with torch.inference_mode():
        reference = model(x)
        for v in variants:
            if v.model is not None:
                _check(v, x, reference)
        runnable = [v for v in variants if v.model is not None]
        for v in runnable:
            for _ in range(args.warmup):
                v.model(v.input(x))
        for _ in range(args.rounds):
            for v in runnable:
                xi = v.input(x)
                for _ in range(args.iters):
                    start = clock()
                    v.model(xi)
                    v.times_ms.append((clock() - start) * 1e3)
    eager_ms = statistics.median(variants[0].times_ms)
    rows = []
    for v in variants:
        row: dict[str, Any] = {"variant": v.name, "note": v.note, "max_abs_diff": v.max_diff}
        if v.times_ms:
            median = statistics.median(v.times_ms)
            deciles = statistics.quantiles(v.times_ms, n=10) if len(v.times_ms) > 1 else [median]
            row.update(
                median_ms=median,
                p10_ms=deciles[0],
                p90_ms=deciles[-1],
                ratio=median / eager_ms,
                times_ms=v.times_ms,
            )
        rows.append(row)
    return {
        "model": name,
        **kwargs,
        "size": list(size),
        "gmacs": flop_analysis(model, size).total() / 1e9,
        "gmacs_fused": flop_analysis(fused, size).total() / 1e9,
        "variants": rows,
        "scale": reference.abs().max().item(),
    }


def markdown(result: dict[str, Any], rate: float) -> str:
    """One model's variants as a markdown table, with its compute bound."""
    h, w = result["size"]
    bound = result["gmacs"] / rate * 1e3
    lines = [
        f"**{result['model']}** {h}x{w}: {result['gmacs']:.2f} GMACs (fused: "
        f"{result['gmacs_fused']:.2f}); bound at {rate:.1f} GMAC/s: {bound:.1f} ms",
        "",
        "| variant | median ms | p10-p90 ms | x eager | x bound | max abs diff | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["variants"]:
        if "median_ms" not in r:
            lines.append(f"| {r['variant']} | - | - | - | - | - | {r['note']} |")
            continue
        lines.append(
            f"| {r['variant']} | {r['median_ms']:.1f} | {r['p10_ms']:.1f}-{r['p90_ms']:.1f} | "
            f"{r['ratio']:.2f} | {r['median_ms'] / bound:.1f} | {r['max_abs_diff']:.1e} | "
            f"{r['note']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--size", default=None, help="HxW for every model (default: per model)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed passes per variant (5)")
    parser.add_argument("--iters", type=int, default=5, help="timed passes per round (5)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (4)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="(wall)")
    parser.add_argument("--steps", action="store_true", help="one row per fusion step")
    parser.add_argument("--compile", action="store_true", help="add torch.compile variants")
    parser.add_argument("--compile-timeout", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        parser.error("--clock thread measures one thread's CPU time: add --threads 1")
    if min(args.iters, args.rounds) < 1 or args.warmup < 0:
        parser.error("need --iters >= 1, --rounds >= 1 and --warmup >= 0")

    rate = conv_gmacs_per_s(CLOCKS[args.clock])
    results = []
    for name in args.models:
        size = parse_size(args.size) if args.size else MODELS[name][1]
        results.append(measure_model(name, size, args))
        print(f"measured {name}", file=sys.stderr)
    setup = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "warmup": args.warmup,
        "iters": args.iters,
        "rounds": args.rounds,
        "batch": 1,
        "conv3x3_gmacs_per_s": rate,
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "command": " ".join(["python", *sys.argv]),
    }
    print(
        f"CPU, batch 1, {setup['threads']} thread(s), {args.clock} clock, {args.rounds} rounds x "
        f"{args.iters} passes per variant, torch {setup['torch']}, {setup['processor']} "
        f"x{setup['cpu_count']}; plain 3x3 conv: {rate:.1f} GMAC/s\n"
    )
    for result in results:
        print(markdown(result, rate) + "\n")
    target = next((r for r in results if r["model"] == TARGET[0]), None)
    if target is not None:
        fused_row = next(
            (v for v in target["variants"] if v["variant"] in ("fused", f"+ {STEPS[-1][0]}")), None
        )
        if fused_row is not None and "ratio" in fused_row:
            print(f"{TARGET[0]}: fused / eager = {fused_row['ratio']:.2f} (target <= {TARGET[1]})")
    if args.json is not None:
        args.json.write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
