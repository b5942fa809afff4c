"""CamVid dataset, class statistics and colours, against the numbers in the data READMEs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from haformer.data import (
    CLASSES,
    IGNORE_INDEX,
    MEAN,
    NUM_CLASSES,
    PALETTE,
    STD,
    CamVid,
    class_frequencies,
    class_weights,
    colorize,
    eval_transforms,
    train_transforms,
)

# camvid-mini README: pixels per id 0..11.
MINI_COUNTS = {
    "train": [278457, 321054, 12782, 407600, 71139, 121147, 17914, 32974, 56883, 8059, 2821, 51570],
    "val": [59040, 214870, 2576, 191594, 68312, 97440, 4057, 14619, 15095, 4327, 11398, 7872],
    "test": [134308, 164179, 4524, 163589, 50291, 90550, 2402, 6521, 23648, 5949, 6226, 39013],
}
# camvid README, train (367 images): pixels per id 0..10 and the mfb column.
FULL_TRAIN_COUNTS = [
    10682767, 14750079, 623349, 20076880, 2845085, 6166762, 743859, 714595, 3719877, 405385, 184967,
]  # fmt: skip
FULL_TRAIN_MFB = [
    0.2793, 0.2017, 4.7865, 0.1490, 1.0000, 0.4217, 3.8467, 1.9736, 0.7889, 6.3747, 8.8587,
]  # fmt: skip


def test_class_constants_follow_the_readme():
    assert NUM_CLASSES == len(CLASSES) == 11 and IGNORE_INDEX == 11
    assert CLASSES[0] == "Sky" and CLASSES[4] == "Pavement" and CLASSES[10] == "Bicyclist"
    assert len(PALETTE) == 12 and PALETTE[4] == (60, 40, 222) and PALETTE[IGNORE_INDEX] == (0, 0, 0)
    assert len(set(PALETTE)) == 12
    assert MEAN == (0.4119, 0.4251, 0.4327) and STD == (0.3071, 0.3116, 0.3072)


@pytest.mark.parametrize(
    ("split", "size"), [("train", 8), ("val", 4), ("test", 4), ("trainval", 12)]
)
def test_split_sizes_and_sample_format(camvid_mini, split, size):
    dataset = CamVid(camvid_mini, split)
    assert len(dataset) == size
    image, mask = dataset[size - 1]
    assert isinstance(image, tv_tensors.Image)
    assert image.dtype == torch.uint8 and image.shape == (3, 360, 480)
    assert mask.dtype == torch.int64 and mask.shape == (360, 480)
    assert int(mask.min()) >= 0 and int(mask.max()) <= IGNORE_INDEX


def test_pairs_match_the_split_list(camvid_mini):
    dataset = CamVid(camvid_mini, "val")
    lines = (camvid_mini / "val.txt").read_text().split()
    assert [p for pair in dataset.samples for p in pair] == [camvid_mini / rel for rel in lines]


def test_full_split_sizes(camvid_full):
    assert [len(CamVid(camvid_full, s)) for s in ("train", "val", "test")] == [367, 101, 233]


def test_root_from_argument_then_environment_then_default(camvid_mini, tmp_path, monkeypatch):
    monkeypatch.setenv("CAMVID_ROOT", str(camvid_mini))
    assert CamVid(split="val").root == camvid_mini
    monkeypatch.delenv("CAMVID_ROOT")
    default = tmp_path / "data" / "camvid"
    default.parent.mkdir()
    default.symlink_to(camvid_mini)
    monkeypatch.chdir(tmp_path)
    assert CamVid(split="val").root == default
    monkeypatch.setenv("CAMVID_ROOT", str(tmp_path / "elsewhere"))
    assert CamVid(camvid_mini, "val").root == camvid_mini  # the argument wins


def test_cache_gives_the_same_samples(camvid_mini):
    plain, cached = CamVid(camvid_mini, "test"), CamVid(camvid_mini, "test", cache=True)
    for i in range(len(plain)):
        for a, b in zip(plain[i], cached[i], strict=True):
            assert torch.equal(a, b)
    assert "cached" in repr(cached)


def test_transforms_are_applied_and_batches_collate(camvid_mini):
    dataset = CamVid(camvid_mini, "train", transforms=train_transforms(crop=(128, 160)))
    images, masks = next(iter(DataLoader(dataset, batch_size=4, shuffle=True)))
    assert images.shape == (4, 3, 128, 160) and images.dtype == torch.float32
    assert masks.shape == (4, 128, 160) and masks.dtype == torch.int64
    image, mask = CamVid(camvid_mini, "val", transforms=eval_transforms())[0]
    assert image.shape == (3, 360, 480) and mask.shape == (360, 480)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_class_frequencies_match_the_mini_readme(camvid_mini, split):
    counts = class_frequencies(CamVid(camvid_mini, split))
    assert counts.dtype == torch.int64
    assert counts.tolist() == MINI_COUNTS[split]
    assert int(counts.sum()) == len(CamVid(camvid_mini, split)) * 360 * 480


def test_enet_weights_follow_the_formula(camvid_mini):
    labelled = MINI_COUNTS["train"][:NUM_CLASSES]
    expected = [1 / math.log(1.10 + c / sum(labelled)) for c in labelled]
    weights = class_weights(camvid_mini, method="enet")  # a root: its train split
    assert weights.dtype == torch.float32 and weights.shape == (NUM_CLASSES,)
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    same = class_weights(CamVid(camvid_mini, "train", cache=True))
    assert torch.equal(weights, same)


def test_median_frequency_weights_on_a_hand_made_case(tmp_path):
    from PIL import Image

    # Two 2x2 labels: class 0 is in both images, class 1 in the first only, the rest nowhere.
    root = tmp_path / "camvid"
    for folder in ("train", "trainannot"):
        (root / folder).mkdir(parents=True)
    labels = {"a.png": [[0, 1], [1, 11]], "b.png": [[0, 0], [0, 0]]}
    for name, label in labels.items():
        Image.new("RGB", (2, 2)).save(root / "train" / name)
        Image.fromarray(np.array(label, dtype=np.uint8), mode="L").save(root / "trainannot" / name)
    # freq(0) = 5 / 8 pixels, freq(1) = 2 / 4; median of the two = 0.5625.
    weights = class_weights(root, method="median")
    assert weights[:2].tolist() == pytest.approx([0.5625 / 0.625, 0.5625 / 0.5])
    assert weights[2:].tolist() == [0.0] * 9  # absent classes


def test_median_frequency_weights_match_the_full_readme(camvid_full):
    dataset = CamVid(camvid_full, "train")
    assert class_frequencies(dataset)[:NUM_CLASSES].tolist() == FULL_TRAIN_COUNTS
    weights = class_weights(dataset, method="median")
    assert [round(w, 4) for w in weights.tolist()] == FULL_TRAIN_MFB


def test_unknown_weight_method_and_split(camvid_mini):
    with pytest.raises(ValueError, match="enet, median"):
        class_weights(camvid_mini, method="inverse")
    with pytest.raises(ValueError, match="train, val, test, trainval"):
        CamVid(camvid_mini, "training")


def test_colorize_tensors_and_arrays():
    mask = torch.tensor([[0, 4], [11, 10]])
    rgb = colorize(mask)
    assert rgb.dtype == torch.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 1].tolist() == [60, 40, 222] and rgb[1, 0].tolist() == [0, 0, 0]
    batch = colorize(np.stack([mask.numpy()] * 3))
    assert isinstance(batch, np.ndarray) and batch.shape == (3, 2, 2, 3)
    assert (batch[2] == rgb.numpy()).all()
    with pytest.raises(ValueError, match="0..11"):
        colorize(torch.tensor([[12]]))


def test_colorize_a_real_label(camvid_mini: Path):
    _, mask = CamVid(camvid_mini, "train")[0]
    rgb = colorize(mask)
    for class_id in mask.unique().tolist():
        assert (rgb[mask == class_id] == torch.tensor(PALETTE[class_id], dtype=torch.uint8)).all()
