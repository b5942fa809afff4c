"""Where a training process runs: one process, or one of several launched by torchrun.

:class:`Run` holds the rank, the world size and the device, joins the process group when
``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo otherwise) and offers the few collective steps the
engine needs. With one process every collective is a no-op, so the training loop has no
special case for either.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from haformer.checkpoint import rng_state
from haformer.utils import resolve_device


@dataclass
class Run:
    """Rank, world size and device of this process; whether it opened the process group."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @classmethod
    def start(cls, device: str | None) -> Run:
        """Check ``device`` (None: the best available), join torchrun's group if launched by it."""
        chosen = resolve_device(device)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(0, 1, chosen, False)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if chosen.type == "cuda":
            chosen = torch.device("cuda", local_rank)
            torch.cuda.set_device(chosen)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), chosen, owns)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def log(self, message: str) -> None:
        if self.main:
            tqdm.write(message)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def max(self, value: float) -> float:
        """The largest ``value`` over all processes (so that all stop at the same step)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's BatchNorm statistics (before validating)."""
        if self.world > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def gather_rng(self) -> list[dict[str, Any]]:
        """Random states of all ranks (rank order, each with its own device's), so each
        resumes its own stream."""
        state = rng_state(self.device)
        if self.world == 1:
            return [state]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, {k: _to_cpu(v) for k, v in state.items()})
        return gathered

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def unused_parameters(
    model: nn.Module, size: tuple[int, int], device: torch.device | str = "cpu"
) -> list[str]:
    """Names of the parameters that one training-mode forward/backward pass leaves without a
    gradient (DistributedDataParallel fails on them at its second iteration).

    Runs on a copy of ``model`` with a fixed random input: the model, its BatchNorm
    statistics and the global random streams are left as they were.
    """
    probe = copy.deepcopy(model).to(device).train()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        probe(x).float().sum().backward()
    return [n for n, p in probe.named_parameters() if p.requires_grad and p.grad is None]
