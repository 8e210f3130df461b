"""Checks on item titles that every reader applies (source files, prepared catalogs, catalogs
for ``scan``): a title is shown to the LLM and printed, so it may not hold control characters
(terminal escapes, NUL, line breaks that would split a prompt line) or be absurdly long (a
damaged file or a wrong separator). Every real catalog here passes: titles are at most 114
characters and hold no C0 control character (Steam's one stray C1 byte, ``\\x99``, is kept)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from ..errors import DataError

MAX_TITLE_CHARS = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # C0 controls (tab and newlines included) and DEL


def title_problem(title: str) -> str | None:
    """Why ``title`` is refused, or None."""
    if len(title) > MAX_TITLE_CHARS:
        return (
            f"the title is {len(title)} characters long (at most {MAX_TITLE_CHARS}); "
            "is the file damaged or the separator wrong?"
        )
    match = _CONTROL.search(title)
    if match:
        char = match.group()
        name = unicodedata.name(char, None) or {"\x1b": "ESCAPE", "\x00": "NUL"}.get(char, "control")
        return (
            f"the title holds the control character U+{ord(char):04X} ({name}) at position "
            f"{match.start() + 1}; remove it from the file"
        )
    return None


def check_titles(titles: Sequence[str], where: Iterable[int], label: str, unit: str = "line") -> None:
    """A :class:`DataError` naming ``label`` and the ``unit`` number (from ``where``, one per
    title) of the first refused title."""
    for title, pos in zip(titles, where, strict=False):
        problem = title_problem(title)
        if problem is not None:
            raise DataError(f"{label} {unit} {pos}: {problem}")


def check_catalog(ids: Sequence[object], titles: Sequence[str], label: str) -> None:
    """A plain catalog (``scan``): titles as :func:`check_titles`, and no id twice. Rows are
    counted from 1 (the first data row)."""
    check_titles(titles, range(1, len(titles) + 1), label, unit="row")
    first: dict[object, int] = {}
    for row, item in enumerate(ids, start=1):
        key = str(item)
        if not key.strip():
            raise DataError(f"{label} row {row}: the id is empty; every item needs an id")
        if key in first:
            raise DataError(f"{label} row {row}: id {key!r} appears twice (first on row {first[key]}); every item needs its own id")
        first[key] = row
