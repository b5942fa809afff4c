"""Training: TrainConfig, train(cfg), several GPUs through torchrun, `python -m haformer train`.

The defaults follow the CamVid protocol of LETNet, the authors' previous network (HAFormer's
own protocol is not public): random scale 0.75-2.0, 360x480 crops, horizontal flips,
cross entropy with ENet class weights ``1 / ln(1.10 + p_c)`` and void (11) ignored, Adam with
lr 1e-3, a linear warm-up then poly decay (power 0.9) stepped every iteration, batch 8,
1000 epochs, from scratch. Two choices are ours and documented here:

- **Splits.** The default trains on ``train`` (367 images) and validates on ``val`` (101)
  every ``val_every`` epochs, keeping ``best.pt`` by validation mIoU: an honest model
  selection. The paper protocol (train+val for training, test for scoring) is
  ``--train-split trainval --val-split none``, then ``python -m haformer evaluate
  --checkpoint OUT/last.pt --split test``; choosing a checkpoint by test mIoU is not done here.
- **Weight decay 1e-4 and a 5-epoch warm-up from 1% of the lr.** The LETNet description does
  not give these numbers.

Outputs in ``out``: ``last.pt`` (everything needed to resume, written atomically at the end
of every epoch), ``best.pt`` (weights + config at the best validation mIoU), ``history.csv``
(one row per epoch) and ``curves.png``.

Several GPUs: ``torchrun --nproc_per_node=N -m haformer train ...``. Each process takes
``batch_size`` images per step (the global batch is N x batch_size), the data are split by a
``DistributedSampler``, metrics are summed over processes, and only rank 0 logs and writes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from haformer.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from haformer.data import (
    CLASSES,
    IGNORE_INDEX,
    NUM_CLASSES,
    CamVid,
    class_weights,
    download_camvid,
)
from haformer.data.errors import DatasetError, DatasetNotFoundError
from haformer.data.transforms import eval_transforms, train_transforms
from haformer.evaluate import evaluate
from haformer.losses import build_loss
from haformer.metrics import SegMetrics, all_reduce_sum
from haformer.model import create_model, input_multiple
from haformer.utils import default_device, parse_size, seed_everything

OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("ce", "ohem")
WEIGHTINGS = ("enet", "median", "none")
# fields that fix the number and meaning of the steps; a resumed run must match them
RESUME_MUST_MATCH = ("model", "model_kwargs", "num_classes", "epochs", "optimizer", "train_split")


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in every checkpoint as a plain dict)."""

    data_root: str | None = None
    """CamVid root; None: ``$CAMVID_ROOT``, else ``./data/camvid``."""
    out: str = "runs/haformer"
    model: str = "haformer_b1"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    """ImageNet weights for the EfficientViT branch (LETNet-style training is from scratch)."""
    num_classes: int = NUM_CLASSES
    train_split: str = "train"
    val_split: str | None = "val"
    """None (CLI: ``none``) skips validation; then no ``best.pt`` is written."""
    epochs: int = 1000
    batch_size: int = 8
    """Images per step and per process."""
    val_batch_size: int | None = None
    """None: ``batch_size``."""
    crop: tuple[int, int] = (360, 480)
    scale: tuple[float, float] = (0.75, 2.0)
    base_size: tuple[int, int] | None = None
    """(H, W) the scale range refers to; None: the full 360x480. Set it (and ``eval_size``)
    to the crop size to train and score at reduced resolution, e.g. 180x240."""
    eval_size: tuple[int, int] | None = None
    """Validation inputs are resized to this (logits resized back; scored at label size)."""
    flip: bool = True
    color_jitter: bool = False
    cache: bool = False
    """Decode the dataset into memory once (about 250 MB for train)."""
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    """SGD only."""
    warmup_epochs: float = 5.0
    """Linear warm-up length (capped at half of the run), then poly decay to 0."""
    warmup_start: float = 0.01
    """First warm-up lr as a fraction of ``lr``."""
    poly_power: float = 0.9
    loss: str = "ce"
    class_weights: str | list[float] = "enet"
    """"enet", "median" or "none" (computed from the CamVid labels of ``train_split``), or 11
    explicit weights."""
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100_000
    amp: bool | None = None
    """Mixed precision; None: on for CUDA (fp16 + GradScaler), off elsewhere. True on CPU
    means bf16 autocast."""
    channels_last: bool = False
    clip_grad: float | None = None
    """Max gradient norm (None: no clipping)."""
    sync_bn: bool = False
    """SyncBatchNorm across GPUs (CUDA DDP only)."""
    val_every: int = 10
    """Validate every N epochs (and always after the last one)."""
    workers: int = min(4, os.cpu_count() or 1)
    device: str | None = None
    """None: CUDA if available, else MPS, else CPU."""
    seed: int = 0
    deterministic: bool = False
    """Deterministic kernels (slower on GPU); CPU runs with a seed repeat without it."""
    resume: bool = False
    progress: bool = True
    """tqdm bars (rank 0 only)."""

    def __post_init__(self) -> None:
        self.crop = _pair(self.crop, int)
        self.scale = _pair(self.scale, float)
        self.base_size = None if self.base_size is None else _pair(self.base_size, int)
        self.eval_size = None if self.eval_size is None else _pair(self.eval_size, int)
        if self.val_split in ("", "none"):
            self.val_split = None
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSSES)
        if isinstance(self.class_weights, str):
            _choice("class_weights", self.class_weights, WEIGHTINGS)
        elif len(self.class_weights) != self.num_classes:
            raise ValueError(
                f"class_weights needs {self.num_classes} values (one per class); "
                f"got {len(self.class_weights)}"
            )
        for name in ("epochs", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        multiple = input_multiple(self.model)
        if self.crop[0] % multiple or self.crop[1] % multiple:
            raise ValueError(
                f"{self.model} needs input sides divisible by {multiple}; crop is "
                f"{self.crop[0]}x{self.crop[1]}: use for example --crop 352x480"
            )


def train(
    cfg: TrainConfig, train_set: Dataset | None = None, val_set: Dataset | None = None
) -> dict[str, Any]:
    """Train as ``cfg`` says; usable from notebooks and run by ``python -m haformer train``.

    Args:
        cfg: the configuration.
        train_set, val_set: datasets to use instead of CamVid from ``cfg.data_root`` (for
            example a ``Subset``); items are (float image (3, H, W), int64 mask (H, W)).
            With your own data, give ``cfg.class_weights`` as numbers or ``"none"``.

    Returns:
        dict with ``out`` (Path), ``history`` (list of per-epoch dicts, as in history.csv),
        ``best_miou`` and ``best_epoch`` (None without validation), ``last`` and ``best``
        (checkpoint paths; ``best`` None without validation) and ``final`` (the last
        validation metrics, or None).

    Launched by torchrun (``WORLD_SIZE`` > 1 in the environment), it joins the process
    group (NCCL on CUDA, gloo otherwise) and leaves it at the end.
    """
    run = _Run.start(cfg)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
        torch.backends.cudnn.benchmark = not cfg.deterministic
        return _train(cfg, run, train_set, val_set)
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        run.close()


@dataclass
class _Run:
    """Where this process runs: rank, world size, device; whether it opened the process group."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, cfg: TrainConfig) -> _Run:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = torch.device(cfg.device) if cfg.device else default_device()
        if world == 1:
            return cls(0, 1, device, False)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device, owns)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def log(self, message: str) -> None:
        if self.main:
            tqdm.write(message)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    cfg: TrainConfig, run: _Run, train_set: Dataset | None, val_set: Dataset | None
) -> dict[str, Any]:
    out = Path(cfg.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    seed_everything(cfg.seed + run.rank)
    if train_set is None:
        train_set = CamVid(cfg.data_root, cfg.train_split, _train_transforms(cfg), cfg.cache)
    if val_set is None and cfg.val_split is not None:
        val_set = CamVid(cfg.data_root, cfg.val_split, eval_transforms(), cfg.cache)
    weights = _class_weights(cfg)

    model = create_model(
        cfg.model, num_classes=cfg.num_classes, pretrained=cfg.pretrained, **cfg.model_kwargs
    ).to(run.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and run.world > 1 and run.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net: nn.Module = model
    if run.world > 1:
        ids = [run.device.index] if run.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)

    train_loader = _train_loader(cfg, run, train_set)
    val_loader = None if val_set is None else _val_loader(cfg, run, val_set)
    steps_per_epoch = len(train_loader)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    use_amp = cfg.amp if cfg.amp is not None else run.device.type == "cuda"
    amp_dtype = torch.float16 if run.device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(run.device.type, enabled=use_amp and amp_dtype == torch.float16)
    criterion = build_loss(cfg.loss, weights, IGNORE_INDEX, cfg.ohem_thresh, cfg.ohem_min_kept).to(
        run.device
    )

    progress, history = _restore(
        cfg, run, last_path, steps_per_epoch, model, optimizer, scheduler, scaler
    )
    run.log(
        f"training {cfg.model} on {len(train_set)} images ({steps_per_epoch} steps/epoch, "
        f"{run.world} process(es), {run.device}, amp {'on' if use_amp else 'off'}) -> {out}"
    )
    run.barrier()  # every rank has read last.pt before rank 0 may overwrite it

    final = None
    for epoch in range(progress["epoch"], cfg.epochs):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        stats = _train_one_epoch(
            cfg, run, net, train_loader, criterion, optimizer, scheduler, scaler, epoch,
            (use_amp, amp_dtype),
        )  # fmt: skip
        progress["step"] += steps_per_epoch
        progress["epoch"] = epoch + 1
        row = {"epoch": epoch + 1, "step": progress["step"], **stats}
        done = epoch + 1 == cfg.epochs
        if val_loader is not None and ((epoch + 1) % cfg.val_every == 0 or done):
            _sync_buffers(model, run)
            final = evaluate(
                model, val_loader, run.device, cfg.num_classes, IGNORE_INDEX,
                criterion=criterion, amp=use_amp, channels_last=cfg.channels_last,
                multiple=input_multiple(cfg.model), size=cfg.eval_size,
            )  # fmt: skip
            row.update(_val_columns(final))
            if progress["best_miou"] is None or final["miou"] > progress["best_miou"]:
                progress.update(best_miou=final["miou"], best_epoch=epoch + 1)
                if run.main:
                    save_checkpoint(best_path, _best_state(cfg, model, epoch + 1, final))
        history.append(row)
        rngs = _gather_rng(run)
        if run.main:
            save_checkpoint(
                last_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    **progress,
                    "steps_per_epoch": steps_per_epoch,
                    "history": history,
                    "config": config_dict(cfg),
                    "classes": list(CLASSES),
                    "rng": rngs,
                },
            )
            write_history(history, out / "history.csv")
            plot_history(history).savefig(out / "curves.png", dpi=100)
        run.log(_epoch_line(row, cfg.epochs, progress))
        run.barrier()
    return {
        "out": out,
        "history": history,
        "best_miou": progress["best_miou"],
        "best_epoch": progress["best_epoch"],
        "last": last_path,
        "best": best_path if progress["best_epoch"] is not None else None,
        "final": final,
    }


def _restore(
    cfg: TrainConfig,
    run: _Run,
    path: Path,
    steps_per_epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load ``path`` into the run's objects if resuming; returns (progress, history)."""
    progress: dict[str, Any] = {"epoch": 0, "step": 0, "best_miou": None, "best_epoch": None}
    if path.is_file() and not cfg.resume:
        raise ValueError(
            f"{path.parent} already holds last.pt from an earlier run: pass --resume "
            "(resume=True) to continue it, or choose another --out"
        )
    if not cfg.resume:
        return progress, []
    if not path.is_file():
        run.log(f"--resume: no {path} yet, starting a new run")
        return progress, []
    state = load_checkpoint(path, map_location=run.device)
    _check_resumable(state, cfg, steps_per_epoch, path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    progress.update({k: state[k] for k in progress})
    rng = state["rng"]
    set_rng_state(rng[run.rank] if len(rng) == run.world else rng[0])
    run.log(
        f"resumed from {path}: {progress['epoch']} of {cfg.epochs} epochs done, "
        f"step {progress['step']}, best mIoU {_fmt(progress['best_miou'])}"
    )
    return progress, list(state["history"])


def _train_one_epoch(
    cfg: TrainConfig,
    run: _Run,
    net: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    epoch: int,
    amp: tuple[bool, torch.dtype],
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, train mIoU, lr and images/s (all ranks)."""
    net.train()
    metrics = SegMetrics(cfg.num_classes, IGNORE_INDEX, device=run.device)
    totals = torch.zeros(2, dtype=torch.float64, device=run.device)  # (loss sum, steps)
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        dynamic_ncols=True,
        disable=not (run.main and cfg.progress),
    )
    start, images = time.perf_counter(), 0
    for i, (x, y) in enumerate(bar):
        x = x.to(run.device, non_blocking=True)
        y = y.to(run.device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=amp[1], enabled=amp[0]):
            logits = net(x)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        totals += torch.stack([loss.detach().double(), totals.new_ones(())])
        metrics.update(logits.detach(), y)
        images += x.shape[0]
        if bar.disable is False and (i % 10 == 0 or i + 1 == len(loader)):
            bar.set_postfix(
                loss=f"{float(totals[0] / totals[1]):.4f}",
                lr=f"{scheduler.get_last_lr()[0]:.2e}",
                img_s=f"{images * run.world / (time.perf_counter() - start):.1f}",
            )
    all_reduce_sum(totals)
    metrics.all_reduce()
    seconds = time.perf_counter() - start
    return {
        "lr": scheduler.get_last_lr()[0],
        "train_loss": float(totals[0] / totals[1]),
        "train_miou": metrics.compute()["miou"],
        "images_per_s": images * run.world / seconds,
        "epoch_s": seconds,
    }


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (Nesterov-free, momentum ``cfg.momentum``) over all parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """Per-iteration schedule: LinearLR warm-up from ``warmup_start * lr``, then PolynomialLR
    (power ``poly_power``) down to 0 at the last step, joined by SequentialLR."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total // 2)
    poly = lr_scheduler.PolynomialLR(optimizer, total_iters=total - warmup, power=cfg.poly_power)
    if warmup == 0:
        return poly
    ramp = lr_scheduler.LinearLR(optimizer, cfg.warmup_start, 1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, poly], milestones=[warmup])


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as a plain dict (tuples become lists), as stored in checkpoints."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def write_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    """One CSV row per epoch; columns are the union of the rows' keys, in first-seen order."""
    columns = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def plot_history(history: Sequence[dict[str, Any]]) -> Figure:
    """Loss, mIoU and learning-rate curves over the epochs of ``history``."""
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    axes = fig.subplots(1, 3)
    epochs = [row["epoch"] for row in history]
    panels = (("loss", ("train_loss", "val_loss")), ("mIoU", ("train_miou", "val_miou")))
    for ax, (title, keys) in zip(axes, panels, strict=False):
        for key in keys:
            points = [(row["epoch"], row[key]) for row in history if key in row]
            if points:
                ax.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None)
        ax.set(title=title, xlabel="epoch")
        ax.legend([k.split("_")[0] for k in keys if any(k in row for row in history)])
    axes[2].plot(epochs, [row["lr"] for row in history])
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    return fig


def _train_transforms(cfg: TrainConfig):
    extra = {} if cfg.base_size is None else {"base_size": cfg.base_size}
    return train_transforms(cfg.crop, cfg.scale, cfg.flip, cfg.color_jitter, **extra)


def _class_weights(cfg: TrainConfig) -> Tensor | None:
    if not isinstance(cfg.class_weights, str):
        return torch.tensor(cfg.class_weights, dtype=torch.float32)
    if cfg.class_weights == "none":
        return None
    return class_weights(CamVid(cfg.data_root, cfg.train_split), cfg.class_weights)


def _train_loader(cfg: TrainConfig, run: _Run, dataset: Dataset) -> DataLoader:
    sampler = None
    if run.world > 1:
        sampler = DistributedSampler(dataset, run.world, run.rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=run.device.type == "cuda",
        drop_last=True,
    )
    if len(loader) == 0:
        raise ValueError(
            f"{len(dataset)} training images give no full batch of {cfg.batch_size} per process "
            f"({run.world} process(es)): lower --batch-size"
        )
    return loader


def _val_loader(cfg: TrainConfig, run: _Run, dataset: Dataset) -> DataLoader:
    """Each rank scores every world-th image (no padding, so summed counts are exact)."""
    if run.world > 1:
        dataset = Subset(dataset, range(run.rank, len(dataset), run.world))
    return DataLoader(
        dataset,
        batch_size=cfg.val_batch_size or cfg.batch_size,
        num_workers=cfg.workers,
        pin_memory=run.device.type == "cuda",
    )


def _sync_buffers(model: nn.Module, run: _Run) -> None:
    """Give every rank rank 0's BatchNorm statistics before validating."""
    if run.world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def _gather_rng(run: _Run) -> list[dict[str, Any]]:
    """Random states of all ranks (rank order), so each resumes its own stream."""
    state = rng_state()
    if run.world == 1:
        return [state]
    gathered: list[Any] = [None] * run.world
    dist.all_gather_object(gathered, {k: _to_cpu(v) for k, v in state.items()})
    return gathered


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.cpu()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _check_resumable(state: dict, cfg: TrainConfig, steps_per_epoch: int, path: Path) -> None:
    saved = state.get("config", {})
    now = config_dict(cfg)
    differ = [
        f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in RESUME_MUST_MATCH if saved.get(k) != now[k]
    ]
    if state.get("steps_per_epoch") != steps_per_epoch:
        differ.append(f"steps per epoch: {state.get('steps_per_epoch')} -> {steps_per_epoch}")
    if differ:
        raise ValueError(
            f"cannot resume {path}: the run was started with other settings ({'; '.join(differ)}). "
            "Resume with the original settings (batch size, number of processes, ...) or start "
            "a new run in another --out"
        )


def _best_state(cfg: TrainConfig, model: nn.Module, epoch: int, metrics: dict) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "config": config_dict(cfg),
        "epoch": epoch,
        "best_miou": metrics["miou"],
        "metrics": metrics,
        "classes": list(CLASSES),
    }


def _val_columns(metrics: dict[str, Any]) -> dict[str, float]:
    row = {
        "val_loss": metrics["loss"],
        "val_miou": metrics["miou"],
        "val_pixel_acc": metrics["pixel_acc"],
        "val_mean_acc": metrics["mean_acc"],
    }
    row.update({f"val_iou_{name}": v for name, v in zip(CLASSES, metrics["iou"], strict=False)})
    return row


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def _epoch_line(row: dict[str, Any], epochs: int, progress: dict[str, Any]) -> str:
    text = (
        f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  "
        f"train mIoU {_fmt(row['train_miou'])}"
    )
    if "val_miou" in row:
        text += (
            f"  val mIoU {_fmt(row['val_miou'])} "
            f"(best {_fmt(progress['best_miou'])} @ {progress['best_epoch']})"
        )
    return text + f"  lr {row['lr']:.2e}  {row['images_per_s']:.1f} img/s  {row['epoch_s']:.0f} s"


def _pair(value: Any, kind: type) -> tuple:
    if isinstance(value, str):
        value = parse_size(value) if kind is int else tuple(float(v) for v in value.split(","))
    if len(value) != 2:
        raise ValueError(f"expected two numbers (height, width or low, high); got {value!r}")
    return tuple(kind(v) for v in value)


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


# ----------------------------------------------------------------------------- command line

CLI_EXAMPLES = """examples:
  python -m haformer train --data-root data/camvid --out runs/b1
  python -m haformer train --out runs/b1 --resume          # continue after an interruption
  python -m haformer train --train-split trainval --val-split none --out runs/paper
  torchrun --nproc_per_node=4 -m haformer train --batch-size 2 --out runs/ddp   # 4 GPUs
  python -m haformer train --model haformer_b0 --crop 180x240 --base-size 180x240 \\
      --eval-size 180x240 --epochs 60 --val-every 5 --device cpu   # reduced resolution
"""


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``python -m haformer train``; its defaults are :class:`TrainConfig`'s."""
    d = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a model on CamVid (torchrun --nproc_per_node=N for several GPUs)",
        description="Train on CamVid. The defaults are the LETNet-style recipe: haformer_b1,\n"
        "1000 epochs, batch 8, 360x480 crops, scale 0.75-2.0, Adam 1e-3, warm-up + poly 0.9,\n"
        "ENet class weights; train on train, validate on val every 10 epochs.",
        epilog=CLI_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data-root", default=None, help="CamVid root (default: $CAMVID_ROOT or ./data/camvid)"
    )
    p.add_argument("--download", action="store_true", help="download CamVid first if it is missing")
    p.add_argument("--out", default=d.out, help=f"run folder (default {d.out})")
    p.add_argument("--model", default=d.model, help=f"registry name (default {d.model})")
    p.add_argument("--pretrained", action="store_true", help="ImageNet weights for the backbone")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--val-batch-size", type=int, default=None)
    p.add_argument("--crop", default="x".join(map(str, d.crop)), help="HxW training crop")
    p.add_argument(
        "--scale", default=",".join(map(str, d.scale)), help="random scale range LOW,HIGH"
    )
    p.add_argument("--base-size", default=None, help="HxW the scale refers to (reduced resolution)")
    p.add_argument(
        "--eval-size", default=None, help="HxW validation input size (reduced resolution)"
    )
    p.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--color-jitter", action="store_true")
    p.add_argument("--cache", action="store_true", help="keep decoded images in memory")
    p.add_argument("--train-split", default=d.train_split, choices=("train", "val", "trainval"))
    p.add_argument("--val-split", default=d.val_split, choices=("val", "test", "none"))
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD only")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--poly-power", type=float, default=d.poly_power)
    p.add_argument("--loss", default=d.loss, choices=LOSSES)
    p.add_argument("--class-weights", default=d.class_weights, choices=WEIGHTINGS)
    p.add_argument("--ohem-thresh", type=float, default=d.ohem_thresh)
    p.add_argument("--ohem-min-kept", type=int, default=d.ohem_min_kept)
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed precision (default: on for CUDA; on CPU --amp means bf16)",
    )
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--clip-grad", type=float, default=None, help="max gradient norm")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm (CUDA, several GPUs)")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--device", default=None, help="cuda, cpu, mps (default: best available)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
        if args.download:
            download_camvid(cfg.data_root)
        result = train(cfg)
    except (DatasetError, FileNotFoundError, ValueError) as error:
        hint = ""
        if isinstance(error, DatasetNotFoundError) and not args.download:
            hint = "\n(or add --download to this train command; --data-root sets the root)"
        print(f"error: {error}{hint}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        if result["best_miou"] is not None:
            print(f"best val mIoU {_fmt(result['best_miou'])} at epoch {result['best_epoch']}")
        print(f"checkpoints and history in {result['out']}")
    return 0
