"""Data-loading throughput: CamVid train split with the train transforms, images per second.

Measures DataLoader throughput for each worker count, with and without the in-memory cache,
and prints a markdown table and one JSON object. Example (the numbers in BENCHMARKS.md)::

    python benchmarks/bench_data.py --root ../shared/data/camvid --images 100

"images/s" counts from the second batch on (worker start-up is reported as "first batch");
"setup" is opening the dataset, which with the cache includes decoding the whole split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.utils.data import DataLoader

from haformer.data import CamVid, train_transforms
from haformer.utils import parse_size


def measure(dataset: CamVid, workers: int, images: int, batch_size: int) -> dict[str, float]:
    """Seconds to the first batch and images/s over the following ones (at least ``images``)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    first = time.perf_counter()
    seen = 0
    while seen < images:
        try:
            seen += len(next(batches)[0])
        except StopIteration:
            batches = iter(loader)
    elapsed = time.perf_counter() - first
    return {"first_batch_s": first - start, "images": seen, "images_per_s": seen / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="CamVid root (default: $CAMVID_ROOT)")
    parser.add_argument("--images", type=int, default=100, help="images per setting")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--crop", type=parse_size, default=(360, 480), help="HxW")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, main process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    for cache in (False, True):
        start = time.perf_counter()
        dataset = CamVid(args.root, "train", train_transforms(crop=args.crop), cache=cache)
        setup = time.perf_counter() - start
        for workers in args.workers:
            row = measure(dataset, workers, args.images, args.batch_size)
            results.append({"workers": workers, "cache": cache, "setup_s": setup, **row})

    print(
        f"CamVid train ({len(dataset)} pairs) at {dataset.root}; crop {args.crop[0]}x"
        f"{args.crop[1]}, batch {args.batch_size}; torch {torch.__version__} on "
        f"{platform.machine()}, {os.cpu_count()} logical CPUs, {args.threads} torch thread(s) "
        "in the main process\n"
    )
    print("| workers | cache | setup (s) | first batch (s) | images/s |")
    print("|---:|:---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['workers']} | {'on' if r['cache'] else 'off'} | {r['setup_s']:.2f} "
            f"| {r['first_batch_s']:.2f} | {r['images_per_s']:.1f} |"
        )
    summary = {"crop": list(args.crop), "batch_size": args.batch_size, "results": results}
    print("\n" + json.dumps(summary))


if __name__ == "__main__":
    main()
