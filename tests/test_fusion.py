"""Fusions: the seed's cwF exactly, the corrected convex gating, the sum baseline."""

from __future__ import annotations

import pytest
import torch

from haformer.fusion import CWF, AddFusion, SeedCWF, build_fusion


def test_seed_cwf_layout_and_params() -> None:
    fusion = SeedCWF(128)
    assert [type(m).__name__ for m in fusion.children()] == [
        "DepthwiseSeparableConv",
        "Conv2d",
        "AdaptiveAvgPool2d",
        "Conv2d",
    ]
    assert [sum(p.numel() for p in m.parameters()) for m in fusion.children()] == [
        2_560 + 65_792,
        65_792,
        0,
        32_896,
    ]


def test_seed_cwf_uses_one_weight_for_both_inputs() -> None:
    fusion = SeedCWF(8)
    a, b = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    w = fusion.gate(a, b)
    assert w.shape == (2, 8, 1, 1)
    torch.testing.assert_close(fusion(a, b), torch.clamp(w * (a + b), 0, 6))


def test_cwf_output_is_a_convex_combination() -> None:
    fusion = CWF(16).eval()
    a, b = torch.randn(2, 16, 7, 9), 3 * torch.randn(2, 16, 7, 9)
    out = fusion(a, b)
    w = fusion.gate(a, b)
    assert w.shape == out.shape == a.shape
    assert ((w > 0) & (w < 1)).all()
    torch.testing.assert_close(out, w * a + (1 - w) * b)
    low, high = torch.minimum(a, b), torch.maximum(a, b)
    assert (out >= low - 1e-5).all() and (out <= high + 1e-5).all()


def test_cwf_of_equal_inputs_is_that_input() -> None:
    fusion = CWF(16).eval()
    a = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(fusion(a, a), a)


def test_cwf_gate_depends_on_both_inputs_per_pixel() -> None:
    fusion = CWF(16).eval()
    a, b = torch.randn(1, 16, 12, 12), torch.randn(1, 16, 12, 12)
    w = fusion.gate(a, b)
    a2, b2 = a.clone(), b.clone()
    a2[..., 0, 0] += 5
    b2[..., 11, 11] += 5
    changed_by_a = (fusion.gate(a2, b) - w).abs().amax(dim=1)[0]
    changed_by_b = (fusion.gate(a, b2) - w).abs().amax(dim=1)[0]
    assert changed_by_a[0, 0] > 0 and changed_by_b[11, 11] > 0
    # a 3x3 depthwise conv sees one pixel around: far pixels keep their gate
    assert changed_by_a[3:, 3:].max() < 1e-6 and changed_by_b[:9, :9].max() < 1e-6


def test_every_cwf_parameter_gets_a_gradient() -> None:
    fusion = CWF(16)
    fusion(torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fusion.parameters())


def test_build_fusion_and_shape_mismatch() -> None:
    assert isinstance(build_fusion("cwf", 8), CWF)
    assert isinstance(build_fusion("seed", 8), SeedCWF)
    assert isinstance(build_fusion("add", 8), AddFusion)
    with pytest.raises(ValueError, match="cwf, seed, add"):
        build_fusion("concat", 8)
    with pytest.raises(ValueError, match="same shape"):
        CWF(8)(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2))
