"""The record of a training run: ``history.csv``, ``curves.png`` and the line logged per epoch.

One row per epoch (the last one may be partial when a budget ends the run): ``epoch``,
``step``, ``images_seen`` and ``train_seconds`` (cumulative), ``lr``, ``train_loss``,
``train_miou``, ``images_per_s``, ``epoch_s`` and, after a validation, ``val_*`` columns.
Both files are written atomically (see :func:`haformer.checkpoint.atomic_write`), so a full
disk or a kill leaves the previous version, never an empty file.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from haformer.checkpoint import atomic_write
from haformer.data import CLASSES


def write_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """One CSV row per epoch; columns are the union of the rows' keys, in first-seen order."""
    columns = list(dict.fromkeys(k for row in history for k in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


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


def save_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """:func:`plot_history` as a PNG at ``path``, written atomically."""
    figure = plot_history(history)
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=100))


def val_columns(metrics: dict[str, Any]) -> dict[str, float]:
    """The ``val_*`` columns of a history row from :func:`haformer.evaluate.evaluate`'s dict."""
    row = {
        "val_loss": metrics["loss"],
        "val_miou": metrics["miou"],
        "val_pixel_acc": metrics["pixel_acc"],
        "val_mean_acc": metrics["mean_acc"],
    }
    row.update({f"val_iou_{name}": v for name, v in zip(CLASSES, metrics["iou"], strict=False)})
    return row


def percent(value: float | None) -> str:
    """``0.4567`` -> ``"45.67%"``; None or NaN -> ``"-"``."""
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``, ``4000`` -> ``"1h06m"``."""
    seconds = max(0, round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def epoch_line(
    row: dict[str, Any],
    epochs: int,
    best: tuple[float | None, int | None],
    elapsed: float,
    used: float,
) -> str:
    """The log line of one epoch: losses, mIoUs, lr, speed, elapsed time and an ETA.

    ``elapsed`` is the run's wall-clock time so far (validation included, earlier sessions
    of a resumed run too) and ``used`` the share of the run done (of the steps or of the
    budget); the ETA assumes the rest goes at the same pace.
    """
    text = (
        f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  "
        f"train mIoU {percent(row['train_miou'])}"
    )
    if "val_miou" in row:
        text += f"  val mIoU {percent(row['val_miou'])} (best {percent(best[0])} @ {best[1]})"
    eta = elapsed * (1 - used) / used if used > 0 else math.inf
    return text + (
        f"  lr {row['lr']:.2e}  {row['images_per_s']:.1f} img/s  {row['epoch_s']:.0f} s"
        f"  elapsed {duration(elapsed)}  ETA {duration(eta) if math.isfinite(eta) else '-'}"
    )
