"""Training: ``train(cfg)``, several GPUs through torchrun, ``python -m haformer train``.

Laid out like torchvision's ``references/segmentation/train.py``: :func:`train_one_epoch`,
:func:`validate` and :func:`main` (the command), with :func:`train` the function notebooks
call. The pieces live in their own modules: the settings in :mod:`haformer.config`, the
optimizer, schedule and budget in :mod:`haformer.schedule`, the run state and its files in
:mod:`haformer.state`, the data loaders in :mod:`haformer.loaders`, the processes in
:mod:`haformer.distributed`, the record in :mod:`haformer.history`.

The defaults follow the CamVid protocol of LETNet, the authors' previous network (HAFormer's
own protocol is not public): random scale 0.75-2.0, 360x480 crops, horizontal flips,
cross entropy with ENet class weights ``1 / ln(1.10 + p_c)`` and void ignored, Adam with
lr 1e-3, a linear warm-up then poly decay (power 0.9) stepped every iteration, batch 8,
1000 epochs, from scratch. Two choices are ours and documented here:

- **Splits.** The default trains on ``train`` (367 images) and validates on ``val`` (101)
  every ``val_every`` epochs, keeping ``best.pt`` by validation mIoU: an honest model
  selection. The paper protocol (train+val for training, test for scoring) is
  ``--train-split trainval --val-split none``, then ``python -m haformer evaluate
  --checkpoint OUT/last.pt --split test``; choosing a checkpoint by test mIoU is not done here.
- **Weight decay 1e-4 and a 5-epoch warm-up from 1% of the lr.** The LETNet description does
  not give these numbers.

Any network trains the same way: ``cfg.model`` names a registered model or a peer
(``fpn_mobilenet_v2``, ...), or ``train(cfg, model=net)`` takes any module mapping
(B, 3, H, W) to (B, K, H, W). A budget (``max_minutes`` of training time or ``max_images``
seen) ends a run early, with the poly decay stretched over the budget.

Outputs in ``out``: ``last.pt`` (everything needed to resume, written atomically at the end
of every epoch), ``best.pt`` (weights + config at the best validation mIoU), ``history.csv``
(one row per epoch) and ``curves.png``; with ``mirror`` a copy of all four every
``mirror_every`` epochs.

Several GPUs: ``torchrun --nproc_per_node=N -m haformer train ...``. Each process takes
``batch_size`` images per step (the global batch is N x batch_size), the data are split by a
``DistributedSampler``, metrics are summed over processes, and only rank 0 logs and writes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from haformer.checkpoint import set_rng_state
from haformer.config import (
    TrainConfig,
    add_config_arguments,
    command_line,
    config_dict,
    config_from_args,
    fit_crop,
)
from haformer.data import CLASSES, IGNORE_INDEX, CamVid, download_camvid
from haformer.data.errors import DatasetNotFoundError
from haformer.data.transforms import eval_transforms, train_transforms
from haformer.distributed import Run, unused_parameters
from haformer.errors import ConfigError, Interrupted, UsageError
from haformer.evaluate import evaluate
from haformer.history import epoch_line, percent, plot_history, val_columns, write_history
from haformer.loaders import check_dataset, class_weights_of, start_epoch, train_loader, val_loader
from haformer.losses import build_loss
from haformer.metrics import SegMetrics, all_reduce_sum
from haformer.model import CUSTOM_PREFIX, create_model, input_multiple
from haformer.schedule import Budget, build_optimizer, build_scheduler
from haformer.state import Progress, RunFolder, TrainState
from haformer.utils import accumulate, accumulator_device, amp_dtype, seed_everything

__all__ = [
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "config_dict",
    "main",
    "plot_history",
    "train",
    "train_one_epoch",
    "validate",
    "write_history",
]


def train(
    cfg: TrainConfig,
    train_set: Dataset | None = None,
    val_set: Dataset | None = None,
    *,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Train as ``cfg`` says; usable from notebooks and run by ``python -m haformer train``.

    Args:
        cfg: the configuration.
        train_set, val_set: datasets to use instead of CamVid from ``cfg.data_root`` (for
            example a ``Subset``); items are (float image (3, H, W), int64 mask (H, W)).
            With data that is not CamVid, give ``cfg.class_weights`` as numbers or "none".
        model: any ``nn.Module`` mapping (B, 3, H, W) to (B, cfg.num_classes, H, W), trained
            instead of ``create_model(cfg.model)``. Its checkpoints record the config with
            ``model = "custom:<class name>"``; to resume, pass the same network again. An
            ``input_multiple`` attribute, if it has one, says what its input sides must be
            divisible by.

    Returns:
        dict with ``out`` (Path), ``history`` (list of per-epoch dicts, as in history.csv),
        ``best_miou`` and ``best_epoch`` (None without validation), ``last`` and ``best``
        (checkpoint paths; ``best`` None without validation), ``final`` (the last
        validation metrics, or None) and ``progress`` (steps, images seen, training seconds).

    Raises:
        haformer.errors.UsageError: a setting, file or dataset that cannot work (one line).
        haformer.errors.Interrupted: Ctrl-C (a KeyboardInterrupt), saying where the run
            stands and how to resume it.

    Launched by torchrun (``WORLD_SIZE`` > 1 in the environment), it joins the process
    group (NCCL on CUDA, gloo otherwise) and leaves it at the end.
    """
    run = Run.start(cfg.device)
    try:
        with _determinism(cfg.deterministic):
            return _train(cfg, run, train_set, val_set, model)
    finally:
        run.close()


@contextlib.contextmanager
def _determinism(enabled: bool) -> Iterator[None]:
    """Deterministic kernels (and no cuDNN autotuning) for the block, then the old settings."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def _train(
    cfg: TrainConfig,
    run: Run,
    train_set: Dataset | None,
    val_set: Dataset | None,
    custom: nn.Module | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    folder = RunFolder(cfg.out, cfg.mirror)
    if run.main:
        for path in folder.prepare():
            run.log(f"removed {path.name}, left by an interrupted write")
    run.barrier()
    seed_everything(cfg.seed + run.rank)
    config = config_dict(cfg)
    for note in cfg.notes:
        run.log(note)

    model = _build_model(cfg, custom)
    crop = cfg.crop
    if custom is not None:
        config["model"] = CUSTOM_PREFIX + type(custom).__qualname__
        crop, note = fit_crop(cfg.crop, input_multiple(custom), config["model"])
        if note:
            run.log(note)
    model.to(run.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = _distribute(cfg, run, model, config["model"])

    if train_set is None:
        train_set = CamVid(cfg.data_root, cfg.train_split, _train_transforms(cfg, crop), cfg.cache)
    if val_set is None and cfg.val_split is not None:
        val_set = CamVid(cfg.data_root, cfg.val_split, eval_transforms(), cfg.cache)
    check_dataset(train_set, "training", every_item=False)
    if val_set is not None:
        check_dataset(val_set, "validation", every_item=True)  # a bad file stops us now

    pin = run.device.type == "cuda"
    train_data = train_loader(
        train_set, cfg.batch_size, cfg.workers, cfg.seed, run.rank, run.world, pin
    )
    val_data = None
    if val_set is not None:
        val_batch = cfg.val_batch_size or cfg.batch_size
        val_data = val_loader(val_set, val_batch, cfg.workers, run.rank, run.world, pin)
    steps_per_epoch = len(train_data)
    budget = Budget.of(cfg, steps_per_epoch)
    weights = class_weights_of(train_set, cfg.class_weights, cfg.num_classes)

    use_amp = cfg.amp if cfg.amp is not None else run.device.type == "cuda"
    fp16 = use_amp and amp_dtype(run.device) == torch.float16
    optimizer = build_optimizer(cfg, model)
    progress = Progress()  # updated in place by the loop and by a resume
    state = TrainState(
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=build_scheduler(cfg, optimizer, steps_per_epoch, lambda: _used(budget, progress)),
        scaler=torch.amp.GradScaler(run.device.type, enabled=fp16),
        criterion=build_loss(
            cfg.loss, weights, IGNORE_INDEX, cfg.ohem_thresh, cfg.ohem_min_kept
        ).to(run.device),
        progress=progress,
    )
    source = folder.resume_source(cfg.resume)
    if cfg.resume and source is None:
        run.log(f"--resume: no {folder.last} yet, starting a new run")
    if source is not None:
        if run.main:
            folder.restore_from_mirror(source, run.log)
        run.barrier()
        _resume(cfg, run, state, folder, config, steps_per_epoch)
    run.log(
        f"training {config['model']} on {len(train_set)} images ({steps_per_epoch} steps/epoch, "
        f"{run.world} process(es), {run.device}, amp {'on' if use_amp else 'off'}) -> {cfg.out}"
    )
    run.barrier()  # every rank has read last.pt before rank 0 may overwrite it

    final = None
    wall_before = progress.wall_seconds  # of earlier sessions of this run
    p = progress
    try:
        while not p.finished:
            epoch = p.epoch
            stats = train_one_epoch(state, train_data, cfg, run, epoch, budget, use_amp)
            p.epoch = epoch + 1
            used = _used(budget, p)
            p.finished = used >= 1.0 or epoch + 1 >= cfg.epochs
            row = {"epoch": epoch + 1, "step": p.step, "images_seen": p.images_seen,
                   "train_seconds": p.train_seconds, **stats}  # fmt: skip
            if val_data is not None and ((epoch + 1) % cfg.val_every == 0 or p.finished):
                final = validate(state, val_data, cfg, run, use_amp)
                row.update(val_columns(final))
                if p.best_miou is None or final["miou"] > p.best_miou:
                    p.best_miou, p.best_epoch = final["miou"], epoch + 1
                    if run.main:
                        folder.save_best(_best_state(config, model, epoch + 1, final))
            state.history.append(row)
            p.wall_seconds = wall_before + time.perf_counter() - started
            rng = run.gather_rng()
            if run.main:
                folder.save_last(state.checkpoint(config, steps_per_epoch, rng))
                folder.save_record(state.history)
                if p.finished or (epoch + 1) % cfg.mirror_every == 0:
                    folder.copy_to_mirror()
            best = (p.best_miou, p.best_epoch)
            run.log(epoch_line(row, cfg.epochs, best, p.wall_seconds, used))
            run.barrier()
    except KeyboardInterrupt:
        raise Interrupted(_interrupted(cfg, run, p)) from None
    return {
        "out": folder.out,
        "history": state.history,
        "best_miou": p.best_miou,
        "best_epoch": p.best_epoch,
        "last": folder.last,
        "best": folder.best if p.best_epoch is not None else None,
        "final": final,
        "progress": p,
    }


def train_one_epoch(
    state: TrainState,
    loader: DataLoader,
    cfg: TrainConfig,
    run: Run,
    epoch: int,
    budget: Budget,
    amp: bool,
) -> dict[str, float]:
    """One pass over ``loader`` (cut short when the budget runs out); returns the mean loss,
    train mIoU, last lr, images/s and seconds of this epoch (summed over all processes).

    The loss, its step count and the confusion matrix accumulate on the device: a step waits
    for the GPU only where the gradient scaler must (fp16 AMP) and, with a time budget under
    torchrun, to agree on the clock. Non-finite losses are counted and refused at the end of
    the epoch, before anything is saved.
    """
    state.net.train()
    start_epoch(loader, epoch)
    metrics = SegMetrics(cfg.num_classes, IGNORE_INDEX, device=run.device)
    # (loss sum, steps, steps with a non-finite loss), float64 where the device has it
    totals = torch.zeros(3, dtype=torch.float64, device=accumulator_device(run.device))
    progress = state.progress
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        dynamic_ncols=True,
        disable=not (run.main and cfg.progress),
    )
    start = last = time.perf_counter()
    images = steps = 0
    for x, y in bar:
        x = x.to(run.device, dtype=torch.float32, non_blocking=True)  # float64/16 inputs too
        y = y.to(run.device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=amp_dtype(run.device), enabled=amp):
            logits = state.net(x)
            loss = state.criterion(logits.float(), y)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if cfg.clip_grad is not None:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(state.net.parameters(), cfg.clip_grad)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        loss = loss.detach()
        accumulate(totals, loss, loss.new_ones(()), ~torch.isfinite(loss))
        metrics.update(logits.detach(), y)
        now = time.perf_counter()
        steps, images = steps + 1, images + x.shape[0] * run.world
        progress.step += 1
        progress.images_seen += x.shape[0] * run.world
        progress.train_seconds += now - last
        if budget.max_minutes is not None and run.world > 1:
            progress.train_seconds = run.max(progress.train_seconds)  # all stop together
        last = now
        state.scheduler.step()  # after the counters: the budget schedule reads them
        if not bar.disable and (steps % 10 == 1 or steps == len(loader)):
            bar.set_postfix(
                loss=f"{float(totals[0] / totals[1]):.4f}",
                lr=f"{state.scheduler.get_last_lr()[0]:.2e}",
                img_s=f"{images / (now - start):.1f}",
            )
        if _used(budget, progress) >= 1.0:
            break
    all_reduce_sum(totals)
    metrics.all_reduce()
    loss_sum, count, nonfinite = totals.tolist()
    if nonfinite and (not state.scaler.is_enabled() or nonfinite == count):
        raise UsageError(
            f"the training loss was NaN or infinite at {int(nonfinite)} of {int(count)} steps of "
            f"epoch {epoch + 1}: the data hold NaN/inf values, or the learning rate "
            f"({cfg.lr:g}) is too high for this run; last.pt still holds epoch {epoch}"
        )
    seconds = time.perf_counter() - start
    return {
        "lr": state.scheduler.get_last_lr()[0],
        "train_loss": loss_sum / count,
        "train_miou": metrics.compute()["miou"],
        "images_per_s": images / seconds,
        "epoch_s": seconds,
    }


def validate(
    state: TrainState, loader: DataLoader, cfg: TrainConfig, run: Run, amp: bool
) -> dict[str, Any]:
    """Score the model on ``loader`` with every rank holding rank 0's BatchNorm statistics;
    :func:`haformer.evaluate.evaluate`'s dict (with the loss)."""
    run.broadcast_buffers(state.model)
    return evaluate(
        state.model, loader, run.device, cfg.num_classes, IGNORE_INDEX,
        criterion=state.criterion, amp=amp, channels_last=cfg.channels_last,
        multiple=input_multiple(state.model), size=cfg.eval_size,
    )  # fmt: skip


def _used(budget: Budget, progress: Any) -> float:
    return budget.fraction(progress.step, progress.train_seconds, progress.images_seen)


def _build_model(cfg: TrainConfig, custom: nn.Module | None) -> nn.Module:
    if custom is not None:
        if not isinstance(custom, nn.Module):
            raise ConfigError(f"model= must be a torch.nn.Module; got a {type(custom).__name__}")
        return custom
    return create_model(
        cfg.model,
        num_classes=cfg.num_classes,
        backbone_pretrained=cfg.backbone_pretrained,
        **cfg.model_kwargs,
    )


def _distribute(cfg: TrainConfig, run: Run, model: nn.Module, name: str) -> nn.Module:
    """``model`` itself, or (under torchrun) its DistributedDataParallel wrapper, after
    checking that DDP can train it."""
    if run.world == 1:
        return model
    multiple = input_multiple(model)
    side = max(64, multiple)
    unused = unused_parameters(model, (side, side), run.device)
    if unused:
        raise ConfigError(
            f"{name} has parameters no forward pass uses ({', '.join(unused[:3])}, "
            f"{len(unused)} in all), which DistributedDataParallel cannot train: train it in one "
            "process (without torchrun), or choose a haformer_* model"
        )
    if cfg.sync_bn and run.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [run.device.index] if run.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _resume(
    cfg: TrainConfig,
    run: Run,
    state: TrainState,
    folder: RunFolder,
    config: dict[str, Any],
    steps_per_epoch: int,
) -> None:
    """Load last.pt into ``state``, restore this rank's random streams, redraw the curves if
    they are missing."""
    saved = folder.load_last(run.device)
    images_per_step = cfg.batch_size * run.world
    state.load(saved, config, steps_per_epoch, images_per_step, folder.last, run.log)
    rng = saved["rng"]
    set_rng_state(rng[run.rank] if len(rng) == run.world else rng[0], run.device)
    p = state.progress
    run.log(
        f"resumed from {folder.last}: {p.epoch} of {cfg.epochs} epochs done, step {p.step}, "
        f"{p.images_seen} images, best mIoU {percent(p.best_miou)}"
        + (" (finished: nothing left to train)" if p.finished else "")
    )
    if run.main and state.history and folder.curves_missing():
        folder.save_record(state.history)


def _interrupted(cfg: TrainConfig, run: Run, progress: Any) -> str:
    """Where an interrupted run stands and the command that continues it."""
    done = progress.epoch
    where = f"during epoch {done + 1} of {cfg.epochs}" if not progress.finished else "at the end"
    saved = (
        f"{cfg.out}/last.pt holds the {done} finished epoch(s)"
        if done
        else "no epoch finished, nothing saved"
    )
    prefix = "python -m haformer train"
    if run.world > 1:
        prefix = f"torchrun --nproc_per_node={run.world} -m haformer train"
    resumed = dataclasses.replace(cfg, resume=True)
    return f"interrupted {where}; {saved}. Continue with: {command_line(resumed, prefix)}"


def _best_state(
    config: dict[str, Any], model: nn.Module, epoch: int, metrics: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "config": config,
        "epoch": epoch,
        "best_miou": metrics["miou"],
        "metrics": metrics,
        "classes": list(CLASSES),
    }


def _train_transforms(cfg: TrainConfig, crop: tuple[int, int]):
    extra = {} if cfg.base_size is None else {"base_size": cfg.base_size}
    return train_transforms(crop, cfg.scale, cfg.flip, cfg.color_jitter, **extra)


# ----------------------------------------------------------------------------- command line

CLI_EXAMPLES = """examples:
  haformer train --data-root data/camvid --out runs/b1
  haformer train --out runs/b1 --resume          # continue after an interruption
  haformer train --train-split trainval --val-split none --out runs/paper
  haformer train --model-kwargs '{"use_pem": false}' --out runs/no-pem   # ablation (ch. 12)
  haformer train --model fpn_mobilenet_v2 --max-minutes 12 --out runs/fpn  # a peer, a budget
  haformer train --out /content/runs/b1 --mirror /content/drive/MyDrive/b1 --resume  # Colab
  torchrun --nproc_per_node=4 -m haformer train --batch-size 2 --out runs/ddp   # 4 GPUs
  haformer train --model haformer_b0 --crop 180x240 --base-size 180x240 \\
      --eval-size 180x240 --epochs 60 --val-every 5 --device cpu   # reduced resolution
("haformer" is "python -m haformer" without an installed package)
"""


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``: one flag per :class:`TrainConfig` field, plus ``--download``."""
    p = subparsers.add_parser(
        "train",
        help="train a model on CamVid (torchrun --nproc_per_node=N for several GPUs)",
        description="Train on CamVid. The defaults are the LETNet-style recipe: haformer_b1,\n"
        "1000 epochs, batch 8, 360x480 crops, scale 0.75-2.0, Adam 1e-3, warm-up + poly 0.9,\n"
        "ENet class weights; train on train, validate on val every 10 epochs.",
        epilog=CLI_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--download", action="store_true", help="download CamVid first if it is missing")
    add_config_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """``python -m haformer train``: build the config from the flags, train, report."""
    cfg = config_from_args(args)
    if args.download:
        download_camvid(cfg.data_root)
    try:
        result = train(cfg)
    except DatasetNotFoundError as error:
        if args.download:
            raise
        hint = "\n(or add --download to this train command; --data-root sets the root)"
        raise DatasetNotFoundError(f"{error}{hint}") from error
    if int(os.environ.get("RANK", "0")) == 0:
        if result["best_miou"] is not None:
            print(f"best val mIoU {percent(result['best_miou'])} at epoch {result['best_epoch']}")
        print(f"checkpoints and history in {result['out']}")
    return 0
