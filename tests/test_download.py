"""`factgpt data download`, offline, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from factgpt import download as dl
from factgpt.cli import main

from conftest import one_clear_line, run


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep stderr for factgpt's own message
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fake_files(monkeypatch, server):
    root, url = server
    contents = {name: f"contents of {name}\n".encode() for name in dl.FILES}
    for name, data in contents.items():
        (root / name).write_bytes(data)
    monkeypatch.setattr(dl, "FILES", {n: dl.sha256(d) for n, d in contents.items()})
    return root, url, contents


def test_download_checks_sums_and_writes(fake_files, tmp_path, capsys):
    root, url, contents = fake_files
    dest = tmp_path / "data"
    assert main(["data", "download", "--dest", str(dest), "--base-url", url]) == 0
    for name, data in contents.items():
        assert (dest / name).read_bytes() == data
    assert dl.have_data(dest)
    assert dl.download(dest, url) == []  # all present and right: nothing fetched again


def test_corrupted_file_is_refused_and_nothing_left(fake_files, tmp_path, capsys):
    root, url, _ = fake_files
    (root / "birth_dev.tsv").write_bytes(b"tampered\n")
    dest = tmp_path / "data"
    one_clear_line(*run(["data", "download", "--dest", dest, "--base-url", url], capsys)[::2],
                   "birth_dev.tsv", "SHA-256 mismatch")
    assert not (dest / "birth_dev.tsv").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary left


def test_missing_file_is_a_clear_error(fake_files, tmp_path, capsys):
    root, url, _ = fake_files
    (root / "wiki.txt").unlink()
    assert main(["data", "download", "--dest", str(tmp_path / "d"), "--base-url", url]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_published_sums_match_the_shared_data():
    from conftest import DATA
    if not DATA.exists():
        pytest.skip("no shared data")
    assert dl.have_data(DATA)


def test_a_base_url_without_a_scheme_is_one_clear_line(tmp_path, capsys):
    one_clear_line(*run(["data", "download", "--dest", tmp_path / "d", "--base-url", "mirror/a5"], capsys)[::2],
                   "mirror/a5", "no scheme")
