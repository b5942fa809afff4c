"""Inference-time fusion: a model that computes the same function, faster (book ch. 11).

``fuse(model)`` returns a new, inference-only copy of a HAFormer (or of the seed's HAPEFormer).
It applies the steps of :data:`STEPS` in order; each is also a public function working in
place, so that what each one buys can be measured (``benchmarks/bench_fuse.py``):

1. ``fold_batchnorms``: at inference a BatchNorm is a per-channel affine map, so the
   convolution right before it absorbs it: ``w' = w * g / sqrt(v + eps)``,
   ``b' = (b - m) * g / sqrt(v + eps) + beta``. Done in our ``nn.Sequential`` stacks, in timm's
   ``ConvNormAct`` (the whole EfficientViT backbone), the attention's ``proj``, the seed's
   ``SeparableConvBN``, and the stacked HAPE branches (their one BatchNorm over all branches is
   split between the last convs of the dense and of the depthwise branches); the ``Dropout``
   and ``Identity`` placeholders met on the way (identities at inference) go too.
2. ``merge_hape_blocks`` (the seed's per-branch blocks): a per-branch HAPE block runs
   ``denote`` thin branches one after the other, each of 2 or 4 convolutions on only
   ``C / denote`` channels; at batch 1 their cost is mostly per-operation overhead. Each
   branch is linear up to its activation, and a depthwise conv followed by a 1x1 conv *is*
   one dense conv, so every thin branch becomes two dense convs; branches of the same shape
   are then stacked: one conv for all their first stages (they read the same input) and one
   grouped conv for their second stages. ``FusedHAPEBlock`` applies the PEMs and the branch
   sum with a few batched operations. (The corrected models' ``HAPEBlock`` is stacked
   already; step 1 folds its BatchNorms.)
3. ``pool_seed_fusion`` (the seed only): the seed's fusion computes two 2C x 2C 1x1 convs at
   full resolution only to average the result; the average commutes with them, so
   ``FusedSeedCWF`` averages first and applies one (2C -> C) matrix to a vector.
4. ``backbone_channels_last``: the EfficientViT backbone runs in the channels_last memory
   format, where oneDNN's depthwise convolutions are several times faster.

What each step buys (CPU, batch 1) is measured by ``benchmarks/bench_fuse.py --steps``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models.efficientvit_mit import ConvNormAct
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from haformer.attention import MultiScaleLinearAttention
from haformer.fusion import SeedCWF
from haformer.hape import BranchHAPEBlock, HAPEBlock, HAPEBranches
from haformer.layers import DepthwiseSeparableConv, channel_shuffle
from haformer.model import SeparableConvBN
from haformer.pem import PEM, SeedPEM

__all__ = [
    "STEPS",
    "ChannelsLast",
    "FusedHAPEBlock",
    "FusedSeedCWF",
    "backbone_channels_last",
    "fold_batchnorms",
    "fuse",
    "merge_hape_blocks",
    "pool_seed_fusion",
    "unstack_hape_blocks",
]


def fuse(model: nn.Module) -> nn.Module:
    """A new inference-only model that computes what ``model`` computes in eval mode.

    (B, 3, H, W) -> the same logits as ``model.eval()``, up to float rounding. ``model`` is left
    untouched (deep copy). The result is in eval mode with ``requires_grad=False`` everywhere;
    do not train it (the BatchNorm statistics are baked into its weights).
    """
    fused = copy.deepcopy(model).eval().requires_grad_(False)
    for _, step in STEPS:
        step(fused)
    return fused


# ----------------------------------------------------------------------------------------------
# BatchNorm folding
# ----------------------------------------------------------------------------------------------


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one Conv2d (eval-mode statistics)."""
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def _fold_sequential(seq: nn.Sequential) -> None:
    """In place: every Conv2d directly followed by a BatchNorm2d absorbs it; Dropout and
    Identity entries go (both are the identity at inference)."""
    items = list(seq)
    kept: list[nn.Module] = []
    for i, item in enumerate(items):
        if isinstance(item, nn.BatchNorm2d) and i > 0 and isinstance(items[i - 1], nn.Conv2d):
            kept[-1] = _fold(kept[-1], item)
        elif not isinstance(item, (nn.Dropout, nn.Identity)):
            kept.append(item)
    for key in list(seq._modules):
        del seq._modules[key]
    for i, item in enumerate(kept):
        seq.add_module(str(i), item)


def _unwrap_conv_norm_act(module: ConvNormAct) -> nn.Module:
    """timm's ``dropout -> conv -> norm -> act`` as ``Sequential(conv', act)``."""
    seq = nn.Sequential(module.dropout, module.conv, module.norm, module.act)
    _fold_sequential(seq)
    return seq


def _unwrap_separable_conv_bn(module: SeparableConvBN) -> nn.Module:
    """The seed's ``depthwise -> bn -> pointwise`` as ``Sequential(depthwise', pointwise)``."""
    return nn.Sequential(_fold(module.depthwise, module.bn), module.pointwise)


_UNWRAP = {ConvNormAct: _unwrap_conv_norm_act, SeparableConvBN: _unwrap_separable_conv_bn}


def _batchnorm_slice(bn: nn.BatchNorm2d, start: int, stop: int) -> nn.BatchNorm2d:
    """Channels ``[start, stop)`` of ``bn`` as a BatchNorm2d of their own (eval statistics)."""
    part = nn.BatchNorm2d(stop - start, eps=bn.eps).to(bn.weight).eval()
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(part, name).data.copy_(getattr(bn, name)[start:stop])
    return part


def _fold_hape_branches(branches: HAPEBranches) -> None:
    """In place: the BatchNorm over all stacked branches folds into the two convs that end
    them, ``dense2`` (the dense branches' channels) and the last grouped 1x1 (the others')."""
    bn, dense = branches.bn, branches.dense2.out_channels
    branches.dense2 = _fold(branches.dense2, _batchnorm_slice(bn, 0, dense))
    if branches.depthwise is not None:
        last = branches.depthwise[-1]
        branches.depthwise[-1] = _fold(last, _batchnorm_slice(bn, dense, bn.num_features))
    branches.bn = nn.Identity()


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """In place: fold every BatchNorm2d that directly follows a Conv2d into it.

    Handles ``nn.Sequential`` stacks (``ConvBNAct``, the HAPE branches, ...), timm's
    ``ConvNormAct``, the seed's ``SeparableConvBN`` and the attention's ``proj`` + ``norm``;
    drops Dropout and Identity entries of the stacks it visits. BatchNorms in other places are
    left as they are. Returns ``model``.
    """
    for module in model.modules():
        if isinstance(module, MultiScaleLinearAttention) and isinstance(
            module.norm, nn.BatchNorm2d
        ):
            module.proj, module.norm = _fold(module.proj, module.norm), nn.Identity()
        elif isinstance(module, HAPEBranches) and isinstance(module.bn, nn.BatchNorm2d):
            _fold_hape_branches(module)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            unwrap = _UNWRAP.get(type(child))
            if unwrap is not None:
                setattr(parent, name, unwrap(child))
        if isinstance(parent, nn.Sequential):
            _fold_sequential(parent)
    return model


# ----------------------------------------------------------------------------------------------
# HAPE branch merging
# ----------------------------------------------------------------------------------------------


def unstack_hape_blocks(model: nn.Module) -> nn.Module:
    """In place: every stacked ``HAPEBlock`` becomes the equivalent ``BranchHAPEBlock``: the
    network as the paper draws it (and as the package ran it before it stacked the branches),
    for comparisons; ``fuse`` keeps the stacked blocks, which run fewer operations."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, HAPEBlock):
                setattr(parent, name, child.to_branch_block())
    return model


MAX_COMPOSED_WIDTH = 16
"""Widest branch (channels ``h``) whose depthwise + pointwise pairs are composed into dense
convolutions. Composing costs ``k*h*h`` multiply-adds per pixel instead of ``k*h + h*h``, and
saves launches: measured on a CPU at batch 1, it pays for h = 8 and 16 and loses for h = 32."""

_Stage = tuple[torch.Tensor, torch.Tensor]  # dense (weight (C_out, C_in, kh, kw), bias (C_out,))


def _leaves(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, (nn.Sequential, DepthwiseSeparableConv)):
        return [leaf for child in module.children() for leaf in _leaves(child)]
    return [module]


def _linear_stack(module: nn.Module) -> tuple[list[nn.Conv2d], nn.Module | None] | None:
    """The convs of ``module`` if it is a chain of "same"-padded stride-1 Conv2d's followed by
    at most one ReLU/ReLU6 (returned second); None for anything else."""
    convs: list[nn.Conv2d] = []
    act: nn.Module | None = None
    for leaf in _leaves(module):
        if act is not None or not isinstance(leaf, (nn.Conv2d, nn.ReLU, nn.ReLU6)):
            return None
        if isinstance(leaf, nn.Conv2d):
            if not _is_same_padded(leaf):
                return None
            convs.append(leaf)
        else:
            act = leaf
    return (convs, act) if convs else None


def _is_same_padded(conv: nn.Conv2d) -> bool:
    kh, kw = conv.kernel_size
    return (
        conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
        and kh % 2 == 1
        and kw % 2 == 1
        and tuple(conv.padding) == (kh // 2, kw // 2)
    )


def _dense(conv: nn.Conv2d) -> _Stage:
    """A conv's weight with its groups expanded to a dense (block-diagonal) kernel, and its
    bias (zeros if none), in float64 so that composing adds no rounding of its own."""
    w = conv.weight.detach().double()  # (C_out, C_in / groups, kh, kw)
    c_out, c_in_group = w.shape[:2]
    out_group = c_out // conv.groups
    dense = w.new_zeros(c_out, c_in_group * conv.groups, *w.shape[2:])
    for g in range(conv.groups):
        rows = slice(g * out_group, (g + 1) * out_group)
        dense[rows, g * c_in_group : (g + 1) * c_in_group] = w[rows]
    bias = conv.bias.detach().double() if conv.bias is not None else w.new_zeros(c_out)
    return dense, bias


def _compose(convs: list[nn.Conv2d]) -> list[_Stage]:
    """The chain as dense stages: each spatial conv absorbs the 1x1 convs that follow it.

    ``pw(conv(y))`` with ``pw`` 1x1 (no padding) is one conv: weight ``P @ W`` (over channels,
    for every kernel tap) and bias ``P @ b_conv + b_pw``; exact, borders included.
    """
    stages: list[_Stage] = []
    for conv in convs:
        w, b = _dense(conv)
        if conv.kernel_size == (1, 1) and stages:
            w_prev, b_prev = stages[-1]
            mix = w[:, :, 0, 0]  # (C_out, C_mid)
            stages[-1] = (torch.einsum("om,mikl->oikl", mix, w_prev), mix @ b_prev + b)
        else:
            stages.append((w, b))
    return stages


def _pad_kernel(w: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Zero-pad a (..., h, w) kernel to (..., kh, kw) around its centre: a "same"-padded conv
    with the larger kernel computes exactly what the smaller one did."""
    dh, dw = (kh - w.shape[-2]) // 2, (kw - w.shape[-1]) // 2
    return F.pad(w, (dw, dw, dh, dh))


def _conv(weight: torch.Tensor, bias: torch.Tensor, groups: int, like: torch.Tensor) -> nn.Conv2d:
    """A "same"-padded Conv2d holding ``weight``/``bias`` in ``like``'s dtype and device."""
    kh, kw = weight.shape[-2:]
    padding = (kh // 2, kw // 2)
    conv = nn.Conv2d(
        weight.shape[1] * groups, weight.shape[0], (kh, kw), padding=padding, groups=groups
    )
    conv.weight.data = weight.to(like)
    conv.bias.data = bias.to(like)
    return conv.requires_grad_(False)


def _stack(branches: list[list[_Stage]], like: torch.Tensor) -> nn.Sequential:
    """``n`` branches with stages of the same orientation, one input y (B, h, H, W) ->
    (B, n*h, H, W), branch ``t`` in channels ``[t*h, (t+1)*h)``.

    Stage 1 of every branch reads the same ``y``: their kernels, zero-padded to a common size,
    are stacked into one conv h -> n*h. Later stages become grouped convs (``groups=n``).
    """
    convs = []
    for depth in range(len(branches[0])):
        weights = [branch[depth][0] for branch in branches]
        kh, kw = max(w.shape[-2] for w in weights), max(w.shape[-1] for w in weights)
        weight = torch.cat([_pad_kernel(w, kh, kw) for w in weights])
        bias = torch.cat([branch[depth][1] for branch in branches])
        convs.append(_conv(weight, bias, 1 if depth == 0 else len(branches), like))
    return nn.Sequential(*convs)


class FusedHAPEBlock(nn.Module):
    """Inference-only HAPE block: (B, C, H, W) -> (B, C, H, W), equal to the block it replaces.

    ``branches[i]`` maps the squeezed map y (B, h, H, W) to ``counts[i]`` branch outputs side by
    side (B, counts[i]*h, H, W), before their activation. The PEMs and the sum of all
    ``counts[i]`` outputs are then three batched operations per entry:
    ``sum_t z_t * (1 + softmax_C(mean_HW(z_t)))``.
    """

    def __init__(
        self,
        block: BranchHAPEBlock,
        conv_in: nn.Conv2d,
        branches: list[nn.Module],
        counts: list[int],
        branch_act: nn.Module | None,
        conv_out: nn.Conv2d,
    ) -> None:
        super().__init__()
        self.conv_in = conv_in
        self.in_act = _activation(block.conv_in) or nn.Identity()
        self.branches = nn.ModuleList(branches)
        self.counts = tuple(counts)
        self.branch_act = branch_act or nn.Identity()
        self.pem = not isinstance(block.pems[0], nn.Identity)
        self.conv_out = conv_out
        self.act = block.act
        self.denote = block.denote

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.in_act(self.conv_in(x))  # (B, h, H, W)
        b, h, height, width = y.shape
        total = None
        for branch, n in zip(self.branches, self.counts, strict=True):
            z = self.branch_act(branch(y)).view(b, n, h, height, width)
            if self.pem:
                weight = torch.softmax(z.mean((3, 4)), dim=2).add_(1.0)  # (B, n, h)
                z = z * weight[..., None, None]
            part = z.sum(1) if n > 1 else z[:, 0]  # (B, h, H, W)
            total = part if total is None else total.add_(part)
        out = self.act(self.conv_out(total) + x)  # (B, C, H, W)
        return channel_shuffle(out, self.denote)


def _activation(module: nn.Module) -> nn.Module | None:
    stack = _linear_stack(module)
    return stack[1] if stack is not None else None


def _pointwise(module: nn.Module) -> nn.Conv2d | None:
    """The single 1x1 conv of ``module`` (a Conv2d or a folded ConvBNAct), else None."""
    stack = _linear_stack(module)
    if stack is None or len(stack[0]) != 1 or stack[0][0].kernel_size != (1, 1):
        return None
    return stack[0][0]


def _merge(block: BranchHAPEBlock) -> FusedHAPEBlock | None:
    """The fused equivalent of a BatchNorm-folded HAPE block; None (block left as it is) if
    the block is not built the way this code expects."""
    conv_in, conv_out = _pointwise(block.conv_in), _pointwise(block.conv_out)
    pem_types = {type(pem) for pem in block.pems}
    if conv_in is None or conv_out is None or _activation(block.conv_out) is not None:
        return None
    if len(pem_types) != 1 or not pem_types <= {PEM, SeedPEM, nn.Identity}:
        return None
    stacks = [_linear_stack(branch) for branch in block.convs]
    if any(s is None for s in stacks) or len({type(act) for _, act in stacks}) != 1:
        return None
    branches: list[nn.Module] = []
    counts: list[int] = []
    groups: dict[tuple, list[list[_Stage]]] = {}
    for convs, _ in stacks:
        if any(c.groups > 1 for c in convs) and conv_in.out_channels > MAX_COMPOSED_WIDTH:
            branches.append(nn.Sequential(*convs))  # wide: composing would cost more
            counts.append(1)
            continue
        stages = _compose(convs)
        shape = tuple((w.shape[-2] > 1, w.shape[-1] > 1) for w, _ in stages)
        groups.setdefault(shape, []).append(stages)
    for members in groups.values():
        branches.append(_stack(members, conv_in.weight))
        counts.append(len(members))
    return FusedHAPEBlock(block, conv_in, branches, counts, stacks[0][1], conv_out)


def merge_hape_blocks(model: nn.Module) -> nn.Module:
    """In place: replace every BatchNorm-folded ``BranchHAPEBlock`` by a ``FusedHAPEBlock``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BranchHAPEBlock):
                merged = _merge(child)
                if merged is not None:
                    setattr(parent, name, merged)
    return model


# ----------------------------------------------------------------------------------------------
# The seed's fusion: pool first
# ----------------------------------------------------------------------------------------------


def _window_sums(x: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """For every tap (a, b) of a "same"-padded stride-1 ``kh x kw`` convolution, the sum of the
    input values that tap reads over all output positions: (B, C, H, W) -> (B, C, kh, kw).

    Tap ``a`` reads input rows ``o + a - kh // 2`` for output rows ``o`` in ``[0, H)``, the rows
    outside the image being zero padding: a band of rows. So the sums are ``R @ x @ K^T`` with
    ``R`` (kh, H) and ``K`` (kw, W) the 0/1 masks of the rows and columns each tap reads.
    """
    (kh, kw), (h, w) = kernel_size, x.shape[-2:]

    def reads(taps: int, size: int) -> torch.Tensor:
        index = torch.arange(size, device=x.device)
        shift = torch.arange(taps, device=x.device)[:, None] - taps // 2
        return ((index >= shift) & (index < size + shift)).to(x.dtype)  # (taps, size)

    return reads(kh, h) @ x @ reads(kw, w).T


class FusedSeedCWF(nn.Module):
    """The seed's ``cwFModule`` (``SeedCWF``), computed pool-first: same output, no
    full-resolution 2C-channel maps. (a, b) both (B, C, H, W) -> (B, C, H, W).

    The seed computes ``z = conv(pointwise(depthwise(cat(a, b))))`` at full resolution (2C
    channels, two 2C x 2C 1x1 convs) only to average it: ``w = sigmoid(fc(mean_HW(z)))``.
    Everything after the depthwise conv is linear per pixel, so it commutes with the mean:
    the three 1x1 convs become one (2C -> C) matrix applied to a 2C-vector. The mean of the
    depthwise conv itself is a per-channel combination of window sums (``_window_sums``).
    At 384x512 that removes 1.6 of the seed model's 5.4 GMACs.
    """

    def __init__(self, cwf: SeedCWF) -> None:
        super().__init__()
        depthwise, pointwise = cwf.dsconv.depthwise, cwf.dsconv.pointwise
        if not _is_same_padded(depthwise) or depthwise.groups != depthwise.in_channels:
            raise ValueError(f"expected a same-padded stride-1 depthwise conv; got {depthwise}")
        self.kernel_size = depthwise.kernel_size
        self.register_buffer("taps", depthwise.weight.detach()[:, 0].clone())  # (2C, kh, kw)
        matrix = torch.eye(depthwise.out_channels, dtype=torch.float64, device=self.taps.device)
        offset = _dense(depthwise)[1]  # the depthwise bias: a constant, unchanged by the mean
        for conv in (pointwise, cwf.conv, cwf.fc):  # 1x1 convs: (out, in) matrices on a vector
            w, b = _dense(conv)
            matrix, offset = w[:, :, 0, 0] @ matrix, w[:, :, 0, 0] @ offset + b
        self.gate = nn.Linear(matrix.shape[1], matrix.shape[0]).requires_grad_(False)
        self.gate.weight.data = matrix.to(self.taps)
        self.gate.bias.data = offset.to(self.taps)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sums = torch.cat([_window_sums(a, self.kernel_size), _window_sums(b, self.kernel_size)], 1)
        pooled = (sums * self.taps).sum((2, 3)) / (a.shape[-2] * a.shape[-1])  # (B, 2C)
        w = torch.sigmoid(self.gate(pooled))[..., None, None]  # (B, C, 1, 1)
        return F.relu6(w * (a + b))


def pool_seed_fusion(model: nn.Module) -> nn.Module:
    """In place: replace every ``SeedCWF`` by the equivalent ``FusedSeedCWF``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SeedCWF):
                setattr(parent, name, FusedSeedCWF(child))
    return model


# ----------------------------------------------------------------------------------------------
# Memory format
# ----------------------------------------------------------------------------------------------


class ChannelsLast(nn.Module):
    """Runs ``module`` in the channels_last memory format; takes and returns (B, C, H, W)
    tensors (or a list of them) in the default layout, so the caller sees no difference.

    oneDNN's depthwise convolutions are several times faster on channels_last data than on
    the default layout (up to 20x on large maps), and EfficientViT is full of them.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.module(x.contiguous(memory_format=torch.channels_last))
        if isinstance(out, torch.Tensor):
            return out.contiguous()
        return [o.contiguous() for o in out]


def backbone_channels_last(model: nn.Module) -> nn.Module:
    """In place: run ``model.backbone`` (if it has one) in channels_last. Returns ``model``."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and not isinstance(backbone, ChannelsLast):
        model.backbone = ChannelsLast(backbone)
    return model


STEPS: tuple[tuple[str, Callable[[nn.Module], nn.Module]], ...] = (
    ("fold BatchNorm", fold_batchnorms),
    ("merge HAPE branches", merge_hape_blocks),
    ("pool-first seed fusion", pool_seed_fusion),
    ("backbone channels_last", backbone_channels_last),
)
"""The steps of :func:`fuse`, in order: (name, in-place function)."""
