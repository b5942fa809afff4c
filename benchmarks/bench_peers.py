"""HAFormer against the networks a user would pick instead, side by side in one process (issue 8).

Rows: ``haformer_b0/b1/b2``; ``haformer_b1`` fused for inference (``haformer.fuse``);
``haformer_b1 (per-branch)``, the same network laid out as before the speed work (per-branch
HAPE blocks and timm's attention modules: same function, same weights layout per branch); and
the peers of ``haformer.peers`` (torchvision LRASPP and DeepLabV3 on MobileNetV3-Large,
segmentation_models_pytorch FPN and U-Net on MobileNetV2 and SegFormer on MiT-B0), all with
random weights and 11 classes. Columns: parameters, GMACs (fvcore), ATen operations per forward
(exact: ``haformer.opcount``), median CPU latency at batch 1 and its ratio to ``haformer_b1``,
measured in interleaved rounds in this one process (``haformer.sidebyside``), and training
throughput (forward + backward + Adam step, images/s), also interleaved.

Input: ``--size`` (CamVid's 360x480 by default); networks whose sides must be multiples of 32
(the smp ones) get the next multiple (384x480), as a user would pad a CamVid frame for them.

    OMP_NUM_THREADS=1 python benchmarks/bench_peers.py --threads 1 --clock thread --json peers.json
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

from haformer.backbone import create_backbone
from haformer.fuse import fuse, unstack_hape_blocks
from haformer.model import create_model, input_multiple
from haformer.opcount import count_ops
from haformer.peers import list_peers
from haformer.profile import count_parameters, flop_analysis
from haformer.sidebyside import interleaved_latency, interleaved_training
from haformer.utils import parse_size

NUM_CLASSES = 11
REFERENCE = "haformer_b1"


def per_branch(name: str) -> nn.Module:
    """``name`` as the package built it before the speed work: per-branch HAPE blocks, timm's
    attention and Dropout(0) modules. Same parameters; used to measure what the change bought."""
    model = unstack_hape_blocks(create_model(name, num_classes=NUM_CLASSES))
    model.backbone = create_backbone(name.replace("haformer", "efficientvit"), out_indices=(-1,))
    return model


def build(label: str) -> nn.Module:
    """The network a row label names."""
    if label.endswith(" (per-branch)"):
        return per_branch(label.removesuffix(" (per-branch)"))
    if label.endswith(" fused"):
        return fuse(create_model(label.removesuffix(" fused"), num_classes=NUM_CLASSES))
    return create_model(label, num_classes=NUM_CLASSES)


def padded(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``size`` rounded up to multiples of ``multiple``."""
    return (-(-size[0] // multiple) * multiple, -(-size[1] // multiple) * multiple)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | input | params (M) | GMACs | ATen ops | latency ms (median) | "
        "ratio to haformer_b1 | train images/s | train ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        train = r.get("train")
        lines.append(
            f"| {r['label']} | {r['size'][0]}x{r['size'][1]} | {r['params'] / 1e6:.2f} | "
            f"{r['gmacs']:.2f} | {r['ops']} | {r['latency_ms']:.1f} | {r['ratio']:.2f} | "
            + (f"{train['images_per_s']:.2f} | {train['ratio']:.2f} |" if train else "- | - |")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_rows = [
        "haformer_b0",
        REFERENCE,
        "haformer_b2",
        f"{REFERENCE} fused",
        f"{REFERENCE} (per-branch)",
        *list_peers(),
    ]
    parser.add_argument("--models", nargs="+", default=default_rows, help="row labels")
    parser.add_argument("--size", type=parse_size, default=(360, 480), help="HxW (360x480)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (10)")
    parser.add_argument("--per-round", type=int, default=5, help="passes per model per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed passes per model (5)")
    parser.add_argument("--train-size", type=parse_size, default=(192, 256), help="HxW")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch (8)")
    parser.add_argument("--train-rounds", type=int, default=4, help="0 skips training")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    parser.add_argument(
        "--clock", choices=["wall", "thread"], default="wall", help="thread: CPU time (1 thread)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if REFERENCE not in args.models:
        parser.error(f"--models must include {REFERENCE}, the reference of the ratios")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows: dict[str, dict[str, Any]] = {}
    models: dict[str, tuple[nn.Module, tuple[int, int]]] = {}
    for label in args.models:
        model = build(label).eval()
        size = padded(args.size, input_multiple(model))
        x = torch.randn(1, 3, *size)
        rows[label] = {
            "label": label,
            "size": list(size),
            "params": count_parameters(model),
            "gmacs": flop_analysis(model, size).total() / 1e9,
            "ops": sum(count_ops(model, x).values()),
        }
        models[label] = (model, x)
        print(f"built {label}: {rows[label]['ops']} ops", file=sys.stderr)
    latency = interleaved_latency(
        models,
        rounds=args.rounds,
        per_round=args.per_round,
        warmup=args.warmup,
        reference=REFERENCE,
        clock=args.clock,
    )
    for label, entry in latency.items():
        rows[label].update(latency_ms=entry["median_ms"], ratio=entry["ratio"])
    if args.train_rounds:
        trainable = {
            label: (build(label), padded(args.train_size, input_multiple(model)))
            for label, (model, _) in models.items()
            if not label.endswith(" fused")
        }
        training = interleaved_training(
            trainable,
            batch=args.train_batch,
            num_classes=NUM_CLASSES,
            rounds=args.train_rounds,
            reference=REFERENCE,
            clock=args.clock,
        )
        for label, entry in training.items():
            rows[label]["train"] = {
                "images_per_s": entry["images_per_s"],
                "ratio": entry["images_per_s"] / training[REFERENCE]["images_per_s"],
                "size": list(trainable[label][1]),
            }

    setup = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "warmup": args.warmup,
        "train": f"batch {args.train_batch} at {args.train_size[0]}x{args.train_size[1]}",
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "command": " ".join(["python", *sys.argv]),
    }
    print(
        f"CPU, batch 1, {setup['threads']} thread(s), {args.clock} clock, {args.rounds} "
        f"interleaved rounds of "
        f"{args.per_round} passes after {args.warmup} warm-up passes, torch {setup['torch']}, "
        f"load average {setup['load_average'][0]:.2f} at the end. Training: forward + backward "
        f"+ Adam step, {setup['train']}, images/s.\n"
    )
    print(markdown(list(rows.values())))
    if args.json is not None:
        payload = {"setup": setup, "results": list(rows.values())}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
