"""Atomic writes, weights_only reads (code in a pickle is refused), random-state round trips."""

from __future__ import annotations

import errno
import io
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import haformer.checkpoint as checkpoint_module
from haformer.checkpoint import (
    UnsafeCheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from haformer.errors import EnvironmentFailure
from haformer.history import write_history

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


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: the write past it fails with ENOSPC."""

    room = 1000

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            super().write(bytes(data)[: max(0, self.room - self.tell())])
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_full_disk_keeps_the_old_file_and_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    monkeypatch.setattr(checkpoint_module.os, "fdopen", lambda fd, mode: _FullDisk(fd, "wb"))
    with pytest.raises(EnvironmentFailure) as info:
        save_checkpoint(path, {"epoch": 2, "w": torch.ones(10_000)})  # ~40 kB > 1000 bytes left
    message = str(info.value)
    assert message.startswith(f"cannot write {path}: No space left on device; the disk is full")
    assert isinstance(info.value.__cause__, OSError) and info.value.exit_code == 1
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_history_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "history.csv"
    write_history([{"epoch": 1, "lr": 0.1}], path)
    monkeypatch.setattr(checkpoint_module.os, "fdopen", lambda fd, mode: _FullDisk(fd, "wb"))
    with pytest.raises(EnvironmentFailure, match="No space left"):
        write_history([{"epoch": e, "lr": 0.1, "note": "x" * 100} for e in range(50)], path)
    assert path.read_text().splitlines() == ["epoch,lr", "1,0.1"]  # the old file, not 0 bytes


def test_leftover_temp_files_are_removed(tmp_path: Path) -> None:
    left = [tmp_path / ".last.pt.k2j3.tmp", tmp_path / ".history.csv.a1b2.tmp"]
    for path in left:
        path.write_bytes(b"half")
    (tmp_path / ".notes.tmp").write_text("not ours")
    assert sorted(remove_stale_temp_files(tmp_path, ["last.pt", "history.csv"])) == sorted(left)
    assert [p.name for p in tmp_path.iterdir()] == [".notes.tmp"]


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


def test_only_the_cuda_generator_of_the_device_used_is_saved_and_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CPU simulation of a GPU machine: torch.cuda's generator functions are recorded.
    states = {0: torch.tensor([0], dtype=torch.uint8), 1: torch.tensor([1], dtype=torch.uint8)}
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states[device.index])
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda s, device: restored.append((device.index, int(s)))
    )
    saved = rng_state(torch.device("cuda", 1))  # rank 1 of a 2-GPU run
    assert int(saved["cuda_device"]) == 1 and "cuda" not in saved
    set_rng_state(saved, torch.device("cuda", 0))  # resumed on Colab's single GPU
    assert restored == [(0, 1)]  # its own stream, on the one device there is
    old = {**rng_state(), "cuda": [states[0], states[1]]}  # every visible GPU, older format
    restored.clear()
    set_rng_state(old, torch.device("cuda", 0))
    assert restored == [(0, 0)]  # only device 0's entry, no IndexError, device 1 untouched
    restored.clear()
    set_rng_state(saved, torch.device("cpu"))
    assert restored == []  # a CPU run restores no CUDA state
