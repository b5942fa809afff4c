"""Shipped weights: found in a checkout or the cache, else downloaded and verified; anything
else is refused with one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from haformer import pretrained
from haformer._repository import BRANCH, REPO_URL
from haformer.errors import EnvironmentFailure, UsageError
from haformer.model import create_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, torch.nn.Module]:
    """A registered entry 'tiny' whose file (random haformer_b0 weights) is served from
    ``tmp_path/served``; the checkout folder and the cache are empty temp folders."""
    model = create_model("haformer_b0", use_transformer=False).eval()
    served = tmp_path / "served"
    served.mkdir()
    torch.save(model.state_dict(), served / "tiny.pt")
    data = (served / "tiny.pt").read_bytes()
    entry = pretrained.Weights(
        model="haformer_b0",
        file="tiny.pt",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        model_kwargs={"use_transformer": False},
    )
    monkeypatch.setitem(pretrained.WEIGHTS, "tiny", entry)
    monkeypatch.setattr(pretrained, "CHECKOUT_DIR", tmp_path / "checkout")
    monkeypatch.setenv("HAFORMER_CACHE", str(tmp_path / "cache"))
    return "tiny", served, model


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_downloads_verifies_and_caches(tiny, server, tmp_path: Path) -> None:
    name, _, model = tiny
    loaded = pretrained.load(name, base_url=server)
    assert _same_outputs(loaded, model) and not loaded.training
    cached = tmp_path / "cache" / "tiny.pt"
    assert cached.is_file()
    # the second call reads the verified cache, with no server at all
    assert pretrained.weights_path(name, base_url="http://127.0.0.1:9") == cached


def test_a_checkout_copy_is_used_offline(tiny, tmp_path: Path) -> None:
    name, served, model = tiny
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "tiny.pt").write_bytes((served / "tiny.pt").read_bytes())
    assert _same_outputs(pretrained.load(name, base_url="http://127.0.0.1:9"), model)


def test_a_changed_file_is_refused_and_not_kept(tiny, server, tmp_path: Path) -> None:
    name, served, _ = tiny
    data = bytearray((served / "tiny.pt").read_bytes())
    data[-1] ^= 0xFF
    (served / "tiny.pt").write_bytes(bytes(data))
    with pytest.raises(UsageError, match="SHA-256"):
        pretrained.load(name, base_url=server)
    assert not any((tmp_path / "cache").iterdir())


def test_a_larger_answer_is_cut_off(tiny, server, tmp_path: Path) -> None:
    name, served, _ = tiny
    (served / "tiny.pt").write_bytes(b"<html>" + b"x" * (pretrained.WEIGHTS[name].size + 10))
    with pytest.raises(UsageError, match="more than"):
        pretrained.load(name, base_url=server)
    assert not any((tmp_path / "cache").iterdir())


def test_no_network_is_an_environment_failure(tiny) -> None:
    with pytest.raises(EnvironmentFailure, match="could not download"):
        pretrained.load(tiny[0], base_url="http://127.0.0.1:9")


def test_unknown_name() -> None:
    with pytest.raises(UsageError, match="no shipped weights named"):
        pretrained.load("haformer_b9")


def test_download_url_comes_from_the_book_config() -> None:
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    assert REPO_URL == config["repository"]["url"].rstrip("/")
    assert BRANCH == config["repository"]["branch"]
    for name in pretrained.list_weights():
        url = pretrained.weights_url(name)
        assert url == f"{REPO_URL}/raw/{BRANCH}/weights/{pretrained.WEIGHTS[name].file}"


@pytest.mark.parametrize("name", pretrained.list_weights())
def test_shipped_weights_are_in_the_checkout_and_load(name: str) -> None:
    entry = pretrained.WEIGHTS[name]
    path = REPO / "weights" / entry.file
    assert path.stat().st_size == entry.size
    assert pretrained.weights_path(name, download=False) == path
    model = pretrained.load(name)
    assert sum(p.numel() for p in model.parameters()) > 0 and not model.training
