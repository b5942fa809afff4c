"""Class pixel statistics of CamVid labels and the class weights derived from them.

ENet weights (Paszke et al. 2016, with c = 1.10 as in LETNet): ``w_c = 1 / ln(1.10 + p_c)``,
``p_c`` = share of class c among the labelled (non-void) pixels.
Median-frequency balancing (Eigen & Fergus 2015, SegNet): ``freq_c`` = pixels of c / pixels of
the images that contain c, ``w_c = median(freq) / freq_c``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from haformer.data.camvid import CamVid
from haformer.data.classes import IGNORE_INDEX, NUM_CLASSES

WEIGHT_METHODS = ("enet", "median")
ENET_C = 1.10


def label_histograms(dataset: CamVid) -> torch.Tensor:
    """Pixels of each id 0..11 in each label of ``dataset``: int64 (len(dataset), 12).

    Reads only the label PNGs (or the cache), so the full train split takes a few seconds.
    """
    rows = [
        np.bincount(dataset.read_mask(i).ravel(), minlength=IGNORE_INDEX + 1)
        for i in range(len(dataset))
    ]
    return torch.from_numpy(np.stack(rows)).long()


def class_frequencies(dataset: CamVid) -> torch.Tensor:
    """Total pixels of each id 0..11 (void last) over the labels of ``dataset``: int64 (12,)."""
    return label_histograms(dataset).sum(0)


def class_weights(
    source: CamVid | str | os.PathLike[str] | None = None, method: str = "enet"
) -> torch.Tensor:
    """Loss weights of the 11 classes, float32 (11,), void excluded.

    Args:
        source: a :class:`CamVid` dataset (any split; or any object with ``__len__`` and
            CamVid's ``read_mask``), or a data root whose train split is used (``None``:
            ``$CAMVID_ROOT``, else ``./data/camvid``).
        method: ``"enet"`` (``1 / ln(1.10 + p_c)``) or ``"median"`` (median-frequency
            balancing). A class absent from every label gets weight 0 with ``"median"``.
    """
    if method not in WEIGHT_METHODS:
        raise ValueError(f"method must be one of {', '.join(WEIGHT_METHODS)}; got {method!r}")
    dataset = source if hasattr(source, "read_mask") else CamVid(source, split="train")
    hist = label_histograms(dataset).double()
    counts = hist[:, :NUM_CLASSES].sum(0)
    if method == "enet":
        share = counts / counts.sum().clamp(min=1)
        return (1.0 / torch.log(ENET_C + share)).float()
    image_pixels = hist.sum(1, keepdim=True)
    present = hist[:, :NUM_CLASSES] > 0
    freq = counts / (image_pixels * present).sum(0).clamp(min=1)
    seen = counts > 0
    weights = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    weights[seen] = torch.quantile(freq[seen], 0.5) / freq[seen]
    return weights.float()
