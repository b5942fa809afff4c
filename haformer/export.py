"""ONNX export of the fused network, checked in onnxruntime before it is called done.

:func:`export_onnx` fuses the model (``haformer.fuse``), exports it with PyTorch's
``torch.export``-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``) with a dynamic
height and width (the seed: multiples of 32), runs the file in onnxruntime on random inputs
at the export size and at a second size, and compares with PyTorch. The exporter needs
``onnx`` and ``onnxscript``, the check ``onnxruntime``: the optional extra
``pip install 'haformer[export]'``.

Command line::

    python -m haformer export --model haformer_b1 --size 360x480 --out haformer_b1.onnx
    python -m haformer export --checkpoint runs/b1/best.pt --out b1.onnx --static
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from haformer.fuse import fuse
from haformer.model import create_model, input_multiple, list_models
from haformer.utils import parse_size

EXTRA_MODULES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_HINT = "pip install 'haformer[export]'"
TOLERANCE = 1e-4
"""Largest accepted max abs difference onnxruntime vs PyTorch, relative to the output scale."""
MAX_SIDE = 8192


def _require_extra() -> None:
    """Import the export extra's modules; ImportError with the install command if one lacks."""
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(
                f"ONNX export needs {', '.join(EXTRA_MODULES)}, and {name} is not installed: "
                f"{INSTALL_HINT}"
            ) from err


def _second_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Another valid input size (different height and width) for the dynamic-shape check."""
    h, w = size
    return tuple(max(32, multiple, v // multiple * multiple) for v in (h * 3 // 4, w * 5 // 4))


def _dynamic_shapes(multiple: int) -> tuple[dict[int, object]]:
    """torch.export dims for the input's height and width (multiples of ``multiple``)."""
    dims = []
    for name in ("height", "width"):
        if multiple == 1:
            dims.append(torch.export.Dim(name, min=32, max=MAX_SIDE))
        else:
            dims.append(multiple * torch.export.Dim(f"{name}_{multiple}", max=MAX_SIDE // multiple))
    return ({2: dims[0], 3: dims[1]},)


def check_onnx(
    path: str | Path, model: nn.Module, sizes: list[tuple[int, int]]
) -> list[tuple[tuple[int, int], float, float]]:
    """Run the ONNX file in onnxruntime (CPU) and ``model`` in PyTorch on the same random
    (1, 3, H, W) input for each size (``model`` in eval mode; its train flag is restored).
    Returns ``(size, max abs difference, output scale)`` per size."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    device = next(model.parameters()).device
    was_training = model.training
    results = []
    for size in sizes:
        x = torch.randn(1, 3, *size)
        try:
            with torch.inference_mode():
                reference = model.eval()(x.to(device)).float().cpu()
        finally:
            model.train(was_training)
        out = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        if out.shape != reference.shape:
            raise RuntimeError(
                f"onnxruntime gave shape {tuple(out.shape)} at {size}, PyTorch "
                f"{tuple(reference.shape)}"
            )
        diff = (out - reference).abs().max().item()
        results.append((size, diff, reference.abs().max().item()))
    return results


def export_onnx(
    model: nn.Module,
    path: str | Path,
    size: tuple[int, int] = (360, 480),
    dynamic: bool = True,
    opset: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Export ``fuse(model)`` to ONNX at ``path`` and check it in onnxruntime; returns the path.

    The graph takes a float32 ``image`` (1, 3, H, W) and gives ``logits`` (1, K, H, W). With
    ``dynamic`` H and W are symbolic (any size >= 32; multiples of 32 for the seed), else
    fixed to ``size``. ``opset``: the ONNX opset (None: the exporter's default). After the
    export the file is run in onnxruntime at ``size`` (and, if dynamic, at a second size) and
    compared with ``model`` itself in eval mode; ``log`` receives one line per step.

    Raises ImportError (with the install command) without the ``export`` extra, ValueError
    for a size the model cannot take, RuntimeError when onnxruntime disagrees with PyTorch
    by more than :data:`TOLERANCE` of the output scale (the file is left for inspection).
    """
    _require_extra()
    say = log or (lambda line: None)
    multiple = input_multiple(model)
    h, w = size
    if min(h, w) < 32 or h % multiple or w % multiple:
        raise ValueError(
            f"export size must be at least 32x32 with sides divisible by {multiple} for this "
            f"model; got {h}x{w}"
        )
    fused = fuse(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, 3, h, w, device=next(fused.parameters()).device)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(
            fused,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            external_data=False,  # one self-contained file (fine below 2 GB)
            dynamic_shapes=_dynamic_shapes(multiple) if dynamic else None,
        )
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {'dynamic' if dynamic else 'static'})")
    sizes = [(h, w), _second_size((h, w), multiple)] if dynamic else [(h, w)]
    for (sh, sw), diff, scale in check_onnx(path, model, sizes):
        line = f"onnxruntime vs PyTorch at {sh}x{sw}: max abs diff {diff:.2e} (scale {scale:.2e})"
        if diff > TOLERANCE * max(scale, 1e-6):
            raise RuntimeError(
                f"{line}, above {TOLERANCE:g} of the scale: the ONNX model at {path} does not "
                "compute what the PyTorch model computes"
            )
        say(line)
    return path


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _model_from_args(args: argparse.Namespace) -> nn.Module:
    if args.checkpoint is None:
        if args.model is None:
            raise ValueError("name a model (--model haformer_b1) or a checkpoint (--checkpoint F)")
        kwargs = {} if args.backbone is None else {"backbone": args.backbone}
        return create_model(args.model, num_classes=args.num_classes, **kwargs)
    from haformer.evaluate import load_model

    model, config = load_model(args.checkpoint)
    if args.model is not None and args.model != config["model"]:
        raise ValueError(
            f"{args.checkpoint} holds a {config['model']}, not a {args.model}: drop --model"
        )
    return model


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        _require_extra()  # fail fast, before building the model
        size = parse_size(args.size)
        model = _model_from_args(args)
        export_onnx(model, args.out, size, dynamic=not args.static, opset=args.opset, log=print)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"done: {args.out} runs in onnxruntime and matches PyTorch")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to ``python -m haformer``."""
    p = subparsers.add_parser(
        "export",
        help="ONNX export of the fused model, checked in onnxruntime",
        description="Fuse a model, export it to ONNX (dynamic height and width unless "
        f"--static) and check it against PyTorch in onnxruntime. Needs {INSTALL_HINT}.",
    )
    p.add_argument("--model", default=None, help=f"one of {', '.join(list_models())}")
    p.add_argument("--checkpoint", default=None, help="a training checkpoint (best.pt, last.pt)")
    p.add_argument("--size", default="360x480", help="HEIGHTxWIDTH of the example (360x480)")
    p.add_argument("--out", default="model.onnx", help="output file (model.onnx)")
    p.add_argument("--static", action="store_true", help="fix H and W to --size")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (exporter's default)")
    p.add_argument("--num-classes", type=int, default=11, help="without --checkpoint (11)")
    p.add_argument("--backbone", default=None, help="hapeformer_seed only: efficientvit_b1/b2")
    p.set_defaults(func=_cmd_export)
