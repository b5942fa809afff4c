"""The shared helpers: device choice, autocast dtype, accumulators, eval mode, sizes, folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from haformer.errors import ConfigError, EnvironmentFailure, UsageError
from haformer.utils import (
    accumulator_device,
    amp_dtype,
    default_device,
    ensure_dir,
    eval_mode,
    parse_size,
    resolve_device,
)


def test_resolve_device_checks_what_exists() -> None:
    assert resolve_device(None) == default_device()
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match="cuda"):
        resolve_device(f"cuda:{count}")  # one past the last GPU (the first when there is none)


def test_autocast_dtype_and_accumulators() -> None:
    assert amp_dtype(torch.device("cuda", 0)) == torch.float16
    assert amp_dtype(torch.device("cpu")) == torch.bfloat16
    # Apple MPS has no float64: its running sums live on the CPU, everyone else's on the device
    assert accumulator_device(torch.device("mps")) == torch.device("cpu")
    assert accumulator_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


def test_eval_mode_restores_the_flag_even_after_an_error() -> None:
    model = nn.Dropout().train()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError
    assert model.training


def test_parse_size() -> None:
    assert parse_size("360x480") == (360, 480) and parse_size("64") == (64, 64)
    with pytest.raises(ConfigError, match="HEIGHTxWIDTH"):
        parse_size("360by480")


def test_ensure_dir_tells_a_file_from_an_unwritable_place(tmp_path: Path) -> None:
    assert ensure_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="must be a folder"):
        ensure_dir(tmp_path / "file" / "run", "--out")
    with pytest.raises(EnvironmentFailure, match="cannot write /sys/haformer-test"):
        ensure_dir("/sys/haformer-test")  # sysfs refuses new folders, even to root
