"""Steam: LLaRA's processed files (``train_data.df``, ``Val_data.df``, ``Test_data.df``,
``id2name.txt``); LLaRA's own splits are kept, see :mod:`.llara`."""

from __future__ import annotations

from pathlib import Path

from .common import LlaraData, SourceDir
from .llara import load_dir

DOMAIN = "games"


def load(source: str | Path) -> LlaraData:
    return load_dir(SourceDir(source), domain=DOMAIN)
