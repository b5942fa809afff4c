"""The seed's numbers, exactly: parameter counts, the torchinfo table, fvcore FLOPs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from haformer.hape import BranchHAPEBlock
from haformer.model import create_model
from haformer.pem import SeedPEM

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "seed-README.md"
# Our class names that differ from the seed's table (same module, book-friendly name).
ALIASES = {"SeedCWF": "cwFModule", "BranchHAPEBlock": "HAPEBlock"}
ROW = re.compile(
    r"^[\s│├└─]*(?P<name>[A-Za-z_]\w*)(?::\s*(?P<depth>\d+)-\d+)?\s+"
    r"(?P<shape>\[[\d,\s]+\]|--)\s+(?P<params>[\d,]+|--|\(recursive\))\s*$"
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parse_table(text: str) -> list[tuple[str, int, str, str]]:
    """(class name, depth, output shape, params) per row of a torchinfo table."""
    rows = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match and match["name"] != "Layer":
            depth = int(match["depth"]) if match["depth"] else 0
            name = ALIASES.get(match["name"], match["name"])
            rows.append((name, depth, match["shape"], match["params"]))
    return rows


@pytest.fixture(scope="module")
def seed_table() -> list[tuple[str, int, str, str]]:
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} is absent: the fidelity tests need the shared spec beside the repo")
    text = SPEC.read_text(encoding="utf-8")
    block = text.split("Layer (type:depth-idx)", 1)[1].split("```", 1)[0]
    return parse_table(block)


@pytest.mark.parametrize(
    ("channels", "denote", "expected"),
    [
        (32, 2, 3_856),
        (64, 2, 14_880),
        (64, 4, 6_992),
        (64, 8, 3_912),
        (64, 16, 2_372),
        (128, 4, 26_272),
        (128, 8, 13_968),
        (128, 16, 7_816),
    ],
)
def test_seed_hape_block_params(channels: int, denote: int, expected: int) -> None:
    assert n_params(BranchHAPEBlock(channels, denote, seed=True)) == expected


def test_seed_param_totals() -> None:
    b2 = create_model("hapeformer_seed", num_classes=6)
    b1 = create_model("hapeformer_seed", num_classes=6, backbone="efficientvit_b1")
    assert n_params(b2) == 18_663_080
    assert n_params(b1) == 7_281_432
    blocks = [m for m in b2.modules() if isinstance(m, BranchHAPEBlock)]
    assert sum(n_params(m) for m in blocks) == 178_872
    unused_fc = sum(n_params(m.fc) for m in b2.modules() if isinstance(m, SeedPEM))
    assert unused_fc == 27_040
    assert n_params(b2.down3) + n_params(b2.down4) == 147_648


def test_table_parser_reads_the_seed(seed_table: list) -> None:
    assert seed_table[0] == ("HAPEFormer", 0, "[1, 6, 1024, 1024]", "147,648")
    assert len(seed_table) == 66
    assert sum(1 for row in seed_table if row[0] == "HAPEBlock") == 18


@pytest.mark.slow
def test_seed_torchinfo_table_matches_row_by_row(seed_table: list) -> None:
    torchinfo = pytest.importorskip("torchinfo")
    model = create_model("hapeformer_seed", num_classes=6).eval()
    stats = torchinfo.summary(model, input_size=(1, 3, 1024, 1024), depth=3, verbose=0)
    ours = parse_table(str(stats))
    assert stats.total_params == 18_663_080
    assert len(ours) == len(seed_table)
    for i, (mine, theirs) in enumerate(zip(ours, seed_table, strict=True)):
        assert mine == theirs, f"row {i}: ours {mine} != seed {theirs}"


@pytest.mark.slow
def test_seed_b1_fvcore_flops() -> None:
    fvcore = pytest.importorskip("fvcore.nn")
    model = create_model("hapeformer_seed", num_classes=6, backbone="efficientvit_b1").eval()
    flops = fvcore.FlopCountAnalysis(model, torch.randn(1, 3, 1024, 1024))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        total = flops.total()
    assert abs(total - 28.56e9) / 28.56e9 < 0.01, f"{total / 1e9:.3f} G"
