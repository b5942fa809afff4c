"""Checkpoints that are safe to write and safe to read.

- :func:`save_checkpoint` writes to a temporary file in the target folder, flushes it to disk
  and renames it over the target (``os.replace`` is atomic on one file system), so a crash or
  a full disk leaves either the old checkpoint or the new one, never half a file.
- :func:`load_checkpoint` always uses ``torch.load(..., weights_only=True)``: only tensors and
  plain Python values (dict, list, tuple, str, int, float, bool, None) can come back, and a
  file with pickled code in it is refused instead of run.
- :func:`rng_state` / :func:`set_rng_state` capture Python, NumPy and torch (CPU and CUDA)
  random states as such plain values, so a resumed run draws the same numbers.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class UnsafeCheckpointError(ValueError):
    """The file holds something other than tensors and plain Python values."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``).

    ``state`` must hold only tensors and plain Python values; anything else would be refused
    by :func:`load_checkpoint`, so it is refused here, before the write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_plain(state, "state")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the file holds pickled objects other than tensors and plain
            values (it could run code when unpickled), or is not a dict.
        ValueError: the file is not a readable torch checkpoint (truncated, corrupted).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: pass the path of a .pt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain Python "
            f"values, which could run code when unpickled ({_culprit(err)}). Only load "
            "checkpoints written by haformer.checkpoint.save_checkpoint"
        ) from err
    except RuntimeError as err:
        raise ValueError(
            f"{path} is not a readable torch checkpoint ({str(err).splitlines()[0]}); "
            "it may be truncated or corrupted: use an intact copy"
        ) from err
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"{path} holds a {type(state).__name__}, expected a dict")
    return state


def _culprit(err: Exception) -> str:
    """The line of torch's weights_only message that names the refused object."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or ["unknown object"])[0]


def rng_state() -> dict[str, Any]:
    """Random states of Python, NumPy and torch (CPU and every CUDA device) as plain values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where CUDA is present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"{where} is a {type(value).__name__}; checkpoints hold only tensors and plain Python "
            "values (convert it, e.g. dataclasses.asdict, .tolist(), str())"
        )


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
