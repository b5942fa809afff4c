"""Joint transforms: image and mask stay aligned, padding is void, shapes are the crop."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from haformer.data import IGNORE_INDEX, MEAN, PALETTE, STD, eval_transforms, train_transforms

H, W = 360, 480


def _colour_coded_pair(void: bool = True) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """A 360x480 label of 30x40-pixel blocks of ids 0..10 (and void), painted in PALETTE."""
    blocks = torch.arange(12 * 12).reshape(12, 12) % (12 if void else 11)
    mask = blocks.repeat_interleave(H // 12, 0).repeat_interleave(W // 12, 1)
    image = torch.tensor(PALETTE, dtype=torch.uint8)[mask].permute(2, 0, 1).contiguous()
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def _unnormalize(image: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return image * std + mean


def _nearest_palette_id(image: torch.Tensor) -> torch.Tensor:
    """The id whose colour is closest to each pixel of a [0, 1] image (3, h, w) -> (h, w)."""
    palette = torch.tensor(PALETTE, dtype=torch.float32) / 255
    return torch.cdist(image.flatten(1).T, palette).argmin(1).view(image.shape[1:])


@pytest.mark.parametrize("seed", range(6))
def test_image_and_mask_stay_aligned(seed):
    torch.manual_seed(seed)
    image, mask = train_transforms(crop=(300, 400))(*_colour_coded_pair())
    assert image.shape == (3, 300, 400) and image.dtype == torch.float32
    assert mask.shape == (300, 400)
    labelled = mask != IGNORE_INDEX
    assert labelled.float().mean() > 0.3
    agree = _nearest_palette_id(_unnormalize(image))[labelled] == mask[labelled]
    # Only pixels on block borders may blur into a neighbour's colour; any misalignment
    # (flip, scale or crop applied to one side only) would drop this to about 10 %.
    assert agree.float().mean() > 0.95


def test_flip_moves_both():
    torch.manual_seed(0)
    image, mask = _colour_coded_pair()
    flips = [train_transforms(scale=(1.0, 1.0), flip=True)(image, mask) for _ in range(8)]
    flipped = [torch.equal(m, mask.flip(-1)) for _, m in flips]
    assert any(flipped) and not all(flipped)  # random, probability 0.5
    for (out_image, out_mask), was_flipped in zip(flips, flipped, strict=True):
        reference = image.flip(-1) if was_flipped else image
        assert torch.equal(out_mask, mask.flip(-1) if was_flipped else mask)
        assert torch.allclose(_unnormalize(out_image) * 255, reference.float(), atol=1e-3)


def test_padding_is_void_in_the_mask_and_black_in_the_image():
    image, mask = _colour_coded_pair(void=False)
    out_image, out_mask = train_transforms(scale=(0.5, 0.5), flip=False)(image, mask)
    assert out_image.shape == (3, H, W) and out_mask.shape == (H, W)
    padded = out_mask == IGNORE_INDEX
    assert int(padded.sum()) == H * W - (H // 2) * (W // 2)  # everything outside 180x240
    black = (torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out_image.permute(1, 2, 0)[padded], black.expand(int(padded.sum()), 3))


def test_scale_range_is_random_and_bounded():
    image, mask = _colour_coded_pair()
    transform = train_transforms(crop=(2 * H, 2 * W), scale=(0.5, 2.0), flip=False)
    sizes = set()
    for seed in range(10):
        torch.manual_seed(seed)
        _, out = transform(image, mask)
        rows = (out != IGNORE_INDEX).any(1).nonzero()  # rows the scaled image covers
        sizes.add(int(rows.max() - rows.min()) + 1)
    assert len(sizes) > 5 and min(sizes) >= H // 2 - 1 and max(sizes) <= 2 * H


def test_mask_keeps_only_label_values_after_scaling():
    torch.manual_seed(0)
    image, mask = _colour_coded_pair()
    _, out = train_transforms(scale=(1.3, 1.7))(image, mask)
    assert set(out.unique().tolist()) <= set(range(12))  # nearest, no blended ids


def test_color_jitter_changes_the_image_only():
    image, mask = _colour_coded_pair()
    kwargs = {"scale": (1.0, 1.0), "flip": False}
    torch.manual_seed(0)
    plain_image, plain_mask = train_transforms(**kwargs)(image, mask)
    torch.manual_seed(0)
    jitter_image, jitter_mask = train_transforms(color_jitter=True, **kwargs)(image, mask)
    assert torch.equal(plain_mask, jitter_mask)
    assert not torch.allclose(plain_image, jitter_image)


def test_eval_transforms_keep_full_resolution_and_normalise():
    image, mask = _colour_coded_pair()
    out_image, out_mask = eval_transforms()(image, mask)
    assert out_image.shape == (3, H, W) and out_image.dtype == torch.float32
    assert torch.equal(out_mask, mask)
    assert torch.allclose(_unnormalize(out_image) * 255, image.float(), atol=1e-3)
    custom, _ = eval_transforms(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image, mask)
    assert torch.allclose(custom, image.float() / 127.5 - 1, atol=1e-5)


def test_reduced_resolution_base_size():
    image, mask = _colour_coded_pair(void=False)
    transform = train_transforms(crop=(180, 240), scale=(1.0, 1.0), base_size=(180, 240))
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 180, 240)
    assert not (out_mask == IGNORE_INDEX).any()  # the whole image scaled to 180x240: no padding
    assert set(out_mask.unique().tolist()) == set(range(11))
