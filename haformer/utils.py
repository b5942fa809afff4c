"""Small helpers shared by the training, evaluation, profiling and export code.

One helper per recurring decision: which device (:func:`resolve_device`), which autocast dtype
(:func:`amp_dtype`), where float64 accumulators live (:func:`accumulator_device`), eval mode
for a block (:func:`eval_mode`), sizes from the command line (:func:`parse_size`), output
folders (:func:`ensure_dir`) and what a failed write means (:func:`write_failure`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from haformer.errors import ConfigError, EnvironmentFailure, UsageError


def default_device() -> torch.device:
    """The fastest device available here: CUDA if present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device ``name`` asks for (None: :func:`default_device`), checked to exist here.

    Raises:
        ConfigError: an unknown device string, or a CUDA/MPS device this machine lacks
            (checked before any work starts, so a typo costs no time).
    """
    if name is None or name == "":
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(
            f"unknown device {name!r}: use cpu, cuda, cuda:N or mps ({str(err).splitlines()[0]})"
        ) from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device {name!r} asked for, but this torch sees no CUDA GPU "
                f"(torch {torch.__version__}): use --device cpu, or omit --device"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r} asked for, but only cuda:0..cuda:{count - 1} exist")
    elif device.type == "mps" and not _mps_available():
        raise ConfigError(f"device {name!r} asked for, but Apple MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {name!r} is not supported here: use cpu, cuda, cuda:N or mps")
    return device


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for ``device``: float16 on CUDA (with a GradScaler), bfloat16 else."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def accumulator_device(device: torch.device) -> torch.device:
    """Where float64 running sums (losses, counts) live: the device itself, except Apple MPS,
    which has no float64: there they stay on the CPU."""
    return torch.device("cpu") if device.type == "mps" else device


def accumulate(totals: torch.Tensor, *values: torch.Tensor) -> None:
    """Add scalar ``values`` to the float64 running sums ``totals`` without waiting for them:
    each is moved to ``totals``'s device before it becomes float64 (on Apple MPS, which has no
    float64, ``totals`` lives on the CPU; see :func:`accumulator_device`)."""
    totals += torch.stack([v.detach().to(totals.device).to(torch.float64) for v in values])


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore its train/eval flag."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"360x480"`` (height x width) into ``(360, 480)``; a single ``"512"`` is square.

    Raises ConfigError (a ValueError) for anything else.
    """
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise ConfigError(f"size must look like HEIGHTxWIDTH, for example 360x480; got {text!r}")
    return values  # type: ignore[return-value]


def ensure_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents) if needed; return it.

    Raises:
        UsageError: ``path`` (or a parent) is a file, not a folder.
        EnvironmentFailure: the folder cannot be created (read-only, no permission, disk full).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise UsageError(
            f"{option} {path} must be a folder, but it (or a parent) is a file"
        ) from err
    except OSError as err:
        raise write_failure(path, err) from err
    return path


_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free some space or write somewhere else",
    errno.EFBIG: "the file is larger than this system allows here: write somewhere else",
    errno.EROFS: "the folder is on a read-only file system: choose a writable folder",
    errno.EACCES: "no permission to write there: choose a folder you can write to",
    errno.EPERM: "no permission to write there: choose a folder you can write to",
}


def write_failure(path: str | os.PathLike[str], err: OSError) -> EnvironmentFailure:
    """The one-line :class:`EnvironmentFailure` for an ``OSError`` raised while writing ``path``."""
    reason = err.strerror or str(err)
    hint = _WRITE_HINTS.get(err.errno or 0, "")
    return EnvironmentFailure(f"cannot write {path}: {reason}" + (f"; {hint}" if hint else ""))


ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
"""OSError numbers that always mean the machine failed, never that the user erred."""
