"""The CamVid dataset in the SegNet layout (11 classes + void, 360x480) as a torch ``Dataset``.

Opening a split checks the file listing (fast): every listed image exists and has its label.
Reading a sample checks the content: both PNGs decode, sizes agree, label values lie in 0..11.
Every problem raises a :class:`~haformer.data.errors.DatasetError` that names the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from tqdm import tqdm

from haformer.data.classes import IGNORE_INDEX
from haformer.data.errors import DOWNLOAD_COMMAND, DatasetFormatError, DatasetNotFoundError
from haformer.data.layout import label_dir, parse_split_list, resolve_root, split_parts

Transforms = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Any, Any]]
_MAX_LISTED = 10


class CamVid(Dataset):
    """CamVid image/label pairs of one split: ``"train"``, ``"val"``, ``"test"`` or ``"trainval"``.

    Args:
        root: folder in the SegNet layout (``train/``, ``trainannot/``, ..., ``train.txt``, ...).
            ``None``: ``$CAMVID_ROOT`` if set, else ``./data/camvid``.
        split: which pairs. A split uses ``<split>.txt`` when present (relative or upstream
            absolute paths), else every PNG in ``<split>/``.
        transforms: called as ``transforms(image, mask)`` with a ``tv_tensors.Image`` and a
            ``tv_tensors.Mask``, for example :func:`~haformer.data.transforms.train_transforms`.
        cache: decode every pair once, now, and keep them in memory as uint8 (about 0.7 MB a
            pair, 250 MB for train). Build the dataset before the ``DataLoader`` so that
            forked workers share the decoded arrays.

    Each item is ``(image, mask)``. Without ``transforms`` the image is a ``tv_tensors.Image``
    uint8 of shape (3, H, W) and no normalisation is applied (the transforms do it); with the
    package's transforms it is float32 (3, h, w), normalised. The mask is always an int64
    tensor (H, W) (or (h, w)) of class ids 0..10 and :data:`IGNORE_INDEX` (11) for void.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        transforms: Transforms | None = None,
        cache: bool = False,
    ) -> None:
        self.root, how = resolve_root(root)
        self.split = split
        self.transforms = transforms
        self.samples = _find_samples(self.root, how, split)
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if cache:
            pairs = tqdm(
                range(len(self)), desc=f"caching CamVid {split}", unit="pair", disable=None
            )
            self._cache = [self.read(i) for i in pairs]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        image, mask = self._cache[index] if self._cache is not None else self.read(index)
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask.as_subclass(torch.Tensor).long()

    def read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode and check pair ``index`` from its files: uint8 image (3, H, W), mask (H, W)."""
        image_path, label_path = self.samples[index]
        image = _read_png(image_path, "RGB")
        mask = self._decode_mask(index)
        if image.shape[:2] != mask.shape:
            raise DatasetFormatError(
                f"CamVid image {image_path} is {_wxh(image.shape)} but its label {label_path} "
                f"is {_wxh(mask.shape)} (W x H); an image and its label must have the same size"
            )
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)

    def read_mask(self, index: int) -> np.ndarray:
        """The label of pair ``index`` (from the cache if there is one): uint8 (H, W), 0..11."""
        if self._cache is not None:
            return self._cache[index][1].numpy()
        return self._decode_mask(index)

    def _decode_mask(self, index: int) -> np.ndarray:
        path = self.samples[index][1]
        mask = _read_png(path, "L")
        if mask.size and mask.max() > IGNORE_INDEX:
            bad = np.unique(mask[mask > IGNORE_INDEX])
            raise DatasetFormatError(
                f"CamVid label {path} holds values {_few(bad.tolist())} outside 0..{IGNORE_INDEX} "
                f"({IGNORE_INDEX} = void): labels must be class ids (SegNet 11-class version), "
                "not colours or the 32-class CamVid ids"
            )
        return mask

    def __repr__(self) -> str:
        cached = ", cached" if self._cache is not None else ""
        return f"CamVid(root={str(self.root)!r}, split={self.split!r}, {len(self)} pairs{cached})"


def not_found_message(root: Path, how: str, what: str) -> str:
    """A missing-data message: what is missing, where it looked, how to download the data."""
    return (
        f"{what}. Looked in {root} ({how}). Download CamVid there with:\n"
        f"    {DOWNLOAD_COMMAND.format(root=root)}\n"
        "or point --root / $CAMVID_ROOT at an existing copy in the SegNet layout "
        "(train/ trainannot/ val/ valannot/ test/ testannot/)."
    )


def _find_samples(root: Path, how: str, split: str) -> list[tuple[Path, Path]]:
    """Image/label paths of ``split``; raises if files are missing (listing only, no decoding)."""
    parts = split_parts(split)
    if not root.is_dir():
        raise DatasetNotFoundError(not_found_message(root, how, "CamVid not found"))
    samples: list[tuple[Path, Path]] = []
    problems: list[str] = []
    for part in parts:
        image_dir, labels_dir = root / part, root / label_dir(part)
        for folder in (image_dir, labels_dir):
            if not folder.is_dir():
                what = f"CamVid {split} split not found: no folder {folder.name}/"
                raise DatasetNotFoundError(not_found_message(root, how, what))
        images, labels = _pngs(image_dir), _pngs(labels_dir)
        list_file = root / f"{part}.txt"
        names = parse_split_list(list_file, part) if list_file.is_file() else sorted(images)
        problems += [
            f"{part}/{n} is listed in {list_file.name} but does not exist"
            for n in names
            if n not in images
        ]
        unlabelled = sorted(images - labels)
        problems += [f"{part}/{n} has no label {label_dir(part)}/{n}" for n in unlabelled]
        samples += [(image_dir / n, labels_dir / n) for n in names]
    if problems:
        raise DatasetNotFoundError(
            f"CamVid {split} at {root} is incomplete ({len(problems)} problem(s)):\n    "
            + _few(problems, sep="\n    ")
            + f"\nReplace it with a fresh copy: {DOWNLOAD_COMMAND.format(root=root)} --force"
        )
    if not samples:
        raise DatasetNotFoundError(not_found_message(root, how, f"CamVid {split} has no images"))
    return samples


def _pngs(folder: Path) -> set[str]:
    return {entry.name for entry in os.scandir(folder) if entry.name.lower().endswith(".png")}


def _read_png(path: Path, mode: str) -> np.ndarray:
    """Decode ``path`` as ``mode`` ("RGB": (H, W, 3) uint8; "L": (H, W) uint8 class ids)."""
    try:
        with Image.open(path) as image:
            found = image.mode
            array = np.array(image.convert("RGB") if mode == "RGB" else image)
    except FileNotFoundError as error:
        raise DatasetNotFoundError(f"CamVid file {path} is missing") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetFormatError(f"CamVid file {path} cannot be read as a PNG: {error}") from error
    if mode == "L" and found not in ("L", "P"):
        raise DatasetFormatError(
            f"CamVid label {path} is a mode {found} PNG; expected a single-channel (mode L) PNG "
            f"of class ids 0..{IGNORE_INDEX}"
        )
    return array


def _wxh(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _few(values: list[Any], sep: str = ", ") -> str:
    """At most ten values joined by ``sep``, and how many more there are."""
    shown = sep.join(str(v) for v in values[:_MAX_LISTED])
    extra = len(values) - _MAX_LISTED
    return shown + (f"{sep}and {extra} more" if extra > 0 else "")
