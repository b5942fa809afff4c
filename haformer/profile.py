"""How big and how fast: parameters, FLOPs, a layer table and an honest latency benchmark.

Book chapters 7 and 11. Four tools and two commands:

* :func:`count_parameters`: the number of parameters (trainable or not).
* :func:`flop_count` / :func:`flop_analysis` / :func:`unsupported_ops`: fvcore's count.
  **fvcore counts one multiply-add as one FLOP**, so its "GFLOPs" are GMACs; every total
  printed here says so. fvcore has handles for convolutions, matmul/mm/bmm/addmm/einsum/linear,
  batch/group/layer norm, adaptive average pooling, bilinear/nearest upsampling and
  grid_sample. It leaves out element-wise work (``aten::add``, ``mul``, ``div``, ``sub``,
  ``softmax``, ``sigmoid``, activations such as ``hardswish`` and ``relu6``) and ``aten::pad``,
  by convention; :func:`unsupported_ops` lists them with their call counts so the book can show
  what the total omits. Any *other* op without a handle is real compute missing from the
  total (for example ``scaled_dot_product_attention``, ``baddbmm``, ``avg_pool2d``,
  ``max_pool2d``): it raises a ``UserWarning``.
* :func:`summary`: torchinfo's layer table (output shape and parameters per layer).
* :func:`measure_latency`: eval mode, ``torch.inference_mode``, warm-up iterations, device
  synchronisation around every timed call, median and 90th percentile of per-iteration times.

Commands (see :func:`add_cli`)::

    python -m haformer summary --model haformer_b1 --size 360x480
    python -m haformer bench --model haformer_b1 --size 360x480 --batch 1 --device cpu --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from haformer.data.classes import NUM_CLASSES
from haformer.errors import ConfigError
from haformer.model import create_model, input_multiple, list_models
from haformer.peers import list_peers
from haformer.utils import eval_mode, parse_size, resolve_device

if TYPE_CHECKING:
    from fvcore.nn import FlopCountAnalysis
    from torchinfo import ModelStatistics

Size = tuple[int, int]

# Ops fvcore leaves uncounted on purpose: element-wise arithmetic, activations, padding,
# reductions over a map and data movement (their multiply-adds are negligible or none).
ELEMENTWISE_OPS: frozenset[str] = frozenset(
    f"aten::{name}{suffix}"
    for name in (
        "add",
        "sub",
        "mul",
        "div",
        "neg",
        "exp",
        "pow",
        "sqrt",
        "rsqrt",
        "softmax",
        "log_softmax",
        "sigmoid",
        "tanh",
        "relu",
        "relu6",
        "hardtanh",
        "hardswish",
        "hardsigmoid",
        "gelu",
        "silu",
        "clamp",
        "clamp_min",
        "pad",
        "constant_pad_nd",
        "fill",
        "zero",
        # the stacked HAPE block, the CWF gate and the peers: per-element arithmetic, a mean
        # or sum over a map, or data movement (repeat, shuffle, scatter into a kernel)
        "addcmul",
        "lerp",
        "mean",
        "sum",
        "repeat",
        "channel_shuffle",
        "masked_scatter",
        "feature_dropout",
    )
    for suffix in ("", "_")
)
FLOPS_LABEL = "GFLOPs (= GMACs: fvcore counts one multiply-add as one FLOP)"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (only ``requires_grad`` ones if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _import_fvcore() -> Any:
    """fvcore.nn, imported without the FutureWarning its import triggers (torch.jit.script)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import fvcore.nn

    return fvcore.nn


def flop_analysis(model: nn.Module, size: Size = (360, 480), batch: int = 1) -> FlopCountAnalysis:
    """fvcore's analysis of one forward pass of a (batch, 3, H, W) input, already computed.

    Runs in eval mode under ``torch.inference_mode`` on the model's device (the CPU for a
    freshly built model); the model's train/eval flag is restored afterwards. Use
    ``.total()``, ``.by_operator()``, ``.by_module()`` and ``.unsupported_ops()`` on the
    result. Tracing noise (TracerWarnings, fvcore's own logs) is silenced; an unsupported op
    that is not in :data:`ELEMENTWISE_OPS` raises a ``UserWarning`` since the total misses it.
    Errors of the model itself (such as a ``ValueError`` for a bad input size) propagate.
    """
    fvnn = _import_fvcore()
    x = torch.randn(batch, 3, *size, device=_device_of(model))
    with eval_mode(model), torch.inference_mode():
        analysis = fvnn.FlopCountAnalysis(model, x)  # hides TracerWarnings by default
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.total()  # runs the trace now, inside eval/inference mode; results are cached
    missed = sorted(set(analysis.unsupported_ops()) - ELEMENTWISE_OPS)
    if missed:
        warnings.warn(
            f"fvcore has no FLOP handle for {', '.join(missed)}: the total leaves them out",
            stacklevel=2,
        )
    return analysis


def flop_count(
    model: nn.Module, size: Size = (360, 480), batch: int = 1, max_depth: int = 3
) -> tuple[int, str]:
    """fvcore total for a (batch, 3, H, W) input and its per-module table (markdown).

    Returns ``(total, table)``: ``total`` in fvcore FLOPs, which are multiply-adds (divide by
    1e9 for GFLOPs = GMACs); ``table`` is ``fvcore.nn.flop_count_table`` down to
    ``max_depth``, with the flops column labelled as MACs.
    """
    analysis = flop_analysis(model, size, batch)
    table = _import_fvcore().flop_count_table(analysis, max_depth=max_depth)
    return int(analysis.total()), _realign(table.replace("#flops", "#flops (= MACs)", 1))


def _realign(table: str) -> str:
    """Re-pad a markdown table (header, ``|:---|`` row, body) so its columns line up again."""
    lines = table.splitlines()
    rows = [[cell.removeprefix(" ").rstrip() for cell in ln[1:-1].split("|")] for ln in lines]
    del rows[1]  # the old |:---| row
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rows.insert(1, [":" + "-" * (w - 1) for w in widths])
    return "\n".join(
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    )


def unsupported_ops(model: nn.Module, size: Size = (360, 480), batch: int = 1) -> dict[str, int]:
    """Ops fvcore did not count in one forward pass, with how often each ran."""
    return dict(flop_analysis(model, size, batch).unsupported_ops())


def summary(
    model: nn.Module, size: Size = (360, 480), batch: int = 1, depth: int = 3
) -> ModelStatistics:
    """torchinfo summary of a (batch, 3, H, W) forward pass in eval mode; ``print`` it.

    Columns: output size and parameter count, ``depth`` levels of modules deep (3 shows each
    HAPE block of the models here). A ``ValueError`` raised by the model (bad input size)
    propagates as itself, not wrapped in torchinfo's ``RuntimeError``.
    """
    import torchinfo

    try:
        return torchinfo.summary(
            model,
            input_size=(batch, 3, *size),
            depth=depth,
            col_names=("output_size", "num_params"),
            device=_device_of(model),
            mode="eval",
            verbose=0,
        )
    except RuntimeError as err:
        if isinstance(err.__cause__, ValueError):
            raise err.__cause__ from None
        raise


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
"""``torch.compile`` modes ``measure_latency`` and ``bench --compile`` accept."""


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_latency(
    model: nn.Module,
    size: Size = (360, 480),
    batch: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 10,
    iters: int = 50,
    channels_last: bool = False,
    threads: int | None = None,
    compile_mode: str | None = None,
) -> dict[str, Any]:
    """Time ``model`` on a random (batch, 3, H, W) input; per-iteration wall-clock statistics.

    Method: the model is moved to ``device`` (in place, as ``nn.Module.to`` does; with
    ``channels_last`` also converted to that memory format) and put in eval mode (its flag is
    restored afterwards); every pass runs under ``torch.inference_mode``; ``warmup`` untimed
    passes first (allocator, cuDNN/oneDNN algorithm choice, caches); then ``iters`` passes,
    each timed with ``time.perf_counter`` between two device synchronisations, so the time
    covers the whole pass and no queued GPU work leaks into the next one. ``threads`` sets
    ``torch.set_num_threads`` for the measurement (restored afterwards).

    ``compile_mode`` runs ``torch.compile(model, mode=compile_mode)`` instead: ``"default"``,
    ``"reduce-overhead"`` (on CUDA it replays the whole pass as a CUDA graph, removing the
    launch cost of every kernel: the mode for batch-1 frame rates) or ``"max-autotune"``. The
    first call compiles; its time is reported as ``compile_s`` and it counts as no warm-up pass.

    Returns a dict: ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``, ``fps`` (images per
    second, ``batch * 1000 / median_ms``), ``times_ms`` (every timed pass), and the settings
    (``device``, ``size``, ``batch``, ``warmup``, ``iters``, ``threads``, ``channels_last``,
    ``compile_mode``, ``compile_s``).
    """
    _check_counts(iters=iters, warmup=warmup, batch=batch)
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise ConfigError(
            f"compile mode must be one of {', '.join(COMPILE_MODES)}; got {compile_mode!r}"
        )
    device = resolve_device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model.to(device=device, memory_format=fmt)
        x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=fmt)
        times: list[float] = []
        compile_s = None
        with eval_mode(model), torch.inference_mode():
            runner = model
            if compile_mode is not None:
                runner = torch.compile(model, mode=compile_mode)
                start = time.perf_counter()
                runner(x)  # compiles
                _synchronize(device)
                compile_s = time.perf_counter() - start
            for i in range(warmup + iters):
                _synchronize(device)
                start = time.perf_counter()
                runner(x)
                _synchronize(device)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(saved_threads)
    median = statistics.median(times)
    return {
        "median_ms": median,
        "p90_ms": _percentile(times, 0.9),
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "fps": batch * 1000.0 / median,
        "times_ms": times,
        "device": str(device),
        "size": list(size),
        "batch": batch,
        "warmup": warmup,
        "iters": iters,
        "threads": used_threads,
        "channels_last": channels_last,
        "compile_mode": compile_mode,
        "compile_s": compile_s,
    }


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated ``q`` quantile (0 <= q <= 1) of ``values``."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _check_counts(**values: int | None) -> None:
    """ConfigError unless each count is at least 1 (``warmup``: at least 0; None: unset)."""
    for name, value in values.items():
        low = 0 if name == "warmup" else 1
        if value is not None and value < low:
            flag = {"batch": "--batch-size"}.get(name, "--" + name.replace("_", "-"))
            raise ConfigError(f"{flag} must be at least {low}; got {value}")


def _build(args: argparse.Namespace) -> tuple[nn.Module, Size]:
    """The model and input size the command line names, checked before any work starts
    (``--threads`` applies to the whole command)."""
    _check_counts(batch=args.batch_size, threads=args.threads, depth=getattr(args, "depth", None))
    size = parse_size(args.size)
    multiple = input_multiple(args.model)  # also: an unknown model name
    if size[0] % multiple or size[1] % multiple:
        fitted = "x".join(str(side // multiple * multiple or multiple) for side in size)
        raise ConfigError(
            f"{args.model} needs input sides that are multiples of {multiple}; got "
            f"{size[0]}x{size[1]}: use for example --size {fitted}"
        )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    kwargs = {} if args.backbone is None else {"backbone": args.backbone}
    return create_model(args.model, num_classes=args.num_classes, **kwargs), size


def _cmd_summary(args: argparse.Namespace) -> int:
    model, size = _build(args)
    batch = args.batch_size
    total, table = flop_count(model, size, batch, max_depth=args.depth)
    print(summary(model, size, batch, depth=args.depth))
    print()
    print(f"fvcore FLOP count, input {batch}x3x{size[0]}x{size[1]}:")
    print(table)
    print(f"Total: {total / 1e9:.3f} {FLOPS_LABEL}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    _check_counts(iters=args.iters, warmup=args.warmup)
    device = resolve_device(args.device)  # a missing GPU is reported before any counting
    model, size = _build(args)
    params = count_parameters(model)
    gflops = flop_analysis(model, size, 1).total() / 1e9
    if args.fuse:
        from haformer.fuse import fuse

        model = fuse(model)
    lat = measure_latency(
        model,
        size,
        batch=args.batch_size,
        device=device,
        warmup=args.warmup,
        iters=args.iters,
        channels_last=args.channels_last,
        compile_mode=args.compile,
    )
    result = {
        "model": args.model,
        "backbone": args.backbone,
        "params": params,
        "gflops": round(gflops, 4),
        "latency_ms": round(lat["median_ms"], 3),
        "p90_ms": round(lat["p90_ms"], 3),
        "fps": round(lat["fps"], 2),
        "device": lat["device"],
        "torch": torch.__version__,
        "threads": lat["threads"],
        "size": lat["size"],
        "batch": lat["batch"],
        "warmup": lat["warmup"],
        "iters": lat["iters"],
        "channels_last": lat["channels_last"],
        "fused": args.fuse,
        "compile_mode": lat["compile_mode"],
        "compile_s": None if lat["compile_s"] is None else round(lat["compile_s"], 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.model}: {params / 1e6:.3f} M params, {gflops:.3f} GFLOPs (= GMACs, per image), "
            f"{lat['median_ms']:.2f} ms median (p90 {lat['p90_ms']:.2f}) = {lat['fps']:.1f} fps "
            f"at batch {args.batch_size}, {size[0]}x{size[1]}, {lat['device']}, "
            f"{lat['threads']} threads, torch {torch.__version__}"
            + (" (fused)" if args.fuse else "")
            + (
                f", torch.compile mode {args.compile} (compiled in {lat['compile_s']:.1f} s)"
                if args.compile
                else ""
            )
        )
    return 0


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="NAME",
        help=f"one of {', '.join(list_models())}, or a peer: {', '.join(list_peers())}",
    )
    parser.add_argument("--size", default="360x480", metavar="HxW", help="input (default 360x480)")
    parser.add_argument(
        "--batch-size", "--batch", type=int, default=1, help="batch size (default 1)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=NUM_CLASSES, help=f"output classes ({NUM_CLASSES})"
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="EfficientViT backbone instead of the model's own, e.g. efficientvit_b2 "
        "(hapeformer_seed: efficientvit_b1 or efficientvit_b2)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (torch's default)"
    )


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``summary`` and ``bench`` to ``python -m haformer``."""
    p = subparsers.add_parser(
        "summary",
        help="torchinfo layer table and fvcore FLOP table of a model",
        description="Print torchinfo's summary and fvcore's FLOP table; the total is in "
        "GFLOPs = GMACs (fvcore counts one multiply-add as one FLOP).",
    )
    _add_model_args(p)
    p.add_argument("--depth", type=int, default=3, help="module depth of both tables (3)")
    p.set_defaults(func=_cmd_summary)

    p = subparsers.add_parser(
        "bench",
        help="parameters, GFLOPs and latency of a model",
        description="Time a model (median of per-iteration times after warm-up) and count its "
        "parameters and GFLOPs (= GMACs, per image at batch 1).",
    )
    _add_model_args(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    p.add_argument("--warmup", type=int, default=10, help="untimed passes first (10)")
    p.add_argument("--iters", type=int, default=50, help="timed passes (50)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--fuse", action="store_true", help="time haformer.fuse(model)")
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=COMPILE_MODES,
        help="torch.compile the model first (mode: default; reduce-overhead = CUDA graphs on "
        "a GPU, the batch-1 frame-rate setting; max-autotune); the compile time is reported",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_bench)
