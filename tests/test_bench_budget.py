"""benchmarks/bench_budget.py: tie calling and aggregation on synthetic runs, then a real sweep.

The report logic is tested on hand-made run records whose means, spreads and verdicts are
known; the end-to-end test runs the script as a subprocess on camvid-mini (two runs of a few
training steps each) and checks what it leaves behind, then that a second call skips them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import haformer
from haformer.model import create_model
from haformer.profile import count_parameters

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_budget.py"

_spec = importlib.util.spec_from_file_location("bench_budget", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_budget"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)

BUDGET = bench.Budget("minutes", 12.0)


def fake_run(
    label: str,
    seed: int,
    val: float,
    test: float,
    points: list[tuple[float, float]] | None = None,
    budget: Any = BUDGET,
) -> dict[str, Any]:
    """A run record as run_one() writes it; ``points``: (train minutes, val mIoU) per epoch."""
    points = points or [(6.0, val / 2), (12.0, val)]
    spec = bench.run_spec(bench.Entry(label, label), seed, budget, (192, 256), "cpu")
    history = [
        {
            "epoch": i + 1,
            "step": 45 * (i + 1),
            "images_seen": 360 * (i + 1),
            "train_seconds": 60 * minutes,
            "val_miou": miou,
        }
        for i, (minutes, miou) in enumerate(points)
    ]
    return {
        **spec,
        "params": 1_000_000,
        "steps": history[-1]["step"],
        "images_seen": history[-1]["images_seen"],
        "train_seconds": history[-1]["train_seconds"],
        "best_val_miou": val,
        "test_miou": test,
        "history": history,
        "machine": {"machine": "x86_64", "cpus": 2, "torch": "2.x"},
        "load_average": {"start": 1.0, "end": 1.0},
        "finished": f"2026-01-01T00:00:0{seed}+00:00",
    }


# ----------------------------------------------------------------------------- statistics


def test_describe_gives_mean_sample_std_and_range() -> None:
    d = bench.describe([0.30, 0.32, 0.34])
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(0.32)
    assert d["std"] == pytest.approx(0.02)  # sample std (n - 1)
    assert (d["min"], d["max"]) == (0.30, 0.34)
    assert d["range"] == pytest.approx(0.04)
    assert bench.describe([0.5])["std"] is None  # one value: no spread
    with pytest.raises(ValueError):
        bench.describe([])


def test_a_difference_smaller_than_the_spread_is_a_tie() -> None:
    ref = bench.describe([0.29, 0.33, 0.31])  # range 0.04
    a = bench.describe([0.32, 0.33, 0.34])  # mean +0.02, range 0.02
    cmp = bench.compare(a, ref)
    assert cmp["diff"] == pytest.approx(0.02)
    assert cmp["spread"] == pytest.approx(0.04)  # the larger of the two ranges
    assert cmp["verdict"] == "tie"
    assert bench.compare(ref, a)["verdict"] == "tie"  # symmetric


def test_a_difference_beyond_the_spread_is_ahead_or_behind() -> None:
    ref = bench.describe([0.30, 0.31, 0.32])
    better = bench.describe([0.35, 0.36, 0.37])
    assert bench.compare(better, ref)["verdict"] == "ahead"
    assert bench.compare(ref, better)["verdict"] == "behind"
    # exactly the spread (values exact in binary): not smaller, so no tie
    edge = bench.compare(bench.describe([0.5, 0.75]), bench.describe([0.25, 0.5]))
    assert edge["diff"] == edge["spread"] == 0.25
    assert edge["verdict"] == "ahead"


def test_one_seed_gives_no_verdict() -> None:
    cmp = bench.compare(bench.describe([0.40]), bench.describe([0.30, 0.31]))
    assert cmp["spread"] is None and cmp["verdict"] == "n/a"
    assert cmp["diff"] == pytest.approx(0.095)


def test_curve_averages_seeds_on_a_common_grid() -> None:
    runs = [
        fake_run("m", 0, 0.4, 0.4, points=[(2.0, 0.10), (6.0, 0.30), (12.0, 0.40)]),
        fake_run("m", 1, 0.5, 0.5, points=[(3.0, 0.20), (11.0, 0.50)]),
    ]
    c = bench.curve(runs, "minutes", points=5)
    assert c["x"][0] == 3.0 and c["x"][-1] == 11.0  # where every seed has data
    # at x = 7: seed 0 is at 0.30 + (1/6) * 0.10, seed 1 at 0.20 + (4/8) * 0.30
    i = c["x"].index(7.0)
    s0, s1 = 0.30 + 0.10 / 6, 0.20 + 0.15
    assert c["mean"][i] == pytest.approx((s0 + s1) / 2)
    assert (c["min"][i], c["max"][i]) == (pytest.approx(s0), pytest.approx(s1))
    assert [s["seed"] for s in c["seeds"]] == [0, 1]
    images = bench.curve(runs, "images", points=3)
    assert images["x"] == [360.0, 540.0, 720.0]


# ----------------------------------------------------------------------------- the report


def _sweep_runs() -> list[dict[str, Any]]:
    return [
        *(fake_run("haformer_b1", s, v, t) for s, v, t in [(0, 0.30, 0.28), (1, 0.32, 0.29)]),
        *(fake_run("fpn_mobilenet_v2", s, v, t) for s, v, t in [(0, 0.36, 0.34), (1, 0.37, 0.35)]),
        *(fake_run("haformer_b0", s, v, t) for s, v, t in [(0, 0.31, 0.27), (1, 0.30, 0.29)]),
    ]


def test_summary_compares_every_model_with_the_reference() -> None:
    s = bench.summarize(_sweep_runs())
    assert s["reference"] == "haformer_b1"  # default when present
    assert s["labels"] == ["haformer_b0", "haformer_b1", "fpn_mobilenet_v2"]  # MODELS order
    fpn = s["models"]["fpn_mobilenet_v2"]
    assert fpn["test_miou"]["mean"] == pytest.approx(0.345)
    assert fpn["vs_reference"]["test_miou"]["diff"] == pytest.approx(0.06)
    assert fpn["vs_reference"]["test_miou"]["verdict"] == "ahead"
    b0 = s["models"]["haformer_b0"]["vs_reference"]["test_miou"]
    assert b0["spread"] == pytest.approx(0.02) and b0["verdict"] == "tie"
    table = s["table"].splitlines()
    assert table[0].startswith("| model |") and "test vs haformer_b1" in table[0]
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert "reference" in rows["haformer_b1"]
    assert "+6.00 (spread 1.00): ahead" in rows["fpn_mobilenet_v2"]
    assert "-0.50 (spread 2.00): tie" in rows["haformer_b0"]
    assert "34.50 (34.00-35.00), sd 0.71" in rows["fpn_mobilenet_v2"]


def test_summary_reference_can_be_chosen_and_must_exist() -> None:
    s = bench.summarize(_sweep_runs(), reference="fpn_mobilenet_v2")
    assert s["models"]["haformer_b1"]["vs_reference"]["test_miou"]["verdict"] == "behind"
    with pytest.raises(bench.UsageError, match="no runs"):
        bench.summarize(_sweep_runs(), reference="segformer_mit_b0")
    variants = [fake_run(v, s, 0.3 + s / 100, 0.3) for v in ("no_pem", "full") for s in (0, 1)]
    assert bench.summarize(variants)["reference"] == "full"


def test_summary_refuses_runs_of_two_protocols() -> None:
    runs = _sweep_runs() + [fake_run("haformer_b1", 2, 0.3, 0.3, budget=bench.Budget("images", 8))]
    with pytest.raises(bench.UsageError, match="differ in budget or recipe"):
        bench.summarize(runs)
    with pytest.raises(bench.UsageError, match="no run results"):
        bench.summarize([])


def test_report_reads_run_files_and_writes_summary(tmp_path: Path) -> None:
    for run in _sweep_runs():
        bench.write_json(bench.run_path(tmp_path, run["label"], run["seed"]), run)
    first = bench.report(tmp_path)
    assert first["runs"] == 6
    again = bench.report(tmp_path)  # summary.json itself is not read as a run
    assert again["runs"] == 6
    saved = json.loads((tmp_path / bench.SUMMARY).read_text())
    assert saved["table"] == first["table"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ----------------------------------------------------------------------------- inputs


def test_budget_parsing() -> None:
    assert bench.Budget.parse("minutes=12").train_kwargs() == {"max_minutes": 12.0}
    assert bench.Budget.parse("images=2880").train_kwargs() == {"max_images": 2880}
    assert bench.Budget.parse("minutes=0.5").slug == "minutes-0.5"
    assert bench.Budget.parse("images=2880").slug == "images-2880"
    for bad in ("hours=2", "minutes=", "minutes=-1", "images=2.5", "minutes=nan", "12"):
        with pytest.raises(bench.UsageError, match="--budget"):
            bench.Budget.parse(bad)


def test_model_entries_take_keyword_arguments() -> None:
    plain, tuned = bench.model_entries(["haformer_b0", "lraspp_mobilenet_v3_large@bn_momentum=0.1"])
    assert plain == bench.Entry("haformer_b0", "haformer_b0", {})
    assert tuned.model == "lraspp_mobilenet_v3_large" and tuned.kwargs == {"bn_momentum": 0.1}
    assert tuned.label == "lraspp_mobilenet_v3_large@bn_momentum=0.1"  # its files and rows
    assert bench.model_entries(["haformer_b0@fusion=seed"])[0].kwargs == {"fusion": "seed"}
    for bad in ("haformer_b0@use_pem", "haformer_b0@=1", "haformer_b0@use_pem="):
        with pytest.raises(bench.UsageError, match="NAME@KEY=VALUE"):
            bench.model_entries([bad])


def test_done_runs_are_skipped_and_must_match(tmp_path: Path) -> None:
    entries = bench.model_entries(["haformer_b0"])
    todo, done = bench.pending_runs(entries, [0, 1], BUDGET, (192, 256), "cpu", tmp_path)
    assert [p.name for _, p in todo] == ["haformer_b0-seed0.json", "haformer_b0-seed1.json"]
    bench.write_json(todo[0][1], fake_run("haformer_b0", 0, 0.3, 0.3))
    todo, done = bench.pending_runs(entries, [0, 1], BUDGET, (192, 256), "cpu", tmp_path)
    assert [p.name for p in done] == ["haformer_b0-seed0.json"] and len(todo) == 1
    with pytest.raises(bench.UsageError, match="other settings"):
        bench.pending_runs(entries, [0], BUDGET, (64, 96), "cpu", tmp_path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "hours=3"], "--budget must be"),
        (["--budget", "minutes=1", "--variants", "no_such"], "unknown variant"),
        (["--budget", "minutes=1", "--models", "resnet9000"], "unknown model"),
        (["--budget", "minutes=1", "--models", "fpn_mobilenet_v2", "--crop", "100x100"], "32"),
        (["--report", "--out", "{tmp}"], "no run results"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path)]
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not list(tmp_path.glob("*.json"))


# ----------------------------------------------------------------------------- end to end


def test_sweep_on_camvid_mini_end_to_end(camvid_mini: Path, tmp_path: Path) -> None:
    """Two runs of haformer_b0 (seeds 0 and 1), two training steps each, as a user runs it."""
    out, scratch = tmp_path / "results", tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "HF_HUB_OFFLINE": "1"}
    package = Path(haformer.__file__).resolve().parents[1]  # the haformer this test imports
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(SCRIPT), "--models", "haformer_b0", "--seeds", "0", "1"]
    cmd += ["--budget", "images=16", "--crop", "64x96", "--jobs", "2", "--out", str(out)]
    cmd += ["--data-root", str(camvid_mini)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 run(s) already" in proc.stdout and "| haformer_b0 |" in proc.stdout

    names = sorted(p.name for p in out.iterdir())
    assert names == ["haformer_b0-seed0.json", "haformer_b0-seed1.json", "summary.json"]
    assert not list(scratch.iterdir()), "the runs' checkpoint folders must be deleted"
    runs = [json.loads((out / n).read_text()) for n in names[:2]]
    for seed, run in enumerate(runs):
        assert run["seed"] == seed and run["budget"] == {"kind": "images", "value": 16.0}
        assert run["images_seen"] >= 16 and run["images_seen"] == 8 * run["steps"]
        assert run["params"] == count_parameters(create_model("haformer_b0"))
        assert 0.0 <= run["test_miou"] <= 1.0 and run["test_images"] == 4
        assert run["best_val_miou"] == max(r["val_miou"] for r in run["history"])
        rows = run["history"]
        assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
        assert all(r["train_seconds"] > 0 for r in rows)
        assert rows[-1]["images_seen"] == run["images_seen"]
        assert str(tmp_path) not in json.dumps(run), "no machine path in a result file"
    assert runs[0]["history"] != runs[1]["history"]  # two seeds, two runs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == ["haformer_b0"] and summary["runs"] == 2
    assert summary["models"]["haformer_b0"]["test_miou"]["values"] == [r["test_miou"] for r in runs]

    before = {n: (out / n).stat().st_mtime_ns for n in names[:2]}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 run(s) already" in again.stdout and "0 to do" in again.stdout
    assert {n: (out / n).stat().st_mtime_ns for n in names[:2]} == before


def test_interrupted_sweep_leaves_no_partial_result(camvid_mini: Path, tmp_path: Path) -> None:
    """Ctrl-C in the middle of a run: exit 130, a one-line hint, no JSON, no checkpoint left."""
    out, scratch = tmp_path / "results", tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "HF_HUB_OFFLINE": "1"}
    package = Path(haformer.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(SCRIPT), "--models", "haformer_b0", "--seeds", "0"]
    cmd += ["--budget", "minutes=5", "--crop", "64x96", "--out", str(out)]
    cmd += ["--data-root", str(camvid_mini)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # wait until the run trains (its checkpoint folder exists)
        if "epoch 1/" in line:
            break
    assert list(scratch.iterdir()), "the run should be training in its temporary folder"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command to go on" in err
    assert not out.exists() or not list(out.glob("*.json"))
    assert not list(scratch.iterdir()), "the interrupted run's temporary folder must be deleted"
