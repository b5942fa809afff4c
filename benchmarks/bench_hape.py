"""Is the package's seed-exact HAPE block as fast as the seed's own code? (issue 2, item 8)

For every HAPEBlock configuration of the seed model, at the feature-map size that block sees
for a ``--size`` input (default 360x480: 90x120 at stride 4, 45x60 at stride 8), in ONE process:

1. build the plain transcription of the seed's code (``seed_hape_transcription.HAPEBlock``) and
   ``haformer.hape.BranchHAPEBlock(..., seed=True)``, copy the transcription's weights into ours
   (state-dict copy; only the ``PEMs`` -> ``pems`` key prefix differs) and assert that both
   give the same output (atol 1e-5);
2. count, once, the aten ops each forward pass dispatches and the bytes of the new tensors
   they write (a noise-free measure of the work outside the convolutions: extra adds, copies);
3. time both interleaved, alternating which goes first, in eval mode under
   ``torch.inference_mode`` after warm-up passes; report the median per-pass time of each.

Prints a markdown table, one row per configuration, plus the time of all 18 HAPE blocks of the
model (each configuration weighted by how often the model uses it). Target: ratio <= 1.

    python benchmarks/bench_hape.py --size 360x480 --warmup 10 --iters 100 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch
from seed_hape_transcription import HAPEBlock as TranscribedHAPEBlock
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from haformer.hape import BranchHAPEBlock
from haformer.model import SEED_CHANNELS, SEED_DENOTES
from haformer.profile import count_parameters
from haformer.utils import parse_size

STAGE_STRIDES = (4, 8, 8, 4)  # the seed model's CNN stages run at these strides
ATOL = 1e-5


def configurations() -> dict[tuple[int, int, int], int]:
    """(channels, denote, stride) -> how many blocks of the seed model use it, in model order."""
    uses: dict[tuple[int, int, int], int] = {}
    for channels, denotes, stride in zip(SEED_CHANNELS, SEED_DENOTES, STAGE_STRIDES, strict=True):
        for denote in denotes:
            key = (channels, denote, stride)
            uses[key] = uses.get(key, 0) + 1
    return uses


def feature_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Map size after ``log2(stride)`` stride-2 3x3 convs with padding 1 (ceil division)."""
    return -(-size[0] // stride), -(-size[1] // stride)


def paired_blocks(channels: int, denote: int) -> tuple[nn.Module, nn.Module]:
    """The transcription and our seed-exact block with the same weights, both in eval mode."""
    theirs = TranscribedHAPEBlock(channels, denote)
    ours = BranchHAPEBlock(channels, denote, seed=True)
    state = {k.replace("PEMs.", "pems.", 1): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return theirs.eval(), ours.eval()


class OpTally(TorchDispatchMode):
    """Counts dispatched aten ops and the bytes of the tensors they newly write (not views)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.bytes_written = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        self.ops += 1
        self.bytes_written += sum(
            t.numel() * t.element_size()
            for t in _tensors(out)
            if t.untyped_storage().data_ptr() not in inputs
        )
        return out


def _tensors(tree: object) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def tally(model: nn.Module, x: torch.Tensor) -> OpTally:
    """Ops and bytes written by one ``model(x)`` (call under ``torch.inference_mode``)."""
    with OpTally() as counter:
        model(x)
    return counter


def time_interleaved(
    a: nn.Module, b: nn.Module, x: torch.Tensor, warmup: int, iters: int
) -> tuple[list[float], list[float]]:
    """Per-pass milliseconds of ``a(x)`` and ``b(x)``, alternating which of the two runs first."""
    times: tuple[list[float], list[float]] = ([], [])
    models = (a, b)
    for i in range(warmup + iters):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for j in order:
            start = time.perf_counter()
            models[j](x)
            elapsed = (time.perf_counter() - start) * 1000.0
            if i >= warmup:
                times[j].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="360x480", help="model input HEIGHTxWIDTH (360x480)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    print(
        f"HAPEBlock: seed transcription vs haformer BranchHAPEBlock(seed=True), input {size[0]}x"
        f"{size[1]}, batch {args.batch}, CPU, {torch.get_num_threads()} thread(s), "
        f"{args.warmup} warm-up + {args.iters} timed passes each, interleaved; "
        f"torch {torch.__version__}\n"
    )
    print(
        "| block (C, denote) | map | params | uses | aten ops T / H | MB written T / H "
        "| transcription (T) ms | haformer (H) ms | ratio H/T |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    total = [0.0, 0.0]
    for (channels, denote, stride), uses in configurations().items():
        theirs, ours = paired_blocks(channels, denote)
        h, w = feature_size(size, stride)
        x = torch.randn(args.batch, channels, h, w)
        with torch.inference_mode():
            torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=0.0)
            work = tally(theirs, x), tally(ours, x)
            t_theirs, t_ours = time_interleaved(theirs, ours, x, args.warmup, args.iters)
        m_theirs, m_ours = statistics.median(t_theirs), statistics.median(t_ours)
        total[0] += uses * m_theirs
        total[1] += uses * m_ours
        print(
            f"| ({channels}, {denote}) | {h}x{w} | {count_parameters(ours):,} | {uses} | "
            f"{work[0].ops} / {work[1].ops} | {work[0].bytes_written / 1e6:.2f} / "
            f"{work[1].bytes_written / 1e6:.2f} | {m_theirs:.3f} | {m_ours:.3f} | "
            f"{m_ours / m_theirs:.3f} |"
        )
    print(
        f"| all 18 blocks of the model | | | 18 | | | {total[0]:.3f} | {total[1]:.3f} | "
        f"{total[1] / total[0]:.3f} |"
    )
    print(
        f"\nOutputs equal within atol {ATOL} for every configuration. Ratio = haformer / "
        "transcription (median per-pass times); target <= 1."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
