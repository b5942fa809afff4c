"""Parameters, GFLOPs and CPU latency of every model, side by side in one run (issue 2, item 8).

Rows: the seed (``hapeformer_seed`` on EfficientViT-B1 and -B2) at 384x512, since it only takes
sides that are multiples of 32; ``haformer_b0/b1/b2`` at CamVid's 360x480; and ``haformer_b1``
at 384x512 as well, for the like-for-like comparison with the seed on B1 (target: no slower).
All with 11 classes and batch 1. GFLOPs are fvcore's, which counts one multiply-add as one
FLOP, so they are GMACs. Latency: ``haformer.profile.measure_latency`` (eval mode,
inference mode, warm-up, median of per-pass wall-clock times).

    python benchmarks/bench_models.py --warmup 10 --iters 50 --threads 2 --json bench_models.json
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

from haformer.model import create_model
from haformer.profile import count_parameters, flop_analysis, measure_latency

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


def measure_row(
    label: str, name: str, kwargs: dict[str, str], size: tuple[int, int], args: argparse.Namespace
) -> dict[str, Any]:
    """Build one model and measure it: params, GFLOPs (= GMACs) and latency statistics."""
    model = create_model(name, num_classes=NUM_CLASSES, **kwargs)
    lat = measure_latency(model, size, batch=1, device="cpu", warmup=args.warmup, iters=args.iters)
    return {
        "label": label,
        "model": name,
        **kwargs,
        "size": list(size),
        "params": count_parameters(model),
        "gflops": flop_analysis(model, size).total() / 1e9,
        "latency_ms": lat["median_ms"],
        "p90_ms": lat["p90_ms"],
        "fps": lat["fps"],
        "times_ms": lat["times_ms"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = [
        "| model | input | params (M) | GFLOPs (= GMACs) | latency ms (median) | p90 ms | fps |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['size'][0]}x{r['size'][1]} | {r['params'] / 1e6:.3f} | "
            f"{r['gflops']:.2f} | {r['latency_ms']:.1f} | {r['p90_ms']:.1f} | {r['fps']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=10, help="untimed passes per model (10)")
    parser.add_argument("--iters", type=int, default=50, help="timed passes per model (50)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for label, name, kwargs, size in ROWS:
        rows.append(measure_row(label, name, kwargs, size, args))
        print(f"measured {label}: {rows[-1]['latency_ms']:.1f} ms", file=sys.stderr)
    setup = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "iters": args.iters,
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
        f"CPU, batch 1, {setup['threads']} thread(s), {args.warmup} warm-up + {args.iters} timed "
        f"passes per model, torch {setup['torch']}, {setup['processor']} x{setup['cpu_count']}\n"
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
