"""The command line: flags generated from TrainConfig, one name per concept, version, ablations."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from haformer.cli import PROG, build_parser
from haformer.cli import main as cli
from haformer.config import TrainConfig, command_line, config_from_args, flag_name
from haformer.model import create_model, load_model

EXTRA_TRAIN_FLAGS = {"download", "help", "debug"}
ABLATIONS = {  # book ch. 12
    "no PEM": {"use_pem": False},
    "no transformer": {"use_transformer": False},
    "seed fusion": {"fusion": "seed"},
    "add fusion": {"fusion": "add"},
}


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def test_every_train_flag_is_a_trainconfig_field(parser: argparse.ArgumentParser) -> None:
    train = subparsers(parser)["train"]
    actions = {a.dest: a for a in train._actions if a.dest not in EXTRA_TRAIN_FLAGS}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(actions) == set(fields)
    for name, action in actions.items():
        assert flag_name(name) in action.option_strings, name
        assert fields[name].metadata["help"], f"{name} has no help text"
        assert action.help and "(default: " in action.help, name
        assert action.default is argparse.SUPPRESS  # the dataclass holds the only defaults


def test_flags_parse_into_the_config_they_name(parser: argparse.ArgumentParser) -> None:
    argv = shlex.split(
        "train --root /data/camvid --model haformer_b0 --model-kwargs '{\"use_pem\": false}' "
        "--crop 180x240 --scale 0.5,1.5 --no-flip --amp --class-weights 1,2,3,4,5,6,7,8,9,10,11 "
        "--val-split none --max-images 640 --pretrained --clip-grad none"
    )
    cfg = config_from_args(parser.parse_args(argv))
    assert cfg.data_root == "/data/camvid" and cfg.model_kwargs == {"use_pem": False}
    assert cfg.crop == (180, 240) and cfg.scale == (0.5, 1.5) and cfg.flip is False
    assert cfg.amp is True and cfg.class_weights == [float(i) for i in range(1, 12)]
    assert cfg.val_split is None and cfg.max_images == 640 and cfg.backbone_pretrained
    assert cfg.clip_grad is None
    unchanged = TrainConfig()
    assert (cfg.epochs, cfg.lr, cfg.workers) == (unchanged.epochs, unchanged.lr, unchanged.workers)


def test_command_line_runs_the_same_config(parser: argparse.ArgumentParser) -> None:
    cfg = TrainConfig(
        model="haformer_b0", model_kwargs={"fusion": "add"}, crop=(96, 128), amp=False,
        flip=False, max_minutes=2.5, val_split=None, out="runs/with space", resume=True,
    )  # fmt: skip
    line = command_line(cfg)
    assert line.startswith("python -m haformer train ")
    again = config_from_args(parser.parse_args(shlex.split(line)[3:]))
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)


@pytest.mark.parametrize("argv", [["--epochs", "x"], ["--model-kwargs", "[1]"], ["--crop", "9by9"]])
def test_a_bad_flag_is_one_line_and_exit_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(["train", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {PROG} train: ")


def test_one_flag_name_per_concept(parser: argparse.ArgumentParser) -> None:
    for name, command in subparsers(parser).items():
        flags = {o for a in command._actions for o in a.option_strings}
        if "--root" in flags or "--data-root" in flags:
            assert {"--root", "--data-root"} <= flags, name
        batch = {f for f in flags if "batch" in f}
        assert batch <= {"--batch-size", "--batch", "--val-batch-size"}, (name, batch)
        if "--batch" in batch:
            assert "--batch-size" in batch, name  # --batch is only an alias


def test_prog_and_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{PROG} 0.1.0 (torch ") and "timm" in out
    assert build_parser().prog == PROG


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_chapter_12_ablations_run_from_the_cli(
    name: str, camvid_mini: Path, tmp_path: Path
) -> None:
    kwargs = ABLATIONS[name]
    argv = [
        "train", "--data-root", str(camvid_mini), "--model", "haformer_b0",
        "--model-kwargs", json.dumps(kwargs), "--crop", "64x64", "--batch-size", "2",
        "--max-images", "2", "--val-split", "none", "--workers", "0", "--no-progress",
        "--out", str(tmp_path),
    ]  # fmt: skip
    assert cli(argv) == 0
    model, config = load_model(tmp_path / "last.pt")
    assert config["model_kwargs"] == kwargs
    reference = create_model("haformer_b0", **kwargs)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    if name == "no transformer":
        assert model.backbone is None
