"""The ``popularity`` victim: rank a prompt's candidates by how often each item is a training
target (MostPop).

The reference every learned recommender must beat: it needs no history and no text, only the
item counts of the training split, so a victim at or below it has learned popularity at best.
It reads only ids, so a title trigger reaches it only through the fake users' targets. Ties
keep the candidates' stored (shuffled) order.

Output directory (written atomically)::

    popularity.safetensors   the target count of every catalog item (float64, no pickle)
    victim.json              victim, catalog size, dataset dir + manifest sha256
    timing.json              wall time
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.types import Sample
from ..errors import RecBackdoorError
from ..io_utils import atomic_output_dir, check_output_dir, read_json, write_json
from ..models.lora import TrainConfig

VICTIM = "popularity"
PROMPT = None  # ranks candidates by item id; reads no prompt
OPTIONS = ("seed",)
WEIGHT_FILES = ("popularity.safetensors",)
ADAPTER = False
FORMAT_VERSION = 1
WEIGHTS = "popularity.safetensors"


class PopularityRanker:
    """Target counts of the catalog's items; :func:`rank_candidates` scores with them."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = np.asarray(counts, dtype=np.float64)


def count_targets(samples: Sequence[Sample], n_items: int) -> np.ndarray:
    """How often each item id is a sample's target."""
    counts = np.zeros(n_items, dtype=np.float64)
    np.add.at(counts, np.asarray([s.target for s in samples], dtype=np.int64), 1.0)
    return counts


def rank_candidates(model: PopularityRanker, samples: Sequence[Sample]) -> list[np.ndarray]:
    """Per sample, its candidates' scores (target counts), in the sample's candidate order."""
    return [model.counts[np.asarray(s.candidates, dtype=np.int64)] for s in samples]


def train_victim(
    data: Any,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    force: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    save_steps: int = 10,
) -> Path:
    """Count the targets of ``data``'s train split (the first ``max_samples``); write to ``out``.
    The LM and LoRA options do not apply; checkpoints are not needed (it takes milliseconds)."""
    from safetensors.numpy import save_file

    from .training_data import load_training_data

    del checkpoint_dir, save_steps
    config = config or TrainConfig()
    out = check_output_dir(out, force)
    if int(os.environ.get("RANK", "0")) != 0:
        return out
    dataset, data_info = load_training_data(data)
    samples = dataset.train[: config.max_samples] if config.max_samples else dataset.train
    if not samples:
        raise RecBackdoorError("no training samples: the dataset's train split is empty")
    t0 = time.perf_counter()
    counts = count_targets(samples, len(dataset.catalog))
    info = {"format_version": FORMAT_VERSION, "victim": VICTIM, "backbone": None,
            "n_items": len(dataset.catalog), "train_samples": len(samples),
            "dataset": {**data_info, "domain": dataset.catalog.domain}, "steps": 0}
    timing = {"train_seconds": round(time.perf_counter() - t0, 4), "steps": 0, "tokens": 0,
              "tokens_per_s": 0.0, "processes": 1, "device": "cpu"}
    with atomic_output_dir(out, force=force) as tmp:
        save_file({"counts": counts}, str(tmp / WEIGHTS))
        write_json(tmp / "victim.json", info)
        write_json(tmp / "timing.json", timing)
    return out


def load_victim(model_dir: str | os.PathLike, *, dtype: Any = None, device: Any = None,
                merge: bool = False) -> tuple[PopularityRanker, None, dict[str, Any]]:
    """``(ranker, None, info)``; ``dtype``, ``device`` and ``merge`` do not apply."""
    from safetensors.numpy import load_file

    del dtype, device, merge
    path = Path(model_dir)
    info = read_json(path / "victim.json")
    if info.get("victim") != VICTIM:
        raise RecBackdoorError(f"{path}: victim {info.get('victim')!r} is not a popularity victim")
    if not (path / WEIGHTS).is_file():
        raise RecBackdoorError(f"{path}/{WEIGHTS}: counts missing; retrain with `recbackdoor train --victim popularity`")
    counts = load_file(str(path / WEIGHTS))["counts"]
    if counts.shape != (int(info["n_items"]),):
        raise RecBackdoorError(f"{path}/{WEIGHTS}: {counts.shape[0]} counts for {info['n_items']} items; retrain it")
    return PopularityRanker(counts), None, {**info, "dir": str(path)}
