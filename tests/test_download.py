"""`recbackdoor data download` against a local HTTP server on 127.0.0.1 serving archives built
here: good ones (then `data prepare` on the result), malicious ones (zip-slip, absolute paths,
symlinks, hard links, oversized members), wrong checksums, and an interrupted download that
a rerun resumes with HTTP Range."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recbackdoor.cli import main
from recbackdoor.data.download import Limits, download_dataset, member_parts
from recbackdoor.errors import ConfigError, DataError


class _Server:
    """Serves ``files`` (path -> bytes) with Range support; ``cut`` (path -> n) sends only the
    first n bytes of the next response (full Content-Length announced), then drops the
    connection; paths in ``no_range`` ignore Range; ``ranges`` records the Range headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.no_range: set[str] = set()
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = server.files.get(self.path)
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and self.path not in server.no_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                n = server.cut.pop(self.path, None)
                self.wfile.write(payload if n is None else payload[:n])
                if n is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    srv = _Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def _tar(members: dict[str, bytes], special: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in special:
            tf.addfile(info)
    return buf.getvalue()


def _hetrec_files(n_users: int = 20, n_artists: int = 30) -> dict[str, bytes]:
    artists = "id\tname\turl\tpictureURL\n" + "".join(
        f"{i}\tArtist {i}\thttp://x/{i}\thttp://p/{i}\n" for i in range(1, n_artists + 1)
    )
    plays = "userID\tartistID\tweight\n" + "".join(
        f"{u}\t{(u * 7 + k * 3) % n_artists + 1}\t{10 + k}\n" for u in range(1, n_users + 1) for k in range(6)
    )
    return {"artists.dat": artists.encode(), "user_artists.dat": plays.encode()}


def _ml100k_zip() -> bytes:
    return _zip({"ml-100k/u.item": b"1|Toy Story (1995)|x||u" + b"|0" * 19 + b"\n", "ml-100k/u.data": b"1\t1\t5\t100\n", "ml-100k/README": b"readme"})


def _no_log(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------- good archives


def test_download_zip_then_prepare(server, tmp_path, capsys):
    archive = _zip(_hetrec_files())  # hetrec's zip holds its files at the top level
    server.files["/lastfm.zip"] = archive
    digest = hashlib.sha256(archive).hexdigest()
    to = tmp_path / "data"
    code = main(["data", "download", "lastfm", "--to", str(to), "--url", server.url("/lastfm.zip"), "--sha256", digest])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "sha256 ok" in out and "data prepare --dataset lastfm" in out
    folder = to / "hetrec2011-lastfm-2k"
    assert sorted(p.name for p in to.iterdir()) == ["hetrec2011-lastfm-2k"]  # no temp or cache left
    assert main(["data", "prepare", "--dataset", "lastfm", "--source", str(folder), "--out", str(tmp_path / "ds")]) == 0
    assert (tmp_path / "ds" / "manifest.json").is_file()


def test_unknown_digest_is_printed_not_invented(server, tmp_path):
    archive = _ml100k_zip()
    server.files["/ml-100k.zip"] = archive
    lines: list[str] = []
    result = download_dataset("ml100k", tmp_path, url=server.url("/ml-100k.zip"), log=lines.append)
    assert result.verified == {"ml-100k.zip": False}
    assert result.digests["ml-100k.zip"] == hashlib.sha256(archive).hexdigest()
    assert any(hashlib.sha256(archive).hexdigest() in line and "no official digest" in line for line in lines)
    assert (tmp_path / "ml-100k" / "u.item").is_file()  # the single top folder is the dataset


def test_tar_archive_and_loose_files(server, tmp_path):
    server.files["/ml.tgz"] = _tar({"u.item": b"1|A (1995)|x||u" + b"|0" * 19 + b"\n", "u.data": b"1\t1\t5\t1\n"})
    download_dataset("ml100k", tmp_path / "a", url=server.url("/ml.tgz"), log=_no_log)
    assert (tmp_path / "a" / "ml-100k" / "u.data").read_bytes() == b"1\t1\t5\t1\n"
    for name in ("train_data.df", "Val_data.df", "Test_data.df", "id2name.txt"):
        server.files[f"/steam/{name}"] = name.encode()
    result = download_dataset("steam", tmp_path / "b", url=server.url("/steam/"), log=_no_log)
    assert (tmp_path / "b" / "steam-llara" / "id2name.txt").read_bytes() == b"id2name.txt"
    assert set(result.digests) == {"train_data.df", "Val_data.df", "Test_data.df", "id2name.txt"}


# --------------------------------------------------------------------------- resume


def test_interrupted_download_resumes_with_range(server, tmp_path):
    archive = _zip({"ml-100k/u.item": b"x" * 50_000, "ml-100k/u.data": bytes(range(256)) * 400}, )
    server.files["/ml.zip"] = archive
    server.cut["/ml.zip"] = len(archive) // 3
    digest = hashlib.sha256(archive).hexdigest()
    kwargs = dict(url=server.url("/ml.zip"), sha256={"ml-100k.zip": digest}, log=_no_log)
    with pytest.raises(DataError, match="interrupted after .* rerun the same command to resume"):
        download_dataset("ml100k", tmp_path, **kwargs)
    part = tmp_path / ".downloads" / "ml-100k.zip.part"
    assert part.stat().st_size == len(archive) // 3
    assert not (tmp_path / "ml-100k").exists()  # nothing half-extracted
    result = download_dataset("ml100k", tmp_path, **kwargs)
    assert server.ranges[-1] == f"bytes={len(archive) // 3}-"
    assert result.resumed["ml-100k.zip"] == len(archive) // 3 and result.verified["ml-100k.zip"]
    assert (tmp_path / "ml-100k" / "u.item").read_bytes() == b"x" * 50_000
    assert not (tmp_path / ".downloads").exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    archive = _ml100k_zip()
    server.files["/ml.zip"] = archive
    server.no_range.add("/ml.zip")
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "ml-100k.zip.part").write_bytes(b"garbage from an older try")
    result = download_dataset("ml100k", tmp_path, url=server.url("/ml.zip"), log=_no_log)
    assert result.resumed["ml-100k.zip"] == 0
    assert result.digests["ml-100k.zip"] == hashlib.sha256(archive).hexdigest()


def test_complete_part_and_416(server, tmp_path):
    archive = _ml100k_zip()
    server.files["/ml.zip"] = archive
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "ml-100k.zip.part").write_bytes(archive)  # killed before rename
    result = download_dataset("ml100k", tmp_path, url=server.url("/ml.zip"), log=_no_log)
    assert result.resumed["ml-100k.zip"] == len(archive)
    assert (tmp_path / "ml-100k" / "u.item").is_file()


# --------------------------------------------------------------------------- refused


def _refused(server, tmp_path, body: bytes, match: str, *, limits: Limits | None = None, sha=None) -> None:
    server.files["/a"] = body
    outside = tmp_path / "evil.txt"
    with pytest.raises(DataError, match=match):
        download_dataset(
            "ml100k", tmp_path / "to", url=server.url("/a"), limits=limits, log=_no_log,
            sha256={"ml-100k.zip": sha} if sha else None,
        )  # fmt: skip
    assert not outside.exists()
    to = tmp_path / "to"
    assert {p.name for p in to.iterdir()} <= {".downloads"}  # no dataset, no temp folder
    assert not any((to / ".downloads").glob("*"))  # the bad file is gone: a rerun fetches anew


@pytest.mark.parametrize(
    "members",
    [
        {"../evil.txt": b"pwned"},
        {"ml-100k/../../evil.txt": b"pwned"},
        {"/tmp/evil-abs.txt": b"pwned"},
        {"C:/evil.txt": b"pwned"},
        {"ml-100k\\..\\..\\evil.txt": b"pwned"},
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "backslash"],
)
def test_zip_slip_refused(server, tmp_path, members):
    _refused(server, tmp_path, _zip({"ml-100k/u.item": b"1", **members}), "unsafe archive member")
    assert not Path("/tmp/evil-abs.txt").exists()


def test_tar_slip_refused(server, tmp_path):
    _refused(server, tmp_path, _tar({"ml-100k/u.item": b"1", "../evil.txt": b"pwned"}), "unsafe archive member")


def test_symlinks_and_links_refused(server, tmp_path):
    _refused(server, tmp_path, _zip({"ml-100k/u.item": b"1"}, links={"ml-100k/u.data": "../../evil.txt"}), "symbolic link")
    sym = tarfile.TarInfo("ml-100k/u.data")
    sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _refused(server, tmp_path, _tar({"ml-100k/u.item": b"1"}, [sym]), "symbolic link")
    hard = tarfile.TarInfo("ml-100k/u.data")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../evil.txt"
    _refused(server, tmp_path, _tar({"ml-100k/u.item": b"1"}, [hard]), "hard link")
    fifo = tarfile.TarInfo("ml-100k/fifo")
    fifo.type = tarfile.FIFOTYPE
    _refused(server, tmp_path, _tar({"ml-100k/u.item": b"1"}, [fifo]), "special file")


def test_oversized_member_and_total_refused(server, tmp_path):
    bomb = _zip({"ml-100k/u.item": b"\0" * 2_000_000, "ml-100k/u.data": b"1"})  # ~2 kB compressed
    assert len(bomb) < 10_000
    _refused(server, tmp_path, bomb, "over the per-file limit", limits=Limits(max_member_bytes=1_000_000))
    many = _zip({f"ml-100k/f{i}": b"\0" * 300_000 for i in range(5)})
    _refused(server, tmp_path, many, "uncompressed, over the limit", limits=Limits(max_total_bytes=1_000_000))
    _refused(server, tmp_path, many, "members, over the limit", limits=Limits(max_members=3))
    _refused(server, tmp_path, bomb, "download limit", limits=Limits(max_download_bytes=100))


def test_duplicate_member_refused(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("ml-100k/u.item", b"1")
        zf.writestr("ml-100k/u.item", b"2")
    _refused(server, tmp_path, buf.getvalue(), "same path")


def test_wrong_checksum_deletes_and_stops(server, tmp_path):
    _refused(server, tmp_path, _ml100k_zip(), "sha256 mismatch", sha="0" * 64)


def test_not_an_archive_and_missing_files(server, tmp_path):
    _refused(server, tmp_path, b"<html>not found</html>", "not a zip or tar archive")
    _refused(server, tmp_path, _zip({"ml-100k/other.txt": b"1"}), "holds no u.item, u.data")
    _refused(server, tmp_path, _ml100k_zip()[:-30], "damaged archive|not a zip")


def test_cli_errors_are_one_line(server, tmp_path, capsys):
    cases = [
        (["ml100k", "--to", str(tmp_path), "--url", "file:///etc/passwd"], "only http"),
        (["ml100k", "--to", str(tmp_path), "--url", server.url("/missing.zip")], "HTTP 404"),
        (["imdb", "--to", str(tmp_path)], "unknown dataset 'imdb'"),
        (["ml100k", "--to", str(tmp_path), "--sha256", "abc"], "64 hex"),
        (["steam", "--to", str(tmp_path), "--sha256", "0" * 64], "NAME=HEX"),
        (["ml100k", "--to", str(tmp_path), "--max-bytes", "0"], "must be positive"),
    ]
    for args, match in cases:
        assert main(["data", "download", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and match in err, err
    server.files["/ml.zip"] = _ml100k_zip()
    (tmp_path / "ml-100k").mkdir()
    assert main(["data", "download", "ml100k", "--to", str(tmp_path), "--url", server.url("/ml.zip")]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["data", "download", "ml100k", "--to", str(tmp_path), "--url", server.url("/ml.zip"), "--force"]) == 0
    assert (tmp_path / "ml-100k" / "u.item").is_file()


def test_member_parts():
    assert member_parts("a/./b//c") == ("a", "b", "c")
    for bad in ("", "/a", "a/../b", "..", "a\\b", "c:x", "a\x00b", "./"):
        with pytest.raises(ValueError):
            member_parts(bad)


def test_no_official_digest_is_invented():
    from recbackdoor.data.download import SOURCES

    assert all(r.sha256 is None for s in SOURCES.values() for r in s.remotes)
    assert all(r.url.startswith("https://") for s in SOURCES.values() for r in s.remotes)
    with pytest.raises(ConfigError):
        download_dataset("ml100k", "/nonexistent", url="ftp://example.org/x.zip", log=_no_log)
