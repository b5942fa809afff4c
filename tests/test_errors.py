"""One error policy for the command line, checked through the real CLI.

A user's mistake: one line on stderr, exit code 2. A failure of the environment: one line,
exit code 1. Ctrl-C: one line saying where the run stands, exit code 130. Never "Traceback".
The cases listed in issue 9 run ``python -m haformer`` as a subprocess; the other arguments
and files of every command go through ``haformer.cli.main`` in this process (same code path,
without the 5-10 s interpreter start each).
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from haformer.checkpoint import save_checkpoint
from haformer.cli import build_parser
from haformer.cli import main as cli
from haformer.config import TrainConfig, config_dict, config_from_args
from haformer.model import create_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
TINY_TRAIN = [
    "--model", "haformer_b0", "--crop", "64x64", "--base-size", "64x64", "--eval-size", "64x64",
    "--batch-size", "2", "--workers", "0", "--no-progress",
]  # fmt: skip
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def haformer(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m haformer ARGS`` in a fresh interpreter."""
    command = [sys.executable, "-m", "haformer", *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300, **kwargs)


def assert_one_line(stderr: str, code: int, returncode: int, *fragments: str) -> None:
    assert returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good haformer_b0 checkpoint and the broken ones issue 9 lists."""
    folder = tmp_path_factory.mktemp("checkpoints")
    weights = create_model("haformer_b0").state_dict()
    config = config_dict(TrainConfig(model="haformer_b0"))
    files = {
        "good": {"model": weights, "config": config},
        "other_model": {"model": weights, "config": {**config, "model": "haformer_b1"}},
        "other_classes": {"model": weights, "config": {**config, "num_classes": 5}},
        "unknown_kwargs": {"model": weights, "config": {**config, "model_kwargs": {"use_pme": 0}}},
        "not_training": {"state_dict": weights},
    }
    paths = {name: save_checkpoint(folder / f"{name}.pt", state) for name, state in files.items()}
    paths["empty"] = folder / "empty.pt"
    paths["empty"].write_bytes(b"")
    paths["truncated"] = folder / "truncated.pt"
    paths["truncated"].write_bytes(paths["good"].read_bytes()[:1000])
    return paths


@pytest.fixture(scope="module")
def damaged(camvid_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of camvid-mini whose first test and val images are not PNGs any more."""
    root = tmp_path_factory.mktemp("damaged") / "camvid"
    shutil.copytree(camvid_mini, root)
    for split in ("test", "val"):
        first = sorted((root / split).iterdir())[0]
        first.write_bytes(b"this is not a PNG")
    return root


# --- the cases of issue 9, through a real process ----------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("empty", "it is empty"),
        ("other_model", "do not fit a HAFormer"),
        ("other_classes", "classifier.weight (11, 64, 1, 1) vs (5, 64, 1, 1)"),
        ("unknown_kwargs", "takes no argument 'use_pme'"),
    ],
)
def test_broken_checkpoints(checkpoints: dict[str, Path], name: str, fragment: str) -> None:
    done = haformer("evaluate", "--checkpoint", str(checkpoints[name]))
    assert_one_line(done.stderr, 2, done.returncode, str(checkpoints[name]), fragment)


@NO_GPU
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cuda_without_a_gpu(command: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    argv = ["--out", str(tmp_path)] if command == "train" else ["--checkpoint", "x.pt"]
    start = time.perf_counter()
    done = haformer(command, *argv, "--device", "cuda")
    assert_one_line(done.stderr, 2, done.returncode, "no CUDA GPU", "--device cpu")
    assert time.perf_counter() - start < 60  # refused before any work
    assert not (tmp_path / "last.pt").exists()


def test_a_damaged_file_read_in_a_dataloader_worker(damaged: Path, checkpoints) -> None:
    argv = ["evaluate", "--checkpoint", str(checkpoints["good"]), "--data-root", str(damaged)]
    done = haformer(*argv, "--split", "test", "--workers", "1", "--json")  # --json: no bar
    bad = sorted((damaged / "test").iterdir())[0]
    assert_one_line(done.stderr, 2, done.returncode, f"CamVid file {bad} cannot be read as a PNG")
    assert "DataLoader worker" in done.stderr


def test_predict_on_a_file_that_is_not_an_image(checkpoints, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    argv = ["predict", "--checkpoint", str(checkpoints["good"]), str(text)]
    done = haformer(*argv, "--out", str(tmp_path / "preds"))
    assert_one_line(done.stderr, 2, done.returncode, f"{text} is not an image")


def test_predict_with_out_naming_a_file(checkpoints, camvid_mini: Path, tmp_path: Path) -> None:
    image = sorted((camvid_mini / "test").iterdir())[0]
    (tmp_path / "taken").write_text("")
    argv = ["predict", "--checkpoint", str(checkpoints["good"]), str(image)]
    done = haformer(*argv, "--out", str(tmp_path / "taken"))
    assert_one_line(done.stderr, 2, done.returncode, "--out", "must be a folder")


def test_ctrl_c_during_training_says_how_to_resume(camvid_mini: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data-root", str(camvid_mini), *TINY_TRAIN, "--out", str(out)]
    command = [sys.executable, "-m", "haformer", *argv, "--epochs", "1000", "--val-every", "1"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": ENV}
    with subprocess.Popen(command, **pipes) as proc:
        for line in proc.stdout:  # wait until one epoch is done and saved
            if line.startswith("epoch 1/1000"):
                break
        time.sleep(1.0)  # now inside epoch 2 (or writing its checkpoint)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    assert_one_line(stderr, 130, proc.returncode, "interrupted during epoch", "Continue with: ")
    resume = shlex.split(stderr.split("Continue with: ")[1])
    assert resume[:4] == ["python", "-m", "haformer", "train"] and "--resume" in resume
    cfg = config_from_args(build_parser().parse_args(resume[3:]))
    assert cfg.resume and cfg.out == str(out) and cfg.crop == (64, 64) and cfg.epochs == 1000
    assert (out / "last.pt").is_file()  # the finished epochs are on disk


def test_full_disk_during_a_checkpoint_write(camvid_mini: Path, tmp_path: Path) -> None:
    # A real write failure from the kernel: a 2 MB file-size limit (RLIMIT_FSIZE; Python
    # ignores SIGXFSZ) makes writing the ~11 MB last.pt fail half-way, as a full disk does.
    # (ENOSPC itself, with its own hint, is simulated in test_checkpoint.py.)
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    argv = ["train", "--data-root", str(camvid_mini), *TINY_TRAIN, "--out", str(tmp_path)]
    done = haformer(*argv, "--max-images", "2", "--val-split", "none", preexec_fn=limit)
    assert_one_line(done.stderr, 1, done.returncode, f"cannot write {tmp_path / 'last.pt'}")
    assert not (tmp_path / "last.pt").exists() and list(tmp_path.glob(".*.tmp")) == []


# --- every other argument and file, through haformer.cli.main ----------------------------


def fill(argv: list[str], paths: dict[str, str]) -> list[str]:
    """Replace ``{name}`` by ``paths[name]`` in each argument (JSON braces stay)."""
    for name, value in paths.items():
        argv = [a.replace("{" + name + "}", value) for a in argv]
    return argv


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        code = cli(argv)
    except SystemExit as exit_:  # argparse
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--checkpoint", "{missing}"], "no checkpoint at"),
        (["--checkpoint", "{folder}"], "a folder there"),
        (["--checkpoint", "{truncated}"], "not a readable torch checkpoint"),
        (["--checkpoint", "{not_training}"], "not a haformer training checkpoint"),
        (["--checkpoint", "{good}", "--data-root", "{nowhere}"], "CamVid not found"),
        (["--checkpoint", "{good}", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--checkpoint", "{good}", "--size", "big"], "HEIGHTxWIDTH"),
        (["--checkpoint", "{good}", "--device", "tpu"], "unknown device 'tpu'"),
        (["--checkpoint", "{good}", "--split", "dev"], "invalid choice: 'dev'"),
    ],
)
def test_evaluate_arguments(argv, fragment, checkpoints, tmp_path, capsys) -> None:
    paths = {**{k: str(v) for k, v in checkpoints.items()}, "missing": str(tmp_path / "no.pt"),
             "folder": str(tmp_path), "nowhere": str(tmp_path / "nowhere")}  # fmt: skip
    code, err = run(["evaluate", *fill(argv, paths)], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["{image}", "--alpha", "2"], "--alpha is the colour weight"),
        (["{missing}"], "no image at"),
        (["{folder}"], "a folder there"),
    ],
)
def test_predict_arguments(argv, fragment, checkpoints, camvid_mini, tmp_path, capsys) -> None:
    paths = {"image": str(sorted((camvid_mini / "test").iterdir())[0]),
             "missing": str(tmp_path / "no.png"), "folder": str(tmp_path)}  # fmt: skip
    out = str(tmp_path / "p")
    argv = ["predict", "--checkpoint", str(checkpoints["good"]), "--out", out, *fill(argv, paths)]
    code, err = run(argv, capsys)
    assert code == 2 and fragment in err and "Traceback" not in err, err


def test_predict_into_a_folder_it_cannot_write(checkpoints, camvid_mini, capsys) -> None:
    image = str(sorted((camvid_mini / "test").iterdir())[0])
    argv = ["predict", "--checkpoint", str(checkpoints["good"]), image, "--out", "/sys/haformer"]
    code, err = run(argv, capsys)
    assert code == 1 and "cannot write /sys/haformer" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--model", "haformer_b9"], "unknown model 'haformer_b9'"),
        (["--model", "haformer_b0", "--size", "16x16"], "at least 32x32"),
        (["--model", "haformer_b0", "--out", "{folder}"], "is a folder"),
        (["--checkpoint", "{good}", "--model", "haformer_b1"], "holds a haformer_b0"),
        (["--checkpoint", "{good}", "--backbone", "efficientvit_b1"], "--backbone is for --model"),
        (["--checkpoint", "{empty}"], "it is empty"),
    ],
)
def test_export_arguments(argv, fragment, checkpoints, tmp_path, capsys) -> None:
    pytest.importorskip("onnxscript")
    paths = {**{k: str(v) for k, v in checkpoints.items()}, "folder": str(tmp_path)}
    code, err = run(["export", *fill(argv, paths)], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--warmup-epochs", "-1"], "--warmup-epochs must be >= 0"),
        (["--scale", "2.0,0.5"], "0 < LOW <= HIGH"),
        (["--scale", "0,0"], "0 < LOW <= HIGH"),
        (["--num-classes", "0"], "--num-classes must be at least 1"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--crop", "16x64"], "--crop sides must be at least 32"),
        (["--class-weights", "1,2"], "needs 11 values"),
        (["--model-kwargs", '{"use_pme": false}'], "takes no argument 'use_pme'"),
        (["--model-kwargs", '{"fusion": "mul"}'], "unknown fusion 'mul'"),
        (["--model", "unet_mobilenet_v3"], "unknown model"),
        (["--max-minutes", "0"], "--max-minutes must be a positive number"),
        (["--max-images", "0"], "--max-images must be at least 1"),
        (["--device", "tpu"], "unknown device"),
        (["--out", "{file}/run"], "must be a folder"),
        (["--mirror", "{out}"], "is the --out folder"),
        (["--mirror", "{file}"], "--mirror"),
        (["--data-root", "{nowhere}"], "CamVid not found"),
    ],
)
def test_train_arguments(argv, fragment, camvid_mini, tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("")
    paths = {"file": str(tmp_path / "file"), "out": str(tmp_path / "out"),
             "nowhere": str(tmp_path / "nowhere")}  # fmt: skip
    base = ["train", "--data-root", str(camvid_mini), *TINY_TRAIN, "--out", str(tmp_path / "out")]
    code, err = run([*base, *fill(argv, paths)], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "last.pt").exists()  # refused before any training


def test_train_into_a_folder_it_cannot_write(camvid_mini, capsys) -> None:
    code, err = run(["train", "--data-root", str(camvid_mini), "--out", "/sys/haformer"], capsys)
    assert code == 1 and "cannot write /sys/haformer" in err and len(err.splitlines()) == 1


def test_a_bad_validation_file_is_found_before_training(damaged: Path, tmp_path, capsys) -> None:
    argv = ["train", "--data-root", str(damaged), *TINY_TRAIN, "--out", str(tmp_path)]
    code, err = run(argv, capsys)
    bad = sorted((damaged / "val").iterdir())[0]
    assert code == 2 and f"CamVid file {bad} cannot be read" in err
    assert "epoch 1" not in capsys.readouterr().out and not (tmp_path / "last.pt").exists()


def test_resume_problems(camvid_mini: Path, tmp_path: Path, capsys) -> None:
    argv = ["train", "--data-root", str(camvid_mini), *TINY_TRAIN, "--out", str(tmp_path),
            "--max-images", "2", "--val-split", "none"]  # fmt: skip
    assert run(argv, capsys)[0] == 0
    code, err = run(argv, capsys)  # again, without --resume
    assert code == 2 and "already holds last.pt" in err and "--resume" in err
    code, err = run([*argv, "--resume", "--max-images", "4"], capsys)
    assert code == 2 and "max_images: 2 -> 4" in err
    (tmp_path / "last.pt").write_bytes(b"")
    code, err = run([*argv, "--resume"], capsys)
    assert code == 2 and "it is empty" in err and len(err.splitlines()) == 1


def test_debug_shows_the_traceback(capsys) -> None:
    with pytest.raises(Exception, match="unknown model"):
        cli(["bench", "--model", "nope", "--debug"])
