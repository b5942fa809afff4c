"""The training configuration and the ``train`` command line generated from it.

:class:`TrainConfig` is the one source of truth: every field carries its help text (in
:func:`setting`), and :func:`add_config_arguments` turns each field into one flag with that
help and the default shown (``batch_size`` -> ``--batch-size``). Values are checked in
``__post_init__``, so a setting that cannot work is refused before any work starts, whether
it came from the command line or from Python. :func:`command_line` writes a config back as
the command that runs it (used to print the exact ``--resume`` command after Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from haformer.data.classes import NUM_CLASSES
from haformer.data.layout import SPLIT_CHOICES
from haformer.errors import ConfigError
from haformer.model import MIN_SIDE, check_model_kwargs, input_multiple, list_models
from haformer.peers import list_peers
from haformer.utils import parse_size

OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("ce", "ohem")
WEIGHTINGS = ("enet", "median", "none")
VAL_SPLITS = ("val", "test", "none")


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    shown: str | None = None,
    aliases: Sequence[str] = (),
) -> Any:
    """A :class:`TrainConfig` field with what its command-line flag needs.

    Args:
        default, factory: the default value (or a factory for mutable ones).
        help: one sentence for ``--help``; the default is appended to it.
        choices, metavar: as in argparse.
        shown: how the default reads in ``--help`` when its value alone says too little.
        aliases: other flag names accepted for the same field (older names).
    """
    meta = {
        "help": help,
        "choices": choices,
        "metavar": metavar,
        "shown": shown,
        "aliases": aliases,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in every checkpoint as a plain dict).

    Each field is one ``python -m haformer train`` flag; ``--help`` shows the text given here.
    """

    data_root: str | None = setting(
        None,
        "CamVid root in the SegNet layout",
        metavar="DIR",
        shown="$CAMVID_ROOT, else ./data/camvid",
        aliases=("--root",),
    )
    out: str = setting(
        "runs/haformer", "run folder: last.pt, best.pt, history.csv, curves.png", metavar="DIR"
    )
    model: str = setting(
        "haformer_b1",
        f"registry name: {', '.join(list_models())}, or a peer network: {', '.join(list_peers())}",
        metavar="NAME",
    )
    model_kwargs: dict[str, Any] = setting(
        factory=dict,
        help="keyword arguments of the model as a JSON object, for example the ablations of "
        "book ch. 12: '{\"use_pem\": false}', '{\"use_transformer\": false}', "
        '\'{"fusion": "seed"}\' or \'{"fusion": "add"}\'; also \'{"backbone": "efficientvit_b2"}\'',
        metavar="JSON",
    )
    backbone_pretrained: bool = setting(
        False,
        "ImageNet weights for the EfficientViT branch (needs the network once; the recipe "
        "trains from scratch)",
        aliases=("--pretrained",),
    )
    num_classes: int = setting(NUM_CLASSES, "output classes (CamVid: 11, void ignored)")
    train_split: str = setting("train", "split to train on", choices=SPLIT_CHOICES)
    val_split: str | None = setting(
        "val", "split to validate on every --val-every epochs ('none': no validation, no best.pt)",
        choices=VAL_SPLITS,
    )  # fmt: skip
    epochs: int = setting(1000, "training epochs (an upper bound when a budget is set)")
    max_minutes: float | None = setting(
        None,
        "budget: stop after this many minutes of training (validation time excluded); the poly "
        "decay runs over the fraction of the budget used",
        shown="no limit",
    )
    max_images: int | None = setting(
        None,
        "budget: stop after this many training images seen (all processes together); the poly "
        "decay runs over the fraction of the budget used",
        shown="no limit",
    )
    batch_size: int = setting(8, "images per step and per process")
    val_batch_size: int | None = setting(None, "validation batch size", shown="--batch-size")
    crop: tuple[int, int] = setting((360, 480), "training crop", metavar="HxW")
    scale: tuple[float, float] = setting(
        (0.75, 2.0), "random scale range of the training images", metavar="LOW,HIGH"
    )
    base_size: tuple[int, int] | None = setting(
        None,
        "the size the scale range refers to; set it (and --eval-size) to the crop size to "
        "train and score at reduced resolution, e.g. 180x240",
        metavar="HxW",
        shown="full 360x480",
    )
    eval_size: tuple[int, int] | None = setting(
        None,
        "validation inputs are resized to this (logits resized back; scored at label size)",
        metavar="HxW",
        shown="full resolution",
    )
    flip: bool = setting(True, "random horizontal flips")
    color_jitter: bool = setting(False, "random brightness, contrast and saturation")
    cache: bool = setting(False, "decode the dataset into memory once (about 250 MB for train)")
    optimizer: str = setting("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = setting(1e-3, "peak learning rate")
    weight_decay: float = setting(1e-4, "weight decay (L2 for Adam and SGD, decoupled for AdamW)")
    momentum: float = setting(0.9, "SGD momentum")
    warmup_epochs: float = setting(
        5.0, "linear warm-up length in epochs (capped at half of the run), then poly decay to 0"
    )
    warmup_start: float = setting(0.01, "first warm-up learning rate as a fraction of --lr")
    poly_power: float = setting(0.9, "power of the poly decay")
    loss: str = setting(
        "ce", "loss: class-weighted cross entropy or its OHEM variant", choices=LOSSES
    )
    class_weights: str | list[float] = setting(
        "enet",
        "enet (1/ln(1.10+p)), median (median frequency), none, or one weight per class as "
        "comma-separated numbers; enet/median are computed from the training labels",
        metavar="{enet,median,none,W1,W2,...}",
    )
    ohem_thresh: float = setting(0.7, "OHEM: pixels whose true-class probability is below this")
    ohem_min_kept: int = setting(100_000, "OHEM: keep at least this many pixels per batch")
    amp: bool | None = setting(
        None,
        "mixed precision: fp16 with a gradient scaler on CUDA, bf16 autocast on CPU",
        shown="on for CUDA, off elsewhere",
    )
    channels_last: bool = setting(False, "NHWC memory format")
    clip_grad: float | None = setting(None, "max gradient norm", shown="no clipping")
    sync_bn: bool = setting(False, "SyncBatchNorm across GPUs (CUDA, several processes)")
    val_every: int = setting(10, "validate every N epochs (and always at the end)")
    workers: int = setting(
        min(4, os.cpu_count() or 1), "DataLoader worker processes (0: load in the main process)"
    )
    device: str | None = setting(None, "cuda, cuda:N, mps or cpu", shown="CUDA, else MPS, else CPU")
    seed: int = setting(0, "random seed (each process adds its rank)")
    deterministic: bool = setting(False, "deterministic kernels (slower on GPU)")
    resume: bool = setting(False, "continue the run in --out from last.pt (or its --mirror copy)")
    mirror: str | None = setting(
        None,
        "second folder that receives a copy of the run every --mirror-every epochs and at the "
        "end (for example Google Drive on Colab, with --out on the local disk); --resume "
        "starts from whichever copy is newer",
        metavar="DIR",
        shown="no mirror",
    )
    mirror_every: int = setting(10, "copy the run to --mirror every N epochs")
    progress: bool = setting(True, "tqdm progress bars (rank 0 only)")

    def __post_init__(self) -> None:
        self.crop = _pair(self.crop, int, "crop")
        self.scale = _pair(self.scale, float, "scale")
        self.base_size = None if self.base_size is None else _pair(self.base_size, int, "base_size")
        self.eval_size = None if self.eval_size is None else _pair(self.eval_size, int, "eval_size")
        if self.val_split in ("", "none"):
            self.val_split = None
        _choice("train_split", self.train_split, SPLIT_CHOICES)
        if self.val_split is not None:
            _choice("val_split", self.val_split, VAL_SPLITS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSSES)
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError(f"model_kwargs must be a dict; got {self.model_kwargs!r}")
        for name in ("num_classes", "pretrained", "backbone_pretrained"):
            if name in self.model_kwargs:
                raise ConfigError(f"give {name} as {_flag(name)}, not in --model-kwargs")
        check_model_kwargs(self.model, self.model_kwargs)  # also: an unknown model name
        self._check_numbers()
        if isinstance(self.class_weights, str):
            _choice("class_weights", self.class_weights, WEIGHTINGS)
        else:
            self.class_weights = [float(w) for w in self.class_weights]
            if len(self.class_weights) != self.num_classes:
                raise ConfigError(
                    f"class_weights needs {self.num_classes} values (one per class); "
                    f"got {len(self.class_weights)}"
                )
            if any(not math.isfinite(w) or w < 0 for w in self.class_weights):
                raise ConfigError(
                    f"class weights must be finite and >= 0; got {self.class_weights}"
                )
        self.crop, note = fit_crop(self.crop, input_multiple(self.model), self.model)
        # adjustments made to the settings given; not a field: the training log prints them
        self.notes = [note] if note else []

    def _check_numbers(self) -> None:
        """Refuse numbers that cannot work, naming the flag."""
        at_least = {
            "num_classes": 1, "epochs": 1, "batch_size": 1, "val_every": 1, "workers": 0,
            "ohem_min_kept": 1, "mirror_every": 1, "max_images": 1, "val_batch_size": 1,
        }  # fmt: skip
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"{_flag(name)} must be at least {low}; got {value}")
        positive = ("lr", "max_minutes", "clip_grad", "poly_power")
        for name in positive:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{_flag(name)} must be a positive number; got {value}")
        for name in ("weight_decay", "momentum", "warmup_epochs"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{_flag(name)} must be >= 0; got {value}")
        if not 0 < self.warmup_start <= 1:
            raise ConfigError(f"--warmup-start is a fraction in (0, 1]; got {self.warmup_start}")
        if not 0 < self.ohem_thresh <= 1:
            raise ConfigError(f"--ohem-thresh is a probability in (0, 1]; got {self.ohem_thresh}")
        low, high = self.scale
        if not (0 < low <= high and math.isfinite(high)):
            raise ConfigError(
                f"--scale must be LOW,HIGH with 0 < LOW <= HIGH, for example 0.75,2.0; "
                f"got {low},{high}"
            )
        for name in ("crop", "eval_size", "base_size"):
            size = getattr(self, name)
            if size is not None and min(size) < MIN_SIDE:
                raise ConfigError(
                    f"{_flag(name)} sides must be at least {MIN_SIDE} pixels; got "
                    f"{size[0]}x{size[1]}"
                )


def fit_crop(crop: tuple[int, int], multiple: int, model: str) -> tuple[tuple[int, int], str]:
    """``crop`` rounded down to sides divisible by ``multiple`` (what ``model`` needs), and a
    line saying so ("" when the crop already fits)."""
    fitted = (
        max(multiple, crop[0] // multiple * multiple),
        max(multiple, crop[1] // multiple * multiple),
    )
    if fitted == tuple(crop):
        return fitted, ""
    return fitted, (
        f"{model} needs input sides divisible by {multiple}: training on {fitted[0]}x{fitted[1]} "
        f"crops instead of {crop[0]}x{crop[1]} (pass --crop {fitted[0]}x{fitted[1]} to choose "
        "it yourself)"
    )


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as a plain dict (tuples become lists), as stored in checkpoints."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


# ----------------------------------------------------------------------------- command line


def flag_name(name: str) -> str:
    """The flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


_flag = flag_name


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, with its help and default.

    Unset flags leave their field out of the parsed namespace (``argparse.SUPPRESS``), so the
    dataclass defaults stay the only defaults; :func:`config_from_args` builds the config.
    """
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        meta = f.metadata
        shown = meta["shown"] or _format(default)
        options: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{meta['help']} (default: {shown})".replace("%", "%%"),
        }
        hint = hints[f.name]
        if hint in (bool, bool | None):
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = str if meta["choices"] else _parser_for(f.name, hint)
            options["metavar"] = meta["metavar"] or _metavar(hint, meta["choices"])
            if meta["choices"]:
                options["choices"] = meta["choices"]
        parser.add_argument(flag_name(f.name), *meta["aliases"], **options)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the flags given (the rest keep their defaults)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def command_line(cfg: TrainConfig, prefix: str = "python -m haformer train") -> str:
    """The command that runs ``cfg`` (only the flags that differ from the defaults)."""
    words: list[str] = []
    default = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        value, base = getattr(cfg, f.name), getattr(default, f.name)
        if value == base:
            continue
        flag = flag_name(f.name)
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif value is None:
            words += [flag, "none"]
        else:
            words += [flag, _format(value)]
    return f"{prefix} {shlex.join(words)}".strip()


def _format(value: Any) -> str:
    """A value as its flag takes it: 360x480, 0.75,2.0, JSON for dicts, none."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            return f"{value[0]}x{value[1]}"
        return ",".join(str(v) for v in value)
    return str(value)


def _metavar(hint: Any, choices: Sequence[str] | None) -> str | None:
    if choices:
        return "{" + ",".join(choices) + "}"
    base = _without_none(hint)
    return {int: "N", float: "X", str: "TEXT"}.get(base)


def _without_none(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1:
        return args[0]
    return hint


def _parser_for(name: str, hint: Any) -> Callable[[str], Any]:
    """A function turning the flag's text into the field's value; errors name the flag."""
    optional = type(None) in typing.get_args(hint)
    base = _without_none(hint)
    if base in (int, float):
        convert: Callable[[str], Any] = base
    elif base == tuple[int, int]:
        convert = parse_size
    elif base == tuple[float, float]:
        convert = _float_pair
    elif typing.get_origin(base) is dict:
        convert = _json_object
    elif base == (str | list[float]):
        convert = _weights
    else:
        convert = str

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        try:
            return convert(text)
        except (ValueError, json.JSONDecodeError) as err:
            raise argparse.ArgumentTypeError(
                f"{flag_name(name)}: cannot read {text!r}: {err}"
            ) from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _float_pair(text: str) -> tuple[float, float]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 2:
        raise ValueError("expected two numbers LOW,HIGH, for example 0.75,2.0")
    return values  # type: ignore[return-value]


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object such as '{\"use_pem\": false}'")
    return value


def _weights(text: str) -> str | list[float]:
    if text in WEIGHTINGS:
        return text
    return [float(v) for v in text.strip("[]").split(",")]


def _pair(value: Any, kind: type, name: str) -> tuple:
    if isinstance(value, str):
        value = parse_size(value) if kind is int else _float_pair_or_error(value, name)
    try:
        if len(value) != 2:
            raise TypeError
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} needs two numbers (height, width or low, high); got {value!r}"
        ) from None


def _float_pair_or_error(text: str, name: str) -> tuple[float, float]:
    try:
        return _float_pair(text)
    except ValueError as err:
        raise ConfigError(f"{name}: cannot read {text!r}: {err}") from err


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
