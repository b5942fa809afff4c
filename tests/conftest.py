"""Shared test setup: offline hub, deterministic seeds, the CamVid fixtures, a local server."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest
import torch
from book_build import Build, build_book

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread per test process: pytest-xdist runs two workers on CI's two cores, and two
# threads per worker made the suite about five times slower there (oversubscription).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: these tests need the shared CamVid copy beside the repo")
    return path


@pytest.fixture(scope="session")
def camvid_mini() -> Path:
    """The 8/4/4-pair CamVid fixture ($CAMVID_ROOT if it points at a mini copy)."""
    env = os.environ.get("CAMVID_ROOT")
    if env and Path(env).name == "camvid-mini" and Path(env).is_dir():
        return Path(env)
    return _dataset("camvid-mini")


@pytest.fixture(scope="session")
def camvid_full() -> Path:
    """The full SegNet CamVid copy (367/101/233 pairs)."""
    return _dataset("camvid")


@pytest.fixture(scope="session")
def book(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The book built once per session into a temporary folder (tests/book_build.py)."""
    return build_book(tmp_path_factory.mktemp("book"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def server(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/served``; yields its base URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "served"), **kwargs)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
