"""Scoring and using a trained model: ``evaluate``, checkpoint loading, overlays, plots, CLI.

Commands::

    python -m haformer evaluate --checkpoint runs/b1/best.pt --data-root data/camvid --split test
    python -m haformer evaluate --checkpoint runs/b1/best.pt --split test --json
    python -m haformer predict --checkpoint runs/b1/best.pt photo1.png photo2.png --out preds/
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from tqdm import tqdm

from haformer.checkpoint import atomic_write
from haformer.data import CLASSES, IGNORE_INDEX, NUM_CLASSES, SPLIT_CHOICES, CamVid, colorize
from haformer.data.transforms import eval_transforms
from haformer.errors import ConfigError, MissingFileError, UsageError
from haformer.metrics import SegMetrics, all_reduce_sum
from haformer.model import input_multiple, load_model
from haformer.utils import (
    accumulate,
    accumulator_device,
    amp_dtype,
    ensure_dir,
    eval_mode,
    parse_size,
    resolve_device,
)

__all__ = [
    "evaluate",
    "format_table",
    "load_model",
    "overlay",
    "plot_confusion",
    "predict",
    "segment",
]


def segment(
    model: nn.Module, images: Tensor, multiple: int = 1, size: tuple[int, int] | None = None
) -> Tensor:
    """Logits (B, C, H, W) at the resolution of ``images`` (B, 3, H, W), whatever the model needs.

    With ``size`` (h, w) the images are first resized to it (a model trained at reduced
    resolution sees what it was trained on) and the logits resized back, bilinearly. Sides not
    divisible by ``multiple`` are padded bottom/right with zeros (the dataset mean colour after
    normalisation) and the padding is cropped off the logits.
    """
    h, w = images.shape[-2:]
    weight = next(model.parameters(), None)
    if weight is not None and images.is_floating_point() and images.dtype != weight.dtype:
        images = images.to(weight.dtype)  # float64/float16 inputs run at the model's precision
    if size is not None and tuple(size) != (h, w):
        images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
    ih, iw = images.shape[-2:]
    ph, pw = -ih % multiple, -iw % multiple
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))
    logits = model(images)[..., :ih, :iw]
    if (ih, iw) != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: torch.device | str | None = None,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    *,
    criterion: nn.Module | None = None,
    amp: bool = False,
    channels_last: bool = False,
    multiple: int = 1,
    size: tuple[int, int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``model`` on every batch of ``loader`` (images (B, 3, H, W), masks (B, H, W)).

    ``multiple`` and ``size`` are passed to :func:`segment` (padding for models that need
    divisible sides, resizing for models trained at reduced resolution); scores are always
    computed at the label resolution. The confusion matrix stays on ``device`` and nothing
    waits for the device until the end; under torch.distributed each process scores its own
    shard and the counts (and the loss) are summed over all processes before scoring. The
    model's train/eval flag is restored afterwards.

    Raises UsageError if the model gave NaN or infinite logits (NaN in the inputs, or a
    diverged model): scores of such outputs would mean nothing.

    Returns:
        :func:`haformer.metrics.metrics_from_confusion`'s dict (``miou``, ``iou``,
        ``pixel_acc``, ``mean_acc``, ``acc``, ``pixels``) plus ``confusion`` (C x C nested
        list, rows = target) and, with a ``criterion``, ``loss`` (mean over batches).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    metrics = SegMetrics(num_classes, ignore_index, device=device)
    # (sum of losses, batches, batches with non-finite logits), float64 where the device has it
    totals = torch.zeros(3, dtype=torch.float64, device=accumulator_device(device))
    with eval_mode(model):
        for images, masks in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            masks = masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype(device), enabled=amp):
                logits = segment(model, images, multiple, size)
                loss = (
                    criterion(logits.float(), masks)
                    if criterion is not None
                    else logits.new_zeros(())
                )
            accumulate(totals, loss, loss.new_ones(()), (~torch.isfinite(logits)).any())
            metrics.update(logits, masks)
    all_reduce_sum(totals)
    metrics.all_reduce()
    total, batches, nonfinite = totals.tolist()
    if nonfinite:
        raise UsageError(
            f"the model gave NaN or infinite logits for {int(nonfinite)} of {int(batches)} "
            "batches: the inputs hold NaN/inf values, or the weights have diverged"
        )
    result = metrics.compute()
    result["confusion"] = metrics.matrix.tolist()
    if criterion is not None:
        result["loss"] = total / batches if batches else math.nan
    return result


@torch.no_grad()
def predict(
    model: nn.Module, image: np.ndarray, multiple: int = 1, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Class ids (H, W) int64 for one uint8 RGB image (H, W, 3), at the image's resolution."""
    device = next(model.parameters()).device
    pixels = tv_tensors.Image(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1))
    dummy = tv_tensors.Mask(torch.zeros(image.shape[:2], dtype=torch.uint8))
    tensor, _ = eval_transforms()(pixels, dummy)
    with eval_mode(model):
        logits = segment(model, tensor[None].to(device), multiple, size)
    return logits.argmax(dim=1)[0].cpu().numpy()


def overlay(image: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the palette colours of ``ids`` (H, W) over ``image`` (H, W, 3) uint8 -> uint8."""
    colours = colorize(ids).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha).round().astype(np.uint8)


def plot_confusion(
    matrix: Tensor | np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str] = CLASSES,
    normalize: bool = True,
) -> Figure:
    """A confusion-matrix figure, rows = ground truth, each row normalised to sum to 1.

    Rows of classes absent from the ground truth stay empty (zero) instead of dividing by 0.
    """
    m = np.asarray(matrix.cpu() if isinstance(matrix, Tensor) else matrix, dtype=np.float64)
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig = Figure(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(shown, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    for (row, col), value in np.ndenumerate(m):
        text = f"{value:.2f}" if normalize else f"{int(value)}"
        colour = "white" if normalize and value > 0.5 else "black"
        ax.text(col, row, text, ha="center", va="center", fontsize=7, color=colour)
    return fig


def format_table(result: dict[str, Any], class_names: Sequence[str] = CLASSES) -> str:
    """A plain-text per-class IoU table followed by mIoU, pixel and mean class accuracy."""
    width = max(len(name) for name in class_names)
    lines = [f"{'class':<{width}}   IoU (%)"]
    rows = zip(class_names, result["iou"], strict=True)
    lines += [f"{name:<{width}}   {100 * v:6.2f}" for name, v in rows]
    lines += [
        f"{'mIoU':<{width}}   {100 * result['miou']:6.2f}",
        f"{'pixel acc':<{width}}   {100 * result['pixel_acc']:6.2f}",
        f"{'mean acc':<{width}}   {100 * result['mean_acc']:6.2f}",
    ]
    return "\n".join(lines)


def _json_value(value: Any) -> Any:
    """NaN -> None so the output is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _run_evaluate(args: argparse.Namespace) -> int:
    _check_counts(args, "batch_size", "workers")
    device = resolve_device(args.device)
    size = _input_size(args.size)
    model, config = load_model(args.checkpoint, device)
    dataset = CamVid(args.data_root, args.split, transforms=eval_transforms())
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    result = evaluate(
        model,
        loader,
        device,
        config.get("num_classes", NUM_CLASSES),
        amp=args.amp,
        multiple=input_multiple(model),
        size=size or _trained_size(config),
        progress=not args.json,
    )
    if args.json:
        keys = ("miou", "iou", "pixel_acc", "mean_acc", "acc", "pixels")
        out = {k: _json_value(result[k]) for k in keys}
        out.update(classes=list(CLASSES), split=args.split, checkpoint=str(args.checkpoint))
        print(json.dumps(out))
    else:
        print(
            f"{config['model']} from {args.checkpoint}, CamVid {args.split}: {len(dataset)} images"
        )
        print(format_table(result))
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha is the colour weight, between 0 and 1; got {args.alpha}")
    device = resolve_device(args.device)
    size = _input_size(args.size)
    paths = [Path(p) for p in args.images]
    for path in paths:  # every input is checked before the first prediction
        if not path.is_file():
            what = "a folder" if path.is_dir() else "no file"
            raise MissingFileError(
                f"no image at {path} ({what} there): pass paths of RGB images (PNG, JPEG)"
            )
    out = ensure_dir(args.out, "--out")
    model, config = load_model(args.checkpoint, device)
    for path in paths:
        image = _read_image(path)
        ids = predict(model, image, input_multiple(model), size or _trained_size(config))
        target = out / f"{path.stem}_overlay.png"
        picture = Image.fromarray(overlay(image, ids, args.alpha))
        atomic_write(target, lambda f, picture=picture: picture.save(f, format="PNG"))
        print(f"{path} -> {target}")
    return 0


def _read_image(path: Path) -> np.ndarray:
    """The RGB pixels (H, W, 3) uint8 of an image file; UsageError if it is not an image."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UsageError(
            f"{path} is not an image PIL can read ({type(err).__name__}): pass RGB images "
            "(PNG, JPEG)"
        ) from err


def _input_size(text: str | None) -> tuple[int, int] | None:
    """--size as (H, W), None when not given."""
    return parse_size(text) if text else None


def _trained_size(config: dict[str, Any]) -> tuple[int, int] | None:
    """The eval_size the model was validated at in training, else None (full resolution)."""
    size = config.get("eval_size")
    return None if size is None else (int(size[0]), int(size[1]))


def _check_counts(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        low = 0 if name == "workers" else 1
        if getattr(args, name) < low:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be at least {low}; got {getattr(args, name)}")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` and ``predict`` commands."""
    ev = subparsers.add_parser("evaluate", help="score a checkpoint on a CamVid split")
    ev.add_argument("--checkpoint", required=True, help="best.pt or last.pt from `train`")
    ev.add_argument(
        "--data-root",
        "--root",
        default=None,
        metavar="DIR",
        help="CamVid root (default: $CAMVID_ROOT, else ./data/camvid)",
    )
    ev.add_argument(
        "--split", default="test", choices=SPLIT_CHOICES, help="split to score (default: test)"
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object (miou, iou, ...)")
    _model_options(ev)
    ev.add_argument("--amp", action="store_true", help="mixed precision (fp16 CUDA, bf16 CPU)")
    ev.add_argument("--batch-size", type=int, default=1, help="images per batch (default: 1)")
    ev.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: 2)")
    ev.set_defaults(func=_run_evaluate)

    pr = subparsers.add_parser("predict", help="write colour overlays of a model's predictions")
    pr.add_argument("--checkpoint", required=True, help="best.pt or last.pt from `train`")
    pr.add_argument("images", nargs="+", help="RGB image files")
    pr.add_argument("--out", required=True, help="folder for <name>_overlay.png files")
    pr.add_argument(
        "--alpha", type=float, default=0.5, help="colour weight of the overlay (default: 0.5)"
    )
    _model_options(pr)
    pr.set_defaults(func=_run_predict)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available)"
    )
    parser.add_argument(
        "--size",
        default=None,
        metavar="HxW",
        help="model input size (default: the checkpoint's eval_size, else full resolution)",
    )
