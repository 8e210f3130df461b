"""``recbackdoor data download``: fetch a dataset's official files, verify, extract safely.

What it guarantees, whoever serves the bytes:

- **Only http(s)**: no ``file:``, ``ftp:`` or other schemes.
- **Resume**: the download goes to ``DIR/.downloads/NAME.part``; a rerun after an interruption
  asks the server for the rest (HTTP ``Range``) and appends it; a server that ignores ranges
  sends the whole file again, which then replaces the part.
- **sha256**: checked when a digest is known (recorded below or given with ``--sha256``); a
  mismatch deletes the file and stops. This toolkit was written offline, so the official
  digests are **not recorded** (``sha256=None``): the computed digest is printed so it can be
  compared with the publisher's, and ``--sha256`` makes it a check.
- **Safe extraction** (zip and tar): every member is checked before anything is written:
  no absolute paths, drive letters, backslashes or ``..`` components, no symlinks, hard links,
  devices or FIFOs, no duplicate names, at most ``max_members`` members, each member and the
  total within ``max_member_bytes`` / ``max_total_bytes`` (declared sizes are checked first and
  the bytes actually written are counted, since a zip bomb can lie about its sizes).
  Files are written into a temporary folder next to the target and renamed into place only
  when everything succeeded, so an error leaves no half-extracted dataset.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError, DataError
from ..io_utils import sha256_file

CHUNK = 1 << 16
DEFAULT_MAX_DOWNLOAD_BYTES = 4 << 30  # the largest official archive (ML-1M) is ~6 MB
DEFAULT_MAX_MEMBER_BYTES = 2 << 30
DEFAULT_MAX_TOTAL_BYTES = 8 << 30
DEFAULT_MAX_MEMBERS = 10_000
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Remote:
    """One file to fetch: ``sha256`` None = not recorded (the computed digest is printed)."""

    name: str
    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset lives: an archive (``kind="archive"``, one remote) or loose files."""

    name: str
    folder: str  # DIR/<folder> is what `data prepare --source` reads
    kind: str  # "archive" | "files"
    remotes: tuple[Remote, ...]
    expect: tuple[str, ...]  # files that must be in the result
    terms: str
    prepare: str  # the `data prepare` arguments for this folder

    def with_overrides(self, url: str | None, sha256: Mapping[str, str]) -> DatasetSource:
        remotes = []
        for remote in self.remotes:
            new_url = remote.url
            if url is not None:
                new_url = url if self.kind == "archive" else url.rstrip("/") + "/" + remote.name
            remotes.append(Remote(remote.name, new_url, sha256.get(remote.name, remote.sha256)))
        return DatasetSource(
            self.name, self.folder, self.kind, tuple(remotes), self.expect, self.terms, self.prepare
        )


_GROUPLENS = "https://files.grouplens.org/datasets"
_LLARA_HF = "https://huggingface.co/datasets/joyliao7777/LLaRA/resolve/main"  # LLaRA's README

# sha256=None throughout: not known offline (see the module docstring); never guessed.
SOURCES: dict[str, DatasetSource] = {
    "ml1m": DatasetSource(
        "ml1m", "ml-1m", "archive",
        (Remote("ml-1m.zip", f"{_GROUPLENS}/movielens/ml-1m.zip"),),
        ("movies.dat", "ratings.dat"),
        "MovieLens: research use only, no redistribution (see its README)",
        "--dataset ml1m",
    ),
    "ml100k": DatasetSource(
        "ml100k", "ml-100k", "archive",
        (Remote("ml-100k.zip", f"{_GROUPLENS}/movielens/ml-100k.zip"),),
        ("u.item", "u.data"),
        "MovieLens: research use only, no redistribution (see its README)",
        "--dataset ml100k",
    ),
    "lastfm": DatasetSource(
        "lastfm", "hetrec2011-lastfm-2k", "archive",
        (Remote("hetrec2011-lastfm-2k.zip", f"{_GROUPLENS}/hetrec2011/hetrec2011-lastfm-2k.zip"),),
        ("artists.dat", "user_artists.dat"),
        "hetrec2011 LastFM: non-commercial use (see its readme.txt)",
        "--dataset lastfm",
    ),
    "steam": DatasetSource(
        "steam", "steam-llara", "files",
        tuple(
            Remote(name, f"{_LLARA_HF}/steam/{name}")
            for name in ("train_data.df", "Val_data.df", "Test_data.df", "id2name.txt")
        ),
        ("train_data.df", "Val_data.df", "Test_data.df", "id2name.txt"),
        "LLaRA's processed Steam (huggingface.co/datasets/joyliao7777/LLaRA); read its terms",
        "--dataset steam",
    ),
}  # fmt: skip


@dataclass
class Limits:
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS


@dataclass
class DownloadResult:
    folder: Path
    digests: dict[str, str] = field(default_factory=dict)  # file name -> computed sha256
    verified: dict[str, bool] = field(default_factory=dict)  # file name -> checked vs a digest
    resumed: dict[str, int] = field(default_factory=dict)  # file name -> bytes reused


def parse_sha256(values: list[str] | None, source: DatasetSource) -> dict[str, str]:
    """``--sha256 HEX`` (one remote) or ``--sha256 NAME=HEX`` (repeatable) -> name -> digest."""
    out: dict[str, str] = {}
    names = [r.name for r in source.remotes]
    for value in values or []:
        name, sep, digest = value.rpartition("=")
        if not sep:
            if len(names) != 1:
                raise ConfigError(
                    f"--sha256 {value!r}: {source.name} has {len(names)} files; "
                    f"give NAME=HEX for each of {', '.join(names)}"
                )
            name, digest = names[0], value
        digest = digest.strip().lower()
        if name not in names:
            raise ConfigError(f"--sha256 {value!r}: {name!r} is not one of {', '.join(names)}")
        if not _HEX64.match(digest):
            raise ConfigError(f"--sha256 {value!r}: a sha256 digest is 64 hex characters")
        out[name] = digest
    return out


# --------------------------------------------------------------------------- fetching


def _check_url(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"{url}: only http:// and https:// URLs are fetched (got {scheme or 'no scheme'!r})")


def fetch(
    url: str,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float = 60.0,
    log: Callable[[str], None] = lambda _msg: None,
) -> int:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a part left by an earlier
    try; returns the bytes reused from that part. An interrupted transfer keeps the part and
    raises :class:`DataError` asking to rerun."""
    _check_url(url)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "recbackdoor-download", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is the whole file
            os.replace(part, dest)
            return have
        raise DataError(f"{url}: the server answered HTTP {exc.code} {exc.reason}; check the URL (--url) or try later") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: cannot connect ({reason}); check the network and the URL (--url)") from None
    with response:
        status = getattr(response, "status", 200)
        mode, reused = "wb", 0
        if have and status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != have:
                raise DataError(
                    f"{url}: the server resumed at the wrong offset "
                    f"({response.headers.get('Content-Range')!r}, wanted {have}); delete {part} and rerun"
                )
            mode, reused = "ab", have
        elif status != 200:
            raise DataError(f"{url}: unexpected HTTP status {status}; check the URL (--url)")
        length = response.headers.get("Content-Length")
        total = reused + int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            part.unlink(missing_ok=True)
            raise DataError(f"{url}: the file is {total} bytes, over the {max_bytes}-byte download limit; raise --max-bytes if it is right")
        if reused:
            log(f"resuming {dest.name} at byte {reused}" + (f" of {total}" if total else ""))
        got = reused
        with open(part, mode) as fh:
            try:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    got += len(block)
                    if got > max_bytes:
                        fh.close()
                        part.unlink(missing_ok=True)
                        raise DataError(f"{url}: more than {max_bytes} bytes; stopped (raise --max-bytes if the file is right)")
                    fh.write(block)
            except (OSError, EOFError) as exc:  # timeouts, resets, http.client.IncompleteRead
                raise DataError(
                    f"{url}: download interrupted after {got} bytes ({type(exc).__name__}); "
                    f"rerun the same command to resume from {part}"
                ) from None
    if total is not None and got < total:
        raise DataError(
            f"{url}: download interrupted after {got} of {total} bytes; "
            f"rerun the same command to resume from {part}"
        )
    os.replace(part, dest)
    return reused


def _verify(path: Path, remote: Remote, result: DownloadResult, log: Callable[[str], None]) -> None:
    digest = sha256_file(path)
    result.digests[remote.name] = digest
    if remote.sha256 is None:
        result.verified[remote.name] = False
        log(
            f"sha256 {digest}  {remote.name} (no official digest is recorded; compare it with "
            f"the publisher's, or pass --sha256 to check it)"
        )
        return
    if digest != remote.sha256:
        path.unlink(missing_ok=True)
        raise DataError(
            f"{remote.url}: sha256 mismatch for {remote.name}: expected {remote.sha256}, got {digest}; "
            "the file is damaged or not the official one (deleted); rerun, or check --url/--sha256"
        )
    result.verified[remote.name] = True
    log(f"sha256 ok  {remote.name}")


# --------------------------------------------------------------------------- safe extraction


def member_parts(name: str) -> tuple[str, ...]:
    """The path components of an archive member, or :class:`ValueError` when writing it could
    leave the target folder (absolute, drive letter, backslash, ``..``, NUL, empty)."""
    if not name or "\x00" in name:
        raise ValueError("empty name or NUL byte")
    if "\\" in name:
        raise ValueError("backslash in the path")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ValueError("absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError("'..' in the path")
    if not parts:
        raise ValueError("empty path")
    return parts


@dataclass(frozen=True)
class _Member:
    parts: tuple[str, ...]
    is_dir: bool
    size: int
    open: Callable[[], BinaryIO] | None


def _zip_members(zf: zipfile.ZipFile, label: str) -> Iterator[tuple[str, _Member]]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            _refuse(label, info.filename, what)
        is_dir = info.is_dir()
        yield info.filename, _Member(
            _parts(label, info.filename), is_dir, info.file_size,
            None if is_dir else (lambda info=info: zf.open(info)),
        )  # fmt: skip


def _tar_members(tf: tarfile.TarFile, label: str) -> Iterator[tuple[str, _Member]]:
    for info in tf.getmembers():
        if info.issym() or info.islnk():
            _refuse(label, info.name, f"a {'symbolic' if info.issym() else 'hard'} link to {info.linkname!r}")
        if not (info.isfile() or info.isdir()):
            _refuse(label, info.name, "a device, FIFO or other special file")
        yield info.name, _Member(
            _parts(label, info.name), info.isdir(), info.size,
            None if info.isdir() else (lambda info=info: tf.extractfile(info)),
        )  # fmt: skip


def _refuse(label: str, name: str, why: str):
    raise DataError(f"{label}: unsafe archive member {name!r}: {why}; refusing to extract it (the archive is not the official one)")


def _parts(label: str, name: str) -> tuple[str, ...]:
    try:
        return member_parts(name)
    except ValueError as exc:
        _refuse(label, name, f"{exc} (it would be written outside the target folder)")
        raise  # unreachable


def _plan(members: list[tuple[str, _Member]], label: str, limits: Limits) -> None:
    """Checks on the declared members before anything is written."""
    if len(members) > limits.max_members:
        raise DataError(f"{label}: {len(members)} members, over the limit of {limits.max_members}; not the expected archive")
    seen: dict[tuple[str, ...], bool] = {}
    total = 0
    for name, member in members:
        if member.parts in seen and not (member.is_dir and seen[member.parts]):
            _refuse(label, name, "a second member with the same path")
        for i in range(1, len(member.parts)):
            if seen.get(member.parts[:i]) is False:
                _refuse(label, name, "its parent folder is a file in the archive")
        seen[member.parts] = member.is_dir
        if member.size > limits.max_member_bytes:
            raise DataError(
                f"{label}: member {name!r} is {member.size} bytes, over the per-file limit of "
                f"{limits.max_member_bytes}; not the expected archive (or raise the limit)"
            )
        total += member.size
    if total > limits.max_total_bytes:
        raise DataError(f"{label}: {total} bytes uncompressed, over the limit of {limits.max_total_bytes}; not the expected archive (or raise --max-bytes)")


def _write_members(members: list[tuple[str, _Member]], root: Path, label: str, limits: Limits) -> None:
    real_root = os.path.realpath(root)
    written = 0
    for name, member in members:
        path = root.joinpath(*member.parts)
        if not os.path.realpath(path).startswith(real_root + os.sep):  # defence in depth
            _refuse(label, name, "it resolves outside the target folder")
        if member.is_dir:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        assert member.open is not None
        with member.open() as src, open(path, "xb") as dst:
            while True:
                block = src.read(CHUNK)
                if not block:
                    break
                count += len(block)
                written += len(block)
                if count > limits.max_member_bytes or count > member.size:
                    raise DataError(f"{label}: member {name!r} holds more bytes than declared or allowed ({count}); refusing the archive")
                if written > limits.max_total_bytes:
                    raise DataError(f"{label}: more than {limits.max_total_bytes} bytes uncompressed; refusing the archive")
                dst.write(block)


def safe_extract(archive: Path, root: Path, limits: Limits | None = None, label: str | None = None) -> None:
    """Extract a zip or tar ``archive`` into the existing, empty folder ``root`` (see the module
    docstring for the checks); any problem is a :class:`DataError`."""
    limits = limits or Limits()
    label = label or archive.name
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = list(_zip_members(zf, label))
                _plan(members, label, limits)
                _write_members(members, root, label, limits)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                members = list(_tar_members(tf, label))
                _plan(members, label, limits)
                _write_members(members, root, label, limits)
        else:
            raise DataError(f"{label}: not a zip or tar archive; check the URL (--url)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(f"{label}: damaged archive ({exc}); delete it and download again") from None


# --------------------------------------------------------------------------- the command


def download_dataset(
    name: str,
    to: str | os.PathLike,
    *,
    url: str | None = None,
    sha256: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    force: bool = False,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> DownloadResult:
    """Fetch dataset ``name`` into ``to/<folder>`` (the folder ``data prepare --source`` reads).

    ``url`` replaces the official location (the archive's URL, or a base URL the file names are
    appended to for loose files); ``sha256`` maps file names to expected digests.
    """
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset {name!r} to download; choose one of {', '.join(SOURCES)}")
    if url is not None:
        _check_url(url)
    source = SOURCES[name].with_overrides(url, dict(sha256 or {}))
    limits = limits or Limits()
    to = Path(to)
    target = to / source.folder
    if target.exists() and not force:
        raise ConfigError(f"{target}: already exists; choose another --to or pass --force to replace it")
    try:
        to.mkdir(parents=True, exist_ok=True)
        cache = to / ".downloads"
        cache.mkdir(exist_ok=True)
    except OSError as exc:
        raise DataError(f"{to}: cannot create the download folder ({exc.strerror}); choose a writable --to") from None
    result = DownloadResult(folder=target)
    log(f"{source.name}: {source.terms}")
    for remote in source.remotes:
        dest = cache / remote.name
        if not dest.is_file():
            log(f"fetching {remote.url}")
            result.resumed[remote.name] = fetch(
                remote.url, dest, max_bytes=limits.max_download_bytes, timeout=timeout, log=log
            )
        _verify(dest, remote, result, log)
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.folder}.tmp-", dir=to))
    try:
        if source.kind == "archive":
            archive = cache / source.remotes[0].name
            safe_extract(archive, tmp, limits, label=f"{archive}")
            entries = list(tmp.iterdir())
            top = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        else:
            for remote in source.remotes:
                shutil.copyfile(cache / remote.name, tmp / remote.name)
            top = tmp
        missing = [f for f in source.expect if not (top / f).is_file()]
        if missing:
            raise DataError(
                f"{source.remotes[0].url}: the download holds no {', '.join(missing)}; "
                f"it is not {source.name} (check --url)"
            )
        if target.exists():
            shutil.rmtree(target)
        os.replace(top, target)
    except DataError:
        for remote in source.remotes:  # a bad download would fail again: fetch anew next time
            (cache / remote.name).unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for remote in source.remotes:
        (cache / remote.name).unlink(missing_ok=True)
    try:
        cache.rmdir()
    except OSError:
        pass
    log(
        f"wrote {target}; prepare it with: recbackdoor data prepare {source.prepare} "
        f"--source {target} --out DIR"
    )
    return result
