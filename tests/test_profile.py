"""haformer.profile: parameter and FLOP counts, latency statistics, the summary/bench commands."""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from haformer.cli import main as cli_main
from haformer.model import create_model
from haformer.profile import (
    add_cli,
    count_parameters,
    flop_analysis,
    flop_count,
    measure_latency,
    unsupported_ops,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy machine two threads spin-wait each other to a crawl."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def run_cli(argv: list[str]) -> int:
    """Parse ``argv`` with a parser holding only this module's commands and run it."""
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


class Residual(nn.Module):
    """x + conv(x): one counted op (conv) and one element-wise op fvcore skips (add)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class PixelAttention(nn.Module):
    """scaled_dot_product_attention over pixels: matmuls that fvcore has no handle for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        return F.scaled_dot_product_attention(q, q, q)


def test_count_parameters_matches_sum_and_skips_frozen_on_request() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    assert count_parameters(model) == 3 * 8 * 9 + 8 + 2 * 8 == 240
    model[1].requires_grad_(False)
    assert count_parameters(model) == 240
    assert count_parameters(model, trainable_only=True) == 224
    b0 = create_model("haformer_b0")
    assert count_parameters(b0) == sum(p.numel() for p in b0.parameters())


@pytest.mark.parametrize("batch", [1, 2])
def test_flop_count_of_a_conv_is_the_hand_formula(batch: int) -> None:
    conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)  # 32x48 -> 16x24
    conv.train()
    total, table = flop_count(conv, size=(32, 48), batch=batch)
    assert total == batch * (16 * 24) * 16 * (3 * 3 * 3)  # outputs x C_out x (C_in k k)
    assert "MACs" in table
    assert conv.training  # the train/eval flag is restored


def test_unsupported_ops_lists_elementwise_and_warns_only_for_real_compute() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # element-wise leftovers must not warn
        assert unsupported_ops(Residual(), size=(8, 8)) == {"aten::add": 1}
    with pytest.warns(UserWarning, match="scaled_dot_product_attention"):
        assert "aten::scaled_dot_product_attention" in unsupported_ops(PixelAttention(), (8, 8))


def test_measure_latency_statistics() -> None:
    model = nn.Conv2d(3, 4, 3, padding=1).train()
    threads = torch.get_num_threads()
    lat = measure_latency(model, size=(16, 16), batch=2, warmup=1, iters=5, threads=1)
    assert len(lat["times_ms"]) == 5 and lat["threads"] == 1 and lat["batch"] == 2
    assert min(lat["times_ms"]) == lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    assert lat["fps"] == pytest.approx(2 * 1000 / lat["median_ms"])
    assert model.training and torch.get_num_threads() == threads  # state restored
    with pytest.raises(ValueError, match="iters"):
        measure_latency(model, size=(16, 16), iters=0)


def test_bench_json_is_one_object_with_the_documented_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "--model", "haformer_b0", "--size", "64x96", "--warmup", "1"]
    assert run_cli([*argv, "--iters", "2", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("model", "params", "gflops", "latency_ms", "fps", "device", "torch", "threads"):
        assert key in result
    assert result["model"] == "haformer_b0" and result["device"] == "cpu"
    assert result["params"] == count_parameters(create_model("haformer_b0"))
    assert result["size"] == [64, 96] and result["batch"] == 1 and result["threads"] == 1
    assert result["gflops"] > 0 and result["latency_ms"] > 0
    assert result["torch"] == torch.__version__


def test_summary_prints_layers_and_the_labelled_total(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["summary", "--model", "haformer_b0", "--size", "64x96"]) == 0
    out = capsys.readouterr().out
    model = create_model("haformer_b0")
    total = flop_analysis(model, size=(64, 96)).total()
    assert "HAPEBlock" in out  # torchinfo rows
    assert f"Total params: {count_parameters(model):,}" in out
    assert f"Total: {total / 1e9:.3f} GFLOPs (= GMACs" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "hapeformer_seed", "--backbone", "efficientvit_b1"], "multiples of 32"),
        (["--model", "haformer_b1", "--backbone", "efficientvit_b9"], "unknown backbone"),
        (["--model", "no_such_model"], "unknown model"),
        (["--model", "haformer_b0", "--device", "cuda:7"], "cuda"),
        (["--model", "haformer_b0", "--device", "tpu"], "unknown device"),
        (["--model", "haformer_b0", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--model", "haformer_b0", "--threads", "0"], "--threads must be at least 1"),
        (["--model", "haformer_b0", "--num-classes", "0"], "num_classes must be at least 1"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # through the real entry point: the error policy of haformer.cli.main, no per-command wrapper
    argv = ["bench", *argv, "--size", "360x480", "--iters", "1", "--warmup", "0"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_backbone_overrides_the_default_of_any_haformer(capsys: pytest.CaptureFixture[str]) -> None:
    # timm's convention, dict(model_args, **kwargs): bench (and export) take --backbone for all
    argv = ["bench", "--model", "haformer_b0", "--backbone", "efficientvit_b1", "--size", "64x64"]
    assert cli_main([*argv, "--iters", "1", "--warmup", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    b0_on_b1 = create_model("haformer_b0", backbone="efficientvit_b1")
    assert (
        result["params"]
        == count_parameters(b0_on_b1)
        != count_parameters(create_model("haformer_b0"))
    )


@pytest.mark.slow
def test_measure_latency_compiles_on_the_cpu_too() -> None:
    """The GPU frame-rate option (torch.compile, CUDA graphs with reduce-overhead) must run
    here: a small network compiled by Inductor on the CPU, timed, compile time reported."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 11, 1))
    result = measure_latency(net, (32, 32), warmup=1, iters=2, compile_mode="default")
    assert result["compile_mode"] == "default" and result["compile_s"] > 0
    assert len(result["times_ms"]) == 2


def test_bench_passes_fuse_and_compile_through(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    compiled = []

    def fake_compile(model: nn.Module, mode: str) -> nn.Module:
        compiled.append((type(model).__name__, mode))
        return model  # compiling a whole model takes minutes on a CPU: the test above compiles

    monkeypatch.setattr(torch, "compile", fake_compile)
    argv = ["bench", "--model", "haformer_b0", "--size", "64x64", "--iters", "1", "--warmup", "0"]
    assert cli_main([*argv, "--fuse", "--compile", "reduce-overhead", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["fused"] is True and result["compile_mode"] == "reduce-overhead"
    assert compiled == [("HAFormer", "reduce-overhead")]
    with pytest.raises(SystemExit) as exit_info:  # not a mode: argparse's one line, exit 2
        cli_main([*argv, "--compile", "fastest"])
    assert exit_info.value.code == 2
