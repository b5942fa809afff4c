"""The models' layout: stacked HAPE blocks and the book's attention run the same function as the
per-branch blocks and timm's modules, in far fewer operations; old checkpoints still load."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.models.efficientvit_mit import LiteMLA
from torch import nn

from haformer.attention import MultiScaleLinearAttention
from haformer.backbone import create_backbone, use_package_modules
from haformer.fuse import fuse, unstack_hape_blocks
from haformer.hape import BranchHAPEBlock, HAPEBlock
from haformer.model import create_model
from haformer.opcount import count_ops
from haformer.profile import flop_analysis


def randomize(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight, 1.0, 0.1)
            nn.init.normal_(m.bias, 0.0, 0.1)
    return module


def old_and_new(name: str = "haformer_b0") -> tuple[nn.Module, nn.Module]:
    """The same weights in the layout before the speed work (per-branch blocks, timm's
    attention) and in today's (stacked blocks, the package's attention)."""
    timm_backbone = create_backbone(name.replace("haformer", "efficientvit"), out_indices=(-1,))
    new = create_model(name)
    new.backbone = use_package_modules(copy.deepcopy(timm_backbone))
    randomize(new)
    old = unstack_hape_blocks(copy.deepcopy(new))
    old.backbone = timm_backbone
    old.backbone.load_state_dict(_timm_keys(new.backbone.state_dict()))
    return old, new


def _timm_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package attention's keys back in timm's LiteMLA names."""
    renames = {".qkv.": ".qkv.conv.", ".aggregate.": ".aggreg.", ".proj.": ".proj.conv."}
    renames[".norm."] = ".proj.norm."
    out = {}
    for key, value in state.items():
        if ".context_module.main." in key:
            for ours, theirs in renames.items():
                key = key.replace(".context_module.main" + ours, ".context_module.main" + theirs)
        out[key] = value
    return out


def test_models_run_the_package_attention_and_stacked_blocks() -> None:
    model = create_model("haformer_b1")
    assert any(isinstance(m, MultiScaleLinearAttention) for m in model.modules())
    assert not any(isinstance(m, (LiteMLA, nn.Dropout, BranchHAPEBlock)) for m in model.modules())
    assert sum(isinstance(m, HAPEBlock) for m in model.modules()) == 18
    seed = create_model("hapeformer_seed", backbone="efficientvit_b1")  # keeps timm's modules
    assert any(isinstance(m, LiteMLA) for m in seed.modules())
    assert not any(isinstance(m, MultiScaleLinearAttention) for m in seed.modules())


@pytest.mark.parametrize("train", [False, True])
def test_whole_model_equals_the_per_branch_timm_layout(train: bool) -> None:
    """In float64: the attention still takes its products in float32 (timm's and ours alike),
    so the two differ by float32 rounding, which train-mode BatchNorm amplifies a little."""
    old, new = old_and_new()
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    outs, grads = [], []
    for model in (old, new):
        model.double().train(train)
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append(xi.grad)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    scale = grads[0].abs().max().item()  # input gradients reach 1e4 through random BatchNorms
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6 * scale)


def test_old_checkpoints_load_through_the_key_maps() -> None:
    old, new = old_and_new()
    state = old.state_dict()
    assert any(".convs." in k for k in state) and any(".qkv.conv." in k for k in state)
    fresh = create_model("haformer_b0")
    fresh.load_state_dict(state)  # strict: every key found a place
    for key, value in new.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_attention_swap_changes_no_flop_count() -> None:
    timm_backbone = create_backbone("efficientvit_b1", out_indices=(-1,))
    ours = use_package_modules(copy.deepcopy(timm_backbone))
    assert flop_analysis(ours, (96, 128)).total() == flop_analysis(timm_backbone, (96, 128)).total()


def test_haformer_b1_forward_runs_at_most_700_ops() -> None:
    """The exact ATen op count of one inference forward at 360x480 (issue 8's target); the
    per-branch layout ran 1849 and the fused model runs fewer still."""
    x = torch.randn(1, 3, 360, 480)
    model = create_model("haformer_b1")
    eager = sum(count_ops(model, x).values())
    assert eager <= 700
    assert sum(count_ops(fuse(model), x).values()) < eager
    old, _ = old_and_new("haformer_b1")
    assert sum(count_ops(old, x).values()) > 2.5 * eager
