"""Atomic writes, weights_only reads (code in a pickle is refused), random-state round trips."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from haformer.checkpoint import (
    UnsafeCheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

MARKER = "haformer-checkpoint-test-ran-code"


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def test_round_trip(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "config": {"crop": [360, 480]}}
    save_checkpoint(tmp_path / "a.pt", state)
    back = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(back["model"]["w"], torch.arange(4.0))
    assert back["epoch"] == 3 and back["config"] == {"crop": [360, 480]}


def test_pickled_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {}, "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / MARKER).exists()


def test_non_plain_state_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="plain Python"):
        save_checkpoint(tmp_path / "b.pt", {"rng": np.random.get_state()[1]})
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(100)})
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_rng_state_survives_a_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert first == again
