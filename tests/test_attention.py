"""ReLU linear attention: equal to timm's LiteMLA, to the textbook formula, and linear in cost."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from timm.models.efficientvit_mit import LiteMLA
from torch import nn

from haformer.attention import (
    MultiScaleLinearAttention,
    attention_flops,
    relu_linear_attention,
    softmax_attention,
)

MATMUL_LIKE = ("matmul", "mm", "einsum", "conv", "linear", "attention")


@pytest.fixture(scope="module")
def timm_attention() -> LiteMLA:
    """The first LiteMLA of efficientvit_b1's third stage (128 channels, 8 heads of 16), in
    eval mode, every weight and BatchNorm statistic randomised so nothing is trivially 0 or 1."""
    torch.manual_seed(1)
    model = timm.create_model("efficientvit_b1", pretrained=False)
    lite_mla = next(m for m in model.stages[2].modules() if isinstance(m, LiteMLA))
    with torch.no_grad():
        for name, tensor in lite_mla.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand_like(tensor) + 0.5
                    if "var" in name
                    else torch.randn_like(tensor) * 0.2
                )
    return lite_mla.eval()


def _flops(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> FlopCountAnalysis:
    """fvcore's analysis of ``fn(*inputs)`` (a function or a module), run, warnings off."""
    module = fn if isinstance(fn, nn.Module) else _Call(fn)
    analysis = FlopCountAnalysis(module, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()
    return analysis


class _Call(nn.Module):
    """Wraps a plain function so fvcore (which traces modules) can count it."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(*inputs)


def test_from_timm_gives_timm_output(timm_attention: LiteMLA) -> None:
    ours = MultiScaleLinearAttention.from_timm(timm_attention)
    assert not ours.training and (ours.head_dim, ours.eps) == (16, 1e-5)
    x = torch.randn(2, 128, 12, 20)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_attention(x), atol=1e-5, rtol=1e-5)


def test_load_timm_weights_into_a_module_built_by_hand(timm_attention: LiteMLA) -> None:
    ours = MultiScaleLinearAttention(128, 128, head_dim=16).eval()
    ours.load_timm_weights(timm_attention)
    x = torch.randn(1, 128, 7, 9)  # odd sizes: padding of the 5x5 must keep H, W
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_attention(x), atol=1e-5, rtol=1e-5)


def test_same_as_timm_under_autocast(timm_attention: LiteMLA) -> None:
    """Convs run in bfloat16, the attention products in float32, exactly as in timm."""
    ours = MultiScaleLinearAttention.from_timm(timm_attention)
    x = torch.randn(1, 128, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = ours(x), timm_attention(x)
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_shape_mismatch_is_a_clear_error(timm_attention: LiteMLA) -> None:
    with pytest.raises(ValueError, match=r"aggregate\.0\.1\.weight: ours \(384, 8, 1, 1\)"):
        MultiScaleLinearAttention(128, head_dim=8).load_timm_weights(timm_attention)
    with pytest.raises(ValueError, match="kernel_func ReLU"):
        MultiScaleLinearAttention(128, head_dim=16).load_timm_weights(nn.Conv2d(1, 1, 1))


def test_relu_linear_attention_equals_the_formula_token_by_token() -> None:
    """out_i = sum_j (relu(q_i).relu(k_j)) v_j / (sum_j relu(q_i).relu(k_j) + eps)."""
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 2)
    eps = 1e-5
    expected = torch.empty(2, 3, 5, 2)
    for b in range(2):
        for h in range(3):
            for i in range(5):
                sims = [F.relu(q[b, h, i]).dot(F.relu(k[b, h, j])) for j in range(6)]
                num = sum(s * v[b, h, j] for j, s in enumerate(sims))
                expected[b, h, i] = num / (sum(sims) + eps)
    torch.testing.assert_close(relu_linear_attention(q, k, v, eps), expected)


def test_relu_linear_attention_keeps_the_input_dtype() -> None:
    q = k = v = torch.randn(1, 2, 16, 8, dtype=torch.bfloat16)
    out = relu_linear_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    ref = relu_linear_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)


def test_softmax_attention_matches_torch() -> None:
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 2)
    torch.testing.assert_close(softmax_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_fvcore_counts_every_matmul_of_the_module() -> None:
    module = MultiScaleLinearAttention(32, head_dim=8).eval()  # 4 heads, x2 with the 5x5 scale
    analysis = _flops(module, torch.randn(2, 32, 6, 10))
    unsupported = analysis.unsupported_ops()
    assert not [op for op in unsupported if any(word in op for word in MATMUL_LIKE)], unsupported
    by_op = analysis.by_operator()
    assert by_op["matmul"] == 2 * attention_flops(60, 8, "relu_linear", heads=8)
    assert by_op["conv"] > 0


@pytest.mark.parametrize("kind", ["relu_linear", "softmax"])
def test_attention_flops_is_what_fvcore_counts(kind: str) -> None:
    fn = relu_linear_attention if kind == "relu_linear" else softmax_attention
    q, k, v = (torch.randn(1, 3, 50, 8) for _ in range(3))
    analysis = _flops(fn, q, k, v)
    assert not [op for op in analysis.unsupported_ops() if any(w in op for w in MATMUL_LIKE)]
    assert analysis.total() == attention_flops(50, 8, kind, heads=3)


def test_module_cost_is_linear_and_softmax_cost_quadratic_in_tokens() -> None:
    module = MultiScaleLinearAttention(32, head_dim=8).eval()
    small = _flops(module, torch.randn(1, 32, 8, 8)).total()
    double = _flops(module, torch.randn(1, 32, 8, 16)).total()
    assert double == pytest.approx(2 * small, rel=1e-6)
    qkv = [torch.randn(1, 4, 64, 8) for _ in range(3)]
    qkv2 = [torch.randn(1, 4, 128, 8) for _ in range(3)]
    assert _flops(softmax_attention, *qkv2).total() == 4 * _flops(softmax_attention, *qkv).total()


def test_every_parameter_gets_a_gradient() -> None:
    module = MultiScaleLinearAttention(16, 24, head_dim=4, scales=(3, 5))
    module(torch.randn(2, 16, 5, 6)).square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bad_inputs_raise_value_errors() -> None:
    with pytest.raises(ValueError, match=r"expected a \(B, 16, H, W\) tensor; got \(16, 5, 6\)"):
        MultiScaleLinearAttention(16, head_dim=4)(torch.randn(16, 5, 6))
    with pytest.raises(ValueError, match="k and v share N"):
        relu_linear_attention(torch.randn(1, 4, 8), torch.randn(1, 4, 8), torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match="odd scales"):
        MultiScaleLinearAttention(16, head_dim=4, scales=(4,))
    with pytest.raises(ValueError, match="kind must be"):
        attention_flops(10, 8, "quadratic")  # type: ignore[arg-type]
