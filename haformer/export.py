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
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from haformer.data.classes import NUM_CLASSES
from haformer.errors import ConfigError, EnvironmentFailure, UsageError
from haformer.fuse import fuse
from haformer.model import MIN_SIDE, create_model, input_multiple, list_models, load_model
from haformer.peers import list_peers
from haformer.utils import ensure_dir, eval_mode, parse_size, write_failure

EXTRA_MODULES = ("onnx", "onnxruntime", "onnxscript")
MIN_TORCH = (2, 6)
"""The torch.export-based ONNX exporter (dynamo=True, dynamic_shapes) of torch 2.6 on."""
INSTALL_HINT = "pip install 'haformer[export]'"
TOLERANCE = 1e-4
"""Largest accepted max abs difference onnxruntime vs PyTorch, relative to the output scale."""
MAX_SIDE = 8192


class MissingExtraError(EnvironmentFailure, ImportError):
    """A module of the ``export`` extra is not installed (exit code 1, the install command)."""


class ExportMismatchError(EnvironmentFailure, RuntimeError):
    """onnxruntime computes something else than PyTorch (exit code 1; the file is kept)."""


def _require_extra() -> None:
    """Import the export extra's modules; MissingExtraError (an ImportError) with the install
    command if one lacks, or if torch is older than :data:`MIN_TORCH`."""
    found = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if found < MIN_TORCH:
        raise MissingExtraError(
            f"ONNX export needs torch >= {'.'.join(map(str, MIN_TORCH))} (its torch.export-based "
            f"exporter); this is torch {torch.__version__}: pip install -U torch"
        )
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise MissingExtraError(
                f"ONNX export needs {', '.join(EXTRA_MODULES)}, and {name} is not installed: "
                f"{INSTALL_HINT}"
            ) from err


def _second_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Another valid input size (different height and width) for the dynamic-shape check."""
    h, w = size
    return tuple(
        max(MIN_SIDE, multiple, v // multiple * multiple) for v in (h * 3 // 4, w * 5 // 4)
    )


def _dynamic_shapes(multiple: int) -> tuple[dict[int, object]]:
    """torch.export dims for the input's height and width (multiples of ``multiple``)."""
    dims = []
    for name in ("height", "width"):
        if multiple == 1:
            dims.append(torch.export.Dim(name, min=MIN_SIDE, max=MAX_SIDE))
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
    results = []
    for size in sizes:
        x = torch.randn(1, 3, *size)
        with eval_mode(model), torch.inference_mode():
            reference = model(x.to(device)).float().cpu()
        out = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        if out.shape != reference.shape:
            raise ExportMismatchError(
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

    Raises MissingExtraError (an ImportError, with the install command) without the
    ``export`` extra, ConfigError (a ValueError) for a size the model cannot take,
    ExportMismatchError (a RuntimeError) when onnxruntime disagrees with PyTorch by more than
    :data:`TOLERANCE` of the output scale (the file is left for inspection).
    """
    _require_extra()
    say = log or (lambda line: None)
    multiple = input_multiple(model)
    h, w = size
    if min(h, w) < MIN_SIDE or h % multiple or w % multiple:
        raise ConfigError(
            f"export size must be at least {MIN_SIDE}x{MIN_SIDE} with sides divisible by "
            f"{multiple} for this model; got {h}x{w}"
        )
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder: name the .onnx file to write")
    ensure_dir(path.parent, "--out")
    fused = fuse(model)
    example = torch.randn(1, 3, h, w, device=next(fused.parameters()).device)
    with _writing(path), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints
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
            raise ExportMismatchError(
                f"{line}, above {TOLERANCE:g} of the scale: the ONNX model at {path} does not "
                "compute what the PyTorch model computes"
            )
        say(line)
    return path


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _writing(path: Path):
    """An OSError while the exporter writes ``path`` is the machine's failure: one line."""
    try:
        yield
    except OSError as err:
        raise write_failure(path, err) from err


def _model_from_args(args: argparse.Namespace) -> nn.Module:
    if args.checkpoint is None:
        if args.model is None:
            raise ConfigError("name a model (--model haformer_b1) or a checkpoint (--checkpoint F)")
        kwargs = {} if args.backbone is None else {"backbone": args.backbone}
        return create_model(args.model, num_classes=args.num_classes, **kwargs)
    if args.backbone is not None:
        raise ConfigError("--backbone is for --model; a checkpoint names its own backbone")
    model, config = load_model(args.checkpoint)
    if args.model is not None and args.model != config["model"]:
        raise ConfigError(
            f"{args.checkpoint} holds a {config['model']}, not a {args.model}: drop --model"
        )
    return model


def _cmd_export(args: argparse.Namespace) -> int:
    _require_extra()  # fail fast, before building the model
    size = parse_size(args.size)
    model = _model_from_args(args)
    export_onnx(model, args.out, size, dynamic=not args.static, opset=args.opset, log=print)
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
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help=f"one of {', '.join(list_models())}, or a peer: {', '.join(list_peers())}",
    )
    p.add_argument("--checkpoint", default=None, help="a training checkpoint (best.pt, last.pt)")
    p.add_argument("--size", default="360x480", metavar="HxW", help="example input (360x480)")
    p.add_argument("--out", default="model.onnx", help="output file (model.onnx)")
    p.add_argument("--static", action="store_true", help="fix H and W to --size")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (exporter's default)")
    p.add_argument(
        "--num-classes",
        type=int,
        default=NUM_CLASSES,
        help=f"output classes, without --checkpoint ({NUM_CLASSES})",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="EfficientViT backbone instead of the model's own, e.g. efficientvit_b2",
    )
    p.set_defaults(func=_cmd_export)
