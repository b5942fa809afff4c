"""The data side of a training run: datasets checked up front, DataLoaders, class weights.

- :func:`check_dataset` reads a split before training starts (every pair of a CamVid
  validation split), so a damaged file is reported at once, not after ``val_every`` epochs.
- :func:`train_loader` / :func:`val_loader` build the loaders; with worker processes they are
  persistent (started once per run), the shuffle order comes from a generator reseeded at each
  epoch, and :class:`EpochSeeded` reseeds every worker at the start of each epoch from (seed,
  rank, epoch, worker): a run resumed with fresh workers draws the same batches and
  augmentations as an uninterrupted one. Without workers the main process's random stream
  drives both, as it always did (it is saved in and restored from ``last.pt``).
- :func:`class_weights_of` computes the loss weights from the labels of the training set
  actually used (a CamVid split or a ``Subset`` of one).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    Subset,
    get_worker_info,
)

from haformer.data import CamVid, class_weights
from haformer.errors import ConfigError, UsageError


class EpochSeeded(Dataset):
    """``dataset`` whose worker processes reseed Python, NumPy and torch at each new epoch.

    Call :meth:`set_epoch` in the main process before iterating the loader. In the main
    process itself (``num_workers=0``) items are returned untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self._epoch = multiprocessing.Value("q", 0)  # shared with the workers
        self._seeded_epoch = -1  # per process: each worker holds its own copy

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        worker = get_worker_info()
        if worker is not None and self._seeded_epoch != self._epoch.value:
            self._seeded_epoch = self._epoch.value
            entropy = [self.seed, self._seeded_epoch, worker.id]
            seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
        return self.dataset[index]


def train_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled batches of ``batch_size`` per process, the last incomplete one dropped; under
    torchrun a DistributedSampler gives each rank its share. Call :func:`start_epoch`
    before each epoch."""
    seeded = EpochSeeded(dataset, seed + 1_000_003 * rank)
    sampler: Sampler | None = None
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed)
    elif workers > 0:  # the order from its own generator, seeded by start_epoch
        sampler = RandomSampler(seeded, generator=torch.Generator())
    loader = DataLoader(
        seeded,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        # with workers, the workers' base seed too: the main random stream stays untouched
        generator=torch.Generator() if workers > 0 else None,
        pin_memory=pin_memory,
        drop_last=True,
    )
    if len(loader) == 0:
        raise ConfigError(
            f"{len(dataset)} training images give no full batch of {batch_size} per process "  # type: ignore[arg-type]
            f"({world} process(es)): lower --batch-size"
        )
    return loader


def start_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the sampler (shuffle order) and the workers (augmentations) which epoch starts."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if isinstance(loader.dataset, EpochSeeded):
        loader.dataset.set_epoch(epoch)
        if isinstance(loader.sampler, RandomSampler) and loader.sampler.generator is not None:
            loader.sampler.generator.manual_seed(loader.dataset.seed * 100_003 + epoch)


def val_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """In order, no shuffling; each rank scores every world-th image (no padding, so summed
    counts are exact)."""
    if world > 1:
        dataset = Subset(dataset, range(rank, len(dataset), world))  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        # with workers, its own generator: the main random stream stays the training's
        generator=torch.Generator() if workers > 0 else None,
        pin_memory=pin_memory,
    )


def _camvid_view(dataset: Dataset) -> tuple[CamVid, list[int]] | None:
    """The CamVid split under ``dataset`` and the indices it uses (None if it is not one)."""
    indices: list[int] | None = None
    while isinstance(dataset, Subset):
        picked = list(dataset.indices)
        indices = picked if indices is None else [picked[i] for i in indices]
        dataset = dataset.dataset
    if not isinstance(dataset, CamVid):
        return None
    return dataset, list(range(len(dataset))) if indices is None else indices


def check_dataset(dataset: Dataset, name: str, every_item: bool) -> None:
    """Read ``dataset`` before training: every pair of a CamVid split (decoded and checked,
    unless it is cached, which checked them already) when ``every_item``, and always its
    first item, which must be a float (3, H, W) image with finite values and an integer
    (H, W) mask.

    Raises a DatasetError (a damaged file) or UsageError (items the model cannot take).
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise UsageError(f"the {name} set holds no images")
    view = _camvid_view(dataset)
    if every_item and view is not None and view[0]._cache is None:
        split, indices = view
        for i in indices:
            split.read(i)
    with _random_streams_kept():  # the check must not change the augmentations drawn later
        image, mask = dataset[0]
    if not (isinstance(image, Tensor) and image.dim() == 3 and image.shape[0] == 3):
        raise UsageError(
            f"{name} images must be (3, H, W) tensors; got {_describe(image)}. Use "
            "haformer.data.train_transforms / eval_transforms, or your own transforms that "
            "end in a float tensor"
        )
    if not image.is_floating_point():
        raise UsageError(
            f"{name} images must be float tensors (normalised); got {image.dtype}. Use "
            "haformer.data.train_transforms / eval_transforms (they convert and normalise)"
        )
    if not bool(torch.isfinite(image).all()):
        raise UsageError(f"the first {name} image holds NaN or infinite values: check the data")
    if not (isinstance(mask, Tensor) and not mask.is_floating_point() and mask.dim() == 2):
        raise UsageError(
            f"{name} masks must be integer (H, W) tensors of class ids; got {_describe(mask)}"
        )


@contextlib.contextmanager
def _random_streams_kept() -> Iterator[None]:
    """Run the block, then put Python's, NumPy's and torch's CPU random streams back."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python)
    np.random.set_state(numpy)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


class _Labels:
    """The labels of some pairs of a CamVid split, as :func:`class_weights` reads them."""

    def __init__(self, split: CamVid, indices: list[int]) -> None:
        self.split, self.indices = split, indices

    def __len__(self) -> int:
        return len(self.indices)

    def read_mask(self, index: int) -> np.ndarray:
        return self.split.read_mask(self.indices[index])


def class_weights_of(
    dataset: Dataset, weighting: str | list[float], num_classes: int
) -> Tensor | None:
    """Loss weights (num_classes,) for training on ``dataset``.

    ``weighting``: explicit numbers, ``"none"`` (None: unweighted), or ``"enet"`` /
    ``"median"``, computed from the labels of ``dataset`` (a CamVid split, or a Subset of one).
    """
    if not isinstance(weighting, str):
        return torch.tensor(weighting, dtype=torch.float32)
    if weighting == "none":
        return None
    view = _camvid_view(dataset)
    if view is None:
        raise ConfigError(
            f"class_weights={weighting!r} is computed from CamVid labels, but the training set "
            f"is a {type(dataset).__name__}: give class_weights as {num_classes} numbers or 'none'"
        )
    weights = class_weights(_Labels(*view), weighting)
    if len(weights) != num_classes or not math.isfinite(float(weights.sum())):
        raise ConfigError(
            f"{weighting} weights give {len(weights)} classes, the model has {num_classes}: "
            "give class_weights as numbers or 'none'"
        )
    return weights
