"""Parameters, GFLOPs and CPU latency of every model, side by side in one run (issue 2, item 8).

Rows: the seed (``hapeformer_seed`` on EfficientViT-B1 and -B2) at 384x512, since it only takes
sides that are multiples of 32; ``haformer_b0/b1/b2`` at CamVid's 360x480; and ``haformer_b1``
at 384x512 as well, for the like-for-like comparison with the seed on B1 (target: no slower).
All with 11 classes and batch 1. GFLOPs are fvcore's, which counts one multiply-add as one
FLOP, so they are GMACs. Latency: every model in eval mode under ``torch.inference_mode``,
timed in interleaved rounds in this one process (``haformer.sidebyside``): medians of all
passes, and their ratios.

    OMP_NUM_THREADS=1 python benchmarks/bench_models.py --threads 1 --clock thread \
        --json models.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from haformer.model import create_model
from haformer.profile import count_parameters, flop_analysis
from haformer.sidebyside import interleaved_latency

# (label, registry name, extra create_model kwargs, input size)
ROWS: tuple[tuple[str, str, dict[str, str], tuple[int, int]], ...] = (
    ("hapeformer_seed (B1)", "hapeformer_seed", {"backbone": "efficientvit_b1"}, (384, 512)),
    ("hapeformer_seed (B2)", "hapeformer_seed", {"backbone": "efficientvit_b2"}, (384, 512)),
    ("haformer_b0", "haformer_b0", {}, (360, 480)),
    ("haformer_b1", "haformer_b1", {}, (360, 480)),
    ("haformer_b2", "haformer_b2", {}, (360, 480)),
    ("haformer_b1 @384x512", "haformer_b1", {}, (384, 512)),
)
NUM_CLASSES = 11


def describe(
    label: str, name: str, kwargs: dict[str, str], size: tuple[int, int]
) -> tuple[nn.Module, dict[str, Any]]:
    """Build one model: the model and its row (params, GFLOPs = GMACs); latency comes later."""
    model = create_model(name, num_classes=NUM_CLASSES, **kwargs).eval()
    row = {
        "label": label,
        "model": name,
        **kwargs,
        "size": list(size),
        "params": count_parameters(model),
        "gflops": flop_analysis(model, size).total() / 1e9,
    }
    return model, row


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = [
        "| model | input | params (M) | GFLOPs (= GMACs) | latency ms (median) | fps |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['size'][0]}x{r['size'][1]} | {r['params'] / 1e6:.3f} | "
            f"{r['gflops']:.2f} | {r['latency_ms']:.1f} | {1000 / r['latency_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=5, help="untimed passes per model (5)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (10)")
    parser.add_argument("--per-round", type=int, default=5, help="passes per model per round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock", choices=["wall", "thread"], default="wall", help="thread: CPU time (1 thread)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models, rows = {}, []
    for label, name, kwargs, size in ROWS:
        model, row = describe(label, name, kwargs, size)
        models[label] = (model, torch.randn(1, 3, *size))
        rows.append(row)
    latency = interleaved_latency(
        models,
        rounds=args.rounds,
        per_round=args.per_round,
        warmup=args.warmup,
        reference="hapeformer_seed (B1)",
        clock=args.clock,
    )
    for row in rows:
        row["latency_ms"] = latency[row["label"]]["median_ms"]
    setup = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "clock": args.clock,
        "load_average": os.getloadavg(),
        "batch": 1,
        "device": "cpu",
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "command": " ".join(["python", *sys.argv]),
    }
    seed_b1 = next(r for r in rows if r["label"] == "hapeformer_seed (B1)")
    ours_b1 = next(r for r in rows if r["label"] == "haformer_b1 @384x512")
    ratio = ours_b1["latency_ms"] / seed_b1["latency_ms"]

    print(
        f"CPU, batch 1, {setup['threads']} thread(s), {args.clock} clock, {args.rounds} "
        f"interleaved rounds of {args.per_round} passes after {args.warmup} warm-up passes, "
        f"torch {setup['torch']}, {setup['processor']} x{setup['cpu_count']}, load average "
        f"{setup['load_average'][0]:.2f}\n"
    )
    print(markdown(rows))
    print(
        f"\nhaformer_b1 / hapeformer_seed (B1) latency at 384x512: {ratio:.3f} (target <= 1). "
        "GFLOPs: fvcore counts one multiply-add as one FLOP."
    )
    if args.json is not None:
        payload = {"setup": setup, "haformer_b1_over_seed_b1": ratio, "results": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
