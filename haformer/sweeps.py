"""The equal-budget sweeps of ``benchmarks/bench_budget.py``, as book chapters 12 and 13 read them.

A sweep trains several models (or ablation variants) for the same CPU budget with several seeds
and leaves ``benchmarks/results/<folder>/summary.json``. :func:`saved_summary` reads that file
from this checkout or, where the package was pip-installed from GitHub (Colab), from the commit
it was installed from. :func:`run_sweep` runs the benchmark itself (a checkout only), into a
temporary folder: the chapters' smoke mode runs a toy sweep of a few seconds this way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS_DIR", "installed_commit_url", "run_sweep", "saved_summary"]

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
"""``benchmarks/`` of the checkout this package runs from (absent in a pip install)."""
DOWNLOAD_TIMEOUT_S = 60.0


def installed_commit_url() -> str | None:
    """``https://raw.githubusercontent.com/<owner>/<repo>/<commit>`` of a package pip-installed
    from GitHub (pip records the commit in ``direct_url.json``), else None."""
    try:
        record = distribution("haformer").read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    origin = json.loads(record or "{}")
    url, commit = origin.get("url", ""), origin.get("vcs_info", {}).get("commit_id")
    if not url.startswith("https://github.com/") or not commit:
        return None
    repo = url.removesuffix(".git").removeprefix("https://github.com/")
    return f"https://raw.githubusercontent.com/{repo}/{commit}"


def saved_summary(folder: str, benchmarks_dir: Path = BENCHMARKS_DIR) -> dict[str, Any]:
    """``benchmarks/results/<folder>/summary.json``: of this checkout, else of the commit the
    package was installed from. Raises FileNotFoundError when neither has it."""
    local = benchmarks_dir / "results" / folder / "summary.json"
    if local.is_file():
        return json.loads(local.read_text(encoding="utf-8"))
    base = installed_commit_url()
    if base is None:
        raise FileNotFoundError(
            f"{local} not found and the package was not installed from GitHub: "
            "run this from a clone of the repository, or run benchmarks/bench_budget.py"
        )
    url = f"{base}/benchmarks/results/{folder}/summary.json"
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return json.load(response)


def run_sweep(args: Sequence[str], benchmarks_dir: Path = BENCHMARKS_DIR) -> dict[str, Any]:
    """Run ``bench_budget.py args`` into a temporary folder and return its summary.

    Raises FileNotFoundError outside a checkout and RuntimeError (with the end of the
    benchmark's output) when it fails.
    """
    script = benchmarks_dir / "bench_budget.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: running a sweep needs a clone of the repo")
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as out:
        cmd = [sys.executable, str(script), *args, "--out", out, "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"bench_budget.py failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        return json.loads((Path(out) / "summary.json").read_text(encoding="utf-8"))
