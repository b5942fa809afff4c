"""The transformer branch: timm's EfficientViT as a feature extractor, failing fast offline.

``create_backbone("efficientvit_b1")`` returns timm's ``FeatureListNet``: (B, 3, H, W) -> a list
of feature maps at strides 4, 8, 16, 32 (channels [32, 64, 128, 256] for B1, [48, 96, 192, 384]
for B2, [16, 32, 64, 128] for B0).

``pretrained=True`` downloads ImageNet weights from the Hugging Face Hub once (then reads the
local cache). Without a network, huggingface_hub retries for about a minute before it gives up;
here a 3-second reachability probe comes first, and when the Hub cannot be reached only the
local cache is tried, so the call fails within seconds with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Sequence
from urllib.parse import urlparse

import timm
from timm.models.efficientvit_mit import LiteMLA
from torch import nn

from haformer.attention import MultiScaleLinearAttention

PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for offline mode."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within ``timeout`` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _cache_only(enabled: bool) -> Iterator[None]:
    """Make huggingface_hub read only its local cache (no retries) while the block runs."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def use_package_modules(backbone: nn.Module) -> nn.Module:
    """In place: swap timm's modules for the book's, weights and all; returns ``backbone``.

    Every ``LiteMLA`` becomes a :class:`~haformer.attention.MultiScaleLinearAttention` holding
    its weights (the attention chapter 5 builds; same outputs), and every ``Dropout(p=0)``
    (timm puts one in front of each conv; the identity, train or eval) goes, which saves an
    operation per convolution. Parameters and their values are unchanged.
    """
    for parent in list(backbone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LiteMLA):
                setattr(parent, name, MultiScaleLinearAttention.from_timm(child))
            elif isinstance(child, nn.Dropout) and child.p == 0:
                setattr(parent, name, nn.Identity())
    return backbone


def create_backbone(
    name: str = "efficientvit_b1",
    *,
    pretrained: bool = False,
    out_indices: Sequence[int] | None = None,
    package_modules: bool = False,
) -> nn.Module:
    """timm ``name`` with ``features_only=True``; ``out_indices`` picks levels (None: all).

    ``package_modules=True`` runs the book's attention in it (:func:`use_package_modules`);
    the seed's model keeps timm's modules. Raises ValueError for a name timm does not know, and
    RuntimeError (within a few seconds) when ``pretrained=True`` and the weights are neither
    reachable nor cached.
    """
    backbone = _create_timm_backbone(name, pretrained=pretrained, out_indices=out_indices)
    return use_package_modules(backbone) if package_modules else backbone


def _create_timm_backbone(
    name: str, *, pretrained: bool, out_indices: Sequence[int] | None
) -> nn.Module:
    if not timm.is_model(name):
        known = ", ".join(timm.list_models("efficientvit_b*"))
        raise ValueError(f"unknown backbone {name!r}; timm's EfficientViT models are: {known}")
    kwargs: dict = {"features_only": True}
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    offline = hub_offline()
    unreachable = not offline and not hub_reachable()
    try:
        with _cache_only(unreachable):
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # huggingface_hub/timm raise many types; all mean "no weights"
        if offline:
            why = "HF_HUB_OFFLINE=1 is set and they are not in the local Hugging Face cache"
        elif unreachable:
            why = "the Hugging Face Hub cannot be reached and they are not in the local cache"
        else:
            why = f"{type(err).__name__}: {err}"
        raise RuntimeError(
            f"could not load the ImageNet weights of {name!r}: {why}. Fix: connect to the "
            "network (and unset HF_HUB_OFFLINE) once so timm can download them into the cache, "
            "or pass pretrained=False to train the backbone from scratch."
        ) from err
