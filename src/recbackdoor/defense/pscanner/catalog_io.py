"""Plain catalogs in and flagged items out: what ``recbackdoor scan`` reads and writes
(docs/design.md §7). A catalog is CSV, JSONL or Parquet with an id and a title column; the output CSV
has exactly the columns ``id, title, score, flagged``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import ConfigError, DataError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
OUTPUT_COLUMNS = ("id", "title", "score", "flagged")


def read_catalog(path: str | Path, title_column: str = "title", id_column: str | None = "id") -> tuple[list[Any], list[str]]:
    """Ids and titles of a catalog file (``id_column`` None: row numbers); one-line errors for
    a missing file, an unknown format, an unreadable file or a missing column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: catalog file not found")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown catalog format {path.suffix or '(no extension)'!r}; use .csv, .jsonl or .parquet")
    try:
        if fmt == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read it as {fmt} ({first})") from exc
    for col, opt in ((title_column, "--title-column"), (id_column, "--id-column")):
        if col is not None and col not in frame.columns:
            have = ", ".join(map(str, frame.columns)) or "none"
            raise DataError(f"{path}: no column {col!r} (columns: {have}); choose one with {opt}")
    if len(frame) == 0:
        raise DataError(f"{path}: the catalog has no rows")
    titles = ["" if _missing(t) else str(t) for t in frame[title_column]]
    if id_column is None:
        return list(range(len(titles))), titles
    ids = [None if _missing(i) else i for i in frame[id_column]]
    if any(i is None for i in ids):
        row = next(k for k, i in enumerate(ids) if i is None)
        raise DataError(f"{path}: row {row + 1} has no {id_column!r}; every item needs an id")
    return [i.item() if isinstance(i, np.generic) else i for i in ids], titles


def read_titles(path: str | Path, title_column: str = "title") -> list[str]:
    """Titles of a catalog file, or of a prepared dataset directory (its catalog)."""
    path = Path(path)
    if path.is_dir():
        from ...data.io import load_dataset

        return list(load_dataset(path).catalog.titles)
    frame_ids, titles = read_catalog(path, title_column, id_column=None)
    del frame_ids
    return titles


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def write_flagged(out: str | Path, ids: list[Any], titles: list[str], scores: np.ndarray, flags: np.ndarray) -> Path:
    """The scan result as CSV (temp file + rename, so a failed run leaves nothing)."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"{out}: the scan output is a CSV file; give --out a .csv path")
    frame = pd.DataFrame(
        {"id": ids, "title": titles, "score": np.round(np.asarray(scores, dtype=float), 6), "flagged": np.asarray(flags, dtype=int)}
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_csv(tmp, index=False, columns=list(OUTPUT_COLUMNS))
    os.replace(tmp, out)
    return out


def scan_catalog(
    catalog: str | Path,
    out: str | Path,
    *,
    scanner_dir: str | Path | None = None,
    domain: str | None = None,
    title_column: str = "title",
    id_column: str = "id",
    config: Any = None,
    evidence: str | None = None,
    progress: bool = True,
    loader: Callable[..., tuple[Any, Any]] | None = None,
) -> pd.DataFrame:
    """Score every title of ``catalog`` and write ``out`` (id, title, score, flagged).

    With ``scanner_dir`` a saved scanner is used; without, one is trained on this catalog
    first (``config``: a ScannerConfig). Either way the scanner is fitted to the catalog, so
    cross-title evidence (a fragment shared by suspicious titles) counts; ``evidence``
    overrides a saved scanner's mode: ``off`` decides by the per-title LLM channel alone (at
    its per-title threshold), ``max`` by both channels."""
    from .evidence import MODES
    from .scanner import load_scanner
    from .train import CatalogTrainedScanner, ScannerConfig

    ids, titles = read_catalog(catalog, title_column, id_column)
    if scanner_dir is not None:
        scanner = load_scanner(scanner_dir, progress=progress, loader=loader)
        if domain is not None and domain != scanner.domain:
            raise ConfigError(
                f"{scanner_dir}: scanner trained for domain {scanner.domain!r}, not {domain!r}; "
                "drop --domain or train a scanner for this domain"
            )
        if evidence is not None:
            if evidence not in MODES:
                raise ConfigError(f"unknown evidence mode {evidence!r}; use one of {', '.join(MODES)}")
            scanner.set_channels("llm" if evidence == "off" else "both")
    else:
        if domain is None:
            raise ConfigError("--domain is required when no --scanner is given (a scanner is trained on the catalog)")
        # the catalog-trained scanner of `defend`, with the full training config by default
        scanner = CatalogTrainedScanner(config or ScannerConfig(), progress=progress, loader=loader)
    scanner.fit(titles, domain if scanner_dir is None else scanner.domain)
    scores = scanner.score(titles)
    flags = (scores >= scanner.threshold).astype(int)
    write_flagged(out, ids, titles, scores, flags)
    return pd.DataFrame({"id": ids, "title": titles, "score": scores, "flagged": flags})
