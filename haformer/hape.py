"""Hierarchy-Aware Pixel-Excitation (HAPE) block (book ch. 4).

A bottleneck residual block: a 1x1 conv squeezes C channels to ``C // denote``; ``denote``
parallel branches look at that map with factorised kernels of growing size (3, 3, 5, 7,
repeating); each branch is re-weighted by a PEM; the branches are summed, expanded back to C,
added to the input, activated, and the channels shuffled in ``denote`` groups.
"""

from __future__ import annotations

import torch
from torch import nn

from haformer.layers import ConvBNAct, DepthwiseSeparableConv, asymmetric_convs, channel_shuffle
from haformer.pem import PEM, SeedPEM

# Branch i (0-based) uses BRANCH_KERNELS[i % 4] = (kernel size, depthwise-separable?).
BRANCH_KERNELS: tuple[tuple[int, bool], ...] = ((3, False), (3, True), (5, True), (7, True))


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


class HAPEBlock(nn.Module):
    """HAPE block: (B, C, H, W) -> (B, C, H, W), with C = ``in_channels``.

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
    """

    def __init__(
        self, in_channels: int, denote: int = 4, *, seed: bool = False, use_pem: bool = True
    ) -> None:
        super().__init__()
        if denote < 1 or in_channels % denote != 0:
            raise ValueError(
                f"HAPEBlock needs in_channels divisible by denote (both >= 1); got "
                f"in_channels={in_channels}, denote={denote}"
            )
        if seed and not use_pem:
            raise ValueError("HAPEBlock(seed=True) is the seed's block and always has its PEMs")
        hidden = in_channels // denote
        kernels = [BRANCH_KERNELS[i % 4] for i in range(denote)]
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
