"""Fetching sources: checksum-verified downloads from a local HTTP server (no network), retries of corrupt or
truncated downloads with no partial file left, the mirror read path, and safe archive extraction."""
from __future__ import annotations

import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import yaml

from pipeline import config
from pipeline.data import fetch
from pipeline.data.fetch import DataError

GOOD = b"the real file content\n" * 50
FILE = "ptb.train.txt"  # an existing source name, so the dataset section stays valid


class Server:
    """A bounded HTTP server on 127.0.0.1 serving a queue of responses for one path (the last one repeats)."""

    def __init__(self):
        self.responses: list[tuple[bytes, int | None]] = []  # (body, declared Content-Length or None)
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                owner.requests += 1
                body, length = owner.responses[min(owner.requests, len(owner.responses)) - 1]
                self.send_response(200)
                self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                self.wfile.write(body)  # a declared length above len(body) makes a truncated download
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{FILE}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never route the local server through a proxy
    monkeypatch.setattr(fetch, "DOWNLOAD_TIMEOUT_S", 5)
    s = Server()
    yield s
    s.close()


def params_for(raw, tmp_path, url, known_hash, retries=2, mirror=None):
    raw["data"]["root"] = str(tmp_path / "data")
    raw["data"]["mirror"] = str(mirror) if mirror else None
    raw["data"]["download_retries"] = retries
    raw["data"]["sources"][FILE] = {"url": url, "hash": known_hash}
    return config.validate(raw, "quick")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def raw_files(p) -> list[str]:
    """Files in data/raw other than the download lock."""
    d = fetch.raw_dir(p)
    return sorted(f.name for f in d.iterdir() if not f.name.endswith(".lock")) if d.exists() else []


@pytest.fixture(autouse=True)
def no_env_mirror(monkeypatch):
    monkeypatch.delenv("PIPELINE_DATA_MIRROR", raising=False)


# ---- downloads ---------------------------------------------------------------------------------------------------
def test_download_is_verified_and_then_reused(server, raw_params, tmp_path):
    server.responses = [(GOOD, None)]
    p = params_for(raw_params, tmp_path, server.url, sha256(GOOD))
    path = fetch.fetch(p, FILE)
    assert path == fetch.raw_dir(p).resolve() / FILE and path.read_bytes() == GOOD
    assert fetch.fetch(p, FILE) == path and server.requests == 1  # the verified file is not fetched again


def test_corrupt_download_is_reported_and_fetched_again(server, raw_params, tmp_path, capsys):
    server.responses = [(b"corrupted" + GOOD[9:], None), (GOOD, None)]
    p = params_for(raw_params, tmp_path, server.url, sha256(GOOD), retries=2)
    assert fetch.fetch(p, FILE).read_bytes() == GOOD
    assert server.requests == 2
    assert f"download {FILE} attempt 1/3 failed" in capsys.readouterr().err


def test_truncated_download_is_fetched_again(server, raw_params, tmp_path):
    server.responses = [(GOOD[:100], len(GOOD)), (GOOD, None)]
    p = params_for(raw_params, tmp_path, server.url, sha256(GOOD), retries=1)
    assert fetch.fetch(p, FILE).read_bytes() == GOOD and server.requests == 2


def test_checksum_mismatch_fails_and_leaves_no_partial_file(server, raw_params, tmp_path):
    server.responses = [(GOOD[:-1] + b"!", None)]
    p = params_for(raw_params, tmp_path, server.url, sha256(GOOD), retries=1)
    with pytest.raises(DataError) as info:
        fetch.fetch(p, FILE)
    assert FILE in str(info.value) and "2 attempt(s)" in str(info.value) and "\n" not in str(info.value)
    assert server.requests == 2
    assert raw_files(p) == []  # neither the final name nor a temporary file is left behind


def test_a_corrupt_file_already_on_disk_is_replaced(server, raw_params, tmp_path):
    server.responses = [(GOOD, None)]
    p = params_for(raw_params, tmp_path, server.url, sha256(GOOD))
    fetch.raw_dir(p).mkdir(parents=True)
    (fetch.raw_dir(p) / FILE).write_bytes(GOOD[:10])  # e.g. a copy truncated by a full disk
    assert fetch.fetch(p, FILE).read_bytes() == GOOD and server.requests == 1


# ---- mirror ------------------------------------------------------------------------------------------------------
def test_mirror_is_read_in_place_and_verified(raw_params, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / FILE).write_bytes(GOOD)
    md5 = "md5:" + hashlib.md5(GOOD).hexdigest()
    # an unreachable URL: the mirror must not touch the network
    p = params_for(raw_params, tmp_path, "http://127.0.0.1:9/none", md5)
    monkeypatch.setenv("PIPELINE_DATA_MIRROR", str(mirror))
    assert fetch.fetch(p, FILE) == mirror / FILE
    assert not fetch.raw_dir(p).exists()


def test_mirror_from_params_with_a_missing_file(raw_params, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    p = params_for(raw_params, tmp_path, "http://127.0.0.1:9/none", sha256(GOOD), mirror=mirror)
    with pytest.raises(DataError, match=f"{FILE}: not found in data mirror {mirror} "):
        fetch.fetch(p, FILE)


def test_mirror_root_with_a_folder_per_dataset(raw_params, tmp_path):
    """A mirror root such as datasets/ (holding ptb/ptb.train.txt ...) is searched one folder deep; two copies of a
    name are refused as ambiguous rather than one picked silently."""
    mirror = tmp_path / "datasets"
    (mirror / "ptb").mkdir(parents=True)
    (mirror / "ptb" / FILE).write_bytes(GOOD)
    p = params_for(raw_params, tmp_path, "http://127.0.0.1:9/none", sha256(GOOD), mirror=mirror)
    assert fetch.fetch(p, FILE) == mirror / "ptb" / FILE
    (mirror / "other").mkdir()
    (mirror / "other" / FILE).write_bytes(GOOD)
    with pytest.raises(DataError, match=f"{FILE}: ambiguous in data mirror"):
        fetch.fetch(p, FILE)


def test_cli_reports_missing_data_in_one_line(raw_params, tmp_path, root):
    """A stage that cannot get its data says which file and where in one line, exit code 2, no traceback."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    raw_params.update(profile="quick")
    raw_params["data"]["mirror"] = str(mirror)
    raw_params["data"]["root"] = str(tmp_path / "data")  # nothing of the repository's data/ is read or written
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw_params))
    out = subprocess.run([sys.executable, "-m", "pipeline", "prepare", "ptb", "--out", str(tmp_path / "ptb"),
                          "--params", str(params)], capture_output=True, text=True, cwd=root,
                         env={"PATH": "/usr/bin:/bin", "PIPELINE_THREADS": "1"})
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ptb.") and f"not found in data mirror {mirror}" in lines[0]
    assert not (tmp_path / "ptb").exists() and not (tmp_path / "data" / "raw" / FILE).exists()


def test_mirror_file_with_a_wrong_checksum(raw_params, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / FILE).write_bytes(GOOD + b"extra")
    p = params_for(raw_params, tmp_path, "http://127.0.0.1:9/none", sha256(GOOD), mirror=mirror)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch.fetch(p, FILE)


# ---- archives ----------------------------------------------------------------------------------------------------
def make_tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            data = b"payload" if info.isfile() else None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind=tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil-absolute.txt"])
def test_archive_member_outside_the_destination_is_refused(tmp_path, name):
    archive = make_tar(tmp_path / "bad.tar.gz", [member("ok/fine.txt"), member(name)])
    dest = tmp_path / "out" / "inner"
    with pytest.raises(DataError) as info:
        fetch.safe_extract(archive, dest)
    assert str(info.value) == f"bad.tar.gz: refusing archive member {name!r} (absolute path or '..')"
    assert not (tmp_path / "out" / "evil.txt").exists() and not (dest / "ok").exists()  # refused before writing


def test_archive_link_pointing_outside_is_refused(tmp_path):
    archive = make_tar(tmp_path / "link.tar.gz", [member("data/passwd", tarfile.SYMTYPE, "/etc/passwd")])
    with pytest.raises(DataError, match="link.tar.gz: refusing archive member 'data/passwd'"):
        fetch.safe_extract(archive, tmp_path / "out")


def test_safe_archive_extracts(tmp_path):
    archive = make_tar(tmp_path / "good.tar.gz", [member("top/a.txt"), member("top/sub/b.txt")])
    fetch.safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/top/sub/b.txt").read_bytes() == b"payload"
