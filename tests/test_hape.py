"""HAPE blocks: shapes, the seed's layout, the corrected block's gradients and switches, and the
stacked ``HAPEBlock`` computing exactly what the per-branch ``BranchHAPEBlock`` computes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from haformer.hape import (
    BranchHAPEBlock,
    HAPEBlock,
    branch_order,
    branch_state_dict,
    stacked_state_dict,
)
from haformer.model import SEED_CHANNELS, SEED_DENOTES
from haformer.opcount import count_ops
from haformer.pem import PEM, SeedPEM

# Every (channels, denote) the models use, plus denote 1 (dense branch only) and 3
MODEL_BLOCKS = sorted(
    {(c, d) for c, ds in zip(SEED_CHANNELS, SEED_DENOTES, strict=True) for d in ds}
    | {(32, 1), (24, 3)}
)


def randomize(module: nn.Module) -> nn.Module:
    """Random BatchNorm affine parameters and statistics, so that equality means something."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return module


@pytest.mark.parametrize("seed", [True, False])
@pytest.mark.parametrize(("channels", "denote"), [(32, 2), (64, 4), (64, 16), (24, 3)])
def test_branch_block_shape_is_preserved(seed: bool, channels: int, denote: int) -> None:
    block = BranchHAPEBlock(channels, denote, seed=seed)
    assert len(block.convs) == denote and len(block.pems) == denote
    assert block(torch.randn(2, channels, 9, 14)).shape == (2, channels, 9, 14)


def test_seed_block_layout() -> None:
    block = BranchHAPEBlock(64, 4, seed=True)
    assert all(isinstance(p, SeedPEM) for p in block.pems)
    assert isinstance(block.act, nn.ReLU6)
    assert all(m.bias is not None for m in block.modules() if isinstance(m, nn.Conv2d))
    kernels = [conv[0].kernel_size for conv in block.convs[:1]]
    kernels += [conv[0].depthwise.kernel_size for conv in block.convs[1:]]
    assert kernels == [(1, 3), (3, 1), (5, 1), (7, 1)]


def test_seed_block_output_is_relu6_bounded() -> None:
    out = BranchHAPEBlock(32, 2, seed=True)(10 * torch.randn(1, 32, 8, 8))
    assert out.min() >= 0 and out.max() <= 6


@pytest.mark.parametrize("block_class", [BranchHAPEBlock, HAPEBlock])
def test_corrected_block_every_parameter_gets_a_gradient(block_class: type) -> None:
    block = block_class(64, 8)
    out = block(torch.randn(2, 64, 10, 12))
    assert out.shape == (2, 64, 10, 12)
    out.square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), name
    assert not any(isinstance(m, SeedPEM) for m in block.modules())


def test_corrected_block_is_bias_free_with_batchnorm() -> None:
    block = BranchHAPEBlock(32, 4)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in block.modules()) == 4 + 2
    stacked = HAPEBlock(32, 4)
    assert all(c.bias is None for c in stacked.modules() if isinstance(c, nn.Conv2d))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in stacked.modules()) == 1 + 2


@pytest.mark.parametrize("block_class", [BranchHAPEBlock, HAPEBlock])
def test_use_pem_switch(block_class: type) -> None:
    with_pem, without = block_class(32, 2), block_class(32, 2, use_pem=False)
    without.load_state_dict(with_pem.state_dict())
    x = torch.randn(2, 32, 6, 6)
    assert not torch.allclose(with_pem(x), without(x))
    if block_class is BranchHAPEBlock:
        assert all(isinstance(p, PEM) for p in with_pem.pems)
        assert all(isinstance(p, nn.Identity) for p in without.pems)


@pytest.mark.parametrize("block_class", [BranchHAPEBlock, HAPEBlock])
@pytest.mark.parametrize(("channels", "denote"), [(30, 4), (8, 0)])
def test_bad_denote(block_class: type, channels: int, denote: int) -> None:
    with pytest.raises(ValueError, match="divisible"):
        block_class(channels, denote)


def test_seed_block_cannot_drop_pem() -> None:
    with pytest.raises(ValueError, match="seed"):
        BranchHAPEBlock(32, 2, seed=True, use_pem=False)


# --- the stacked block computes the per-branch block's function ------------------------------


def test_branch_order_puts_equal_kernels_side_by_side() -> None:
    assert branch_order(2) == [0, 1]
    assert branch_order(8) == [0, 4, 1, 5, 2, 6, 3, 7]
    assert sorted(branch_order(16)) == list(range(16))


def _weighted_sum(out: torch.Tensor) -> torch.Tensor:
    return (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()


@pytest.mark.parametrize("use_pem", [True, False])
@pytest.mark.parametrize(("channels", "denote"), MODEL_BLOCKS)
def test_stacked_block_equals_the_branch_block_both_ways(
    channels: int, denote: int, use_pem: bool
) -> None:
    """Branch weights loaded into the stacked block, and the stacked block's weights turned back
    into branches: same outputs, input gradients and parameter gradients, train and eval.
    In float64, so that the only differences are the order of the additions."""
    branch = randomize(BranchHAPEBlock(channels, denote, use_pem=use_pem)).double()
    stacked = HAPEBlock(channels, denote, use_pem=use_pem).double()
    assert sum(p.numel() for p in stacked.parameters()) == sum(
        p.numel() for p in branch.parameters()
    )
    stacked.load_state_dict(branch.state_dict())  # per-branch keys, converted on load
    back = HAPEBlock(channels, denote, use_pem=use_pem).to_branch_block().double()
    back.load_state_dict(branch_state_dict(stacked.state_dict(), denote))
    for train in (True, False):
        outs, grads, param_grads = [], [], []
        for block in (branch, stacked, back):
            block.train(train).zero_grad()
            generator = torch.Generator().manual_seed(1)
            x = torch.randn(2, channels, 11, 13, generator=generator, dtype=torch.float64)
            x.requires_grad_(True)
            out = block(x)
            _weighted_sum(out).backward()
            outs.append(out.detach())
            grads.append(x.grad)
            named = {k: p.grad for k, p in block.named_parameters()}
            if isinstance(block, HAPEBlock):
                named = branch_state_dict(named | _buffers(block), denote)
            param_grads.append(named)
        for other in (1, 2):
            torch.testing.assert_close(outs[other], outs[0], rtol=1e-9, atol=1e-10)
            torch.testing.assert_close(grads[other], grads[0], rtol=1e-9, atol=1e-10)
            for key, grad in param_grads[0].items():
                torch.testing.assert_close(param_grads[other][key], grad, rtol=1e-9, atol=1e-9)
    # BatchNorm statistics updated in train mode the same way
    stats = stacked_state_dict(branch.state_dict(), denote)
    for key, value in stacked.state_dict().items():
        torch.testing.assert_close(value, stats[key], rtol=1e-9, atol=1e-10, msg=key)


def _buffers(block: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in block.state_dict().items() if "running" in k or "num_batches" in k}


def test_to_branch_block_round_trips_the_state_dict() -> None:
    stacked = randomize(HAPEBlock(128, 16))
    again = HAPEBlock(128, 16)
    again.load_state_dict(stacked.to_branch_block().state_dict())
    for key, value in stacked.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.parametrize(("channels", "denote"), MODEL_BLOCKS)
def test_stacked_block_runs_a_constant_number_of_ops(channels: int, denote: int) -> None:
    x = torch.randn(1, channels, 8, 8)
    stacked = sum(count_ops(HAPEBlock(channels, denote), x).values())
    branch = sum(count_ops(BranchHAPEBlock(channels, denote), x).values())
    # conv_in 3 + PEM and sum 5 + conv_out, residual, ReLU, shuffle 5 = 13, and the branches:
    # dense 2, BN + ReLU 2, plus the depthwise ones (4 convs, cat, and a repeat if several)
    expected = 13 + {1: 4, 2: 9}.get(denote, 10)
    assert stacked == expected
    assert branch >= stacked - 8 and (denote < 4 or branch > 2 * stacked)


def test_inference_kernel_follows_the_weights() -> None:
    """The depthwise kernels built once for inference are rebuilt when the weights change."""
    block = randomize(HAPEBlock(64, 16)).eval()
    x = torch.randn(1, 64, 9, 9)
    with torch.inference_mode():
        before = block(x)
    with torch.no_grad():
        block.branches.depthwise[0].taps.mul_(-2.0)  # as an optimizer step would
    with torch.inference_mode():
        after = block(x)
    reference = block.to_branch_block().eval()
    with torch.inference_mode():
        torch.testing.assert_close(after, reference(x))
    assert not torch.allclose(before, after)


def test_a_block_copied_under_inference_mode_still_runs() -> None:
    """Parameters copied under inference_mode are inference tensors (no version counter)."""
    block = randomize(HAPEBlock(64, 8)).eval()
    x = torch.randn(1, 64, 9, 9)
    with torch.inference_mode():
        copied = copy.deepcopy(block)
        assert copied.branches.depthwise[0].taps.is_inference()
        torch.testing.assert_close(copied(x), block(x))
