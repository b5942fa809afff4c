"""The training engine on CPU: overfitting, exact resumption, interruption, schedule, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset
from torchvision.transforms import v2

import haformer.train as train_module
from haformer.checkpoint import load_checkpoint
from haformer.cli import main as _cli
from haformer.data import NUM_CLASSES, CamVid, DownloadError, class_weights, eval_transforms
from haformer.errors import ConfigError
from haformer.loaders import class_weights_of
from haformer.train import TrainConfig, build_optimizer, build_scheduler, train

# timings that legitimately differ between two identical runs
TIMING = ("images_per_s", "epoch_s", "train_seconds")


def tiny_config(root: Path, out: Path, **changes) -> TrainConfig:
    """haformer_b0 on camvid-mini: 64x96 crops, batch 2 (4 steps/epoch), 90x120 validation."""
    settings = dict(
        data_root=str(root),
        out=str(out),
        model="haformer_b0",
        epochs=2,
        batch_size=2,
        crop=(64, 96),
        eval_size=(90, 120),
        val_every=1,
        warmup_epochs=0.5,
        workers=0,
        seed=3,
        deterministic=True,
        progress=False,
    )
    settings.update(changes)
    return TrainConfig(**settings)


class _Killed(Exception):
    """Stands for SIGKILL / a preempted machine in the middle of an epoch."""


class _CrashAfter(nn.Module):
    """Wraps the loss; the training step after ``steps`` steps raises :class:`_Killed`."""

    def __init__(self, loss: nn.Module, steps: int) -> None:
        super().__init__()
        self.loss, self.steps = loss, steps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training steps only, not validation
            if self.steps == 0:
                raise _Killed
            self.steps -= 1
        return self.loss(logits, target)


def _kill_after(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    real = train_module.build_loss
    monkeypatch.setattr(
        train_module, "build_loss", lambda *a, **k: _CrashAfter(real(*a, **k), steps)
    )


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.fixture(scope="module")
def straight_run(camvid_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two epochs in one go: the reference the interrupted runs must reproduce exactly."""
    return train(tiny_config(camvid_mini, tmp_path_factory.mktemp("straight")))


def test_straight_run_writes_everything(straight_run: dict) -> None:
    out = straight_run["out"]
    assert {p.name for p in out.iterdir()} == {"last.pt", "best.pt", "history.csv", "curves.png"}
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "train_miou", "val_miou", "val_iou_Bicyclist", "lr"} <= set(rows[0])
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 8 and state["config"]["model"] == "haformer_b0"
    best = load_checkpoint(out / "best.pt")
    assert (
        best["best_miou"]
        == straight_run["best_miou"]
        == max(row["val_miou"] for row in straight_run["history"])
    )
    assert straight_run["history"][-1]["lr"] == 0.0  # poly decay ends at zero


def test_one_epoch_plus_resumed_epoch_equals_two_epochs(
    straight_run: dict,
    camvid_mini: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    cfg = tiny_config(camvid_mini, tmp_path)
    _kill_after(monkeypatch, steps=4)  # dies on the first step of epoch 2, after last.pt of 1
    with pytest.raises(_Killed):
        train(cfg)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    monkeypatch.undo()
    resumed = train(tiny_config(camvid_mini, tmp_path, resume=True))
    assert "resumed from" in capsys.readouterr().out
    _assert_same_run(resumed, straight_run)


def test_run_killed_mid_epoch_resumes_and_finishes(
    straight_run: dict, camvid_mini: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _kill_after(monkeypatch, steps=6)  # 4 steps of epoch 1, then 2 of the 4 of epoch 2
    with pytest.raises(_Killed):
        train(tiny_config(camvid_mini, tmp_path))
    monkeypatch.undo()
    resumed = train(tiny_config(camvid_mini, tmp_path, resume=True))
    assert [row["epoch"] for row in resumed["history"]] == [1, 2]
    _assert_same_run(resumed, straight_run)


def _assert_same_run(a: dict, b: dict) -> None:
    """Same weights, optimizer state and history (timings aside), bit for bit."""
    sa, sb = load_checkpoint(a["last"]), load_checkpoint(b["last"])
    for key, value in sb["model"].items():
        assert torch.equal(sa["model"][key], value), key
    for pid, slots in sb["optimizer"]["state"].items():
        for name, value in slots.items():
            assert torch.equal(sa["optimizer"]["state"][pid][name], value), (pid, name)
    assert _without_timing(a["history"]) == _without_timing(b["history"])


def test_overfits_two_images(camvid_mini: Path, tmp_path: Path) -> None:
    # Two fixed train images (no augmentation) at 96x128, each seen 4 times per epoch.
    # Threshold: predicting the commonest class everywhere gives that class an IoU of at most
    # its pixel share (Road, about 0.35 here) and 0 to the other 9-10 classes present, so
    # mIoU < 0.05; the untrained model scores about 0.04. Train mIoU > 0.30 means most
    # classes are segmented well: the network, loss, optimizer and metric work together.
    # (Measured: about 0.45 after these 24 steps; the loss falls from about 2.6 to 0.35.)
    fixed = v2.Compose([v2.Resize((96, 128)), eval_transforms()])
    two = Subset(CamVid(camvid_mini, "train", transforms=fixed), [0, 5] * 4)
    cfg = TrainConfig(
        out=str(tmp_path),
        model="haformer_b0",
        epochs=6,
        batch_size=2,
        crop=(96, 128),
        lr=3e-3,
        warmup_epochs=0,
        class_weights="none",
        val_split=None,
        workers=0,
        progress=False,
    )
    history = train(cfg, two)["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["train_miou"] > 0.30
    assert not (tmp_path / "best.pt").exists()  # no validation, no best.pt


def test_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = TrainConfig(epochs=10, warmup_epochs=2, lr=1e-3, warmup_start=0.01)
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[10] == pytest.approx(1e-3)  # end of the 10 warm-up steps
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # rising
    assert all(a > b for a, b in zip(lrs[10:49], lrs[11:50], strict=True))  # falling
    assert lrs[11] / lrs[10] == pytest.approx((1 - 1 / 40) ** 0.9)
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_refuses_to_clobber_or_resume_with_other_settings(
    straight_run: dict, camvid_mini: Path
) -> None:
    out = straight_run["out"]
    with pytest.raises(ValueError, match="--resume"):
        train(tiny_config(camvid_mini, out))
    with pytest.raises(ValueError, match="epochs: 2 -> 3"):
        train(tiny_config(camvid_mini, out, epochs=3, resume=True))


def test_config_checks() -> None:
    seed = TrainConfig(model="hapeformer_seed", crop=(360, 480))  # sides must divide by 32
    assert seed.crop == (352, 480) and "divisible by 32" in seed.notes[0]
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lamb")
    assert TrainConfig(crop="180x240", scale="0.5,1.5", val_split="none").val_split is None


def test_cli_train_and_resume(camvid_mini: Path, tmp_path: Path, capsys) -> None:
    common = ["train", "--data-root", str(camvid_mini), "--model", "haformer_b0",
              "--crop", "64x96", "--batch-size", "4", "--epochs", "1", "--workers", "0",
              "--eval-size", "90x120", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert _cli(common) == 0
    assert "best val mIoU" in capsys.readouterr().out
    assert _cli([*common, "--resume"]) == 0  # finished already: resumes, trains nothing
    assert "1 of 1 epochs done" in capsys.readouterr().out


def test_cli_missing_data_says_how_to_download(tmp_path: Path, capsys) -> None:
    code = _cli(["train", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert code == 2
    assert "python -m haformer download" in capsys.readouterr().err


def test_options_run_together(camvid_mini: Path, tmp_path: Path) -> None:
    # bf16 autocast on CPU, channels_last, clipping, OHEM, SGD, median weights, 2 workers
    cfg = tiny_config(
        camvid_mini, tmp_path, epochs=1, amp=True, channels_last=True, clip_grad=1.0,
        loss="ohem", ohem_min_kept=1000, optimizer="sgd", lr=0.01, class_weights="median",
        workers=2, color_jitter=True, deterministic=False,
    )  # fmt: skip
    result = train(cfg)
    row = result["history"][0]
    assert torch.isfinite(torch.tensor([row["train_loss"], row["val_loss"]])).all()
    assert 0.0 <= result["final"]["miou"] <= 1.0


def test_cli_download_flag_fetches_into_the_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    calls = []

    def fake_download(root):
        calls.append(root)
        raise DownloadError("no network here")

    monkeypatch.setattr(train_module, "download_camvid", fake_download)
    root = str(tmp_path / "camvid")
    argv = ["train", "--data-root", root, "--out", str(tmp_path), "--download"]
    assert _cli(argv) == 1  # a network failure: exit 1
    assert calls == [root]
    assert "no network here" in capsys.readouterr().err


def test_class_weights_come_from_the_training_set_given(camvid_mini: Path) -> None:
    split = CamVid(camvid_mini, "train")
    weights = class_weights_of(Subset(split, [3]), "enet", NUM_CLASSES)
    pixels = np.bincount(split.read_mask(3).ravel(), minlength=NUM_CLASSES + 1)[:NUM_CLASSES]
    expected = 1.0 / np.log(1.10 + pixels / pixels.sum())
    assert torch.allclose(weights, torch.tensor(expected, dtype=torch.float32))
    assert not torch.allclose(weights, class_weights(split, "enet"))  # not the whole split
    images = TensorDataset(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ConfigError, match="numbers or 'none'"):
        class_weights_of(images, "enet", NUM_CLASSES)
