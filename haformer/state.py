"""The state of a training run, and the one place where ``last.pt`` is written and read.

:class:`TrainState` bundles what a run changes as it trains (the model, its DDP wrapper, the
optimizer, the learning-rate schedule, the gradient scaler, the loss, the progress counters
and the history) and saves or restores all of it. :class:`RunFolder` owns the files of a run
folder (``last.pt``, ``best.pt``, ``history.csv``, ``curves.png``): it removes what a killed
process left behind, copies the run to a mirror folder every few epochs, and on resume starts
from whichever copy, local or mirror, has trained further.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from haformer.checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from haformer.data import CLASSES
from haformer.errors import ConfigError
from haformer.history import save_curves, write_history
from haformer.model import load_weights
from haformer.utils import ensure_dir

RESUME_MUST_MATCH = (
    "model", "model_kwargs", "num_classes", "epochs", "optimizer", "train_split",
    "max_minutes", "max_images",
)  # fmt: skip
"""Settings that fix the number and meaning of the steps; a resumed run must keep them."""

RUN_FILES = ("last.pt", "best.pt", "history.csv", "curves.png")


@dataclass
class Progress:
    """How far a run has come (saved in ``last.pt``, one value per key)."""

    epoch: int = 0
    """Epochs done (the last one may have been cut short by a budget)."""
    step: int = 0
    images_seen: int = 0
    """Training images of all processes together."""
    train_seconds: float = 0.0
    """Wall-clock time of the training passes (what ``max_minutes`` limits)."""
    wall_seconds: float = 0.0
    """Wall-clock time of the whole run: training, validation, checkpoints."""
    best_miou: float | None = None
    best_epoch: int | None = None
    finished: bool = False
    """True once the run has used its epochs or its budget: resuming it does nothing."""


@dataclass
class TrainState:
    """Everything a run changes while it trains, saved and restored as one."""

    model: nn.Module
    net: nn.Module
    """What the loop calls: ``model`` itself, or its DistributedDataParallel wrapper."""
    optimizer: torch.optim.Optimizer
    scheduler: lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    progress: Progress = field(default_factory=Progress)
    history: list[dict[str, Any]] = field(default_factory=list)

    def checkpoint(
        self, config: dict[str, Any], steps_per_epoch: int, rng: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The content of ``last.pt``: weights, optimizer, schedule, scaler, progress (its
        fields at the top level), history, config, class names and random states."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            **dataclasses.asdict(self.progress),
            "steps_per_epoch": steps_per_epoch,
            "history": self.history,
            "config": config,
            "classes": list(CLASSES),
            "rng": rng,
        }

    def load(
        self,
        state: dict[str, Any],
        config: dict[str, Any],
        steps_per_epoch: int,
        images_per_step: int,
        source: Path,
        log: Callable[[str], None],
    ) -> None:
        """Put a ``last.pt`` dict back into every object (after checking it fits this run).

        Raises ConfigError when the run was started with settings that change the steps,
        CheckpointError when the weights do not fit the model.
        """
        _check_resumable(state, config, steps_per_epoch, source)
        load_weights(self.model, state["model"], str(source))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        elif self.scaler.is_enabled():
            log("the run being resumed trained without fp16 AMP: its gradient scaler starts fresh")
        known = {f.name for f in dataclasses.fields(Progress)}
        saved = {k: state[k] for k in known if k in state}
        saved.setdefault("images_seen", state["step"] * images_per_step)  # older checkpoints
        history = list(state["history"])
        saved.setdefault("train_seconds", sum(row.get("epoch_s", 0.0) for row in history))
        saved.setdefault("finished", state["epoch"] >= config["epochs"])
        for name, value in saved.items():  # in place: the schedule reads this object
            setattr(self.progress, name, value)
        self.history = history


def _check_resumable(
    state: dict[str, Any], config: dict[str, Any], steps_per_epoch: int, path: Path
) -> None:
    saved = state.get("config", {})
    differ = [
        f"{k}: {saved.get(k)!r} -> {config[k]!r}"
        for k in RESUME_MUST_MATCH
        if saved.get(k) != config[k]
    ]
    if state.get("steps_per_epoch") != steps_per_epoch:
        differ.append(f"steps per epoch: {state.get('steps_per_epoch')} -> {steps_per_epoch}")
    if differ:
        raise ConfigError(
            f"cannot resume {path}: the run was started with other settings ({'; '.join(differ)}). "
            "Resume with the original settings (batch size, number of processes, ...) or start "
            "a new run in another --out"
        )


class RunFolder:
    """The files of a run in ``out`` (and their copy in ``mirror``, if one is given)."""

    def __init__(self, out: str | os.PathLike[str], mirror: str | os.PathLike[str] | None) -> None:
        self.out = Path(out)
        self.mirror = None if mirror is None else Path(mirror)
        self.last = self.out / "last.pt"
        self.best = self.out / "best.pt"

    def prepare(self) -> list[Path]:
        """Create the folders; delete temporary files a killed process left; return those."""
        ensure_dir(self.out, "--out")
        if self.mirror is not None:
            if self.mirror.resolve() == self.out.resolve():
                raise ConfigError(f"--mirror {self.mirror} is the --out folder: name another one")
            ensure_dir(self.mirror, "--mirror")
        removed = remove_stale_temp_files(self.out, RUN_FILES)
        if self.mirror is not None:
            removed += remove_stale_temp_files(self.mirror, RUN_FILES)
        return removed

    def resume_source(self, resume: bool) -> Path | None:
        """The ``last.pt`` to resume from: the local one or the mirror's, whichever has more
        steps; None for a new run. Refuses to start over a finished or running run."""
        local = self.last if self.last.is_file() else None
        if not resume:
            if local is not None:
                raise ConfigError(
                    f"{self.out} already holds last.pt from an earlier run: pass --resume "
                    "(resume=True) to continue it, or choose another --out"
                )
            return None
        copy = None
        if self.mirror is not None and (self.mirror / "last.pt").is_file():
            copy = self.mirror / "last.pt"
        if local is None or copy is None:
            return local or copy
        return copy if _steps(copy) > _steps(local) else local

    def restore_from_mirror(self, source: Path, log: Callable[[str], None]) -> None:
        """Copy the mirror's run files into ``out`` when ``source`` is the mirror's last.pt."""
        if self.mirror is None or source.parent != self.mirror:
            return
        for name in RUN_FILES:
            if (self.mirror / name).is_file():
                _copy(self.mirror / name, self.out / name)
        log(f"resuming from the mirror copy {source} (it has trained further than {self.out})")

    def save_last(self, checkpoint: dict[str, Any]) -> None:
        """Write ``last.pt`` (the content is :meth:`TrainState.checkpoint`'s)."""
        save_checkpoint(self.last, checkpoint)

    def load_last(self, device: torch.device) -> dict[str, Any]:
        """Read ``last.pt`` (to give to :meth:`TrainState.load`), tensors on ``device``."""
        return load_checkpoint(self.last, map_location=device)

    def save_best(self, checkpoint: dict[str, Any]) -> None:
        save_checkpoint(self.best, checkpoint)

    def save_record(self, history: list[dict[str, Any]], curves: bool = True) -> None:
        """``history.csv`` and (unless ``curves`` is False) ``curves.png``."""
        write_history(history, self.out / "history.csv")
        if curves:
            save_curves(history, self.out / "curves.png")

    def curves_missing(self) -> bool:
        return not (self.out / "curves.png").is_file()

    def copy_to_mirror(self) -> None:
        """Copy every run file to the mirror (each atomically, so the mirror always holds a
        complete run, at worst an older one)."""
        if self.mirror is None:
            return
        for name in RUN_FILES:
            if (self.out / name).is_file():
                _copy(self.out / name, self.mirror / name)


def _steps(path: Path) -> int:
    try:
        return int(load_checkpoint(path).get("step", -1))
    except CheckpointError:
        return -1


def _copy(source: Path, target: Path) -> None:
    with open(source, "rb") as f:
        atomic_write(target, lambda out: shutil.copyfileobj(f, out))
