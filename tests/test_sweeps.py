"""haformer.sweeps: the chapters read saved sweeps from a checkout or the installed commit,
and run toy sweeps through the benchmark script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from haformer import sweeps

SUMMARY = {"runs": 3, "models": {"haformer_b0": {}}, "budget": {"kind": "minutes", "value": 3.0}}


def _write_summary(root: Path, folder: str) -> None:
    path = root / "results" / folder / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(SUMMARY), encoding="utf-8")


def test_saved_summary_of_the_checkout(tmp_path: Path) -> None:
    _write_summary(tmp_path, "budget-minutes-3")
    assert sweeps.saved_summary("budget-minutes-3", tmp_path) == SUMMARY


def test_saved_summary_of_the_installed_commit(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_summary(tmp_path / "served" / "benchmarks", "budget-minutes-3")
    monkeypatch.setattr(sweeps, "installed_commit_url", lambda: server)
    assert sweeps.saved_summary("budget-minutes-3", tmp_path / "nothing") == SUMMARY


def test_no_summary_anywhere_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeps, "installed_commit_url", lambda: None)
    with pytest.raises(FileNotFoundError, match="clone of the repository"):
        sweeps.saved_summary("budget-minutes-3", tmp_path)


def test_installed_commit_url_reads_pips_record(monkeypatch: pytest.MonkeyPatch) -> None:
    record = {"url": "https://github.com/owner/repo.git", "vcs_info": {"commit_id": "abc123"}}

    class Dist:
        def read_text(self, name: str) -> str | None:
            return json.dumps(record) if name == "direct_url.json" else None

    monkeypatch.setattr(sweeps, "distribution", lambda name: Dist())
    assert sweeps.installed_commit_url() == "https://raw.githubusercontent.com/owner/repo/abc123"
    record["url"] = "file:///home/me/haformer"  # an editable or local install: no commit URL
    assert sweeps.installed_commit_url() is None


def _script(root: Path, body: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "bench_budget.py").write_text(body, encoding="utf-8")


def test_run_sweep_passes_its_arguments_and_returns_the_summary(tmp_path: Path) -> None:
    _script(
        tmp_path,
        "import json, sys, pathlib\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1])\n"
        "(out / 'summary.json').write_text(json.dumps({'argv': sys.argv[1:]}))\n",
    )
    got = sweeps.run_sweep(["--budget", "minutes=0.02"], tmp_path)
    assert got["argv"][:2] == ["--budget", "minutes=0.02"] and got["argv"][-1] == "--quiet"


def test_run_sweep_failure_shows_the_benchmarks_output(tmp_path: Path) -> None:
    _script(tmp_path, "import sys\nprint('error: no CamVid here', file=sys.stderr)\nsys.exit(2)\n")
    with pytest.raises(RuntimeError, match=r"exit 2\):\n.*no CamVid here"):
        sweeps.run_sweep([], tmp_path)


def test_run_sweep_outside_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="clone of the repo"):
        sweeps.run_sweep([], tmp_path)


def test_the_checkout_has_the_benchmark() -> None:
    assert (sweeps.BENCHMARKS_DIR / "bench_budget.py").is_file()
