"""CamVid (SegNet version) for HAFormer: download, dataset, class statistics, transforms."""

from haformer.data.camvid import CamVid
from haformer.data.classes import CLASSES, IGNORE_INDEX, MEAN, NUM_CLASSES, PALETTE, STD, colorize
from haformer.data.download import DEFAULT_URL, download_camvid, is_verified, load_checksums
from haformer.data.errors import (
    DatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    DownloadError,
)
from haformer.data.layout import SPLIT_CHOICES, resolve_root
from haformer.data.stats import class_frequencies, class_weights, label_histograms
from haformer.data.transforms import IMAGE_SIZE, eval_transforms, train_transforms

__all__ = [
    "CLASSES",
    "DEFAULT_URL",
    "IGNORE_INDEX",
    "IMAGE_SIZE",
    "MEAN",
    "NUM_CLASSES",
    "PALETTE",
    "SPLIT_CHOICES",
    "STD",
    "CamVid",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DownloadError",
    "class_frequencies",
    "class_weights",
    "colorize",
    "download_camvid",
    "eval_transforms",
    "is_verified",
    "label_histograms",
    "load_checksums",
    "resolve_root",
    "train_transforms",
]
