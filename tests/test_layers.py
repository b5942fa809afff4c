"""Channel shuffle, the seed's depthwise-separable conv, the corrected conv helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from haformer.layers import ConvBNAct, DepthwiseSeparableConv, asymmetric_convs, channel_shuffle


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_channel_shuffle_interleaves_groups() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    out = channel_shuffle(x, 2)
    assert out.flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 1).equal(x) and channel_shuffle(x, 6).equal(x)


def test_channel_shuffle_is_a_permutation_undone_by_the_transposed_shuffle() -> None:
    x = torch.randn(2, 12, 5, 7)
    assert channel_shuffle(channel_shuffle(x, 3), 4).equal(x)


def test_depthwise_separable_conv_matches_the_seed() -> None:
    conv = DepthwiseSeparableConv(16, 8, (3, 1), (1, 0))
    assert n_params(conv) == (16 * 3 + 16) + (16 * 8 + 8)
    assert conv.depthwise.groups == 16 and conv.depthwise.bias is not None
    assert conv(torch.randn(2, 16, 9, 11)).shape == (2, 8, 9, 11)
    assert n_params(DepthwiseSeparableConv(16, 8, 3, 1, bias=False)) == 16 * 9 + 16 * 8


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_bn_act_shapes_and_layout(stride: int) -> None:
    block = ConvBNAct(8, 16, 3, stride)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert block[0].bias is None
    assert block(torch.randn(2, 8, 15, 20)).shape == (2, 16, -(-15 // stride), -(-20 // stride))
    assert [type(m) for m in ConvBNAct(8, 8, act=False)] == [nn.Conv2d, nn.BatchNorm2d]


@pytest.mark.parametrize(
    ("k", "depthwise", "weights"), [(3, False, 2 * 3 * 64), (5, True, 2 * (5 * 8 + 64))]
)
def test_asymmetric_convs(k: int, depthwise: bool, weights: int) -> None:
    stack = nn.Sequential(*asymmetric_convs(8, k, depthwise=depthwise))
    assert n_params(stack) == weights
    assert all(m.bias is None for m in stack)
    assert stack(torch.randn(1, 8, 13, 17)).shape == (1, 8, 13, 17)
