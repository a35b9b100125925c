"""`bench data fetch / verify / info` against a small HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

import irbench.datasets as ds
from irbench.cli.main import cli
from irbench.datasets import catalog, manage
from irbench.datasets.storage import (
    Package,
    Source,
    download,
    extract,
    install_source,
    installed,
    marker,
)
from irbench.errors import DatasetError
from tests.placeholders import jpeg_bytes


class Server:
    """Serves `files` with HTTP Range support; `cut[name] = n` drops the connection after
    n bytes of the next full response (once)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                limit = server.cut.pop(name, None)
                self.wfile.write(body if limit is None else body[:limit])
                self.wfile.flush()
                if limit is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _holidays_tar(n_groups: int = 3, corrupt: str | None = None) -> bytes:
    files = {}
    for g in range(n_groups):
        for k in range(2):
            name = f"{100000 + 100 * g + k}"
            data = jpeg_bytes(10 * g + k)
            files[f"jpg/{name}.jpg"] = data[: len(data) // 2] if name == corrupt else data
    return _tar(files)


@pytest.fixture
def local_holidays(server, monkeypatch):
    """The `holidays` package (the files as distributed) and `holidays-upright` (the
    default copy; the dataset `holidays` fetches both) served by the test server."""
    server.files["jpg1.tar.gz"] = _holidays_tar()
    server.files["holidays_rotated.tar.gz"] = _holidays_tar()
    pkg = dataclasses.replace(catalog.PACKAGES["holidays"], sources=(
        Source("jpg1.tar.gz", (server.url("missing/jpg1.tar.gz"), server.url("jpg1.tar.gz")),
               extract_to="jpg", flatten=True, keep=(".jpg",)),))
    monkeypatch.setitem(catalog.PACKAGES, "holidays", pkg)
    upright = dataclasses.replace(catalog.PACKAGES["holidays-upright"], sources=(
        Source("holidays_rotated.tar.gz", (server.url("holidays_rotated.tar.gz"),),
               extract_to="jpg_upright", flatten=True, keep=(".jpg",)),))
    monkeypatch.setitem(catalog.PACKAGES, "holidays-upright", upright)
    return pkg


def test_interrupted_download_resumes(server, tmp_path):
    data = bytes(range(256)) * 4000
    server.files["big.bin"] = data
    server.cut["big.bin"] = 300_000
    target = tmp_path / "big.bin"
    with pytest.raises(DatasetError, match="partial file"):
        download(server.url("big.bin"), target, retries=0)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 300_000 and not target.exists()
    download(server.url("big.bin"), target)
    assert target.read_bytes() == data and not part.exists()
    assert server.ranges[-1] == "bytes=300000-"


def test_download_retries_within_one_call(server, tmp_path):
    server.files["f.bin"] = b"x" * 100_000
    server.cut["f.bin"] = 1000
    download(server.url("f.bin"), tmp_path / "f.bin", retries=2)
    assert (tmp_path / "f.bin").read_bytes() == b"x" * 100_000
    assert server.ranges == [None, "bytes=1000-"]


def test_published_checksum_mismatch_is_refused(server, tmp_path):
    server.files["a.tar.gz"] = _tar({"x.txt": b"hello"})
    pkg = Package("p", "p", "", (Source("a.tar.gz", (server.url("a.tar.gz"),),
                                        sha256="0" * 64),), layout="p/x.txt", homepage="")
    with pytest.raises(DatasetError, match="does not match the published"):
        install_source(pkg, tmp_path, pkg.sources[0])
    with pytest.raises(DatasetError, match="does not match the published"):
        install_source(pkg, tmp_path, pkg.sources[0], force=True)  # --force never skips it
    assert not installed(pkg, tmp_path)
    assert not (tmp_path / "p" / "x.txt").exists()
    assert not list((tmp_path / "p").rglob("a.tar.gz*"))  # the bad file is not kept


def test_recorded_checksum_is_checked_on_later_downloads(server, tmp_path):
    server.files["a.tar.gz"] = _tar({"x.txt": b"hello"})
    src = Source("a.tar.gz", (server.url("a.tar.gz"),))
    pkg = Package("p", "p", "", (src,), layout="p/x.txt", homepage="")
    install_source(pkg, tmp_path, src)
    record = json.loads((tmp_path / "p" / ".irbench" / "checksums.json").read_text())
    assert record["a.tar.gz"]["sha256"] == hashlib.sha256(server.files["a.tar.gz"]).hexdigest()
    assert (tmp_path / "p" / "x.txt").read_bytes() == b"hello"
    server.files["a.tar.gz"] = _tar({"x.txt": b"tampered"})
    marker(pkg, tmp_path, src).unlink()  # not installed any more: fetched again
    with pytest.raises(DatasetError, match="differs from .* recorded at the first download"
                                           ".*--force"):
        install_source(pkg, tmp_path, src)
    assert (tmp_path / "p" / "x.txt").read_bytes() == b"hello"


def test_extract_refuses_paths_outside(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tar({"../escape.txt": b"x"}))
    with pytest.raises(DatasetError, match="outside the archive"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_fetch_then_load_through_the_cli(local_holidays, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "fetch", "holidays", "--data-root", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "holidays-upright: holidays_rotated.tar.gz: extracted 6 files" in result.output
    assert "holidays: jpg1.tar.gz: extracted 6 files" in result.output  # both copies
    d = ds.load("holidays", root=tmp_path)
    assert len(d.database) == 6 and len(d.queries) == 3 and d.root.name == "jpg_upright"
    assert len(ds.load("holidays", root=tmp_path, orientation="original").database) == 6
    again = runner.invoke(cli, ["data", "fetch", "holidays", "--data-root", str(tmp_path), "-q"])
    assert "already installed" in again.output
    info = runner.invoke(cli, ["data", "info", "holidays", "--data-root", str(tmp_path)])
    assert info.exit_code == 0 and "holidays: ready" in info.output
    assert "6 database images, 3 queries" in info.output
    assert "turned by 90 degrees" not in info.output
    # the dataset's own notes on its files: an image its upright copy turns
    from tests.placeholders import jpeg_bytes

    (tmp_path / "holidays" / "jpg_upright" / "100101.jpg").write_bytes(
        jpeg_bytes(11, width=72, height=96))
    info = runner.invoke(cli, ["data", "info", "holidays", "--data-root", str(tmp_path)])
    assert "1 image(s) turned by 90 degrees in the upright copy: 100101" in info.output


def test_fetch_from_an_archive_you_have(local_holidays, tmp_path, server):
    archive = tmp_path / "dl" / "jpg1.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(server.files["jpg1.tar.gz"])
    server.files.clear()  # no network needed
    report = manage.fetch("holidays", tmp_path / "data", from_path=archive)
    assert "extracted 6 files" in report[0]
    assert len(ds.load("holidays", root=tmp_path / "data", orientation="original").queries) == 3
    assert archive.exists()  # the user's file is left alone
    archive.write_bytes(_holidays_tar(n_groups=2))  # not the file recorded the first time
    report = manage.fetch("holidays", tmp_path / "data", from_path=archive)
    assert "already installed" in report[0]
    report = manage.fetch("holidays", tmp_path / "data", from_path=archive, force=True)
    assert "extracted 4 files" in report[0]
    assert archive.exists()


def test_fetch_from_an_extracted_folder_links_it(tmp_path):
    src = tmp_path / "mine" / "ukbench"
    for i in range(4):
        (src / "full").mkdir(parents=True, exist_ok=True)
        (src / "full" / f"ukbench{i:05d}.jpg").write_bytes(jpeg_bytes(i))
    report = manage.fetch("ukbench", tmp_path / "data", from_path=src)
    assert "linked" in report[0]
    assert len(ds.load("ukbench", root=tmp_path / "data").queries) == 4
    with pytest.raises(DatasetError, match="missing gnd_instre.mat"):
        manage.fetch("instre", tmp_path / "data", from_path=tmp_path / "mine")


def test_fetch_of_a_manual_package_explains(tmp_path):
    with pytest.raises(DatasetError, match="flickr100k.html"):
        manage.fetch("oxford105k", tmp_path)


def test_flickr_parts_import(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "oxc1_100k_a.tgz").write_bytes(_tar({"a/1.jpg": jpeg_bytes(1)}))
    (parts / "oxc1_100k_b.tgz").write_bytes(_tar({"b/2.jpg": jpeg_bytes(2)}))
    report = manage.fetch("flickr100k", tmp_path / "data", from_path=parts)
    assert "extracted 2 images from 2 archive(s)" in report[0]
    assert sorted(p.name for p in (tmp_path / "data" / "flickr100k" / "jpg").rglob("*.jpg")) \
        == ["1.jpg", "2.jpg"]


def test_verify_and_info_name_a_truncated_jpeg(server, local_holidays, tmp_path):
    # the images checked are those the dataset reads by default: the upright copy
    server.files["holidays_rotated.tar.gz"] = _holidays_tar(corrupt="100101")
    manage.fetch("holidays", tmp_path)
    report = manage.verify("holidays", tmp_path)
    assert not report.ok
    assert len(report.corrupt) == 1 and "100101.jpg: truncated JPEG" in report.corrupt[0]
    assert "jpg_upright" in report.corrupt[0]
    assert report.counts["holidays"] == report.counts["holidays-upright"] == (6, 1491)
    runner = CliRunner()
    out = runner.invoke(cli, ["data", "verify", "holidays", "--data-root", str(tmp_path), "-q"])
    assert out.exit_code == 1 and "100101.jpg" in out.output and "NOT OK" in out.output
    info = runner.invoke(cli, ["data", "info", "holidays", "--data-root", str(tmp_path)])
    assert "100101.jpg: truncated JPEG" in info.output


def test_verify_lists_missing_images(tmp_path):
    for i in range(8):
        (tmp_path / "ukbench" / "full").mkdir(parents=True, exist_ok=True)
        (tmp_path / "ukbench" / "full" / f"ukbench{i:05d}.jpg").write_bytes(jpeg_bytes(i))
    assert manage.verify("ukbench", tmp_path).corrupt == []
    (tmp_path / "ukbench" / "full" / "ukbench00002.jpg").unlink()
    report = manage.verify("ukbench", tmp_path)
    assert any("ukbench00002.jpg" in p for p in report.problems)


# -- a checksum is recorded only for a file that unpacked; broken archives --------------------

@pytest.fixture
def irbench_warnings(caplog, monkeypatch):
    """Warnings of irbench's loggers (the CLI stops them from propagating to the root)."""
    monkeypatch.setattr(logging.getLogger("irbench"), "propagate", True)
    caplog.set_level(logging.WARNING)
    return caplog


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _leftovers(pkg_dir) -> list:
    """Anything an import that failed may have left: staging folders, markers, checksums."""
    return sorted(p.relative_to(pkg_dir).as_posix() for p in pkg_dir.rglob("*")) \
        if pkg_dir.exists() else []


def test_bad_archive_then_good_archive_imports(local_holidays, tmp_path, server):
    good = server.files["jpg1.tar.gz"]
    bad = tmp_path / "bad" / "jpg1.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(_half(good))
    data = tmp_path / "data"
    with pytest.raises(DatasetError, match="truncated"):
        manage.fetch("holidays", data, from_path=bad)
    assert not (data / "holidays").exists()  # no checksum, marker, staging or empty folder
    fine = tmp_path / "good" / "jpg1.tar.gz"
    fine.parent.mkdir()
    fine.write_bytes(good)
    report = manage.fetch("holidays", data, from_path=fine)
    assert "extracted 6 files" in report[0]
    record = json.loads((data / "holidays" / ".irbench" / "checksums.json").read_text())
    assert record["jpg1.tar.gz"]["sha256"] == hashlib.sha256(good).hexdigest()
    assert record["jpg1.tar.gz"]["origin"] == str(fine)
    assert len(ds.load("holidays", root=data, orientation="original").database) == 6


def test_a_download_that_does_not_unpack_is_neither_recorded_nor_kept(server, tmp_path):
    good = _tar({"x.txt": b"hello"})
    server.files["a.tar.gz"] = _half(good)
    src = Source("a.tar.gz", (server.url("a.tar.gz"),))
    pkg = Package("p", "p", "", (src,), layout="p/x.txt", homepage="")
    with pytest.raises(DatasetError, match=r"a\.tar\.gz: truncated"):
        install_source(pkg, tmp_path, src)
    assert _leftovers(tmp_path / "p") == [".irbench", ".irbench/downloads"]
    server.files["a.tar.gz"] = good  # the server's copy is fixed: the next fetch works
    install_source(pkg, tmp_path, src)
    assert (tmp_path / "p" / "x.txt").read_bytes() == b"hello" and installed(pkg, tmp_path)


def test_force_discards_a_recorded_checksum_with_a_warning(local_holidays, tmp_path, server,
                                                           irbench_warnings):
    archive = tmp_path / "dl" / "jpg1.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(server.files["jpg1.tar.gz"])
    data = tmp_path / "data"
    manage.fetch("holidays", data, from_path=archive)
    old = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert not irbench_warnings.records
    archive.write_bytes(_holidays_tar(n_groups=2))
    new = hashlib.sha256(archive.read_bytes()).hexdigest()
    report = manage.fetch("holidays", data, from_path=archive, force=True)
    assert "extracted 4 files" in report[0]
    warnings = [r.getMessage() for r in irbench_warnings.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "jpg1.tar.gz" in warnings[0] and old in warnings[0]
    record = json.loads((data / "holidays" / ".irbench" / "checksums.json").read_text())
    assert record["jpg1.tar.gz"]["sha256"] == new
    # a --force whose file does not unpack keeps what was installed and recorded
    archive.write_bytes(_half(_holidays_tar(n_groups=3)))
    with pytest.raises(DatasetError, match="truncated"):
        manage.fetch("holidays", data, from_path=archive, force=True)
    record = json.loads((data / "holidays" / ".irbench" / "checksums.json").read_text())
    assert record["jpg1.tar.gz"]["sha256"] == new and installed(local_holidays, data)


def test_truncated_tgz_is_a_clear_error(tmp_path):
    archive = tmp_path / "jpg1.tar.gz"
    archive.write_bytes(_half(_holidays_tar()))
    with pytest.raises(DatasetError) as err:
        extract(archive, tmp_path / "out" / "jpg")
    assert str(archive) in str(err.value) and "truncated" in str(err.value)
    assert not (tmp_path / "out" / "jpg").exists()
    assert not (tmp_path / "out").exists()  # no staging folder, nor an empty one


def test_truncated_tgz_through_the_cli(local_holidays, tmp_path, server):
    archive = tmp_path / "dl" / "jpg1.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(_half(server.files["jpg1.tar.gz"]))
    result = CliRunner().invoke(cli, ["data", "fetch", "holidays", "--from", str(archive),
                                      "--data-root", str(tmp_path / "data"), "-q"])
    assert result.exit_code == 2, result.output
    assert "Aborted!" not in result.output and "Traceback" not in result.output
    assert result.output.startswith("error: ") and "truncated" in result.output
    assert "jpg1.tar.gz" in result.output


def _plain_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _damaged_header(files: dict[str, bytes], member: int) -> bytes:
    data = bytearray(_plain_tar(files))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tf:
        offset = tf.getmembers()[member].offset
    data[offset + 148: offset + 156] = b"99999999"  # the header's checksum field
    return bytes(data)


FOUR = {f"jpg/{i}.jpg": jpeg_bytes(i) for i in range(4)}


@pytest.mark.parametrize("name,data,message", [
    ("a.tgz", _half(_tar(FOUR)), "truncated"),
    ("a.tar", _half(_plain_tar(FOUR)), "truncated"),  # tarfile alone would stop silently
    ("a.tar", _plain_tar(FOUR)[:512 * 3], "truncated"),
    ("a.zip", _half(_zip(FOUR)), "truncated"),
    ("a.tar", _damaged_header(FOUR, 2), "damaged archive: the member header"),
    ("a.tgz", _tar(FOUR)[:-8] + b"\0\0\0\0" + _tar(FOUR)[-4:], "damaged archive"),  # CRC
    ("a.zip", _zip(FOUR)[:40] + b"\0" * 40 + _zip(FOUR)[80:], "damaged archive in member"),
], ids=["half-tgz", "half-tar", "tar-cut-at-a-block", "half-zip", "tar-bad-header",
        "tgz-bad-crc", "zip-bad-member"])
def test_broken_archives_are_named_and_nothing_is_unpacked(tmp_path, name, data, message):
    archive = tmp_path / name
    archive.write_bytes(data)
    with pytest.raises(DatasetError) as err:
        extract(archive, tmp_path / "out" / "jpg")
    assert str(err.value).startswith(f"{archive}: ") and message in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


# -- verify folder:PATH and manifest:FILE.json ------------------------------------------------

def _photo_folder(root, bad: bool = True):
    for c in range(2):
        for v in range(3):
            path = root / f"object{c}" / f"view{v}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg_bytes(10 * c + v))
    if bad:
        (root / "object0" / "view1.jpg").write_bytes(_half(jpeg_bytes(1)))
        (root / "object1" / "view2.jpg").write_text("not an image at all\n")
    return root


def test_verify_a_folder_lists_every_bad_image(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    report = manage.verify(f"folder:{root}", tmp_path / "data")
    assert not report.ok and report.images_checked == 6 and report.missing == []
    assert len(report.corrupt) == 2
    assert "object0/view1.jpg: truncated JPEG" in report.corrupt[0]
    assert "object1/view2.jpg: not a JPEG" in report.corrupt[1]
    runner = CliRunner()
    out = runner.invoke(cli, ["data", "verify", f"folder:{root}", "-q", "--workers", "2"])
    assert out.exit_code == 1, out.output
    assert "view1.jpg" in out.output and "view2.jpg" in out.output and "NOT OK" in out.output
    as_json = runner.invoke(cli, ["data", "verify", f"folder:{root}", "--json"])
    doc = json.loads(as_json.output)
    assert as_json.exit_code == 1 and not doc["ok"] and len(doc["corrupt"]) == 2
    exists_only = runner.invoke(cli, ["data", "verify", f"folder:{root}", "--no-decode", "-q"])
    assert exists_only.exit_code == 0 and "OK" in exists_only.output
    fine = runner.invoke(cli, ["data", "verify", f"folder:{_photo_folder(tmp_path / 'ok', False)}"])
    assert fine.exit_code == 0 and "6 images" in fine.output


def test_verify_a_manifest_checks_every_file_once(tmp_path):
    from tests.tiny import make_manifest

    path = make_manifest(tmp_path)
    doc = json.loads(path.read_text())
    doc["train"] = [{"path": "db/c0_0.png", "label": "c0"}, {"path": "t/missing.png"}]
    path.write_text(json.dumps(doc))
    (tmp_path / "db" / "c1_1.png").write_text("not an image")
    (tmp_path / "q" / "c2.png").unlink()
    report = manage.verify(f"manifest:{path}", tmp_path / "data")
    assert report.images_checked == 12 + 4 + 1  # the train copy of db/c0_0.png counts once
    assert sorted(report.missing) == [str(tmp_path / "q" / "c2.png"),
                                      str(tmp_path / "t" / "missing.png")]
    assert len(report.corrupt) == 1 and "c1_1.png: not a decodable image" in report.corrupt[0]
    exists_only = manage.verify(f"manifest:{path}", tmp_path / "data", decode=False)
    assert exists_only.corrupt == [] and len(exists_only.missing) == 2
    out = CliRunner().invoke(cli, ["data", "verify", f"manifest:{path}", "-q"])
    assert out.exit_code == 1 and "c1_1.png" in out.output and "missing.png" in out.output
    broken = CliRunner().invoke(cli, ["data", "verify", "folder"])
    assert broken.exit_code == 2 and "folder:PATH" in broken.output
