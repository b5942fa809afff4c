"""The engine trains any network, and stops on a budget of time or images (issue 11)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, Dataset

from haformer.checkpoint import CheckpointError, load_checkpoint
from haformer.data import NUM_CLASSES
from haformer.errors import ConfigError, UsageError
from haformer.evaluate import evaluate
from haformer.model import create_model, load_model
from haformer.schedule import BudgetPolyLR
from haformer.train import TrainConfig, train


def config(root: Path, out: Path, **changes) -> TrainConfig:
    """64x64 crops, batch 2 on camvid-mini (8 train images: 4 steps per epoch), no warm-up."""
    settings = dict(
        data_root=str(root), out=str(out), model="haformer_b0", epochs=10, batch_size=2,
        crop=(64, 64), base_size=(64, 64), eval_size=(64, 64), warmup_epochs=0, workers=0,
        seed=1, progress=False,
    )  # fmt: skip
    settings.update(changes)
    return TrainConfig(**settings)


class Tiny(nn.Module):
    """A reader's own network: one 3x3 conv, sides must be multiples of 32."""

    input_multiple = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0, x.shape
        return self.conv(x)


def test_an_image_budget_ends_the_run_with_lr_zero_and_a_validation(
    camvid_mini: Path, tmp_path: Path
) -> None:
    result = train(config(camvid_mini, tmp_path, max_images=12))  # 6 steps: 1.5 epochs
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert [row["images_seen"] for row in history] == [8, 12]
    assert [row["step"] for row in history] == [4, 6]
    # poly decay over the images budget: after 8 of 12 images lr = 1e-3 (1 - 8/12)^0.9
    assert history[0]["lr"] == pytest.approx(1e-3 * (1 - 8 / 12) ** 0.9)
    assert history[-1]["lr"] == 0.0
    assert "val_miou" in history[-1] and "val_miou" not in history[0]  # val_every 10, and the end
    assert history[0]["train_seconds"] < history[1]["train_seconds"]
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["finished"] and state["images_seen"] == 12 and state["epoch"] == 2
    again = train(config(camvid_mini, tmp_path, max_images=12, resume=True))
    assert again["history"] == history  # finished: nothing left to train


def test_a_time_budget_stops_training_once_spent(camvid_mini: Path, tmp_path: Path) -> None:
    minutes = 0.03  # 1.8 s of training steps; validation time does not count
    result = train(config(camvid_mini, tmp_path, max_minutes=minutes, val_every=1))
    last = result["history"][-1]
    assert last["train_seconds"] >= 60 * minutes
    assert last["step"] < 10 * 4  # well before the 10 epochs
    assert last["lr"] == 0.0 and "val_miou" in last
    assert (tmp_path / "last.pt").is_file() and load_checkpoint(tmp_path / "last.pt")["finished"]


def test_budget_schedule_is_polynomial_lr_when_the_budget_is_steps() -> None:
    def lrs(build) -> list[float]:
        optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
        scheduler, counter = build(optimizer)
        seen = []
        for _ in range(20):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            counter[0] += 1
            scheduler.step()
        return seen

    def budget(optimizer):
        counter = [0]
        return BudgetPolyLR(optimizer, lambda: counter[0] / 20, 4, 0.1, 0.9), counter

    def classic(optimizer):
        ramp = lr_scheduler.LinearLR(optimizer, 0.1, 1.0, total_iters=4)
        poly = lr_scheduler.PolynomialLR(optimizer, total_iters=16, power=0.9)
        return lr_scheduler.SequentialLR(optimizer, [ramp, poly], milestones=[4]), [0]

    assert lrs(budget) == pytest.approx(lrs(classic), rel=1e-9, abs=1e-12)


def test_a_custom_network_trains_resumes_and_gets_fitting_crops(
    camvid_mini: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = config(camvid_mini, tmp_path, crop=(72, 100), epochs=2, val_every=1)
    result = train(cfg, model=Tiny())
    assert "divisible by 32: training on 64x96 crops instead of 72x100" in capsys.readouterr().out
    assert [row["epoch"] for row in result["history"]] == [1, 2]
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["config"]["model"] == "custom:Tiny"
    with pytest.raises(CheckpointError, match="build that network yourself"):
        load_model(tmp_path / "last.pt")
    again = train(
        config(camvid_mini, tmp_path, crop=(72, 100), epochs=2, resume=True), model=Tiny()
    )
    assert again["history"] == result["history"]
    with pytest.raises(ConfigError, match="model: 'custom:Tiny' -> 'haformer_b0'"):
        train(config(camvid_mini, tmp_path, crop=(72, 100), epochs=2, resume=True))


def test_a_peer_trains_by_name(camvid_mini: Path, tmp_path: Path) -> None:
    cfg = config(camvid_mini, tmp_path, model="lraspp_mobilenet_v3_large", max_images=4)
    result = train(cfg)
    assert result["history"][-1]["images_seen"] == 4
    model, saved = load_model(tmp_path / "last.pt")
    assert saved["model"] == "lraspp_mobilenet_v3_large"
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, NUM_CLASSES, 64, 64)


def test_a_peer_that_needs_multiples_of_32_gets_such_crops() -> None:
    pytest.importorskip("segmentation_models_pytorch")
    cfg = TrainConfig(model="fpn_mobilenet_v2")  # the default 360x480 crop
    assert cfg.crop == (352, 480) and "divisible by 32" in cfg.notes[0]


class Pairs(Dataset):
    """``n`` random images of one dtype with random masks; ``nan_at``: that image is all NaN."""

    def __init__(self, n: int, dtype: torch.dtype, nan_at: int | None = None) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = (torch.rand(n, 3, 64, 64, generator=generator) * 255).to(dtype)
        self.masks = torch.randint(0, NUM_CLASSES, (n, 64, 64), generator=generator)
        if nan_at is not None:
            self.images[nan_at] = float("nan")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i]


def own_data(out: Path, **changes) -> TrainConfig:
    settings = dict(out=str(out), model="haformer_b0", epochs=1, batch_size=2, crop=(64, 64),
                    val_split=None, class_weights="none", workers=0, progress=False)  # fmt: skip
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_float64_and_float16_images_are_trained_in_float32(tmp_path: Path, dtype) -> None:
    result = train(own_data(tmp_path), Pairs(4, dtype))
    assert math.isfinite(result["history"][0]["train_loss"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (Pairs(4, torch.uint8), "must be float tensors"),
        (Pairs(4, torch.float32, nan_at=0), "NaN or infinite values"),
        (Pairs(4, torch.float32, nan_at=3), "training loss was NaN or infinite"),
    ],
)
def test_data_the_model_cannot_learn_from_is_refused(tmp_path: Path, data, message) -> None:
    with pytest.raises(UsageError, match=message):
        train(own_data(tmp_path), data)
    assert not (tmp_path / "last.pt").exists()  # nothing saved from NaN weights


def test_evaluate_refuses_non_finite_logits() -> None:
    data = Pairs(2, torch.float32, nan_at=1)
    loader = DataLoader(data, batch_size=1)
    with pytest.raises(UsageError, match="NaN or infinite logits for 1 of 2 batches"):
        evaluate(create_model("haformer_b0"), loader, "cpu")
