"""Fusing the CNN map with the transformer map (book ch. 6).

Every fusion maps ``a`` (CNN) and ``b`` (transformer), both (B, C, H, W), to (B, C, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haformer.layers import ConvBNAct, DepthwiseSeparableConv

FUSIONS = ("cwf", "seed", "add")


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"fusion needs two maps of the same shape (B, C, H, W); got {tuple(a.shape)} and "
            f"{tuple(b.shape)}: resize the transformer map to the CNN map's size first"
        )


class SeedCWF(nn.Module):
    """The seed's ``cwFModule``, exactly (torchinfo shows it under that name).

    ``z = concat(a, b)`` (2C) -> depthwise-separable 3x3 (biases) -> 1x1 2C->2C -> global
    average pool -> 1x1 2C->C -> sigmoid = ``w`` (B, C, 1, 1); output ``ReLU6(w*a + w*b)``.
    The same ``w`` scales both inputs, so this is ``ReLU6(w * (a + b))``: one gate per channel
    for the *sum*, nothing that weighs one branch against the other.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        wide = 2 * channels
        self.dsconv = DepthwiseSeparableConv(wide, wide, 3, 1)
        self.conv = nn.Conv2d(wide, wide, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(wide, channels, 1)

    def gate(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The channel weights ``w``: (B, C, 1, 1), in (0, 1)."""
        _check_pair(a, b)
        z = self.conv(self.dsconv(torch.cat([a, b], dim=1)))  # (B, 2C, H, W)
        return torch.sigmoid(self.fc(self.gap(z)))  # (B, C, 1, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = self.gate(a, b)
        return F.relu6(w * a + w * b)


class CWF(nn.Module):
    """Correlation-weighted fusion (corrected): ``out = w * a + (1 - w) * b``.

    ``w`` (B, C, H, W), in (0, 1), is computed from *both* maps, per pixel and per channel:
    ``concat(a, b)`` -> 1x1 2C -> C/4 (BN, ReLU) -> depthwise 3x3 (BN, ReLU) -> 1x1 C/4 -> C
    -> sigmoid. Squeezing before the depthwise conv keeps that memory-bound op on C/4
    channels instead of 2C (8x less memory traffic, the same receptive field).

    The output is a convex combination: at each position and channel the gate decides how
    much comes from the CNN (local detail) and how much from the transformer (global
    context), so the two branches compete instead of being summed. The gate's last bias
    starts at 0, so ``w`` starts around 0.5: training begins near the plain average.

    Cost per pixel is about ``2C*C/4 + 9*C/4 + C*C/4`` multiply-adds (C = 128: 12.6 k), against
    about 131 k for the seed's fusion, whose 2C-wide 1x1 convs run at full resolution.
    ``gate(a, b)`` returns ``w`` for visualisation.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        wide, hidden = 2 * channels, max(channels // reduction, 8)
        self.mix = nn.Sequential(
            ConvBNAct(wide, hidden, 1),  # (B, C/4, H, W): compare the two maps channel-wise
            ConvBNAct(hidden, hidden, 3, groups=hidden),  # look at the 3x3 neighbourhood
            nn.Conv2d(hidden, channels, 1),  # (B, C, H, W) gate logits
        )
        nn.init.zeros_(self.mix[-1].bias)

    def gate(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The gate ``w``: (B, C, H, W), in (0, 1); weight of ``a`` (``1 - w`` is ``b``'s)."""
        _check_pair(a, b)
        return torch.sigmoid(self.mix(torch.cat([a, b], dim=1)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.lerp(b, a, self.gate(a, b))  # b + w * (a - b) == w * a + (1 - w) * b


class AddFusion(nn.Module):
    """Plain sum ``a + b``, parameter-free: the ablation baseline."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_pair(a, b)
        return a + b


def build_fusion(kind: str, channels: int) -> nn.Module:
    """A fusion module by name: ``"cwf"`` (CWF), ``"seed"`` (SeedCWF) or ``"add"``."""
    if kind == "cwf":
        return CWF(channels)
    if kind == "seed":
        return SeedCWF(channels)
    if kind == "add":
        return AddFusion()
    raise ValueError(f"unknown fusion {kind!r}; expected one of {', '.join(FUSIONS)}")
