"""Copy the repository URL from ``_config.yml`` to every place that needs it.

``_config.yml`` (``repository.url`` and ``repository.branch``) is the only place where the URL is
written by hand. This script generates from it:

- the Colab setup cell of every ``book/*.ipynb``: the first code cell, tagged ``colab-setup``,
  placed right after the title cell. On Colab it installs the package from GitHub without
  touching Colab's torch and says whether a GPU is there; anywhere else it does nothing. It is
  also tagged ``hide-input``, so the built book collapses its code (Colab ignores the tag).
- ``haformer/_repository.py``: the URL and branch the package downloads shipped weights from
  (``haformer.pretrained``).
- the README blocks between ``<!-- colab-badge -->`` and ``<!-- /colab-badge -->`` (an "Open in
  Colab" badge) and between ``<!-- git-clone -->`` and ``<!-- /git-clone -->`` (the clone
  command), when the README has those markers.

Usage: ``python scripts/sync_repo_url.py`` rewrites what disagrees; ``--check`` changes nothing,
lists the files that disagree and exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
SETUP_TAG = "colab-setup"
SETUP_TAGS = [SETUP_TAG, "hide-input"]  # hide-input: collapsed in the HTML, unchanged on Colab
FIRST_CHAPTER = "book/01_introduction.ipynb"

SETUP_TEMPLATE = """\
# Colab setup (generated from _config.yml by scripts/sync_repo_url.py; do not edit by hand).
# On Colab: install the haformer package, keeping Colab's own torch. Elsewhere: nothing.
import subprocess
import sys
from importlib.metadata import version

try:
    import google.colab  # noqa: F401  (importable only on Colab)

    ON_COLAB = True
except ImportError:
    ON_COLAB = False

if ON_COLAB:
    with open("/tmp/torch-constraints.txt", "w") as f:  # pip must keep Colab's CUDA torch
        f.writelines(f"{name}=={version(name)}\\n" for name in ("torch", "torchvision"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "-c", "/tmp/torch-constraints.txt"]
    subprocess.run([*pip, "git+{url}@{branch}"], check=True)
    import torch

    if torch.cuda.is_available():
        print("GPU found:", torch.cuda.get_device_name(0))
    else:
        print("No GPU: Runtime > Change runtime type > a GPU (e.g. T4), then run again.")
else:
    print("Not on Colab: setup skipped.")"""


def read_repository(config: Path) -> tuple[str, str]:
    """Return ``(url, branch)`` from the ``repository`` section of the book's ``_config.yml``."""
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    repo = data.get("repository") or {}
    url, branch = str(repo.get("url", "")).rstrip("/"), str(repo.get("branch", ""))
    if not url.startswith("https://github.com/") or not branch:
        raise ValueError(
            f"{config}: expected repository.url = https://github.com/OWNER/NAME and "
            f"repository.branch set; got url={url!r}, branch={branch!r}"
        )
    return url, branch


def setup_source(url: str, branch: str) -> str:
    """The code of the Colab setup cell for this repository and branch."""
    return SETUP_TEMPLATE.replace("{url}", url).replace("{branch}", branch)


def readme_blocks(url: str, branch: str) -> dict[str, str]:
    """Generated README block contents, by marker name."""
    colab = (
        f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}"
        f"/blob/{branch}/{FIRST_CHAPTER}"
    )
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})"
    clone = f"```bash\ngit clone {url}.git\ncd {url.rsplit('/', 1)[-1]}\n```"
    return {"colab-badge": badge, "git-clone": clone}


REPOSITORY_MODULE = "haformer/_repository.py"
REPOSITORY_TEMPLATE = '''"""Where the book's repository lives.

Generated from _config.yml by scripts/sync_repo_url.py: edit _config.yml, then run the script.
"""

REPO_URL = "{url}"
BRANCH = "{branch}"
'''


def repository_module(url: str, branch: str) -> str:
    """The source of ``haformer/_repository.py`` for this repository and branch."""
    return REPOSITORY_TEMPLATE.replace("{url}", url).replace("{branch}", branch)


def sync_notebook(path: Path, source: str, *, write: bool) -> bool:
    """Put the setup cell right after the title cell of ``path``; True if that changed it.

    An existing tagged cell keeps its id and outputs; a missing one is created (unexecuted).
    The file is rewritten only if ``write`` and something changed. Raises ValueError if the
    notebook does not start with a markdown cell.
    """
    original = nbformat.read(path, as_version=4)
    nb = copy.deepcopy(original)
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        raise ValueError(f"{path}: the first cell must be the '# Title' markdown cell")
    tagged = [c for c in nb.cells if SETUP_TAG in c.metadata.get("tags", [])]
    nb.cells = [c for c in nb.cells if SETUP_TAG not in c.metadata.get("tags", [])]
    cell = tagged[0] if tagged and tagged[0].cell_type == "code" else nbformat.v4.new_code_cell()
    cell.source = source
    cell.metadata["tags"] = list(SETUP_TAGS)
    nb.cells.insert(1, cell)
    if nb == original:
        return False
    if write:
        nbformat.write(nb, path)
    return True


def sync_readme(text: str, blocks: dict[str, str]) -> str:
    """Replace the content of each ``<!-- NAME -->...<!-- /NAME -->`` block present in ``text``."""
    for name, content in blocks.items():
        pattern = re.compile(rf"(<!-- {name} -->)(\s*)(.*?)(\s*)(<!-- /{name} -->)", re.DOTALL)
        text = pattern.sub(lambda m, c=content: m[1] + m[2] + c + m[4] + m[5], text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing, exit 1 on drift")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    root: Path = args.root
    url, branch = read_repository(root / "_config.yml")
    source = setup_source(url, branch)

    stale, broken = [], []
    for path in sorted((root / "book").glob("*.ipynb")):
        try:
            if sync_notebook(path, source, write=not args.check):
                stale.append(str(path.relative_to(root)))
        except ValueError as err:
            broken.append(str(err))

    module = root / REPOSITORY_MODULE
    expected = repository_module(url, branch)
    if not module.is_file() or module.read_text(encoding="utf-8") != expected:
        stale.append(REPOSITORY_MODULE)
        if not args.check:
            module.write_text(expected, encoding="utf-8")

    readme = root / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        new = sync_readme(text, readme_blocks(url, branch))
        if new != text:
            stale.append("README.md")
            if not args.check:
                readme.write_text(new, encoding="utf-8")

    verb = "disagree with _config.yml (run scripts/sync_repo_url.py)" if args.check else "updated"
    for name in stale:
        print(f"{name}: {verb}")
    for message in broken:
        print(message)
    if not stale and not broken:
        print(f"all in sync with {url}@{branch}")
    return 1 if broken or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
