"""Save and load a ``SplitDataset`` as Parquet files + ``manifest.json``.

Layout of a dataset directory::

    catalog.parquet   item, title[, year, genres, source_id]
    train.parquet     user, history (list<int>), candidates (list<int>), target
    valid.parquet
    test.parquet
    manifest.json     dataset, domain, sources (path + sha256), options, seed, counts

Written through pyarrow with fixed schemas and no pandas metadata, so the same dataset gives
byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError
from ..io_utils import atomic_output_dir, library_versions, read_json, write_json
from .types import SPLITS, Catalog, Sample, SampleBlock, SplitDataset
from .validate import check_titles

FORMAT_VERSION = 1

_SAMPLE_SCHEMA = pa.schema(
    [
        ("user", pa.int64()),
        ("history", pa.list_(pa.int32())),
        ("candidates", pa.list_(pa.int32())),
        ("target", pa.int32()),
    ]
)


def _write_table(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd", write_statistics=False)


def _catalog_table(catalog: Catalog) -> pa.Table:
    cols: dict[str, pa.Array] = {
        "item": pa.array(range(len(catalog)), pa.int32()),
        "title": pa.array(catalog.titles, pa.string()),
    }
    if catalog.years is not None:
        cols["year"] = pa.array(catalog.years, pa.int32())
    if catalog.genres is not None:
        cols["genres"] = pa.array(catalog.genres, pa.string())
    if catalog.source_ids is not None:
        cols["source_id"] = pa.array(catalog.source_ids, pa.string())
    return pa.table(cols)


def _samples_table(samples: Sequence[Sample]) -> pa.Table:
    if isinstance(samples, SampleBlock):  # the same table, from the columns
        k = samples.candidates.shape[1]
        return pa.table(
            {
                "user": pa.array(samples.user, pa.int64()),
                "history": pa.ListArray.from_arrays(
                    pa.array(np.concatenate(([0], np.cumsum(samples.history_lengths))), pa.int32()),
                    pa.array(samples.history_values(), pa.int32()),
                ),
                "candidates": pa.ListArray.from_arrays(
                    pa.array(np.arange(0, len(samples) * k + 1, k), pa.int32()),
                    pa.array(samples.candidates.reshape(-1), pa.int32()),
                ),
                "target": pa.array(samples.target, pa.int32()),
            },
            schema=_SAMPLE_SCHEMA,
        )
    return pa.table(
        {
            "user": [s.user for s in samples],
            "history": [list(s.history) for s in samples],
            "candidates": [list(s.candidates) for s in samples],
            "target": [s.target for s in samples],
        },
        schema=_SAMPLE_SCHEMA,
    )


def write_dataset_files(dataset: SplitDataset, directory: Path) -> None:
    """Write the dataset's files into an existing directory (no atomicity: see save_dataset)."""
    _write_table(_catalog_table(dataset.catalog), directory / "catalog.parquet")
    for split in SPLITS:
        _write_table(_samples_table(dataset.split(split)), directory / f"{split}.parquet")
    manifest = dict(dataset.manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["domain"] = dataset.catalog.domain
    manifest["counts"] = dataset.counts()
    manifest["versions"] = library_versions()
    write_json(directory / "manifest.json", manifest)


def save_dataset(dataset: SplitDataset, out: str | os.PathLike, force: bool = False) -> Path:
    """Write ``dataset`` to ``out`` atomically; refuse an existing ``out`` unless ``force``."""
    with atomic_output_dir(out, force=force) as tmp:
        write_dataset_files(dataset, tmp)
    return Path(out)


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise DataError(f"{path}: file not found; is {path.parent} a dataset directory written by `recbackdoor data prepare`?")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); the file is damaged: rerun the command that wrote it") from exc


def _samples_from_table(table: pa.Table) -> tuple[Sample, ...]:
    cols = table.to_pydict()
    return tuple(
        Sample(int(u), tuple(h), tuple(c), int(t))
        for u, h, c, t in zip(cols["user"], cols["history"], cols["candidates"], cols["target"], strict=True)
    )


def load_dataset(directory: str | os.PathLike) -> SplitDataset:
    """Read a dataset directory written by :func:`save_dataset`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: dataset directory not found; give a folder written by `recbackdoor data prepare`")
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: file not found; is {directory} a dataset directory written by `recbackdoor data prepare`?")
    manifest = read_json(manifest_path)
    redo = "rerun `recbackdoor data prepare` (or the command that wrote it)"
    if not isinstance(manifest, dict):
        raise DataError(f"{manifest_path}: expected a JSON object, found {type(manifest).__name__}; the file is damaged: {redo}")
    catalog_path = directory / "catalog.parquet"
    try:
        catalog = Catalog.from_frame(_read_table(catalog_path).to_pandas(), domain=manifest.get("domain", "movies"))
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{catalog_path}: not a catalog written by recbackdoor ({type(exc).__name__}: {exc}); {redo}") from None
    check_titles(catalog.titles, range(1, len(catalog) + 1), str(catalog_path), unit="row")
    splits = {}
    for split in SPLITS:
        path = directory / f"{split}.parquet"
        table = _read_table(path)
        try:
            _check_item_ids(table, len(catalog))
            splits[split] = _samples_from_table(table)
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: not a {split} split written by recbackdoor ({type(exc).__name__}: {exc}); {redo}") from None
    return SplitDataset(catalog=catalog, manifest=manifest, **splits)


def _check_item_ids(table: pa.Table, n_items: int) -> None:
    """Every item id of a split table indexes the catalog (ValueError otherwise)."""
    import pyarrow.compute as pc

    for name in ("history", "candidates", "target"):
        col = table.column(name)
        values = pc.list_flatten(col) if pa.types.is_list(col.type) else col
        if len(values) and (pc.min(values).as_py() < 0 or pc.max(values).as_py() >= n_items):
            bad = pc.max(values).as_py() if pc.max(values).as_py() >= n_items else pc.min(values).as_py()
            raise ValueError(f"{name} holds item id {bad}, outside the catalog's 0..{n_items - 1}")
