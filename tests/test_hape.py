"""HAPEBlock: shapes, the seed's layout, the corrected block's gradients and switches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from haformer.hape import HAPEBlock
from haformer.pem import PEM, SeedPEM


@pytest.mark.parametrize("seed", [True, False])
@pytest.mark.parametrize(("channels", "denote"), [(32, 2), (64, 4), (64, 16), (24, 3)])
def test_shape_is_preserved(seed: bool, channels: int, denote: int) -> None:
    block = HAPEBlock(channels, denote, seed=seed)
    assert len(block.convs) == denote and len(block.pems) == denote
    assert block(torch.randn(2, channels, 9, 14)).shape == (2, channels, 9, 14)


def test_seed_block_layout() -> None:
    block = HAPEBlock(64, 4, seed=True)
    assert all(isinstance(p, SeedPEM) for p in block.pems)
    assert isinstance(block.act, nn.ReLU6)
    assert all(m.bias is not None for m in block.modules() if isinstance(m, nn.Conv2d))
    kernels = [conv[0].kernel_size for conv in block.convs[:1]]
    kernels += [conv[0].depthwise.kernel_size for conv in block.convs[1:]]
    assert kernels == [(1, 3), (3, 1), (5, 1), (7, 1)]


def test_seed_block_output_is_relu6_bounded() -> None:
    out = HAPEBlock(32, 2, seed=True)(10 * torch.randn(1, 32, 8, 8))
    assert out.min() >= 0 and out.max() <= 6


def test_corrected_block_every_parameter_gets_a_gradient() -> None:
    block = HAPEBlock(64, 8)
    block(torch.randn(2, 64, 10, 12)).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert not any(isinstance(m, SeedPEM) for m in block.modules())


def test_corrected_block_is_bias_free_with_batchnorm() -> None:
    block = HAPEBlock(32, 4)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in block.modules()) == 4 + 2


def test_use_pem_switch() -> None:
    with_pem, without = HAPEBlock(32, 2), HAPEBlock(32, 2, use_pem=False)
    assert all(isinstance(p, PEM) for p in with_pem.pems)
    assert all(isinstance(p, nn.Identity) for p in without.pems)
    without.load_state_dict(with_pem.state_dict())
    x = torch.randn(2, 32, 6, 6)
    assert not torch.allclose(with_pem(x), without(x))


@pytest.mark.parametrize(("channels", "denote"), [(30, 4), (8, 0)])
def test_bad_denote(channels: int, denote: int) -> None:
    with pytest.raises(ValueError, match="divisible"):
        HAPEBlock(channels, denote)


def test_seed_block_cannot_drop_pem() -> None:
    with pytest.raises(ValueError, match="seed"):
        HAPEBlock(32, 2, seed=True, use_pem=False)
