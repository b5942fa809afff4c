"""Files that are safe to write and checkpoints that are safe to read.

- :func:`atomic_write` writes to a temporary file in the target folder, flushes it to disk and
  renames it over the target (``os.replace`` is atomic on one file system), so a crash or a
  full disk leaves either the old file or the new one, never half a file. Checkpoints,
  ``history.csv`` and ``curves.png`` are all written this way; :func:`remove_stale_temp_files`
  deletes the temporary files a killed process left behind.
- :func:`save_checkpoint` serialises in memory first, then writes the bytes: torch's zip writer
  turns a full disk into ``unexpected pos ...``, a plain write reports ``No space left on
  device``, which becomes a one-line :class:`~haformer.errors.EnvironmentFailure`.
- :func:`load_checkpoint` always uses ``torch.load(..., weights_only=True)``: only tensors and
  plain Python values (dict, list, tuple, str, int, float, bool, None) can come back, and a
  file with pickled code in it is refused instead of run. Every unreadable file raises a
  :class:`CheckpointError` (a user's mistake, exit code 2) that names the file.
- :func:`rng_state` / :func:`set_rng_state` capture Python, NumPy and torch random states
  (CPU, and the CUDA device the run uses) as plain values, so a resumed run draws the same
  numbers, on a machine with fewer GPUs too.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from haformer.errors import MissingFileError, UsageError
from haformer.utils import write_failure

TEMP_SUFFIX = ".tmp"


class CheckpointError(UsageError, ValueError):
    """A checkpoint file that cannot be used: truncated, empty, not a checkpoint, wrong model."""


class CheckpointNotFoundError(MissingFileError):
    """No checkpoint file at the path given."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds something other than tensors and plain Python values."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then move it over ``path``.

    Raises :class:`~haformer.errors.EnvironmentFailure` (one line) when the disk is full or
    the folder is read-only; the old file at ``path``, if any, is left untouched and no
    temporary file stays behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise write_failure(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_failure(path, err) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temp_files(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left for ``names`` in ``folder`` (a
    process killed mid-write leaves one); returns what was removed."""
    folder = Path(folder)
    removed = []
    for name in names:
        for tmp in folder.glob(f".{name}.*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (see :func:`atomic_write`).

    ``state`` must hold only tensors and plain Python values; anything else would be refused
    by :func:`load_checkpoint`, so it is refused here, before the write.
    """
    _check_plain(state, "state")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointNotFoundError: no file at ``path`` (a FileNotFoundError).
        UnsafeCheckpointError: the file holds pickled objects other than tensors and plain
            values (it could run code when unpickled), or is not a dict.
        CheckpointError: the file is not a readable torch checkpoint (empty, truncated,
            corrupted, unreadable); a ValueError.
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no file"
        raise CheckpointNotFoundError(
            f"no checkpoint at {path} ({what} there): pass the path of a .pt file such as "
            "last.pt or best.pt from `python -m haformer train`"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain Python "
            f"values, which could run code when unpickled ({_culprit(err)}). Only load "
            "checkpoints written by haformer.checkpoint.save_checkpoint"
        ) from err
    except PermissionError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror}; check its permissions") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        reason = "it is empty" if path.stat().st_size == 0 else _first_line(err)
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint ({reason}); it may be truncated or "
            "corrupted: use an intact copy"
        ) from err
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"{path} holds a {type(state).__name__}, expected a dict")
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _culprit(err: Exception) -> str:
    """The line of torch's weights_only message that names the refused object."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or ["unknown object"])[0]


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Random states of Python, NumPy and torch's CPU generator as plain values, plus the
    generator of ``device`` when it is a CUDA device (the one this process uses, not every
    visible GPU: a run resumed on a machine with fewer GPUs must still find its own)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` captured; the CUDA state goes to ``device`` (if it is a
    CUDA device). Checkpoints of older versions hold ``"cuda"``, a list with one state per
    visible GPU: there the entry of ``device``'s index is used, if it exists."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device is None or device.type != "cuda":
        return
    saved = state.get("cuda_device")
    if saved is None and state.get("cuda"):
        index = device.index or 0
        saved = state["cuda"][index] if index < len(state["cuda"]) else None
    if saved is not None:
        torch.cuda.set_rng_state(saved, device)


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
