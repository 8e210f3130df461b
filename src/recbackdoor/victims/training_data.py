"""The dataset a victim trains on, and how to find it again (recorded in ``victim.json``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..data.io import load_dataset
from ..data.types import SplitDataset
from ..io_utils import dumps_json, sha256_file


def load_training_data(data: str | os.PathLike | SplitDataset) -> tuple[SplitDataset, dict[str, Any]]:
    """The dataset and how to find it again (directory and manifest hash)."""
    if isinstance(data, SplitDataset):
        sha = hashlib.sha256(dumps_json(data.manifest).encode("utf-8")).hexdigest()
        return data, {"dir": None, "manifest_sha256": sha, "name": data.name}
    directory = Path(data)
    dataset = load_dataset(directory)
    return dataset, {
        "dir": str(directory.resolve()),
        "manifest_sha256": sha256_file(directory / "manifest.json"),
        "name": dataset.name,
    }
