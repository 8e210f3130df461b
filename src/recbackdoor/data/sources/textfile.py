"""Strict reading of the separator-delimited text files that datasets ship.

Every problem becomes one :class:`DataError` line naming the file (as the user gave it) and,
where there is one, the line number: missing or empty file, UTF-16/binary content, bytes invalid
in the expected encoding, a wrong separator (wrong field count), or a field that is not a number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import DataError

Column = tuple[str, Callable[[str], object]]


def to_int(text: str) -> int:
    """An integer field; also accepts ``"3.0"`` (RecBole writes float columns)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not value.is_integer():
            raise
        return int(value)


def read_text(path: Path, label: str, encoding: str) -> str:
    """The whole file decoded strictly with ``encoding`` (a UTF-8 BOM is dropped)."""
    if not path.is_file():
        raise DataError(f"{label}: file not found")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{label}: file is empty")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise DataError(
            f"{label}: looks like UTF-16 or binary (NUL bytes); save it as {encoding} text"
        )
    codec = "utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{label} line {line}: bytes {data[exc.start : exc.end]!r} are not valid {encoding}; "
            f"save the file as {encoding}"
        ) from exc


def read_table(
    path: Path,
    label: str,
    *,
    sep: str,
    columns: Sequence[Column],
    encoding: str,
    header: Sequence[str] | None = None,
    rest_in_last: bool = False,
) -> dict[str, list]:
    """Parse a delimited file into ``{column: values}`` plus ``"_line"``: each row's line number.

    ``header``: the expected first line's field names (checked, then skipped); a header line whose
    first field is not one of them is a data line. ``rest_in_last``: the last column takes the rest
    of the line, separators included (e.g. ``354::Depths of Fear :: Knossos``).
    Lines are split on ``\\n`` only (not ``str.splitlines``: ISO-8859-1 ``\\x85`` is a character);
    blank lines are skipped.
    """
    text = read_text(path, label, encoding)
    names = [name for name, _ in columns]
    layout = sep.join(names)
    out: dict[str, list] = {name: [] for name in [*names, "_line"]}
    n = len(columns)
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split(sep, n - 1) if rest_in_last else line.split(sep)
        if lineno == 1 and header is not None:
            if [f.strip() for f in fields] != list(header):
                raise DataError(
                    f"{label} line 1: expected the header {sep.join(header)!r}, found {line[:80]!r}"
                )
            continue
        if len(fields) != n:
            hint = f"no {sep!r} found" if len(fields) == 1 else f"found {len(fields)} fields"
            raise DataError(
                f"{label} line {lineno}: expected {n} fields separated by {sep!r} ({layout}), "
                f"{hint}; is the separator right?"
            )
        for (name, conv), field in zip(columns, fields, strict=True):
            try:
                value = conv(field.strip()) if conv is not str else field
            except ValueError:
                raise DataError(
                    f"{label} line {lineno}: {name} {field!r} is not a number"
                ) from None
            out[name].append(value)
        out["_line"].append(lineno)
    if not out[names[0]]:
        raise DataError(f"{label}: no data lines")
    return out
