"""haformer.fuse: the fused model computes what the original computes, and does less work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from haformer.fuse import (
    STEPS,
    ChannelsLast,
    FusedHAPEBlock,
    FusedSeedCWF,
    fold_batchnorms,
    fuse,
    merge_hape_blocks,
)
from haformer.fusion import SeedCWF
from haformer.hape import BranchHAPEBlock, HAPEBlock
from haformer.model import HAFormer, create_model, list_models

TOLERANCE = 1e-4  # max abs difference, relative to the largest output magnitude


def randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm statistics and affine parameters far from their initial values."""
    g = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            bn.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=g) * 0.5)
    return model


def assert_same(reference: torch.Tensor, fused: torch.Tensor) -> None:
    assert fused.shape == reference.shape
    scale = reference.abs().max().item()
    diff = (fused - reference).abs().max().item()
    assert diff <= TOLERANCE * max(scale, 1e-6), (
        f"max abs diff {diff:.2e}, output scale {scale:.2e}"
    )


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def count_conv_calls(model: nn.Module, *inputs: torch.Tensor) -> int:
    """How many Conv2d forward calls one pass makes (a proxy for launches)."""
    calls = []
    handles = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.inference_mode():
        model(*inputs)
    for h in handles:
        h.remove()
    return len(calls)


MODEL_CASES = [(name, {}, (96, 128)) for name in list_models() if name != "hapeformer_seed"]
MODEL_CASES += [
    ("hapeformer_seed", {}, (128, 128)),
    ("hapeformer_seed", {"backbone": "efficientvit_b1"}, (128, 128)),
]


@pytest.mark.parametrize(("name", "kwargs", "size"), MODEL_CASES)
def test_fused_model_matches_and_leaves_the_original_alone(name, kwargs, size):
    model = randomize_batchnorms(create_model(name, **kwargs)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batchnorms = count_batchnorms(model)
    x = torch.randn(2, 3, *size)

    fused = fuse(model)

    with torch.inference_mode():
        assert_same(model(x), fused(x))
    assert count_batchnorms(fused) == 0
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    if name == "hapeformer_seed":
        assert any(isinstance(m, FusedHAPEBlock) for m in fused.modules())
        assert not any(isinstance(m, BranchHAPEBlock) for m in fused.modules())
    else:  # the stacked blocks stay, their BatchNorms folded
        assert any(isinstance(m, HAPEBlock) for m in fused.modules())
    assert isinstance(fused.backbone, ChannelsLast)
    # the original: same weights and statistics, same modules, still trainable
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert count_batchnorms(model) == batchnorms > 0
    assert all(p.requires_grad for p in model.parameters())


def test_fused_model_takes_any_size_and_fusing_twice_changes_nothing():
    model = randomize_batchnorms(create_model("haformer_b0")).train()
    fused = fuse(model)
    assert model.training  # fuse copies; it does not switch the original to eval mode
    model.eval()
    twice = fuse(fused)  # fusing a fused model changes nothing (export_onnx relies on it)
    for size in [(97, 131), (64, 64)]:
        x = torch.randn(1, 3, *size)
        with torch.inference_mode():
            assert_same(model(x), fused(x))
            assert torch.equal(fused(x), twice(x))


@pytest.mark.parametrize(
    "kwargs",
    [{"use_pem": False}, {"fusion": "seed"}, {"fusion": "add"}, {"use_transformer": False}],
)
def test_ablation_variants_fuse_too(kwargs):
    model = randomize_batchnorms(HAFormer(backbone="efficientvit_b0", **kwargs)).eval()
    fused = fuse(model)
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        assert_same(model(x), fused(x))
    assert count_batchnorms(fused) == 0
    assert any(isinstance(m, FusedSeedCWF) for m in fused.modules()) == (
        "fusion" in kwargs and kwargs["fusion"] == "seed"
    )


BLOCK_CASES = [
    (32, 2, {}),
    (64, 4, {}),
    (64, 8, {}),
    (128, 16, {}),
    (128, 4, {}),
    (64, 16, {"use_pem": False}),
    (32, 2, {"seed": True}),
    (64, 8, {"seed": True}),
    (128, 16, {"seed": True}),
]


@pytest.mark.parametrize(("channels", "denote", "kwargs"), BLOCK_CASES)
def test_fused_hape_block_matches_at_odd_sizes(channels, denote, kwargs):
    block = randomize_batchnorms(BranchHAPEBlock(channels, denote, **kwargs)).eval()
    merged = merge_hape_blocks(fold_batchnorms(nn.Sequential(copy.deepcopy(block))))[0]
    assert isinstance(merged, FusedHAPEBlock)
    x = torch.randn(2, channels, 13, 9)  # smaller than the 7-tap kernels' reach on one side
    with torch.inference_mode():
        assert_same(block(x), merged(x))


@pytest.mark.parametrize(("channels", "denote", "use_pem"), [(64, 16, True), (32, 2, False)])
def test_fuse_folds_a_stacked_blocks_batchnorms(channels, denote, use_pem):
    block = randomize_batchnorms(HAPEBlock(channels, denote, use_pem=use_pem)).eval()
    fused = fuse(nn.Sequential(block))[0]
    assert isinstance(fused, HAPEBlock) and count_batchnorms(fused) == 0
    x = torch.randn(2, channels, 13, 9)
    with torch.inference_mode():
        assert_same(block(x), fused(x))


def test_merging_cuts_the_launches_of_a_thin_block():
    block = BranchHAPEBlock(128, 16).eval()
    merged = fuse(nn.Sequential(block))[0]
    x = torch.randn(1, 128, 12, 16)
    # conv_in + conv_out + 4 full branches x 2 convs + 12 depthwise ones x 4 = 58 convs;
    # fused: conv_in, 2 stacked convs per branch shape (2 shapes), conv_out = 6
    assert count_conv_calls(block, x) == 58
    assert count_conv_calls(merged, x) == 6


def test_a_block_of_unexpected_shape_is_left_as_it_is():
    block = BranchHAPEBlock(32, 2).eval()
    block.convs[1].append(nn.GELU())  # a non-linearity the merger does not know
    fused = fuse(nn.Sequential(block))[0]
    assert isinstance(fused, BranchHAPEBlock)
    x = torch.randn(1, 32, 8, 8)
    with torch.inference_mode():
        assert_same(block(x), fused(x))


@pytest.mark.parametrize("size", [(8, 8), (5, 7), (1, 1), (2, 3)])
def test_pool_first_seed_fusion_matches(size):
    cwf = SeedCWF(16).eval()
    fused = FusedSeedCWF(cwf)
    a, b = torch.randn(2, 16, *size), torch.randn(2, 16, *size)
    with torch.inference_mode():
        assert_same(cwf(a, b), fused(a, b))


def test_steps_are_named_in_order():
    names = [name for name, _ in STEPS]
    assert names[0] == "fold BatchNorm" and len(set(names)) == len(names)
