"""Bad data: every problem raises a DatasetError that names the file and what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from haformer.data import CamVid, DatasetError, DatasetFormatError, DatasetNotFoundError

H, W = 6, 8


def _save_pair(root: Path, split: str, name: str, label: np.ndarray | None = None) -> None:
    """A small RGB image and its label (all Road unless ``label`` is given)."""
    for folder in (split, f"{split}annot"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (128, 64, 128)).save(root / split / name)
    label = np.full((H, W), 3, dtype=np.uint8) if label is None else label
    Image.fromarray(label).save(root / f"{split}annot" / name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A valid tiny dataset: three train pairs, no split list."""
    root = tmp_path / "camvid"
    for name in ("a.png", "b.png", "c.png"):
        _save_pair(root, "train", name)
    return root


def test_a_valid_tiny_dataset_loads(root):
    dataset = CamVid(root, "train", cache=True)
    image, mask = dataset[2]
    assert image.shape == (3, H, W) and (mask == 3).all()
    assert [p.name for p, _ in dataset.samples] == ["a.png", "b.png", "c.png"]


def test_missing_root_says_where_it_looked_and_how_to_download(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        CamVid(missing)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DatasetError)
    assert str(missing) in message and "root argument" in message
    assert f"python -m haformer download --root {missing}" in message
    monkeypatch.setenv("CAMVID_ROOT", str(missing))
    with pytest.raises(DatasetNotFoundError, match=r"\$CAMVID_ROOT"):
        CamVid()
    monkeypatch.delenv("CAMVID_ROOT")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="default ./data/camvid") as info:
        CamVid()
    assert str(tmp_path / "data" / "camvid") in str(info.value)


def test_missing_split_folder(root):
    with pytest.raises(DatasetNotFoundError, match="no folder val/") as info:
        CamVid(root, "val")
    assert "python -m haformer download" in str(info.value)
    (root / "val").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no folder valannot/"):
        CamVid(root, "val")


def test_image_without_label_is_found_on_opening(root):
    (root / "trainannot" / "b.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="train/b.png has no label trainannot/b.png"):
        CamVid(root, "train")


def test_missing_split_list_entry_is_found_on_opening(root):
    (root / "train.txt").write_text(
        "train/a.png trainannot/a.png\n"
        "/SegNet/CamVid/train/b.png /SegNet/CamVid/trainannot/b.png\n"  # upstream form: fine
        "train/zz.png trainannot/zz.png\n"
    )
    with pytest.raises(DatasetNotFoundError, match="train/zz.png is listed in train.txt"):
        CamVid(root, "train")
    (root / "train.txt").write_text(
        "train/a.png trainannot/a.png\n/x/train/b.png /x/trainannot/b.png\n"
    )
    assert [p.name for p, _ in CamVid(root, "train").samples] == ["a.png", "b.png"]


def test_malformed_split_list_line(root):
    (root / "train.txt").write_text("train/a.png trainannot/b.png\n")
    with pytest.raises(DatasetFormatError, match=r"train.txt, line 1"):
        CamVid(root, "train")


def test_sizes_that_differ_are_found_when_read(root):
    Image.new("RGB", (W * 2, H * 2)).save(root / "train" / "b.png")
    dataset = CamVid(root, "train")  # opening lists files only
    dataset[0]
    with pytest.raises(DatasetFormatError, match="same size") as info:
        dataset[1]
    message = str(info.value)
    assert "train/b.png is 16x12" in message and "trainannot/b.png is 8x6" in message


def test_label_values_outside_0_to_11(root):
    label = np.full((H, W), 3, dtype=np.uint8)
    label[0, :3] = [12, 200, 255]
    _save_pair(root, "train", "b.png", label)
    with pytest.raises(DatasetFormatError, match="values 12, 200, 255 outside 0..11") as info:
        CamVid(root, "train")[1]
    assert "trainannot/b.png" in str(info.value)
    with pytest.raises(DatasetFormatError, match="trainannot/b.png"):
        CamVid(root, "train", cache=True)  # the cache reads everything on opening


def test_colour_label_is_refused(root):
    Image.new("RGB", (W, H), (128, 64, 128)).save(root / "trainannot" / "c.png")
    with pytest.raises(DatasetFormatError, match="trainannot/c.png is a mode RGB PNG"):
        CamVid(root, "train")[2]


@pytest.mark.parametrize("folder", ["train", "trainannot"])
def test_unreadable_png(root, folder):
    (root / folder / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetFormatError, match=f"{folder}/a.png cannot be read as a PNG"):
        CamVid(root, "train")[0]


def test_truncated_png(root):
    path = root / "train" / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetFormatError, match="train/a.png cannot be read"):
        CamVid(root, "train")[0]


def test_file_deleted_after_opening(root):
    dataset = CamVid(root, "train")
    (root / "train" / "c.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="train/c.png is missing"):
        dataset[2]
