"""The chapters' classes and their twins in the package cannot drift apart silently.

For every class a chapter builds that has a twin in ``haformer``: both built from the same
random seed have equal state dicts (same parameters, same initialisation), their layers have
equal reprs (widths, kernels, strides, eps, momentum, inplace), and with those weights they
compute the same outputs, in train and eval mode, for every configuration the models use.
The chapter's class is taken from the notebook's own cell (imports, constants and
definitions only), as a reader who copies that cell gets it.
"""

from __future__ import annotations

import functools

import pytest
import torch
from book_cells import SHARED_DATA, defined
from timm.models.efficientvit_mit import LiteMLA as TimmLiteMLA
from torch import nn

from haformer import attention, fusion, hape, layers, losses, metrics, pem
from haformer.backbone import create_backbone
from haformer.model import SEED_CHANNELS, SEED_DENOTES, create_model

# Every (channels, denote) of the seed's and the corrected model's HAPE blocks.
HAPE_CONFIGS = sorted(
    {(c, d) for c, ds in zip(SEED_CHANNELS, SEED_DENOTES, strict=True) for d in ds}
)
BRANCH_WIDTHS = sorted({c // d for c, d in HAPE_CONFIGS})  # what each branch (and PEM) sees
FUSION_WIDTHS = (SEED_CHANNELS[2], 8)  # the models' fusion width; ch. 6's synthetic task


@functools.cache
def chapter(name: str) -> _Definitions:
    return _Definitions(name)


class _Definitions:
    """``chapter("03_pem")["MyPEM"]``: a name as the chapter's cell that defines it makes it."""

    def __init__(self, chapter: str) -> None:
        self.chapter = chapter

    @functools.cache  # noqa: B019 (a handful of instances, alive for the session anyway)
    def __getitem__(self, name: str) -> object:
        return defined(self.chapter, name)


def same_seed(build_mine, build_theirs, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    mine = build_mine()
    torch.manual_seed(seed)
    return mine, build_theirs()


def leaves(module: nn.Module) -> list[tuple[str, str]]:
    """(name, repr) of every module without children, in registration order.

    PyTorch's layers by their full repr (class and settings); a class of the book or the
    package by its settings only (``MyPEM`` is the chapter's ``PEM``).
    """
    return [
        (n, repr(m) if type(m).__module__.startswith("torch.") else m.extra_repr())
        for n, m in module.named_modules()
        if not any(m.children())
    ]


def assert_twins(mine: nn.Module, theirs: nn.Module, *, same_names: bool = True) -> None:
    """Equal state dicts (names, shapes, values) and equal layer reprs."""
    ours, package = mine.state_dict(), theirs.state_dict()
    if same_names:
        assert list(ours) == list(package), "parameter and buffer names differ"
    else:
        assert len(ours) == len(package), "different numbers of parameters and buffers"
    for (name, a), (theirs_name, b) in zip(ours.items(), package.items(), strict=True):
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} vs {theirs_name} {b.shape}"
        assert torch.equal(a, b), f"{name} is initialised differently from {theirs_name}"
    mine_leaves, their_leaves = leaves(mine), leaves(theirs)
    if not same_names:
        mine_leaves = [r for _, r in mine_leaves]
        their_leaves = [r for _, r in their_leaves]
    assert mine_leaves == their_leaves, "the layers differ (widths, kernels, eps, momentum...)"


def randomise(module: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that eval mode is tested."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)


def assert_same_outputs(mine: nn.Module, theirs: nn.Module, *inputs: torch.Tensor) -> None:
    """With the package's weights (BatchNorm randomised), both compute the same outputs."""
    randomise(theirs)
    # Same tensors in the same order (assert_twins checked the names where they agree).
    mine.load_state_dict(dict(zip(mine.state_dict(), theirs.state_dict().values(), strict=True)))
    for training in (True, False):
        mine.train(training)
        theirs.train(training)
        with torch.no_grad():
            torch.testing.assert_close(mine(*inputs), theirs(*inputs))


# --- ch. 2: cheap convolutions ----------------------------------------------------------------

DSCONV_CONFIGS = [  # (c_in, c_out, kernel, padding) of every DepthwiseSeparableConv in the seed
    *((h, h, (k, 1), (k // 2, 0)) for h in BRANCH_WIDTHS for k in (3, 5, 7)),
    *((h, h, (1, k), (0, k // 2)) for h in BRANCH_WIDTHS for k in (3, 5, 7)),
    (2 * SEED_CHANNELS[2], 2 * SEED_CHANNELS[2], 3, 1),  # the seed fusion's
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("c_in", "c_out", "kernel", "padding"), DSCONV_CONFIGS)
def test_ch02_depthwise_separable(c_in, c_out, kernel, padding, bias) -> None:
    mine, theirs = same_seed(
        lambda: chapter("02_cheap_convolutions")["DepthwiseSeparable"](
            c_in, c_out, kernel, padding, bias=bias
        ),
        lambda: layers.DepthwiseSeparableConv(c_in, c_out, kernel, padding, bias=bias),
    )
    assert_twins(mine, theirs)
    assert_same_outputs(mine, theirs, torch.randn(2, c_in, 9, 13))


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("width", BRANCH_WIDTHS)
def test_ch02_asymmetric_pair(width: int, k: int) -> None:
    variants = chapter("02_cheap_convolutions")["variants"]
    mine, theirs = same_seed(
        variants(k, width)["asymmetric depthwise-separable"][0],
        lambda: nn.Sequential(*layers.asymmetric_convs(width, k, depthwise=True)),
    )
    assert_twins(mine, theirs, same_names=False)  # nested vs flat Sequential
    assert_same_outputs(mine, theirs, torch.randn(2, width, 11, 9))


@pytest.mark.parametrize(("channels", "denote"), HAPE_CONFIGS)
def test_ch02_shuffle(channels: int, denote: int) -> None:
    x = torch.randn(2, channels, 5, 7)
    shuffle = chapter("02_cheap_convolutions")["shuffle"]
    assert torch.equal(shuffle(x, denote), layers.channel_shuffle(x, denote))


# --- ch. 3: PEM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("width", BRANCH_WIDTHS)
def test_ch03_pem(width: int) -> None:
    defs = chapter("03_pem")
    x = torch.randn(2, width, 9, 11) * 3
    mine, theirs = same_seed(defs["MyPEM"], lambda: pem.PEM(width))
    assert_twins(mine, theirs)
    torch.testing.assert_close(mine(x), theirs(x))
    mine, theirs = same_seed(lambda: defs["MySeedPEM"](width), lambda: pem.SeedPEM(width))
    assert_twins(mine, theirs)
    assert_same_outputs(mine, theirs, x)


# --- ch. 4: the HAPE block -----------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "denote"), HAPE_CONFIGS)
def test_ch04_seed_hape(channels: int, denote: int) -> None:
    mine, theirs = same_seed(
        lambda: chapter("04_hape_block")["MySeedHAPE"](channels, denote),
        lambda: hape.BranchHAPEBlock(channels, denote, seed=True),
    )
    assert_twins(mine, theirs)
    assert_same_outputs(mine, theirs, torch.randn(2, channels, 15, 22))


@pytest.mark.parametrize(("channels", "denote"), HAPE_CONFIGS)
def test_ch04_corrected_hape(channels: int, denote: int) -> None:
    """Chapter 4's per-branch block against the package's per-branch reference."""
    mine, theirs = same_seed(
        lambda: chapter("04_hape_block")["MyHAPE"](channels, denote),
        lambda: hape.BranchHAPEBlock(channels, denote),
    )
    assert_twins(mine, theirs)
    assert_same_outputs(mine, theirs, torch.randn(2, channels, 15, 22))


# --- ch. 5: attention ----------------------------------------------------------------------------


def lite_mla_configs() -> list[tuple[int, int, int, tuple[int, ...], float]]:
    """(in, out, head width, scales, eps) of every LiteMLA in EfficientViT B0, B1, B2."""
    configs = set()
    for name in ("efficientvit_b0", "efficientvit_b1", "efficientvit_b2"):
        for m in create_backbone(name).modules():
            if isinstance(m, TimmLiteMLA):
                scales = tuple(branch[0].kernel_size[0] for branch in m.aggreg)
                configs.add(
                    (m.qkv.conv.in_channels, m.proj.conv.out_channels, m.dim, scales, m.eps)
                )
    return sorted(configs)


@pytest.mark.parametrize(("c_in", "c_out", "head_dim", "scales", "eps"), lite_mla_configs())
def test_ch05_lite_mla(c_in, c_out, head_dim, scales, eps) -> None:
    lite_mla = chapter("05_efficient_transformer")["LiteMLA"]
    mine, theirs = same_seed(
        lambda: lite_mla(c_in, c_out, head_dim=head_dim, scales=scales, eps=eps),
        lambda: attention.MultiScaleLinearAttention(
            c_in, c_out, head_dim=head_dim, scales=scales, eps=eps
        ),
    )
    assert_twins(mine, theirs)
    assert_same_outputs(mine, theirs, torch.randn(2, c_in, 6, 7))


@pytest.mark.parametrize("head_dim", [8, 16, 32])
def test_ch05_attention_functions(head_dim: int) -> None:
    defs = chapter("05_efficient_transformer")
    q, k, v = torch.randn(3, 2, 4, 50, head_dim).unbind(0)
    torch.testing.assert_close(
        defs["relu_linear_attention"](q, k, v), attention.relu_linear_attention(q, k, v)
    )
    torch.testing.assert_close(
        defs["softmax_attention"](q, k, v), attention.softmax_attention(q, k, v)
    )


# --- ch. 6: the fusions --------------------------------------------------------------------------


@pytest.mark.parametrize("channels", FUSION_WIDTHS)
def test_ch06_seed_fusion(channels: int) -> None:
    mine, theirs = same_seed(
        lambda: chapter("06_cwf_fusion")["SeedFusion"](channels),
        lambda: fusion.SeedCWF(channels),
    )
    assert_twins(mine, theirs)
    assert_same_outputs(mine, theirs, *torch.randn(2, 2, channels, 12, 15).unbind(0))


@pytest.mark.parametrize("channels", FUSION_WIDTHS)
def test_ch06_gated_fusion_is_the_package_cwf(channels: int) -> None:
    mine, theirs = same_seed(
        lambda: chapter("06_cwf_fusion")["GatedFusion"](channels),
        lambda: fusion.CWF(channels),
    )
    assert_twins(mine, theirs)
    assert_same_outputs(mine, theirs, *torch.randn(2, 2, channels, 12, 15).unbind(0))


# --- ch. 7: the whole model ----------------------------------------------------------------------


@pytest.mark.parametrize("size", ["b0", "b1", "b2"])
def test_ch07_whole_model(size: str) -> None:
    my_haformer = chapter("07_full_model")["MyHAFormer"]
    mine, theirs = same_seed(
        lambda: my_haformer(num_classes=11, backbone=f"efficientvit_{size}"),
        lambda: create_model(f"haformer_{size}", num_classes=11),
    )
    assert_twins(mine, theirs)
    assert_same_outputs(mine, theirs, torch.randn(2, 3, 64, 96))


# --- ch. 8-10: data, loss, metrics ---------------------------------------------------------------


def test_ch08_dataset() -> None:
    root = SHARED_DATA / "camvid-mini"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    from haformer.data import CamVid

    my_camvid = chapter("08_camvid")["MyCamVid"]
    for split in ("train", "val", "test"):
        mine, theirs = my_camvid(root, split), CamVid(root, split=split)
        assert len(mine) == len(theirs)
        for i in range(len(mine)):
            (my_image, my_mask), (image, mask) = mine[i], theirs[i]
            assert torch.equal(my_image, image.as_subclass(torch.Tensor)), (split, i)
            assert torch.equal(my_mask, mask), (split, i)


def test_ch09_loss() -> None:
    weighted_ce = chapter("09_training")["weighted_ce"]
    weight = torch.rand(11) * 9 + 1
    logits, target = torch.randn(2, 11, 12, 16), torch.randint(0, 12, (2, 12, 16))
    theirs = losses.build_loss("ce", weight, ignore_index=11)
    torch.testing.assert_close(weighted_ce(logits, target, weight), theirs(logits, target))


def test_ch10_metrics() -> None:
    defs = chapter("10_evaluation")
    pred, target = torch.randint(0, 11, (3, 20, 30)), torch.randint(0, 12, (3, 20, 30))
    mine = defs["confusion"](pred, target)
    assert torch.equal(mine, metrics.confusion_matrix(pred, target, 11, 11))
    ours, theirs = defs["scores"](mine), metrics.metrics_from_confusion(mine)
    torch.testing.assert_close(ours["miou"], theirs["miou"])
    torch.testing.assert_close(
        ours["iou"], torch.tensor(theirs["iou"], dtype=torch.float64), equal_nan=True
    )
