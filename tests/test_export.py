"""haformer.export: the ONNX file runs in onnxruntime and computes what the PyTorch model does."""

from __future__ import annotations

import sys

import pytest
import torch
from test_fuse import assert_same, randomize_batchnorms  # helpers shared by the two files

from haformer.checkpoint import save_checkpoint
from haformer.cli import main
from haformer.export import INSTALL_HINT, export_onnx
from haformer.model import create_model


@pytest.fixture
def extra():
    """The export extra's modules (skip when it is not installed)."""
    for name in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(name)


def run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def input_dims(path) -> list:
    import onnx

    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path)).graph
    return [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]


def test_cli_exports_a_checkpoint_with_dynamic_height_and_width(tmp_path, capsys, extra):
    model = randomize_batchnorms(create_model("haformer_b0")).eval()
    checkpoint = tmp_path / "best.pt"
    config = {"model": "haformer_b0", "num_classes": 11, "model_kwargs": {}}
    save_checkpoint(checkpoint, {"model": model.state_dict(), "config": config})
    out = tmp_path / "b0.onnx"

    code = main(["export", "--checkpoint", str(checkpoint), "--size", "96x128", "--out", str(out)])

    assert code == 0, capsys.readouterr().err
    assert "matches PyTorch" in capsys.readouterr().out
    assert list(out.parent.glob("*.data")) == []  # one self-contained file
    dims = input_dims(out)  # also runs onnx's checker
    assert dims[:2] == [1, 3] and all(isinstance(d, str) for d in dims[2:])
    x = torch.randn(1, 3, 80, 100)  # a size the export never saw
    with torch.inference_mode():
        assert_same(model(x), run_onnx(out, x))


def test_seed_exports_with_sides_in_multiples_of_32(tmp_path, extra):
    model = randomize_batchnorms(create_model("hapeformer_seed", backbone="efficientvit_b1"))
    lines = []
    path = export_onnx(model, tmp_path / "seed.onnx", size=(128, 128), log=lines.append)
    assert len(lines) == 3 and input_dims(path)[2:] == ["32*height_32", "32*width_32"]
    x = torch.randn(1, 3, 96, 160)
    with torch.inference_mode():
        assert_same(model.eval()(x), run_onnx(path, x))


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime", "onnxscript"])
def test_missing_extra_says_how_to_install_it(tmp_path, monkeypatch, capsys, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` fail
    model = create_model("haformer_b0")
    with pytest.raises(ImportError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        export_onnx(model, tmp_path / "m.onnx", size=(64, 64))
    assert main(["export", "--model", "haformer_b0", "--out", str(tmp_path / "m.onnx")]) == 1
    assert INSTALL_HINT in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_bad_arguments_are_refused(tmp_path, capsys, extra):
    seed = create_model("hapeformer_seed", backbone="efficientvit_b1")
    with pytest.raises(ValueError, match="divisible by 32"):
        export_onnx(seed, tmp_path / "bad.onnx", size=(360, 480))
    assert main(["export", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["export", "--model", "haformer_b0", "--size", "360by480"]) == 2
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_backbone_overrides_any_haformer_default(tmp_path, capsys, extra):
    # was a TypeError: the entry points now merge their defaults with the caller's kwargs
    out = tmp_path / "b0_on_b1.onnx"
    argv = ["export", "--model", "haformer_b0", "--backbone", "efficientvit_b1", "--static"]
    assert main([*argv, "--size", "64x64", "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.is_file()


def test_torch_older_than_the_exporter_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    assert main(["export", "--model", "haformer_b0", "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "needs torch >= 2.6" in err and "2.5.1" in err and len(err.splitlines()) == 1
