"""Two CPU processes on the gloo backend, launched the way a reader launches several GPUs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from haformer.checkpoint import load_checkpoint
from haformer.data import CamVid, eval_transforms
from haformer.evaluate import evaluate, load_model


@pytest.fixture(scope="module")
def ddp_run(camvid_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`torchrun --nproc_per_node=2 -m haformer train` for 2 tiny epochs on camvid-mini."""
    out = tmp_path_factory.mktemp("ddp")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "haformer", "train", "--data-root", str(camvid_mini), "--model", "haformer_b0",
        "--crop", "64x96", "--batch-size", "2", "--epochs", "2", "--val-every", "1",
        "--val-batch-size", "1", "--eval-size", "90x120", "--workers", "0", "--device", "cpu",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def test_rank0_alone_logs_and_writes(ddp_run: tuple[Path, str]) -> None:
    out, log = ddp_run
    assert {p.name for p in out.iterdir()} == {"last.pt", "best.pt", "history.csv", "curves.png"}
    assert log.count("epoch 2/2") == 1  # one epoch line, from rank 0 only
    assert "2 process(es)" in log
    state = load_checkpoint(out / "last.pt")
    # 8 train images, 2 processes x batch 2 -> 2 steps per epoch and process
    assert state["steps_per_epoch"] == 2 and state["step"] == 4
    assert len(state["rng"]) == 2  # each rank's random state, to resume its own stream


def test_reduced_metrics_equal_a_single_process_evaluation(
    ddp_run: tuple[Path, str], camvid_mini: Path
) -> None:
    # Each rank scored every other val image and the confusion matrices were summed; scoring
    # the saved weights on all val images in one process must give exactly the same numbers.
    out, _ = ddp_run
    with open(out / "history.csv") as f:
        last_row = list(csv.DictReader(f))[-1]
    model, config = load_model(out / "last.pt")
    val = DataLoader(CamVid(camvid_mini, "val", transforms=eval_transforms()), batch_size=1)
    single = evaluate(model, val, "cpu", size=tuple(config["eval_size"]))
    assert float(last_row["val_miou"]) == single["miou"]
    assert float(last_row["val_pixel_acc"]) == single["pixel_acc"]
