"""EfficientViT's lightweight multi-scale linear attention, written from scratch.

Softmax attention compares every token with every other token: for ``N`` tokens of width ``d``
it builds an ``N x N`` matrix, so its cost grows as ``N**2 * d``. EfficientViT (Cai et al.,
ICCV 2023) swaps the softmax similarity ``exp(q . k)`` for ``relu(q) . relu(k)``. That
similarity factorises, so the matrix products can be regrouped::

    out_i = sum_j (relu(q_i) . relu(k_j)) v_j / sum_j (relu(q_i) . relu(k_j))
          = relu(q_i) @ (relu(K)^T V)  /  relu(q_i) @ (relu(K)^T 1)

``relu(K)^T V`` is only ``d x d``: it is computed once, and the cost becomes ``N * d**2``,
linear in the number of tokens. ``MultiScaleLinearAttention`` is timm's ``LiteMLA``
(``timm/models/efficientvit_mit.py``, used in ``efficientvit_b0..b3``) with the same weights
layout: ``MultiScaleLinearAttention.from_timm(lite_mla)`` reproduces a timm module exactly.

FLOPs follow fvcore's convention throughout: one fused multiply-add counts as one FLOP.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

# timm LiteMLA state_dict prefix -> ours (timm wraps its convs in ConvNormAct: .conv, .norm)
_TIMM_PREFIXES = {
    "qkv.conv.": "qkv.",
    "aggreg.": "aggregate.",
    "proj.conv.": "proj.",
    "proj.norm.": "norm.",
}


def _check_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, channels_first: bool = False
) -> None:
    """Raise a ValueError unless q, k: (..., N_q / N, d) and v: (..., N, d_v) fit together
    (with ``channels_first``: q, k (..., d, N_q / N), v (..., d_v, N))."""
    layout = "(..., channels, tokens)" if channels_first else "(..., tokens, channels)"
    if q.ndim < 2 or q.ndim != k.ndim or k.ndim != v.ndim:
        raise ValueError(
            f"q, k, v must have the same number (>= 2) of dimensions {layout}; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    chans, tokens = (-2, -1) if channels_first else (-1, -2)
    if q.shape[chans] != k.shape[chans] or k.shape[tokens] != v.shape[tokens]:
        expected = (
            "q (..., d, N_q), k (..., d, N), v (..., d_v, N)"
            if channels_first
            else "q (..., N_q, d), k (..., N, d), v (..., N, d_v)"
        )
        raise ValueError(
            f"expected {expected}: q and k share d, k and v share N; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )


def _autocast_disabled(device_type: str) -> contextlib.AbstractContextManager:
    """A context with autocast off on ``device_type`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Standard scaled dot-product attention, the quadratic baseline.

    q: (..., N_q, d), k: (..., N, d), v: (..., N, d_v) -> (..., N_q, d_v).
    Builds the (..., N_q, N) attention matrix: cost N_q * N * (d + d_v) multiply-adds.
    """
    _check_qkv(q, k, v)
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (..., N_q, N)
    return torch.matmul(scores.softmax(dim=-1), v)  # (..., N_q, d_v)


def relu_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eps: float = 1e-5,
    *,
    channels_first: bool = False,
) -> torch.Tensor:
    """ReLU linear attention: ``relu(q) @ (relu(k)^T v)``, normalised row by row.

    q: (..., N_q, d), k: (..., N, d), v: (..., N, d_v) -> (..., N_q, d_v), in v's dtype.
    Cost N * d * (d_v + 1) + N_q * d * (d_v + 1) multiply-adds: linear in the token count.
    ``channels_first=True`` takes and returns every tensor transposed, (..., d, N), the layout a
    conv's output has once its pixels are flattened (what ``MultiScaleLinearAttention`` uses: no
    transposes); it computes the same numbers.

    As in timm, v gets an extra column of ones, so the same two matmuls also give the
    normaliser ``relu(q_i) . sum_j relu(k_j)`` in the last column; ``eps`` keeps a query
    whose ReLU is all zero at output 0 instead of 0/0. The sums run over all N tokens, so
    the products are taken in float32 with autocast off, whatever the input dtype.
    """
    _check_qkv(q, k, v, channels_first)
    dtype, chans = v.dtype, -2 if channels_first else -1
    with _autocast_disabled(v.device.type):
        q, k = _float32(F.relu(q)), _float32(F.relu(k))  # the kernel: features >= 0
        ones = (0, 0, 0, 1) if channels_first else (0, 1)
        v = F.pad(_float32(v), ones, mode="constant", value=1.0)  # d_v + 1 channels
        if channels_first:
            kv = torch.matmul(v, k.transpose(-1, -2))  # (..., d_v + 1, d): N summed away once
            out = torch.matmul(kv, q)  # (..., d_v + 1, N_q)
        else:
            kv = torch.matmul(k.transpose(-1, -2), v)  # (..., d, d_v + 1): N summed away once
            out = torch.matmul(q, kv)  # (..., N_q, d_v + 1)
        out, norm = out.split((out.shape[chans] - 1, 1), dim=chans)  # values, normaliser
        out = out / (norm + eps)
    return out if out.dtype == dtype else out.to(dtype)


def _float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 (no operation at all when it already is)."""
    return x if x.dtype == torch.float32 else x.float()


def attention_flops(
    n_tokens: int, head_dim: int, kind: Literal["softmax", "relu_linear"], heads: int = 1
) -> int:
    """Multiply-adds (fvcore's FLOPs) of one attention core for one image, projections excluded.

    ``n_tokens`` queries and keys, ``heads`` heads of width ``head_dim`` (values as wide):
    "softmax" is ``heads * 2 * N**2 * d`` (q k^T, then the weights times v), "relu_linear" is
    ``heads * 2 * N * d * (d + 1)`` (k^T [v, 1], then q times that), exactly what fvcore counts
    for ``softmax_attention`` and ``relu_linear_attention``.
    """
    if kind == "softmax":
        return heads * 2 * n_tokens * n_tokens * head_dim
    if kind == "relu_linear":
        return heads * 2 * n_tokens * head_dim * (head_dim + 1)
    raise ValueError(f"kind must be 'softmax' or 'relu_linear'; got {kind!r}")


def _aggregation_branch(channels: int, kernel_size: int, groups: int) -> nn.Sequential:
    """One extra scale: depthwise k x k (mixes neighbouring tokens) then a grouped 1x1.

    (B, channels, H, W) -> (B, channels, H, W). ``groups`` = 3 * heads, so the 1x1 mixes
    channels only inside each head's q, its k, or its v.
    """
    return nn.Sequential(
        nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False
        ),
        nn.Conv2d(channels, channels, 1, groups=groups, bias=False),
    )


class MultiScaleLinearAttention(nn.Module):
    """EfficientViT's lightweight multi-scale linear attention (timm's ``LiteMLA``).

    (B, in_channels, H, W) -> (B, out_channels, H, W); every pixel is a token (N = H * W).

    1. ``qkv``: a 1x1 conv makes q, k, v for ``heads`` heads of width ``head_dim``, laid out
       head by head: channels [3*d*h, 3*d*(h+1)) hold head h's q, k, v.
    2. ``aggregate``: for each kernel size in ``scales``, a depthwise conv + grouped 1x1 turns
       those into q, k, v of nearby tokens, giving ``heads`` more heads per scale.
    3. every head of every scale runs ReLU linear attention over all N tokens.
    4. ``proj`` (1x1 conv) + ``norm`` (BatchNorm) mix the heads into ``out_channels``.

    No bias anywhere and no activation at the end, as in timm's efficientvit_b* models.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        head_dim: int = 8,
        heads: int | None = None,
        scales: tuple[int, ...] = (5,),
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        heads = heads or in_channels // head_dim
        if heads < 1 or any(s < 1 or s % 2 == 0 for s in scales):
            raise ValueError(
                f"need heads >= 1 (in_channels // head_dim by default) and odd scales; got "
                f"in_channels={in_channels}, head_dim={head_dim}, heads={heads}, scales={scales}"
            )
        self.in_channels, self.head_dim, self.eps = in_channels, head_dim, eps
        inner = heads * head_dim  # width of q (and of k, and of v) at one scale
        self.qkv = nn.Conv2d(in_channels, 3 * inner, 1, bias=False)
        self.aggregate = nn.ModuleList(
            _aggregation_branch(3 * inner, scale, groups=3 * heads) for scale in scales
        )
        self.proj = nn.Conv2d(inner * (1 + len(scales)), out_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a (B, {self.in_channels}, H, W) tensor; got {tuple(x.shape)}"
            )
        B, _, H, W = x.shape
        qkv = self.qkv(x)  # (B, 3*inner, H, W)
        qkv = torch.cat([qkv] + [branch(qkv) for branch in self.aggregate], dim=1)
        # (B, 3*inner*(1+S), H, W): each group of 3*head_dim channels is one head's [q|k|v]
        qkv = qkv.view(B, -1, 3 * self.head_dim, H * W)  # (B, heads*(1+S), 3*head_dim, N)
        q, k, v = qkv.split(self.head_dim, dim=2)  # each (B, heads*(1+S), head_dim, N)
        out = relu_linear_attention(q, k, v, self.eps, channels_first=True)  # same shape
        out = out.reshape(B, -1, H, W)  # (B, inner*(1+S), H, W)
        return self.norm(self.proj(out))  # (B, out_channels, H, W)

    @classmethod
    def from_timm(cls, lite_mla: nn.Module) -> MultiScaleLinearAttention:
        """A module configured like timm's ``LiteMLA`` ``lite_mla`` and holding its weights."""
        qkv_conv = lite_mla.qkv.conv
        module = cls(
            in_channels=qkv_conv.in_channels,
            out_channels=lite_mla.proj.conv.out_channels,
            head_dim=lite_mla.dim,
            heads=qkv_conv.out_channels // (3 * lite_mla.dim),
            scales=tuple(branch[0].kernel_size[0] for branch in lite_mla.aggreg),
            eps=lite_mla.eps,
        )
        timm_norm = getattr(lite_mla.proj, "norm", None)
        if isinstance(timm_norm, nn.BatchNorm2d):
            module.norm.eps, module.norm.momentum = timm_norm.eps, timm_norm.momentum
        module.load_timm_weights(lite_mla)
        return module.to(qkv_conv.weight).train(lite_mla.training)  # its device and dtype

    def _load_from_state_dict(
        self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Also load timm ``LiteMLA`` keys (checkpoints saved when the models ran timm's module)."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix) :]
            old = next((p for p in _TIMM_PREFIXES if rest.startswith(p)), None)
            if old is not None:
                state_dict[prefix + _TIMM_PREFIXES[old] + rest[len(old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def load_timm_weights(self, lite_mla: nn.Module) -> None:
        """Copy the weights and BatchNorm statistics of timm's ``LiteMLA`` ``lite_mla``.

        Raises ValueError when the two differ in kernel, eps, parameter names or shapes.
        """
        kernel = getattr(lite_mla, "kernel_func", None)
        if not isinstance(kernel, nn.ReLU) or getattr(lite_mla, "eps", None) != self.eps:
            raise ValueError(
                f"expected a timm LiteMLA with kernel_func ReLU and eps {self.eps}; got "
                f"{type(lite_mla).__name__} with kernel_func {kernel!r}, "
                f"eps {getattr(lite_mla, 'eps', None)}"
            )
        ours = self.state_dict()
        theirs = {}
        for key, tensor in lite_mla.state_dict().items():
            prefix = next((p for p in _TIMM_PREFIXES if key.startswith(p)), None)
            name = _TIMM_PREFIXES[prefix] + key[len(prefix) :] if prefix else f"<timm {key}>"
            theirs[name] = tensor
        problems = [f"missing in timm: {k} {tuple(ours[k].shape)}" for k in ours.keys() - theirs]
        problems += [f"not in ours: {k} {tuple(theirs[k].shape)}" for k in theirs.keys() - ours]
        problems += [
            f"{k}: ours {tuple(ours[k].shape)}, timm {tuple(theirs[k].shape)}"
            for k in ours.keys() & theirs.keys()
            if ours[k].shape != theirs[k].shape
        ]
        if problems:
            raise ValueError(
                "timm LiteMLA weights do not fit this MultiScaleLinearAttention ("
                + "; ".join(sorted(problems))
                + "); build the module with MultiScaleLinearAttention.from_timm(lite_mla) "
                "or pass the same in_channels, out_channels, head_dim, heads and scales"
            )
        self.load_state_dict(theirs)
