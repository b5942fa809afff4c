"""Cheap convolutions and the channel shuffle: the bricks of every HAFormer block (book ch. 2).

Two families live here:

* seed-exact pieces (``DepthwiseSeparableConv`` with biases) used by the seed's modules, and
* the corrected pieces (``ConvBNAct``, ``asymmetric_convs``): bias-free convolutions, each
  followed *directly* by the ``BatchNorm2d`` that normalises it, inside one ``nn.Sequential``.
  That invariant (a BatchNorm always sits right after the Conv2d it belongs to) is what lets
  ``haformer.fuse`` fold every BatchNorm into its convolution for inference.
"""

from __future__ import annotations

import torch
from torch import nn

_Size2 = int | tuple[int, int]


def _pair(value: _Size2) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet): (B, C, H, W) -> (B, C, H, W).

    Channels ``[g0c0, g0c1, ..., g1c0, ...]`` become ``[g0c0, g1c0, ..., g0c1, g1c1, ...]`` so
    that the next grouped operation sees channels from every group. ``C`` must be divisible
    by ``groups``.
    """
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w)  # (B, G, C/G, H, W)
    return x.transpose(1, 2).reshape(b, c, h, w)  # (B, C/G, G, H, W) -> (B, C, H, W)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise ``kernel_size`` conv then pointwise 1x1 conv, both with bias (seed-exact).

    (B, C_in, H, W) -> (B, C_out, H', W'). Costs ``C_in*k + C_in*C_out`` weights instead of
    ``C_in*C_out*k`` for a full convolution. ``bias=False`` gives the bias-free variant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Size2,
        padding: _Size2,
        dilation: int = 1,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=bias,
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ConvBNAct(nn.Sequential):
    """Bias-free conv -> BatchNorm2d -> ReLU (``act=False``: no activation).

    (B, C_in, H, W) -> (B, C_out, ceil(H/stride), ceil(W/stride)) with "same" padding
    (``k // 2``). The conv has no bias because the BatchNorm right after it subtracts the
    mean anyway; at inference the BatchNorm folds into the conv, so it costs nothing. ReLU is
    the cheapest activation and fuses with the convolution in every runtime.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Size2 = 1,
        stride: int = 1,
        *,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        kh, kw = _pair(kernel_size)
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                (kh, kw),
                stride=stride,
                padding=(kh // 2, kw // 2),
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def asymmetric_convs(channels: int, kernel_size: int, *, depthwise: bool) -> list[nn.Module]:
    """Bias-free factorised ``k x k`` conv as a list of Conv2d layers, (B,C,H,W) -> (B,C,H,W).

    ``depthwise=False``: full ``1 x k`` then ``k x 1`` convs (``2*k*C*C`` weights).
    ``depthwise=True``: depthwise ``k x 1`` -> pointwise -> depthwise ``1 x k`` -> pointwise
    (``2*(k*C + C*C)`` weights), the order the seed's HAPE branches use. No biases: the caller
    puts a BatchNorm right after the last conv, which absorbs every constant offset of this
    purely linear stack.
    """
    k, p = kernel_size, kernel_size // 2
    if not depthwise:
        return [
            nn.Conv2d(channels, channels, (1, k), padding=(0, p), bias=False),
            nn.Conv2d(channels, channels, (k, 1), padding=(p, 0), bias=False),
        ]
    return [
        nn.Conv2d(channels, channels, (k, 1), padding=(p, 0), groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.Conv2d(channels, channels, (1, k), padding=(0, p), groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
    ]
