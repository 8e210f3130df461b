"""Turn a source dataset into a :class:`SplitDataset` with fixed candidates and a manifest.

Raw sources (MovieLens, hetrec LastFM) get LLaRA-style samples built here: users split 8:1:1 by
a seeded shuffle, training prefixes, final items held out (:func:`samples.build_samples`).
LLaRA's processed files keep LLaRA's own split, histories and targets; only the candidates are
drawn (seeded, one random stream per split). Either way the same source and seed give the same
bytes on disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io_utils import check_output_dir
from .io import save_dataset
from .samples import SampleOptions, build_samples, with_fixed_candidates
from .sources import lastfm, llara, ml1m, ml100k, steam
from .sources.common import LlaraData, RawData
from .types import DOMAINS, SPLITS, Catalog, Sample, SplitDataset

DATASET_DOMAINS: dict[str, str | None] = {
    "ml1m": "movies",
    "ml100k": "movies",
    "lastfm": "music",
    "steam": "games",
    "llara": None,  # from --domain, or movies for a u.item catalog
}
# dataset -> its loader module (``load(source)``; ``llara`` also takes the domain). A new
# dataset is one module in ``sources/`` plus a line here and in DATASET_DOMAINS.
SOURCES: dict[str, Any] = {"ml1m": ml1m, "ml100k": ml100k, "lastfm": lastfm, "steam": steam, "llara": llara}
TITLE_STYLES = ("keep", "llara")
_TRAILING_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_TRAILING_THE = re.compile(r"^(?P<name>.+), The(?P<rest>(?: \(.*\))?)$")


def llara_title(title: str) -> str:
    """LLaRA's movie title form: no year, and ", The" moved to the front.

    ``"Usual Suspects, The (1995)"`` -> ``"The Usual Suspects"``;
    ``"City of Lost Children, The (Cité des enfants perdus, La) (1995)"`` ->
    ``"The City of Lost Children (Cité des enfants perdus, La)"``.
    """
    title = _TRAILING_YEAR.sub("", title).strip()
    match = _TRAILING_THE.match(title)
    if match:
        title = f"The {match['name']}{match['rest']}"
    return title


def apply_title_style(catalog: Catalog, style: str) -> Catalog:
    """``keep`` leaves titles as the source has them; ``llara`` rewrites movie titles."""
    if style == "keep" or catalog.domain != "movies":
        return catalog
    return catalog.with_titles({i: llara_title(t) for i, t in enumerate(catalog.titles)})


def _check_options(
    dataset: str, seed: int, title_style: str, options: SampleOptions, domain: str | None
) -> None:
    if dataset not in DATASET_DOMAINS:
        raise ConfigError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_DOMAINS)}"
        )
    if title_style not in TITLE_STYLES:
        raise ConfigError(
            f"unknown title style {title_style!r}; choose one of {', '.join(TITLE_STYLES)}"
        )
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if options.min_history < 1 or options.max_history < options.min_history:
        raise ConfigError(
            "need 1 <= min_history <= max_history, "
            f"got {options.min_history} and {options.max_history}"
        )
    if options.n_candidates < 2:
        raise ConfigError(f"n_candidates must be at least 2, got {options.n_candidates}")
    if domain is not None and domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    fixed = DATASET_DOMAINS[dataset]
    if domain is not None and fixed is not None and domain != fixed:
        raise ConfigError(f"dataset {dataset} is {fixed}, not {domain}; drop --domain")


def _load(
    dataset: str, source: str | os.PathLike | None, domain: str | None
) -> RawData | LlaraData:
    if source is None and dataset != "ml100k":  # ML-100K also ships inside recbole
        raise ConfigError(f"dataset {dataset} needs --source DIR (the directory with its files)")
    if dataset == "llara":
        return llara.load(source, domain)
    return SOURCES[dataset].load(source)


def _llara_samples(
    data: LlaraData, seed: int, options: SampleOptions
) -> dict[str, tuple[Sample, ...]]:
    out = {}
    for stream, split in enumerate(SPLITS):
        rows = [
            (user, history[-options.max_history :], target)
            for user, history, target in data.rows[split]
            if len(history) >= options.min_history
        ]
        out[split] = with_fixed_candidates(
            rows, len(data.catalog), seed, n_candidates=options.n_candidates, stream=stream
        )
    return out


def prepare_dataset(
    dataset: str,
    source: str | Path | None = None,
    seed: int = 0,
    *,
    title_style: str = "keep",
    min_history: int = 3,
    max_history: int = 10,
    n_candidates: int = 20,
    domain: str | None = None,
) -> SplitDataset:
    """Load ``dataset`` (ml1m | ml100k | lastfm | steam | llara) from ``source`` and build samples.

    ``source`` is a directory (``None``: ML-100K from the installed recbole wheel). ``domain`` is
    only needed for a generic ``llara`` directory with an ``id2name.txt`` catalog.
    """
    options = SampleOptions(
        max_history=max_history, min_history=min_history, n_candidates=n_candidates
    )
    _check_options(dataset, seed, title_style, options, domain)
    data = _load(dataset, source, domain or DATASET_DOMAINS[dataset])
    catalog = apply_title_style(data.catalog, title_style)
    option_record: dict[str, Any] = {
        "title_style": title_style,
        "min_history": min_history,
        "max_history": max_history,
        "n_candidates": n_candidates,
    }
    if isinstance(data, RawData):
        splits = build_samples(data.interactions.sequences(), len(catalog), seed, options)
        option_record["splits"] = "seeded user split " + ":".join(map(str, options.split_ratio))
    else:
        splits = _llara_samples(data, seed, options)
        option_record["splits"] = "LLaRA's own (rows with history < min_history dropped)"
    manifest = {
        "dataset": dataset,
        "domain": catalog.domain,
        "sources": [f.manifest_entry() for f in data.files],
        "source_notes": dict(data.notes),
        "options": option_record,
        "seed": seed,
    }
    return SplitDataset(catalog=catalog, manifest=manifest, **splits)


def prepare_to_dir(
    dataset: str,
    source: str | Path | None,
    out: str | Path,
    seed: int = 0,
    *,
    force: bool = False,
    **options: Any,
) -> SplitDataset:
    """:func:`prepare_dataset`, then write it to ``out`` atomically (refused if ``out`` exists
    unless ``force``; checked first so a mistake costs no loading time)."""
    check_output_dir(out, force)
    dataset_obj = prepare_dataset(dataset, source, seed, **options)
    save_dataset(dataset_obj, out, force=force)
    return dataset_obj
