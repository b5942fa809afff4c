"""Hierarchy-Aware Pixel-Excitation (HAPE) block (book ch. 4).

A bottleneck residual block: a 1x1 conv squeezes C channels to ``h = C // denote``; ``denote``
parallel branches look at that map with factorised kernels of growing size (3, 3, 5, 7,
repeating); each branch is re-weighted by a PEM; the branches are summed, expanded back to C,
added to the input, activated, and the channels shuffled in ``denote`` groups.

Two forms compute the same function:

* :class:`BranchHAPEBlock` runs the branches one after the other, as the paper draws them and
  as chapter 4 builds them (``seed=True`` is the seed's block, exactly). About 10 tensor
  operations per branch: a denote-16 block dispatches 177 of them for a few MFLOPs.
* :class:`HAPEBlock` (what the models use) stacks all branches along channels and runs them as
  a constant number of grouped operations, whatever ``denote`` is: 23 per block at inference.
  It holds the same parameters (same count, rearranged) and loads a ``BranchHAPEBlock``'s
  state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from haformer.layers import ConvBNAct, DepthwiseSeparableConv, asymmetric_convs, channel_shuffle
from haformer.pem import PEM, SeedPEM, excite_and_sum

# Branch i (0-based) uses BRANCH_KERNELS[i % 4] = (kernel size, depthwise-separable?).
BRANCH_KERNELS: tuple[tuple[int, bool], ...] = ((3, False), (3, True), (5, True), (7, True))


def branch_kernels(denote: int) -> list[tuple[int, bool]]:
    """(kernel size, depthwise?) of each of the ``denote`` branches, in branch order."""
    return [BRANCH_KERNELS[i % len(BRANCH_KERNELS)] for i in range(denote)]


def branch_order(denote: int) -> list[int]:
    """Branch indices in the order ``HAPEBlock`` stacks them along channels: the dense branches
    first, then the depthwise ones by kernel size (ties in branch order).

    ``branch_order(8) == [0, 4, 1, 5, 2, 6, 3, 7]``: branches of the same kind sit side by side,
    so one grouped convolution runs them all.
    """
    kernels = branch_kernels(denote)
    return sorted(range(denote), key=lambda i: (kernels[i][1], kernels[i][0], i))


def _check_sizes(in_channels: int, denote: int) -> int:
    if denote < 1 or in_channels % denote != 0:
        raise ValueError(
            f"HAPEBlock needs in_channels divisible by denote (both >= 1); got "
            f"in_channels={in_channels}, denote={denote}"
        )
    return in_channels // denote


# ----------------------------------------------------------------------------------------------
# Branch by branch (book ch. 4; the seed's block)
# ----------------------------------------------------------------------------------------------


def _seed_branch(channels: int, kernel_size: int, depthwise: bool) -> nn.Sequential:
    """The seed's branch: biased factorised convs, no normalisation, no activation."""
    k, p = kernel_size, kernel_size // 2
    if not depthwise:
        return nn.Sequential(
            nn.Conv2d(channels, channels, (1, k), padding=(0, p)),
            nn.Conv2d(channels, channels, (k, 1), padding=(p, 0)),
        )
    return nn.Sequential(
        DepthwiseSeparableConv(channels, channels, (k, 1), (p, 0)),
        DepthwiseSeparableConv(channels, channels, (1, k), (0, p)),
    )


def _branch(channels: int, kernel_size: int, depthwise: bool) -> nn.Sequential:
    """Corrected branch: bias-free factorised convs -> BatchNorm2d -> ReLU."""
    return nn.Sequential(
        *asymmetric_convs(channels, kernel_size, depthwise=depthwise),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


class BranchHAPEBlock(nn.Module):
    """HAPE block, one branch after the other: (B, C, H, W) -> (B, C, H, W), C = ``in_channels``.

    ``seed=True`` builds the seed's block exactly: every conv with a bias, no normalisation,
    no activation before the final ReLU6, a ``SeedPEM`` (with its unused ``fc``) per branch.
    Parameter counts: 3,856 / 14,880 / 6,992 / 3,912 / 2,372 for (32, 2) / (64, 2) / (64, 4)
    / (64, 8) / (64, 16).

    ``seed=False`` (default) is the corrected block, chosen for accuracy per FLOP:

    * bias-free convs, each factorised stack followed by BatchNorm2d: training is stable at
      the learning rates the book uses, and at inference every BatchNorm folds into its conv,
      so it costs no FLOPs (the biases it replaces were redundant under BatchNorm);
    * a ReLU after the squeeze and after each branch: the seed's block is linear from
      ``conv_in`` to ``conv_out`` (only the near-identity PEM in between), so its branches add
      receptive field but no depth of representation; two ReLUs add it for free;
    * ReLU instead of ReLU6 after the residual sum: ReLU6 clips the residual stream at 6 after
      every block, which only pays off for int8 deployment;
    * parameter-free ``PEM`` (``use_pem=False`` drops it, for the ablation of book ch. 12).

    The models run the same function as :class:`HAPEBlock`, in a constant number of ops.
    """

    def __init__(
        self, in_channels: int, denote: int = 4, *, seed: bool = False, use_pem: bool = True
    ) -> None:
        super().__init__()
        hidden = _check_sizes(in_channels, denote)
        if seed and not use_pem:
            raise ValueError("HAPEBlock(seed=True) is the seed's block and always has its PEMs")
        kernels = branch_kernels(denote)
        self.denote = denote
        if seed:
            self.conv_in: nn.Module = nn.Conv2d(in_channels, hidden, 1)
            self.convs = nn.ModuleList(_seed_branch(hidden, k, dw) for k, dw in kernels)
            self.pems = nn.ModuleList(SeedPEM(hidden) for _ in kernels)
            self.conv_out: nn.Module = nn.Conv2d(hidden, in_channels, 1)
            self.act: nn.Module = nn.ReLU6()
        else:
            self.conv_in = ConvBNAct(in_channels, hidden, 1)
            self.convs = nn.ModuleList(_branch(hidden, k, dw) for k, dw in kernels)
            self.pems = nn.ModuleList(PEM() if use_pem else nn.Identity() for _ in kernels)
            self.conv_out = ConvBNAct(hidden, in_channels, 1, act=False)
            self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_in(x)  # (B, C/d, H, W)
        total = self.pems[0](self.convs[0](y))
        for conv, pem in zip(self.convs[1:], self.pems[1:], strict=True):
            total = total + pem(conv(y))  # (B, C/d, H, W)
        out = self.act(self.conv_out(total) + x)  # (B, C, H, W)
        return channel_shuffle(out, self.denote)


# ----------------------------------------------------------------------------------------------
# All branches at once (what the models run)
# ----------------------------------------------------------------------------------------------


class StackedDepthwise(nn.Module):
    """The depthwise convs of several branches, stacked along channels, as one convolution.

    (B, n*h, H, W) -> (B, n*h, H, W). Branch t (channels ``[t*h, (t+1)*h)``) has a
    ``lengths[t]``-tap kernel, vertical (k x 1) or horizontal (1 x k). The parameter ``taps``
    holds exactly the weights of the separate convs (``h * sum(lengths)`` numbers, each
    branch's kernels flattened, one after the other). ``weight()`` scatters them into a zero
    kernel of the longest length, each centred (one op): a "same"-padded conv with a centred,
    zero-padded kernel computes exactly what the short kernel did, and the zero taps are no
    parameters, so they get no gradient and stay zero.
    """

    def __init__(self, hidden: int, lengths: Sequence[int], *, vertical: bool) -> None:
        super().__init__()
        longest = max(lengths)
        mask = torch.zeros(len(lengths) * hidden, longest, dtype=torch.bool)
        for t, k in enumerate(lengths):
            start = (longest - k) // 2
            mask[t * hidden : (t + 1) * hidden, start : start + k] = True
        shape = (mask.shape[0], 1, longest, 1) if vertical else (mask.shape[0], 1, 1, longest)
        self.lengths, self.vertical = tuple(lengths), vertical
        self.padding = (longest // 2, 0) if vertical else (0, longest // 2)
        self.register_buffer("mask", mask.view(shape), persistent=False)
        self.register_buffer("zeros", torch.zeros(shape), persistent=False)
        self.taps = nn.Parameter(torch.empty(hidden * sum(lengths)))
        self._kernel: torch.Tensor | None = None  # weight() without gradients, and its key
        self._kernel_key: tuple = ()
        segments = self.taps.split([hidden * k for k in lengths])
        with torch.no_grad():  # as nn.Conv2d: uniform(+-1 / sqrt(fan_in)), fan_in = k
            for segment, k in zip(segments, lengths, strict=True):
                segment.uniform_(-1 / math.sqrt(k), 1 / math.sqrt(k))

    def weight(self) -> torch.Tensor:
        """The stacked kernel (n*h, 1, K, 1) or (n*h, 1, 1, K), K = the longest length.

        Built on every call while gradients flow; without gradients (inference) it is built once
        and reused until ``taps`` changes (in place, as an optimizer or ``load_state_dict``
        does, or by moving the module), so inference runs only the convolution.
        """
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or self.taps.is_inference():
            # (an inference tensor, as made by copying the model under inference_mode, has no
            # version counter to tell when it changes: rebuild every time)
            return self.zeros.masked_scatter(self.mask, self.taps)
        key = (self.taps._version, self.taps.data_ptr(), torch.is_inference_mode_enabled())
        if self._kernel is None or self._kernel_key != key:
            self._kernel = self.zeros.masked_scatter(self.mask, self.taps)
            self._kernel_key = key
        return self._kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), padding=self.padding, groups=x.shape[1])

    def extra_repr(self) -> str:
        side = "vertical" if self.vertical else "horizontal"
        return f"lengths={self.lengths}, {side}"


class HAPEBranches(nn.Module):
    """The ``denote`` branches of a corrected HAPE block, all at once.

    y (B, h, H, W) -> z (B, n*h, H, W): branch outputs side by side, in ``branch_order``,
    each after its BatchNorm and ReLU. Whatever ``denote`` is, the work is 10 operations (9
    for denote 2, 4 for denote 1; 2 more while training, which rebuilds the kernels):

    * dense branches (3x3 factorised as 1x3 then 3x1, full convs): ``dense1`` reads y once
      for all of them (h -> nA*h), ``dense2`` is grouped (one group per branch);
    * depthwise-separable branches (k x 1 dw, 1x1, 1 x k dw, 1x1; k = 3, 5 or 7): y repeated
      once per branch, then ``dw1`` and ``dw2`` (:class:`StackedDepthwise`, one op each with
      their kernel) and the grouped 1x1 convs ``pw1``, ``pw2``;
    * one BatchNorm and one ReLU over all n*h channels (per-channel, so exactly the branches'
      own BatchNorms side by side).
    """

    def __init__(self, hidden: int, denote: int) -> None:
        super().__init__()
        every = branch_kernels(denote)
        kernels = [every[i] for i in branch_order(denote)]
        lengths = [k for k, depthwise in kernels if depthwise]
        n_dense, n_dw = len(kernels) - len(lengths), len(lengths)
        self.n_depthwise = n_dw
        self.dense1 = nn.Conv2d(hidden, n_dense * hidden, (1, 3), padding=(0, 1), bias=False)
        self.dense2 = nn.Conv2d(
            n_dense * hidden, n_dense * hidden, (3, 1), padding=(1, 0), groups=n_dense, bias=False
        )
        self.depthwise: nn.Sequential | None = None
        if n_dw:
            wide = n_dw * hidden
            self.depthwise = nn.Sequential(
                StackedDepthwise(hidden, lengths, vertical=True),  # dw1: k x 1
                nn.Conv2d(wide, wide, 1, groups=n_dw, bias=False),  # pw1
                StackedDepthwise(hidden, lengths, vertical=False),  # dw2: 1 x k
                nn.Conv2d(wide, wide, 1, groups=n_dw, bias=False),  # pw2
            )
        self.bn = nn.BatchNorm2d(denote * hidden)
        self.act = nn.ReLU(inplace=True)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        z = self.dense2(self.dense1(y))  # (B, nA*h, H, W)
        if self.depthwise is not None:
            copies = y.repeat(1, self.n_depthwise, 1, 1) if self.n_depthwise > 1 else y
            wide = self.depthwise(copies)  # (B, nB*h, H, W)
            z = torch.cat([z, wide], dim=1)  # (B, n*h, H, W)
        return self.act(self.bn(z))


class HAPEBlock(nn.Module):
    """HAPE block (corrected), all branches at once: (B, C, H, W) -> (B, C, H, W).

    Computes what :class:`BranchHAPEBlock` computes (same parameters, stacked) in 23 tensor
    operations at inference whatever ``denote`` is (22 for denote 2), instead of about 10 per
    branch: squeeze (``conv_in``),
    :class:`HAPEBranches`, PEM of every branch and the branch sum in one batched step
    (``excite_and_sum``), expand (``conv_out``), residual, ReLU, channel shuffle.

    ``load_state_dict`` also accepts a ``BranchHAPEBlock``'s state_dict (and checkpoints saved
    before the blocks were stacked); :meth:`to_branch_block` gives the per-branch form back.
    """

    def __init__(self, in_channels: int, denote: int = 4, *, use_pem: bool = True) -> None:
        super().__init__()
        hidden = _check_sizes(in_channels, denote)
        self.in_channels, self.denote, self.use_pem = in_channels, denote, use_pem
        self.conv_in = ConvBNAct(in_channels, hidden, 1)  # (B, h, H, W)
        self.branches = HAPEBranches(hidden, denote)  # (B, n*h, H, W)
        self.conv_out = ConvBNAct(hidden, in_channels, 1, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.branches(self.conv_in(x))  # (B, n*h, H, W)
        if self.use_pem:
            total = excite_and_sum(z, self.denote)  # (B, h, H, W)
        else:
            b, _, height, width = z.shape
            total = z.view(b, self.denote, -1, height, width).sum(1)
        out = self.act(self.conv_out(total) + x)  # (B, C, H, W)
        return F.channel_shuffle(out, self.denote)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, denote={self.denote}, use_pem={self.use_pem}"

    def to_branch_block(self) -> BranchHAPEBlock:
        """The equivalent per-branch block, holding these weights (same device, dtype, mode and
        ``requires_grad``)."""
        block = BranchHAPEBlock(self.in_channels, self.denote, use_pem=self.use_pem)
        block.load_state_dict(branch_state_dict(self.state_dict(), self.denote))
        weight = self.conv_in[0].weight
        return block.to(weight).train(self.training).requires_grad_(weight.requires_grad)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Convert a per-branch state_dict under ``prefix`` in place, then load as usual."""
        if any(key.startswith(prefix + "convs.") for key in state_dict):
            ours = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            for key in ours:
                del state_dict[prefix + key]
            for key, value in stacked_state_dict(ours, self.denote).items():
                state_dict[prefix + key] = value
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Per-branch <-> stacked parameters
# ----------------------------------------------------------------------------------------------

_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def _key_map(denote: int) -> dict[str, list[tuple[str, bool]]]:
    """Stacked key -> the per-branch keys concatenated (along dim 0) into it, in stacking
    order; the flag says whether each per-branch tensor is flattened first (kernel taps)."""
    kernels = branch_kernels(denote)
    order = branch_order(denote)
    dense = [i for i in order if not kernels[i][1]]
    deep = [i for i in order if kernels[i][1]]
    keys: dict[str, list[tuple[str, bool]]] = {
        "branches.dense1.weight": [(f"convs.{i}.0.weight", False) for i in dense],
        "branches.dense2.weight": [(f"convs.{i}.1.weight", False) for i in dense],
    }
    for stage in range(4):  # dw1, pw1, dw2, pw2 = Sequential entries 0..3
        kind = "taps" if stage % 2 == 0 else "weight"
        keys[f"branches.depthwise.{stage}.{kind}"] = [
            (f"convs.{i}.{stage}.weight", stage % 2 == 0) for i in deep
        ]
    bn_index = {i: 2 if i in dense else 4 for i in order}
    for name in _BN_KEYS:
        keys[f"branches.bn.{name}"] = [(f"convs.{i}.{bn_index[i]}.{name}", False) for i in order]
    return {k: v for k, v in keys.items() if v}


def stacked_state_dict(branch_state: Mapping[str, torch.Tensor], denote: int) -> dict:
    """A corrected ``BranchHAPEBlock``'s state_dict as a ``HAPEBlock``'s (same tensors, stacked)."""
    state = {k: v for k, v in branch_state.items() if not k.startswith("convs.")}
    for key, sources in _key_map(denote).items():
        parts = [branch_state[k].flatten() if flat else branch_state[k] for k, flat in sources]
        state[key] = torch.cat(parts)
    state["branches.bn.num_batches_tracked"] = branch_state["convs.0.2.num_batches_tracked"]
    return state


def branch_state_dict(stacked_state: Mapping[str, torch.Tensor], denote: int) -> dict:
    """A ``HAPEBlock``'s state_dict as a corrected ``BranchHAPEBlock``'s (the inverse)."""
    state = {k: v for k, v in stacked_state.items() if not k.startswith("branches.")}
    kernels = branch_kernels(denote)
    hidden = stacked_state["conv_in.0.weight"].shape[0]
    for key, targets in _key_map(denote).items():
        sizes, shapes = [], []
        for target, flat in targets:
            _, branch, stage, _ = target.split(".")  # "convs.{i}.{stage}.weight"
            k = kernels[int(branch)][0]
            vertical = stage == "0"  # dw1 is k x 1, dw2 (stage 2) is 1 x k
            sizes.append(hidden * k if flat else hidden)
            shapes.append(((hidden, 1, k, 1) if vertical else (hidden, 1, 1, k)) if flat else None)
        for (target, _), part, shape in zip(
            targets, stacked_state[key].split(sizes), shapes, strict=True
        ):
            state[target] = part.reshape(shape) if shape else part
    tracked = stacked_state["branches.bn.num_batches_tracked"]
    for i, (_, depthwise) in enumerate(kernels):
        state[f"convs.{i}.{4 if depthwise else 2}.num_batches_tracked"] = tracked
    return state
