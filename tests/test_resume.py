"""Resume paths: leftovers, curves, a mirror folder, worker processes, and the paths only a GPU
machine takes (AMP scaler, several processes, device syncs), simulated on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import haformer.train as train_module
from haformer.checkpoint import load_checkpoint
from haformer.distributed import unused_parameters
from haformer.metrics import SegMetrics, confusion_matrix
from haformer.model import create_model
from haformer.schedule import build_optimizer, build_scheduler
from haformer.state import Progress, TrainState
from haformer.train import TrainConfig, train
from haformer.utils import accumulate

TIMING = ("images_per_s", "epoch_s", "train_seconds")


def config(root: Path, out: Path, **changes) -> TrainConfig:
    settings = dict(
        data_root=str(root), out=str(out), model="haformer_b0", epochs=2, batch_size=2,
        crop=(64, 64), base_size=(64, 64), eval_size=(64, 64), val_every=1, warmup_epochs=0.5,
        workers=0, seed=5, deterministic=True, progress=False,
    )  # fmt: skip
    settings.update(changes)
    return TrainConfig(**settings)


class _Killed(Exception):
    """A SIGKILL or a preempted machine in the middle of an epoch."""


def kill_after(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    """The training step after ``steps`` steps raises :class:`_Killed`."""
    real = train_module.build_loss
    left = [steps]

    def loss(*args, **kwargs):
        inner = real(*args, **kwargs)

        def forward(logits, target):
            if torch.is_grad_enabled():
                if left[0] == 0:
                    raise _Killed
                left[0] -= 1
            return inner(logits, target)

        wrapper = nn.Module()
        wrapper.forward = forward
        return wrapper

    monkeypatch.setattr(train_module, "build_loss", loss)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def test_leftovers_go_and_missing_curves_come_back(camvid_mini: Path, tmp_path: Path, capsys):
    tmp_path.joinpath(".last.pt.x1y2.tmp").write_bytes(b"left by a killed write")
    train(config(camvid_mini, tmp_path, max_images=2))
    assert "removed .last.pt.x1y2.tmp" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "curves.png").unlink()
    train(config(camvid_mini, tmp_path, max_images=2, resume=True))
    assert (tmp_path / "curves.png").is_file()


def test_worker_processes_resume_exactly(
    camvid_mini: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Persistent workers keep their random streams between epochs; each epoch reseeds them,
    # so a run resumed with fresh workers draws the augmentations an uninterrupted run draws.
    straight = train(config(camvid_mini, tmp_path / "straight", workers=1))
    kill_after(monkeypatch, 5)  # in epoch 2 (4 steps per epoch)
    with pytest.raises(_Killed):
        train(config(camvid_mini, tmp_path / "killed", workers=1))
    monkeypatch.undo()
    resumed = train(config(camvid_mini, tmp_path / "killed", workers=1, resume=True))
    assert without_timing(resumed["history"]) == without_timing(straight["history"])
    a, b = load_checkpoint(resumed["last"])["model"], load_checkpoint(straight["last"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_mirror_copy_is_resumed_when_it_is_newer(
    camvid_mini: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out, mirror = tmp_path / "local", tmp_path / "drive"
    kill_after(monkeypatch, 5)
    with pytest.raises(_Killed):
        train(config(camvid_mini, out, mirror=str(mirror), mirror_every=1))
    monkeypatch.undo()
    assert load_checkpoint(mirror / "last.pt")["epoch"] == 1
    lines = capsys.readouterr().out
    assert "elapsed " in lines and "ETA " in lines  # the epoch line
    for name in ("last.pt", "history.csv", "curves.png", "best.pt"):
        (out / name).unlink()  # a new Colab machine: the local disk is empty
    result = train(config(camvid_mini, out, mirror=str(mirror), mirror_every=1, resume=True))
    assert "resuming from the mirror copy" in capsys.readouterr().out
    assert [row["epoch"] for row in result["history"]] == [1, 2]
    assert load_checkpoint(mirror / "last.pt")["epoch"] == 2  # copied again at the end
    # a local copy that is behind the mirror is not the one resumed
    (out / "last.pt").write_bytes((mirror / "last.pt").read_bytes())
    behind = load_checkpoint(out / "last.pt")
    behind["step"] = 1
    torch.save(behind, out / "last.pt")
    train(config(camvid_mini, out, mirror=str(mirror), mirror_every=1, resume=True))
    assert "resuming from the mirror copy" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["step"] == 8


def test_resuming_with_amp_after_a_run_without_starts_the_scaler_fresh() -> None:
    # On CPU, fp16 AMP (the only kind with a GradScaler) cannot run; the state object can.
    cfg = TrainConfig(epochs=2)
    model = nn.Conv2d(3, 11, 1)
    optimizer = build_optimizer(cfg, model)

    def state(enabled: bool) -> TrainState:
        return TrainState(
            model, model, optimizer, build_scheduler(cfg, optimizer, 4),
            torch.amp.GradScaler("cpu", enabled=enabled), nn.CrossEntropyLoss(),
        )  # fmt: skip

    config = {"epochs": 2, **{k: None for k in ("model", "model_kwargs", "num_classes")}}
    config.update(optimizer="adam", train_split="train", max_minutes=None, max_images=None)
    saved = state(False).checkpoint(config, 4, [])  # AMP off: the scaler's state is {}
    assert saved["scaler"] == {}
    logged: list[str] = []
    with_amp = state(True)
    with_amp.load(saved, config, 4, 2, Path("last.pt"), logged.append)  # used to raise
    assert with_amp.scaler.is_enabled() and "starts fresh" in logged[0]
    without = state(False)
    without.load(state(True).checkpoint(config, 4, []), config, 4, 2, Path("last.pt"), print)
    assert not without.scaler.is_enabled()
    assert with_amp.progress == Progress()


def test_parameters_ddp_cannot_train_are_found_before_training() -> None:
    seed = create_model("hapeformer_seed", backbone="efficientvit_b1")
    unused = unused_parameters(seed, (64, 64))
    assert {"down3.conv.weight", "down4.conv.weight"} <= set(unused)
    assert any(".fc." in name for name in unused)  # the seed's PEM fc layers
    running_mean = seed.cnn_stem.bn.running_mean.clone()
    assert unused_parameters(create_model("haformer_b0"), (64, 64)) == []
    assert torch.equal(seed.cnn_stem.bn.running_mean, running_mean)  # the model is untouched


def test_the_seed_under_torchrun_is_refused_in_one_line(camvid_mini: Path, tmp_path: Path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "haformer", "train", "--data-root", str(camvid_mini), "--model", "hapeformer_seed",
        "--model-kwargs", '{"backbone": "efficientvit_b1"}', "--crop", "64x64",
        "--batch-size", "2", "--workers", "0", "--device", "cpu", "--out", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    refused = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert refused and "hapeformer_seed has parameters no forward pass uses" in refused[0]
    assert "DistributedDataParallel cannot train" in refused[0]
    assert "training " not in done.stdout and not (tmp_path / "last.pt").exists()


class _SyncCounter(TorchDispatchMode):
    """Counts the ops that make the host wait for the device (values read back to Python,
    or outputs whose size depends on the data)."""

    SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "item")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(name in func.__name__ for name in self.SYNCING):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_training_metrics_never_wait_for_the_device() -> None:
    logits = torch.randn(2, 11, 16, 16)
    target = torch.randint(0, 12, (2, 16, 16))
    metrics = SegMetrics()
    with _SyncCounter() as counter:
        metrics.update(logits, target)
        loss = torch.tensor(0.5)
        totals = torch.zeros(3, dtype=torch.float64)
        accumulate(totals, loss, loss.new_ones(()), ~torch.isfinite(loss))  # as each step does
    assert counter.count == 0 and totals.tolist() == [0.5, 1.0, 0.0]
    with _SyncCounter() as counter:  # what each step paid before: a check and a bincount
        confusion_matrix(logits.argmax(1), target, 11, 11)
    assert counter.count >= 1
    expected = confusion_matrix(logits.argmax(1), target, 11, 11)
    assert torch.equal(metrics.matrix, expected)
    assert metrics.compute()["pixels"] == int((target != 11).sum())
