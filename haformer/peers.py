"""The networks a reader would pick instead of HAFormer, built the same way (book ch. 11, 13).

``create_peer("lraspp_mobilenet_v3_large", num_classes=11)`` returns a randomly initialised
segmentation network that maps (B, 3, H, W) to logits (B, num_classes, H, W), like every
``haformer_*`` model, with an ``input_multiple`` attribute (what its input sides must be
divisible by). ``haformer.create_model`` accepts these names too, so the training engine, the
benchmarks and ``python -m haformer bench/train`` run peers with no special case.

torchvision's models come with the package's own dependencies; the segmentation_models_pytorch
ones need the optional extra: ``pip install 'haformer[peers]'``. No pretrained weights are
loaded: the comparisons of the book train every network from scratch.

``bn_momentum`` sets the momentum of every BatchNorm layer of a peer. torchvision's
MobileNetV3 uses 0.01 (for long ImageNet schedules), the others PyTorch's default 0.1; after a
short run, running statistics updated at 0.01 still weigh their initial values and stale
weights' features heavily, and the network scores near zero in eval mode whatever it learnt
(book ch. 13).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from haformer.errors import UsageError

INSTALL_HINT = "pip install 'haformer[peers]'"


class PeerModel(nn.Module):
    """A peer network as (B, 3, H, W) -> logits (B, K, H, W): unwraps torchvision's ``{"out"}``."""

    def __init__(self, net: nn.Module, input_multiple: int) -> None:
        super().__init__()
        self.net = net
        self.input_multiple = input_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out["out"] if isinstance(out, dict) else out


@dataclass(frozen=True)
class PeerSpec:
    """How to build one peer: ``build(num_classes)``, the input multiple, and where it is from."""

    build: Callable[[int], nn.Module]
    input_multiple: int
    source: str


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        from torchvision.models import segmentation

        factory = getattr(segmentation, name)
        return factory(weights=None, weights_backbone=None, num_classes=num_classes)

    return build


def _smp(arch: str, encoder: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        try:
            import segmentation_models_pytorch as smp
        except ImportError as err:
            raise UsageError(
                f"the peer {arch}-{encoder} needs segmentation_models_pytorch: {INSTALL_HINT}"
            ) from err
        return getattr(smp, arch)(encoder, encoder_weights=None, classes=num_classes)

    return build


PEERS: dict[str, PeerSpec] = {
    "lraspp_mobilenet_v3_large": PeerSpec(
        _torchvision("lraspp_mobilenet_v3_large"), 1, "torchvision"
    ),
    "deeplabv3_mobilenet_v3_large": PeerSpec(
        _torchvision("deeplabv3_mobilenet_v3_large"), 1, "torchvision"
    ),
    "fpn_mobilenet_v2": PeerSpec(_smp("FPN", "mobilenet_v2"), 32, "segmentation_models_pytorch"),
    "unet_mobilenet_v2": PeerSpec(_smp("Unet", "mobilenet_v2"), 32, "segmentation_models_pytorch"),
    "segformer_mit_b0": PeerSpec(_smp("Segformer", "mit_b0"), 32, "segmentation_models_pytorch"),
}
"""Peer name -> how to build it. Sides: smp's encoders need multiples of 32."""


def list_peers() -> list[str]:
    """The peer names, sorted."""
    return sorted(PEERS)


def create_peer(name: str, num_classes: int = 11, *, bn_momentum: float | None = None) -> PeerModel:
    """A randomly initialised peer: (B, 3, H, W) -> (B, num_classes, H, W).

    ``bn_momentum``, if given, replaces the momentum of every BatchNorm layer.
    """
    if name not in PEERS:
        raise UsageError(f"unknown peer {name!r}; known peers: {', '.join(list_peers())}")
    number = isinstance(bn_momentum, (int, float)) and not isinstance(bn_momentum, bool)
    if bn_momentum is not None and not (number and 0.0 < bn_momentum <= 1.0):
        raise UsageError(f"bn_momentum must be in (0, 1]; got {bn_momentum!r}")
    spec = PEERS[name]
    model = PeerModel(spec.build(num_classes), spec.input_multiple)
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    return model
