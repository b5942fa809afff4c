"""evaluate(), checkpoint rebuilding, the evaluate/predict commands and the confusion plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from haformer.checkpoint import save_checkpoint
from haformer.cli import main as _cli
from haformer.data import NUM_CLASSES
from haformer.evaluate import evaluate, load_model, plot_confusion, segment
from haformer.metrics import confusion_matrix, metrics_from_confusion
from haformer.model import create_model
from haformer.train import TrainConfig, config_dict


class _Oracle(nn.Module):
    """Returns fixed logits whatever the input: one-hot of ``pred`` (B, H, W)."""

    def __init__(self, pred: torch.Tensor, classes: int = 3) -> None:
        super().__init__()
        self.register_buffer("logits", nn.functional.one_hot(pred, classes).permute(0, 3, 1, 2))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: x.shape[0]].float() * self.scale


class _Needs32(nn.Module):
    """Refuses sides that are not multiples of 32 (like the seed model); logits = 11 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0, x.shape
        return self.conv(x)


def test_evaluate_equals_hand_built_confusion() -> None:
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
    target = torch.tensor([[[0, 0, 1], [1, 2, 3]]])
    loader = [(torch.zeros(1, 3, 2, 3), target)] * 2
    result = evaluate(_Oracle(pred), loader, "cpu", num_classes=3, ignore_index=3)
    expected = metrics_from_confusion(2 * confusion_matrix(pred, target, 3, 3))
    assert result["miou"] == pytest.approx(1 / 3) == pytest.approx(expected["miou"])
    assert result["confusion"] == [[2, 2, 0], [0, 4, 0], [2, 0, 0]]
    assert result["iou"] == pytest.approx(expected["iou"])


def test_evaluate_reports_the_loss_and_restores_train_mode() -> None:
    model = _Oracle(torch.zeros(1, 2, 2, dtype=torch.long)).train()
    loader = [(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))]
    result = evaluate(model, loader, criterion=nn.CrossEntropyLoss(), num_classes=3)
    logits = torch.tensor([1.0, 0.0, 0.0])
    assert result["loss"] == pytest.approx(float(-logits.log_softmax(0)[0]))
    assert model.training


def test_segment_pads_and_resizes_back() -> None:
    model = _Needs32()
    x = torch.randn(2, 3, 45, 70)
    assert segment(model, x, multiple=32).shape == (2, NUM_CLASSES, 45, 70)
    assert segment(model, x, multiple=32, size=(64, 96)).shape == (2, NUM_CLASSES, 45, 70)
    with pytest.raises(AssertionError):
        segment(model, x)


def test_confusion_plot_normalises_rows() -> None:
    fig = plot_confusion([[3, 1], [0, 0]], class_names=("a", "b"))
    shown = fig.axes[0].images[0].get_array()
    assert np.allclose(shown, [[0.75, 0.25], [0.0, 0.0]])  # absent class: empty row, no NaN


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained haformer_b0 saved the way `train` saves best.pt."""
    torch.manual_seed(0)
    model = create_model("haformer_b0", num_classes=NUM_CLASSES)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    config = config_dict(TrainConfig(model="haformer_b0", eval_size=(90, 120)))
    save_checkpoint(path, {"model": model.state_dict(), "config": config, "epoch": 1})
    return path


def test_load_model_rebuilds_the_network(checkpoint: Path, tmp_path: Path) -> None:
    model, config = load_model(checkpoint)
    assert config["model"] == "haformer_b0" and not model.training
    save_checkpoint(tmp_path / "foreign.pt", {"state_dict": {}})
    with pytest.raises(ValueError, match="not a haformer training checkpoint"):
        load_model(tmp_path / "foreign.pt")


def test_evaluate_cli_json(checkpoint: Path, camvid_mini: Path, capsys) -> None:
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(camvid_mini)]
    assert _cli([*argv, "--split", "test", "--json", "--workers", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["iou"]) == NUM_CLASSES
    assert all(v is None or 0.0 <= v <= 1.0 for v in out["iou"])
    assert 0.0 <= out["miou"] <= 1.0 and 0.0 <= out["pixel_acc"] <= 1.0
    assert out["classes"][0] == "Sky" and out["split"] == "test"


def test_evaluate_cli_table_and_errors(checkpoint: Path, camvid_mini: Path, capsys) -> None:
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(camvid_mini)]
    assert _cli([*argv, "--split", "val", "--workers", "0"]) == 0
    table = capsys.readouterr().out
    assert "Bicyclist" in table and "mIoU" in table
    assert _cli(["evaluate", "--checkpoint", str(checkpoint.with_name("absent.pt"))]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_predict_writes_overlays(checkpoint: Path, camvid_mini: Path, tmp_path: Path) -> None:
    image = camvid_mini / "test" / "Seq05VD_f00720.png"
    assert (
        _cli(["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(tmp_path)]) == 0
    )
    with Image.open(tmp_path / "Seq05VD_f00720_overlay.png") as written:
        assert written.size == (480, 360) and written.mode == "RGB"
