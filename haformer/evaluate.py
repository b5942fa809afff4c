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
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from tqdm import tqdm

from haformer.checkpoint import load_checkpoint
from haformer.data import CLASSES, IGNORE_INDEX, NUM_CLASSES, CamVid, colorize
from haformer.data.errors import DatasetError
from haformer.data.transforms import eval_transforms
from haformer.metrics import SegMetrics, all_reduce_sum
from haformer.model import create_model, input_multiple
from haformer.utils import default_device, parse_size


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
    computed at the label resolution. The confusion matrix stays on ``device``; under
    torch.distributed each process scores its own shard and the counts (and the loss) are
    summed over all processes before scoring.

    Returns:
        :func:`haformer.metrics.metrics_from_confusion`'s dict (``miou``, ``iou``,
        ``pixel_acc``, ``mean_acc``, ``acc``, ``pixels``) plus ``confusion`` (C x C nested
        list, rows = target) and, with a ``criterion``, ``loss`` (mean over batches).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    metrics = SegMetrics(num_classes, ignore_index, device=device)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, batches)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    for images, masks in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        masks = masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            logits = segment(model, images, multiple, size)
            if criterion is not None:
                loss_sum += torch.stack(
                    [criterion(logits.float(), masks).double(), loss_sum.new_ones(())]
                )
        metrics.update(logits, masks)
    model.train(was_training)
    metrics.all_reduce()
    result = metrics.compute()
    result["confusion"] = metrics.matrix.tolist()
    if criterion is not None:
        total, batches = all_reduce_sum(loss_sum).tolist()
        result["loss"] = total / batches if batches else math.nan
    return result


def load_model(
    checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a haformer checkpoint was trained as, with its weights, in eval mode.

    Returns ``(model, config)`` where ``config`` is the training configuration stored in the
    checkpoint (a dict; ``config["model"]`` is the registry name).
    """
    state = load_checkpoint(checkpoint, map_location="cpu")
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in config or "model" not in state:
        raise ValueError(
            f"{checkpoint} is not a haformer training checkpoint (it needs 'model' weights and a "
            "'config' with the model name); use last.pt or best.pt from `python -m haformer train`"
        )
    model = create_model(
        config["model"],
        num_classes=config.get("num_classes", NUM_CLASSES),
        pretrained=False,
        **config.get("model_kwargs", {}),
    )
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config


@torch.no_grad()
def predict(
    model: nn.Module, image: np.ndarray, multiple: int = 1, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Class ids (H, W) int64 for one uint8 RGB image (H, W, 3), at the image's resolution."""
    device = next(model.parameters()).device
    pixels = tv_tensors.Image(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1))
    dummy = tv_tensors.Mask(torch.zeros(image.shape[:2], dtype=torch.uint8))
    tensor, _ = eval_transforms()(pixels, dummy)
    logits = segment(model.eval(), tensor[None].to(device), multiple, size)
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
    device = torch.device(args.device) if args.device else default_device()
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
        multiple=input_multiple(config["model"]),
        size=_input_size(args, config),
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
    device = torch.device(args.device) if args.device else default_device()
    model, config = load_model(args.checkpoint, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.images):
        if not path.is_file():
            raise FileNotFoundError(f"no image at {path}: pass paths of RGB images (PNG, JPEG)")
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB"))
        ids = predict(model, image, input_multiple(config["model"]), _input_size(args, config))
        target = out / f"{path.stem}_overlay.png"
        Image.fromarray(overlay(image, ids, args.alpha)).save(target)
        print(f"{path} -> {target}")
    return 0


def _input_size(args: argparse.Namespace, config: dict[str, Any]) -> tuple[int, int] | None:
    """--size, else the eval_size the model was validated at in training, else None."""
    if args.size:
        return parse_size(args.size)
    size = config.get("eval_size")
    return None if size is None else (int(size[0]), int(size[1]))


def _guarded(run: Any) -> Any:
    """Run a command; print data and input problems without a traceback (exit status 2)."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (DatasetError, FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapper


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` and ``predict`` commands."""
    ev = subparsers.add_parser("evaluate", help="score a checkpoint on a CamVid split")
    ev.add_argument("--checkpoint", required=True, help="best.pt or last.pt from `train`")
    ev.add_argument(
        "--data-root", default=None, help="CamVid root (default: $CAMVID_ROOT or ./data/camvid)"
    )
    ev.add_argument("--split", default="test", choices=("train", "val", "test", "trainval"))
    ev.add_argument("--json", action="store_true", help="print one JSON object (miou, iou, ...)")
    _model_options(ev)
    ev.add_argument("--amp", action="store_true", help="mixed precision (fp16 CUDA, bf16 CPU)")
    ev.add_argument("--batch-size", type=int, default=1)
    ev.add_argument("--workers", type=int, default=2)
    ev.set_defaults(func=_guarded(_run_evaluate))

    pr = subparsers.add_parser("predict", help="write colour overlays of a model's predictions")
    pr.add_argument("--checkpoint", required=True, help="best.pt or last.pt from `train`")
    pr.add_argument("images", nargs="+", help="RGB image files")
    pr.add_argument("--out", required=True, help="folder for <name>_overlay.png files")
    pr.add_argument("--alpha", type=float, default=0.5, help="colour weight of the overlay")
    _model_options(pr)
    pr.set_defaults(func=_guarded(_run_predict))


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: best available)")
    parser.add_argument(
        "--size",
        default=None,
        help="HxW model input size (default: the checkpoint's eval_size, else full resolution)",
    )
