"""Trained HAFormer weights shipped with the book (chapters 6, 10, 11 and 12 use them).

``load("haformer_b0_camvid_cpu")`` returns the model in eval mode, with the weights the book
trained on CamVid with ``python -m haformer train`` on a CPU (the recipe, the machine and the
scores are in :data:`WEIGHTS` and in BENCHMARKS.md). No weights of the paper's authors exist.

Where the file comes from, in order:

1. a checkout of the repository: ``weights/<file>`` beside the package (works offline);
2. the local cache (``$HAFORMER_CACHE``, default ``~/.cache/haformer``);
3. a download from the repository (``haformer._repository.REPO_URL``; ``base_url`` overrides
   it) into that cache, as on Colab, where the package is installed without the checkout.

Every file is checked against its SHA-256 before it is loaded, and read with
``torch.load(weights_only=True)``: a file that differs is refused, never used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from haformer._repository import BRANCH, REPO_URL
from haformer.errors import EnvironmentFailure, UsageError

CHECKOUT_DIR = Path(__file__).resolve().parents[1] / "weights"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Weights:
    """One shipped set of weights: the model it fits, its file, hash and how it was made."""

    model: str
    file: str
    sha256: str
    size: int
    num_classes: int = 11
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_size: tuple[int, int] | None = None
    """Input size the model was trained and selected at (None: full resolution)."""
    recipe: str = ""
    scores: dict[str, float] = field(default_factory=dict)


TRAIN_COMMAND = (
    "OMP_NUM_THREADS=1 python -m haformer train --data-root ../shared/data/camvid "
    "--model haformer_b0 --epochs 40 --batch-size 8 --crop 180x240 --base-size 180x240 "
    "--eval-size 180x240 --cache --workers 0 --val-every 5 --out runs/b0-cpu --seed 0"
)

WEIGHTS: dict[str, Weights] = {
    "haformer_b0_camvid_cpu": Weights(
        model="haformer_b0",
        file="haformer_b0_camvid_cpu.pt",
        sha256="5f87e8ab1f528b3103127401e0ba67ba3d2df0ebb296526d2ad774f8b64eeca8",
        size=3_942_481,
        eval_size=(180, 240),
        recipe=(
            "haformer_b0 from scratch on CamVid train (367 images), 40 epochs at 180x240 "
            "(random scale 0.75-2.0 of 180x240, crops 180x240, flips), batch 8, ENet-weighted "
            "cross entropy, Adam 1e-3 with a 5-epoch warm-up then poly decay, weight decay "
            "1e-4, seed 0; best.pt selected by val mIoU (epoch 40). 1 CPU thread of a 2-core "
            "machine shared with other jobs, 63.7 minutes of training. Command: " + TRAIN_COMMAND
        ),
        scores={"val_miou": 55.70, "test_miou": 40.30, "test_pixel_acc": 77.11},
    ),
}
"""Name -> shipped weights. Scores in %, at ``eval_size`` inputs, scored at the full 360x480
label resolution (``python -m haformer evaluate --split test``)."""


def list_weights() -> list[str]:
    """The names ``load`` accepts, sorted."""
    return sorted(WEIGHTS)


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$HAFORMER_CACHE`` or ``~/.cache/haformer``."""
    return Path(os.environ.get("HAFORMER_CACHE", Path.home() / ".cache" / "haformer"))


def weights_url(name: str, base_url: str | None = None) -> str:
    """The download address of ``name``'s file: ``<repo>/raw/<branch>/weights/<file>``."""
    base = base_url or f"{REPO_URL.rstrip('/')}/raw/{BRANCH}/weights"
    return f"{base.rstrip('/')}/{_entry(name).file}"


def weights_path(name: str, *, base_url: str | None = None, download: bool = True) -> Path:
    """A verified local copy of ``name``'s file (checkout, cache, else downloaded)."""
    entry = _entry(name)
    for folder in (CHECKOUT_DIR, cache_dir()):
        path = folder / entry.file
        if path.is_file() and _sha256(path) == entry.sha256:
            return path
    if not download:
        raise UsageError(
            f"no verified copy of {name!r} in {CHECKOUT_DIR} or {cache_dir()}; "
            "call with download=True (needs the network)"
        )
    return _download(weights_url(name, base_url), cache_dir() / entry.file, entry)


def load(
    name: str, *, map_location: str | torch.device = "cpu", base_url: str | None = None
) -> nn.Module:
    """The trained model ``name`` in eval mode: (B, 3, H, W) -> logits (B, 11, H, W)."""
    from haformer.model import create_model

    entry = _entry(name)
    path = weights_path(name, base_url=base_url)
    state = torch.load(path, map_location=map_location, weights_only=True)
    model = create_model(entry.model, num_classes=entry.num_classes, **entry.model_kwargs)
    model.load_state_dict(state)
    return model.to(map_location).eval()


def _entry(name: str) -> Weights:
    if name not in WEIGHTS:
        known = ", ".join(list_weights()) or "none"
        raise UsageError(f"no shipped weights named {name!r}; known: {known}")
    return WEIGHTS[name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path, entry: Weights) -> Path:
    """Fetch ``url`` into ``target`` atomically, refusing anything but the expected bytes."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            part = Path(tmp.name)
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    _copy_bounded(response, tmp, entry.size, url)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
    except urllib.error.URLError as err:
        raise EnvironmentFailure(
            f"could not download {url}: {getattr(err, 'reason', err)}; check the network (or "
            "use a checkout of the repository, which holds the weights)"
        ) from err
    except OSError as err:
        raise EnvironmentFailure(f"could not write {target}: {err.strerror or err}") from err
    digest = _sha256(part)
    if digest != entry.sha256:
        part.unlink(missing_ok=True)
        raise UsageError(
            f"{url} did not give the expected file (SHA-256 {digest[:12]}..., expected "
            f"{entry.sha256[:12]}...); nothing was kept: check base_url or the repository"
        )
    os.replace(part, target)
    return target


def _copy_bounded(source: Any, target: Any, size: int, url: str) -> None:
    """Copy at most ``size`` bytes; more means the server sent something else."""
    copied = 0
    while block := source.read(1 << 20):
        copied += len(block)
        if copied > size:
            raise UsageError(f"{url} sent more than the {size:,} bytes expected; nothing kept")
        target.write(block)
