"""Whole models: registry (ours and timm's), sizes, gradients, spatial placement, bad input,
the pretrained fail-fast path."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import haformer.export
import haformer.model  # registers the names with timm
from haformer.backbone import create_backbone
from haformer.errors import ConfigError, UsageError
from haformer.fusion import AddFusion, SeedCWF
from haformer.model import HAFormer, HAPEFormer, create_model, list_models
from haformer.pem import PEM, SeedPEM

NAMES = ["haformer_b0", "haformer_b1", "haformer_b2", "hapeformer_seed"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_every_parameter_has_a_finite_grad(model: nn.Module, size: tuple[int, int]) -> None:
    model.train()
    model(torch.randn(2, 3, *size)).logsumexp(dim=1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


@pytest.fixture(scope="module")
def b1() -> HAFormer:
    return create_model("haformer_b1").eval()


# --- registry ------------------------------------------------------------------------------


def test_list_models() -> None:
    assert list_models() == NAMES


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="haformer_b0, haformer_b1, haformer_b2, hapeformer_seed"):
        create_model("haformer_b9")


def test_create_model_classes_and_defaults() -> None:
    seed = create_model("hapeformer_seed")
    assert type(seed) is HAPEFormer and seed.classer.out_channels == 11
    assert HAPEFormer().classer.out_channels == 6  # the seed's own default
    assert create_model("haformer_b0", num_classes=5).classifier.out_channels == 5
    with pytest.raises(ValueError, match="efficientvit_b1 or efficientvit_b2"):
        create_model("hapeformer_seed", backbone="efficientvit_b0")


@pytest.mark.parametrize("name", ["haformer_b1", "hapeformer_seed"])
def test_timm_create_model_builds_the_same_model(name: str) -> None:
    torch.manual_seed(0)
    ours = create_model(name, num_classes=11).eval()
    torch.manual_seed(0)
    theirs = timm.create_model(name, num_classes=11).eval()
    assert type(theirs) is type(ours) and n_params(theirs) == n_params(ours)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=0)
    assert set(NAMES) <= set(timm.list_models("ha*former*"))


def test_timm_data_config_gives_camvid_values() -> None:
    from torchvision.transforms import v2

    from haformer.data.transforms import IMAGE_SIZE, eval_transforms

    normalize = next(t for t in eval_transforms().transforms if isinstance(t, v2.Normalize))
    for model in (create_model("haformer_b0"), timm.create_model("haformer_b0")):
        config = timm.data.resolve_data_config({}, model=model)
        assert config["input_size"] == (3, *IMAGE_SIZE) == (3, 360, 480)
        assert list(config["mean"]) == normalize.mean and list(config["std"]) == normalize.std
        assert config["crop_pct"] == 1.0 and config["interpolation"] == "bilinear"
    seed = timm.data.resolve_data_config({}, model=create_model("hapeformer_seed"))
    assert seed["input_size"] == (3, 352, 480)  # its sides must divide by 32


def test_defaults_merge_with_kwargs_the_timm_way() -> None:
    # dict(model_args, **kwargs): any default, the backbone too, can be overridden
    ours = create_model("haformer_b1", backbone="efficientvit_b2")
    theirs = timm.create_model("haformer_b1", backbone="efficientvit_b2")
    for model in (ours, theirs):
        assert model.backbone.feature_info.channels() == [384]


def test_backbone_pretrained_and_its_older_name(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = haformer.model.create_backbone

    def spy(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(haformer.model, "create_backbone", spy)
    create_model("haformer_b0", backbone_pretrained=True)
    create_model("haformer_b0", pretrained=True)
    create_model("haformer_b0")
    assert calls == [True, True, False]


def test_unknown_model_kwargs_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="takes no argument 'use_pme'.*use_pem"):
        create_model("haformer_b0", use_pme=False)
    with pytest.raises(ConfigError, match="unknown backbone 'efficientvit_b9'"):
        create_model("haformer_b0", backbone="efficientvit_b9")


def test_peers_take_a_batchnorm_momentum_and_nothing_else() -> None:
    def momenta(model: nn.Module) -> set[float]:
        return {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}

    assert momenta(create_model("lraspp_mobilenet_v3_large")) == {0.01, 0.1}  # torchvision's
    assert momenta(create_model("lraspp_mobilenet_v3_large", bn_momentum=0.1)) == {0.1}
    with pytest.raises(ConfigError, match="takes no argument 'use_pem'.*bn_momentum"):
        create_model("lraspp_mobilenet_v3_large", use_pem=False)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        create_model("lraspp_mobilenet_v3_large", backbone_pretrained=True)
    with pytest.raises(UsageError, match=r"bn_momentum must be in \(0, 1\]; got 0"):
        create_model("lraspp_mobilenet_v3_large", bn_momentum=0)
    with pytest.raises(UsageError, match="bn_momentum must be in"):
        create_model("lraspp_mobilenet_v3_large", bn_momentum="fast")


def test_export_rebuilds_checkpoints_without_the_evaluation_module() -> None:
    tree = ast.parse(Path(haformer.export.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "haformer.model" in imported and "haformer.evaluate" not in imported


# --- the corrected model --------------------------------------------------------------------


@pytest.mark.parametrize("size", [(360, 480), (720, 960), (361, 479), (96, 128), (32, 32)])
def test_logits_have_the_input_size(b1: HAFormer, size: tuple[int, int]) -> None:
    with torch.no_grad():
        assert b1(torch.randn(1, 3, *size)).shape == (1, 11, *size)


@pytest.mark.parametrize("name", ["haformer_b0", "haformer_b2"])
def test_other_backbones_odd_size(name: str) -> None:
    with torch.no_grad():
        assert create_model(name).eval()(torch.randn(1, 3, 97, 131)).shape == (1, 11, 97, 131)


def test_every_parameter_gets_a_finite_gradient() -> None:
    assert_every_parameter_has_a_finite_grad(create_model("haformer_b1"), (65, 97))


@pytest.mark.parametrize(
    ("kwargs", "absent", "present"),
    [
        ({"use_pem": False}, PEM, SeedCWF),
        ({"use_transformer": False}, nn.Module, None),
        ({"fusion": "seed"}, None, SeedCWF),
        ({"fusion": "add"}, None, AddFusion),
    ],
)
def test_ablation_switches(kwargs: dict, absent: type | None, present: type | None) -> None:
    model = HAFormer(backbone="efficientvit_b0", **kwargs)
    kinds = {type(m) for m in model.modules()}
    if kwargs.get("use_pem") is False:
        assert PEM not in kinds and SeedPEM not in kinds
    if kwargs.get("use_transformer") is False:
        assert model.backbone is None and model.fusion is None and model.proj is None
    if present is not None and kwargs.get("use_pem") is None:
        assert present in kinds
    assert_every_parameter_has_a_finite_grad(model, (32, 48))


def test_ablation_switch_errors() -> None:
    with pytest.raises(ValueError, match="cwf, seed, add"):
        HAFormer(fusion="concat")
    with pytest.raises(ValueError, match="use_transformer=False"):
        HAFormer(pretrained=True, use_transformer=False)
    with pytest.raises(ValueError, match="unknown backbone"):
        HAFormer(backbone="efficientvit_b99")


def corner_change(model: nn.Module, cnn_shape: tuple, vit_shape: tuple) -> torch.Tensor:
    """|fused(t with its top-left 2x2 changed) - fused(t)|, max over channels: (h, w)."""
    model.eval()
    a, t = torch.randn(cnn_shape), torch.randn(vit_shape)
    t2 = t.clone()
    t2[..., :2, :2] += 3.0
    with torch.no_grad():
        diff = model.fuse_features(a, t2) - model.fuse_features(a, t)
    return diff.abs().amax(dim=1)[0]


def test_transformer_map_stays_in_place(b1: HAFormer) -> None:
    # 384x480 input: CNN map at stride 4 is 96x120, transformer map at stride 32 is 12x15.
    diff = corner_change(b1, (1, 128, 96, 120), (1, 256, 12, 15))
    # bilinear x8 spreads 2 cells to ~20 px, CWF's 3x3 conv adds 1 more
    assert diff[:8, :8].min() > 0
    assert diff[24:, :].max() < 1e-6 and diff[:, 24:].max() < 1e-6


def test_seed_view_scatters_the_corner_everywhere() -> None:
    seed = create_model("hapeformer_seed", backbone="efficientvit_b1")
    diff = corner_change(seed, (1, 128, 96, 120), (1, 256, 12, 15))
    assert diff[24:, 24:].max() > 0  # what the test above forbids: `view` is no placement


# --- bad input, for every model ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "bad",
    [
        torch.randn(3, 64, 64),
        torch.randn(1, 1, 64, 64),
        torch.zeros(1, 3, 64, 64, dtype=torch.uint8),
        torch.randn(1, 3, 16, 64),
    ],
    ids=["3d", "1-channel", "uint8", "too-small"],
)
def test_bad_input_says_what_was_expected(name: str, bad: torch.Tensor) -> None:
    model = create_model(name, backbone="efficientvit_b1") if "seed" in name else create_model(name)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*got shape") as info:
        model(bad)
    assert str(tuple(bad.shape)) in str(info.value)


def test_seed_needs_multiples_of_32() -> None:
    model = create_model("hapeformer_seed", backbone="efficientvit_b1")
    with pytest.raises(ValueError, match="multiples of 32.*360x480.*384x480"):
        model(torch.randn(1, 3, 360, 480))


def test_non_tensor_input() -> None:
    with pytest.raises(ValueError, match="got a list"):
        HAFormer(backbone="efficientvit_b0")([[0.0]])


# --- backbone -------------------------------------------------------------------------------


def test_backbone_channels() -> None:
    expected = {"efficientvit_b0": 128, "efficientvit_b1": 256, "efficientvit_b2": 384}
    for name, channels in expected.items():
        assert create_backbone(name, out_indices=(-1,)).feature_info.channels() == [channels]
    assert create_backbone("efficientvit_b1").feature_info.channels() == [32, 64, 128, 256]


PROBE = textwrap.dedent(
    """
    import time
    from haformer.model import create_model
    start = time.perf_counter()
    try:
        create_model("haformer_b0", pretrained=True)
    except RuntimeError as err:
        print(f"{time.perf_counter() - start:.2f}")
        print(err)
    else:
        print("no error")
    """
)


@pytest.mark.parametrize(
    "env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["offline-flag", "hub-unreachable"],
)
def test_pretrained_without_weights_fails_fast(env: dict, tmp_path: Path) -> None:
    full_env = {**os.environ, "HF_HOME": str(tmp_path), **env}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=full_env, capture_output=True, text=True, timeout=120
    )
    lines = done.stdout.splitlines()
    assert lines and lines[0] != "no error", done.stdout + done.stderr
    assert float(lines[0]) < 10
    message = "\n".join(lines[1:])
    assert "pretrained=False" in message and "network" in message
