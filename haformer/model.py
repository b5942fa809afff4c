"""The whole networks (book ch. 7): the seed's ``HAPEFormer``, the corrected ``HAFormer``, and
the registry behind ``create_model`` (also registered with timm, so that after
``import haformer``, ``timm.create_model("haformer_b1")`` works too).

Both models map a float image batch (B, 3, H, W) to logits (B, num_classes, H, W). A CNN
branch of HAPE blocks keeps local detail at stride 4-8; timm's EfficientViT (the "efficient
transformer" branch) adds global context from its stride-32 map; a fusion module merges the
two at stride 4; a light decoder (one more HAPE stage and a 1x1 classifier) makes the logits.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs, resolve_pretrained_cfg
from timm.models import register_model as _timm_register_model
from torch import nn

from haformer.backbone import create_backbone
from haformer.checkpoint import CheckpointError, load_checkpoint
from haformer.data.classes import MEAN, NUM_CLASSES, STD
from haformer.data.transforms import IMAGE_SIZE
from haformer.errors import ConfigError
from haformer.fusion import FUSIONS, SeedCWF, build_fusion
from haformer.hape import BranchHAPEBlock, HAPEBlock
from haformer.layers import ConvBNAct
from haformer.peers import PEERS, create_peer

__all__ = [
    "HAFormer",
    "HAPEFormer",
    "create_model",
    "list_models",
    "load_model",
    "check_input",
    "input_multiple",
    "hapeformer_seed",
    "haformer_b0",
    "haformer_b1",
    "haformer_b2",
]

SEED_CHANNELS: tuple[int, int, int, int] = (32, 64, 128, 64)
SEED_DENOTES: tuple[tuple[int, ...], ...] = (
    (2, 2, 2),
    (4, 4, 8, 8, 16, 16),
    (4, 4, 8, 8, 16, 16),
    (2, 2, 2),
)
SEED_BACKBONES = ("efficientvit_b1", "efficientvit_b2")
MIN_SIDE = 32


def check_input(x: Any, model: str, multiple: int = 1) -> None:
    """Raise ValueError unless ``x`` is a float (B, 3, H, W) tensor with H, W >= 32 (and
    multiples of ``multiple``)."""
    expected = f"a floating-point tensor of shape (B, 3, H, W) with H, W >= {MIN_SIDE}"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{model} expects {expected}; got a {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point() or min(x.shape[-2:]) < 32:
        raise ValueError(
            f"{model} expects {expected}; got shape {tuple(x.shape)} of dtype {x.dtype}. "
            "For one uint8 image (3, H, W) use img.float().div(255).unsqueeze(0) "
            "(then normalise), and resize anything smaller than 32x32."
        )
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"{model} needs H and W to be multiples of {multiple} (its `view` and fixed x2 "
            f"upsampling assume it); got {h}x{w}. Pad or resize the input (for example "
            f"{-(-h // multiple) * multiple}x{-(-w // multiple) * multiple}), or use a "
            "haformer_* model, which takes any size."
        )


def _stages(
    block: type[nn.Module],
    channels: Sequence[int],
    denotes: Sequence[Sequence[int]],
    **block_kwargs: Any,
) -> nn.ModuleList:
    """One nn.Sequential of ``block``s per stage: stage i has channels[i], one block per denote."""
    if len(channels) != 4 or len(denotes) != 4:
        raise ValueError(
            f"expected 4 stage widths and 4 denote lists; got {len(channels)} and {len(denotes)}"
        )
    return nn.ModuleList(
        nn.Sequential(*(block(c, d, **block_kwargs) for d in stage))
        for c, stage in zip(channels, denotes, strict=True)
    )


# ----------------------------------------------------------------------------------------------
# The seed
# ----------------------------------------------------------------------------------------------


class Downsample(nn.Module):
    """The seed's stride-2 3x3 conv with bias: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SeparableConvBN(nn.Module):
    """The seed's ``cnn_stem``: depthwise 3x3 -> BatchNorm -> pointwise 1x1, no biases, no
    activation. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.bn(self.depthwise(x)))


class HAPEFormer(nn.Module):
    """The seed's model, exactly as ``seed-model.md`` describes it, defects included.

    (B, 3, H, W) -> (B, num_classes, H, W) for H, W multiples of 32 only. Its torchinfo
    table equals the seed's row for row (``SeedCWF`` is the seed's ``cwFModule``). Kept to
    prove fidelity and to teach; do not train it, use ``HAFormer``. Defects kept on purpose:

    * ``down3``/``down4`` (147,648 parameters) and every PEM's ``fc`` are never used;
    * the transformer map is conv'ed to ``channels[2] * 64`` channels and re-read with
      ``view`` as (B, channels[2], H/4, W/4): that moves no pixel to its place;
    * the fusion scales both inputs with the same weight;
    * fixed x2 upsampling, so only multiples of 32 work.
    """

    input_multiple = 32
    """Input sides must be divisible by this (the `view` and the fixed x2 upsampling)."""

    def __init__(
        self,
        num_classes: int = 6,
        backbone: str = "efficientvit_b2",
        *,
        pretrained: bool = False,
        channels: Sequence[int] = SEED_CHANNELS,
        denotes: Sequence[Sequence[int]] = SEED_DENOTES,
    ) -> None:
        super().__init__()
        if backbone not in SEED_BACKBONES:
            raise ValueError(
                f"the seed model was built on {' or '.join(SEED_BACKBONES)}; got {backbone!r}"
            )
        c0, c1, c2, c3 = channels
        self.backbone = create_backbone(backbone, pretrained=pretrained)
        vit_channels = self.backbone.feature_info.channels()[-1]
        self.down0 = Downsample(3, c0)
        self.cnn_stem = SeparableConvBN(c0)
        self.down1 = Downsample(c0, c0)
        self.down2 = Downsample(c0, c1)
        self.down3 = Downsample(c1, c2)  # never called (seed defect)
        self.down4 = Downsample(c2, c3)  # never called (seed defect)
        self.stages = _stages(BranchHAPEBlock, channels, denotes, seed=True)
        self.cnn = nn.Conv2d(c1, c2, 1, bias=False)
        self.vit_conv = nn.Conv2d(vit_channels, c2 * 64, 1, bias=False)
        self.cwf = SeedCWF(c2)
        self.cnn2 = nn.Conv2d(c2, c3, 1, bias=False)
        self.classer = nn.Conv2d(c3, num_classes, 1, bias=False)

    def fuse_features(self, cnn_map: torch.Tensor, vit_map: torch.Tensor) -> torch.Tensor:
        """cnn_map (B, C2, H/4, W/4), vit_map (B, Cv, H/32, W/32) -> fused (B, C2, H/4, W/4).

        ``view`` re-reads the (B, 64*C2, H/32, W/32) memory as (B, C2, H/4, W/4): a value
        computed at one place of the transformer map lands at unrelated places.
        """
        b = self.vit_conv(vit_map).view(cnn_map.shape)
        return self.cwf(cnn_map, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "HAPEFormer (the seed)", multiple=self.input_multiple)
        vit = self.backbone(x)[-1]  # (B, Cv, H/32, W/32), called first like the seed
        y = self.cnn_stem(self.down0(x))  # (B, c0, H/2, W/2)
        y = self.stages[0](self.down1(y))  # (B, c0, H/4, W/4)
        y = self.stages[1](self.down2(y))  # (B, c1, H/8, W/8)
        y = self.stages[2](self.cnn(y))  # (B, c2, H/8, W/8)
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)  # H/4
        y = self.stages[3](self.cnn2(self.fuse_features(y, vit)))  # (B, c3, H/4, W/4)
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)  # H/2
        y = self.classer(y)  # (B, K, H/2, W/2)
        return F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------
# The corrected model
# ----------------------------------------------------------------------------------------------


class HAFormer(nn.Module):
    """HAFormer, corrected: (B, 3, H, W) -> (B, num_classes, H, W) for any H, W >= 32.

    Same topology and widths as the seed (CNN widths ``channels``, HAPE ``denotes``), with
    each seed defect fixed:

    * every parameter is used (no ``down3``/``down4``, parameter-free PEM);
    * the stride-32 transformer map is projected by a 1x1 conv + BatchNorm to ``channels[2]``
      and *bilinearly resized* to the CNN map's size. Interpolation keeps every value at its
      place, costs 1/64 of the seed's 8192-channel conv (which PixelShuffle(8) would also
      need), and works for any size: at 360x480 the stride-32 map is 12x15 and the stride-4 map
      90x120, not an 8x multiple, so PixelShuffle could not align them;
    * ``CWF`` fusion weighs the branches against each other per pixel and channel;
    * every resize goes to an explicit size, so odd sizes (361x479) work.

    Choices for accuracy per FLOP: corrected ``HAPEBlock`` (BatchNorm folded at inference, ReLU
    inside the branches); stride-2 convs with BatchNorm + ReLU instead of the seed's biased
    ones; the classifier (with a bias, for the class priors) runs at stride 4 and the logits are
    resized once: a 1x1 conv commutes with bilinear resizing, so classifying the 64-channel map
    at H/4 equals the seed's "upsample, classify, upsample" at a fraction of the cost.

    Ablation switches (book ch. 12): ``use_pem=False`` (HAPE blocks without PEM),
    ``use_transformer=False`` (CNN branch only, no backbone, no fusion),
    ``fusion="seed"`` (the seed's SeedCWF) or ``"add"`` (plain sum).
    ``pretrained=True`` loads timm's ImageNet weights into the backbone (no HAFormer weights
    exist); it needs the network the first time.
    """

    input_multiple = 1
    """Any input side >= 32 works: everything is resized to explicit sizes."""

    def __init__(
        self,
        num_classes: int = 11,
        backbone: str = "efficientvit_b1",
        *,
        pretrained: bool = False,
        channels: Sequence[int] = SEED_CHANNELS,
        denotes: Sequence[Sequence[int]] = SEED_DENOTES,
        use_pem: bool = True,
        use_transformer: bool = True,
        fusion: str = "cwf",
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
        if pretrained and not use_transformer:
            raise ValueError(
                "pretrained=True loads backbone weights; use_transformer=False has none"
            )
        c0, c1, c2, c3 = channels
        self.down0 = ConvBNAct(3, c0, 3, 2)  # (B, c0, H/2, W/2)
        self.stem = nn.Sequential(ConvBNAct(c0, c0, 3, groups=c0), ConvBNAct(c0, c0, 1))
        self.down1 = ConvBNAct(c0, c0, 3, 2)
        self.down2 = ConvBNAct(c0, c1, 3, 2)
        self.expand = ConvBNAct(c1, c2, 1)
        self.stages = _stages(HAPEBlock, channels, denotes, use_pem=use_pem)
        self.reduce = ConvBNAct(c2, c3, 1)
        self.classifier = nn.Conv2d(c3, num_classes, 1)
        self.backbone: nn.Module | None = None
        self.proj: nn.Module | None = None
        self.fusion: nn.Module | None = None
        if use_transformer:
            self.backbone = create_backbone(
                backbone, pretrained=pretrained, out_indices=(-1,), package_modules=True
            )
            vit_channels = self.backbone.feature_info.channels()[-1]
            self.proj = ConvBNAct(vit_channels, c2, 1, act=False)
            self.fusion = build_fusion(fusion, c2)

    def fuse_features(self, cnn_map: torch.Tensor, vit_map: torch.Tensor) -> torch.Tensor:
        """cnn_map (B, C2, h, w), vit_map (B, Cv, h', w') -> fused (B, C2, h, w).

        The projected transformer map is bilinearly resized to (h, w), so each of its values
        stays at its own place (only its neighbourhood changes).
        """
        if self.proj is None or self.fusion is None:
            raise ValueError("this HAFormer was built with use_transformer=False: nothing to fuse")
        b = self.proj(vit_map)  # (B, C2, h', w')
        b = F.interpolate(b, size=cnn_map.shape[-2:], mode="bilinear", align_corners=False)
        return self.fusion(cnn_map, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "HAFormer")
        y = self.stem(self.down0(x))  # (B, c0, H/2, W/2)
        y4 = self.stages[0](self.down1(y))  # (B, c0, H/4, W/4)
        y = self.stages[1](self.down2(y4))  # (B, c1, H/8, W/8)
        y = self.stages[2](self.expand(y))  # (B, c2, H/8, W/8)
        y = F.interpolate(y, size=y4.shape[-2:], mode="bilinear", align_corners=False)
        if self.backbone is not None:
            y = self.fuse_features(y, self.backbone(x)[-1])  # (B, c2, H/4, W/4)
        y = self.stages[3](self.reduce(y))  # (B, c3, H/4, W/4)
        logits = self.classifier(y)  # (B, K, H/4, W/4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------
# Registry (ours and timm's)
# ----------------------------------------------------------------------------------------------
# The timm way: each entry point merges its defaults with the caller's keyword arguments,
# ``dict(model_args, **kwargs)``, so any default (the backbone too) can be overridden, and
# ``default_cfgs`` says what input the models expect, for ``timm.data.resolve_data_config``.


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """The data config of a model trained on CamVid by this package (no hub weights)."""
    return {
        "url": "",
        "num_classes": NUM_CLASSES,
        "input_size": (3, *IMAGE_SIZE),
        "pool_size": None,
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "mean": MEAN,
        "std": STD,
        "first_conv": "down0.0",
        "classifier": "classifier",
        "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "haformer_b0": _cfg(),
        "haformer_b1": _cfg(),
        "haformer_b2": _cfg(),
        # the seed needs sides divisible by 32: the largest such size within CamVid's 360x480
        "hapeformer_seed": _cfg(
            input_size=(
                3,
                IMAGE_SIZE[0] // HAPEFormer.input_multiple * HAPEFormer.input_multiple,
                IMAGE_SIZE[1],
            ),
            first_conv="down0.conv",
            classifier="classer",
        ),
    }
)
"""timm's pretrained configs: input size (3, 360, 480), CamVid mean/std, bilinear resizing."""

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_CLASSES: dict[str, type[nn.Module]] = {}


def _register(
    cls: type[nn.Module],
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Add an entry point building a ``cls`` to our registry and to timm's (by function name)."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[fn.__name__] = fn
        _CLASSES[fn.__name__] = cls
        return _timm_register_model(fn)

    return add


def _build(
    variant: str, cls: type[nn.Module], pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """Build ``cls(**kwargs)`` for the registry name ``variant`` and attach its data config.

    ``backbone_pretrained=True`` loads timm's ImageNet weights into the EfficientViT branch;
    ``pretrained`` is accepted as its older name (no HAFormer weights exist on any hub).
    ``pretrained_cfg``/``pretrained_cfg_overlay`` (from ``timm.create_model``) adjust the
    config stored as ``model.pretrained_cfg``.
    """
    cfg = resolve_pretrained_cfg(
        variant, kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None)
    )
    kwargs.pop("cache_dir", None)  # where timm would cache hub weights: none to fetch
    backbone_pretrained = bool(kwargs.pop("backbone_pretrained", False) or pretrained)
    kwargs.setdefault("num_classes", cfg.num_classes)  # timm's convention: the cfg's default
    check_model_kwargs(variant, kwargs)
    backbone = kwargs.get("backbone")
    if backbone is not None and not timm.is_model(backbone):
        raise ConfigError(
            f"unknown backbone {backbone!r} for {variant}: use one of "
            f"{', '.join(timm.list_models('efficientvit_b*'))}"
        )
    try:
        model = cls(pretrained=backbone_pretrained, **kwargs)
    except ValueError as err:
        raise ConfigError(f"{variant}: {err}") from err
    model.pretrained_cfg = model.default_cfg = {
        **cfg.to_dict(),
        "num_classes": kwargs["num_classes"],
    }
    return model


def model_signature(name: str) -> list[str]:
    """The keyword arguments ``create_model(name, ...)`` accepts besides ``num_classes``."""
    if name in PEERS:
        return ["bn_momentum"]
    if name not in _CLASSES:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    params = inspect.signature(_CLASSES[name]).parameters
    return [p for p in params if p not in ("num_classes", "pretrained")] + ["backbone_pretrained"]


def check_model_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ConfigError (one line) for a keyword ``create_model(name, ...)`` does not take."""
    accepted = {"num_classes", "pretrained", *model_signature(name)}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        allowed = ", ".join(model_signature(name)) or "none"
        raise ConfigError(
            f"{name} takes no argument {', '.join(map(repr, unknown))}; its model kwargs are: "
            f"{allowed}"
        )


@_register(HAPEFormer)
def hapeformer_seed(pretrained: bool = False, **kwargs: Any) -> HAPEFormer:
    """The seed's model (``backbone="efficientvit_b2"`` default, or ``"efficientvit_b1"``)."""
    model_args: dict[str, Any] = dict(backbone="efficientvit_b2")
    return _build("hapeformer_seed", HAPEFormer, pretrained, **dict(model_args, **kwargs))


@_register(HAFormer)
def haformer_b0(pretrained: bool = False, **kwargs: Any) -> HAFormer:
    """Corrected HAFormer on EfficientViT-B0: the smallest."""
    model_args: dict[str, Any] = dict(backbone="efficientvit_b0")
    return _build("haformer_b0", HAFormer, pretrained, **dict(model_args, **kwargs))


@_register(HAFormer)
def haformer_b1(pretrained: bool = False, **kwargs: Any) -> HAFormer:
    """Corrected HAFormer on EfficientViT-B1: the book's default."""
    model_args: dict[str, Any] = dict(backbone="efficientvit_b1")
    return _build("haformer_b1", HAFormer, pretrained, **dict(model_args, **kwargs))


@_register(HAFormer)
def haformer_b2(pretrained: bool = False, **kwargs: Any) -> HAFormer:
    """Corrected HAFormer on EfficientViT-B2: the largest."""
    model_args: dict[str, Any] = dict(backbone="efficientvit_b2")
    return _build("haformer_b2", HAFormer, pretrained, **dict(model_args, **kwargs))


def input_multiple(model: nn.Module | str) -> int:
    """What a model's input sides must be divisible by (a model or a registered name)."""
    if isinstance(model, str):
        if model in PEERS:
            return PEERS[model].input_multiple
        if model not in _CLASSES:
            raise ConfigError(f"unknown model {model!r}; known models: {', '.join(list_models())}")
        return _CLASSES[model].input_multiple
    return getattr(model, "input_multiple", 1)


def list_models() -> list[str]:
    """The names ``create_model`` accepts, sorted (the peers are listed by
    ``haformer.peers.list_peers()``)."""
    return sorted(_MODELS)


def create_model(
    name: str,
    num_classes: int = NUM_CLASSES,
    pretrained: bool = False,
    *,
    backbone_pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model: ``create_model("haformer_b1", num_classes=11)``.

    ``backbone_pretrained=True`` loads timm's ImageNet weights into the EfficientViT backbone
    (``pretrained=True`` is its older name: no HAFormer weights exist on any hub).
    Extra ``kwargs`` go to the model class and override the entry point's defaults (for
    example ``use_pem=False``, or ``backbone="efficientvit_b2"`` for any haformer_*). The
    names of ``haformer.peers.list_peers()`` build those networks instead (random weights;
    their one kwarg is ``bn_momentum``). Every model carries ``pretrained_cfg`` (input size,
    mean, std), so ``timm.data.resolve_data_config({}, model=model)`` gives the CamVid values.

    Raises ConfigError (a ValueError) for an unknown name, argument or value.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1; got {num_classes}")
    if name in PEERS:
        if pretrained or backbone_pretrained:
            raise ConfigError(f"the peer {name!r} takes no pretrained weights")
        check_model_kwargs(name, kwargs)
        model = create_peer(name, num_classes, **kwargs)
        multiple = PEERS[name].input_multiple
        size = tuple(side // multiple * multiple for side in IMAGE_SIZE)
        model.pretrained_cfg = _cfg(input_size=(3, *size), num_classes=num_classes)
        return model
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name](
        pretrained=pretrained,
        backbone_pretrained=backbone_pretrained,
        num_classes=num_classes,
        **kwargs,
    )


def load_model(
    checkpoint: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a haformer checkpoint was trained as, with its weights, in eval mode.

    Returns ``(model, config)`` where ``config`` is the training configuration stored in the
    checkpoint (a dict; ``config["model"]`` is the registry name). Every problem with the
    file (missing, empty, truncated, not a training checkpoint, weights of another model or
    class count, unknown model kwargs) raises a one-line ``UsageError``.
    """
    state = load_checkpoint(checkpoint, map_location="cpu")
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in config or "model" not in state:
        raise CheckpointError(
            f"{checkpoint} is not a haformer training checkpoint (it needs 'model' weights and a "
            "'config' with the model name); use last.pt or best.pt from `python -m haformer train`"
        )
    name = config["model"]
    if isinstance(name, str) and name.startswith(CUSTOM_PREFIX):
        raise CheckpointError(
            f"{checkpoint} holds a model passed to train(model=...) "
            f"({name.removeprefix(CUSTOM_PREFIX)}): build that network yourself and call "
            "load_state_dict(state['model'])"
        )
    try:
        model = create_model(
            name,
            num_classes=config.get("num_classes", NUM_CLASSES),
            **config.get("model_kwargs", {}),
        )
    except ConfigError as err:
        raise CheckpointError(f"cannot rebuild the model of {checkpoint}: {err}") from err
    load_weights(model, state["model"], f"{checkpoint} ({name})")
    return model.to(device).eval(), config


CUSTOM_PREFIX = "custom:"
"""``config["model"]`` of a run whose network was passed to ``train(model=...)``."""


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(weights)``, with a one-line CheckpointError naming the first
    missing, unexpected and mis-shaped entries instead of PyTorch's multi-kB message."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{len(items)} {what} (first: {items[0]})"
            for what, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("of another shape", shapes),
            )
            if items
        ]
        raise CheckpointError(
            f"the weights in {source} do not fit a {type(model).__name__} built from its config: "
            f"{'; '.join(parts)}. The file holds another model or class count: check --model, "
            "--num-classes and the model kwargs, or use the checkpoint of this run"
        )
    model.load_state_dict(weights)
