"""Atomic output directories and stable JSON: a failed command leaves no half-written output,
and the same inputs give the same bytes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RecBackdoorError


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


VERSIONED = ("recbackdoor", "numpy", "pandas", "pyarrow", "torch", "transformers", "peft")


def library_versions() -> dict[str, str]:
    """Versions of this package and the libraries whose behaviour shapes its outputs, for the
    manifests (outputs are byte-identical for the same inputs *and* these versions). Read from
    the installed metadata: nothing heavy is imported."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def dumps_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, fixed indent, trailing newline)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps_json(obj), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RecBackdoorError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecBackdoorError(f"{path}: not valid JSON ({exc}); the file is damaged: restore it or rerun the command that wrote it") from exc


def check_output_dir(out: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing output directory unless ``force``."""
    out = Path(out)
    if out.exists() and not force:
        raise RecBackdoorError(f"{out}: output directory exists; choose another --out or pass --force")
    return out


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block succeeds.

    On any error the temporary directory is removed and ``out`` is left as it was.
    """
    out = check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
