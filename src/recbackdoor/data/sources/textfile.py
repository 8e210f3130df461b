"""Strict reading of the separator-delimited text files that datasets ship.

Every problem becomes one :class:`DataError` line naming the file (as the user gave it) and,
where there is one, the line number: missing or empty file, UTF-16/binary content, bytes invalid
in the expected encoding, a wrong separator (wrong field count), or a field that is not a number.

Two parsers, one behaviour: tables whose columns are all numbers (ratings, plays: the large
files) go through pyarrow's CSV reader after a byte-level validation pass that admits only what
both parsers read the same way (ASCII digits, ``-``, the separator, newlines, ``\\r\\n``). Any
other byte, a wrong field count, a number pyarrow refuses, or a header line that does not match
sends the file to the line-by-line Python parser, which then either reads the odd-but-valid
input (``" 12"``, ``"3.0"``, blank lines with spaces) or raises the one-line error naming the
line. So the fast path never changes a value or a message; it only skips work on clean input.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ...errors import DataError

Column = tuple[str, Callable[[str], object]]

# Encodings in which every ASCII byte is that ASCII character and never part of a multi-byte
# sequence, so separators, newlines and digits can be found in the raw bytes.
_ASCII_SAFE = frozenset({"utf-8", "iso8859-1", "latin-1", "ascii"})
_NEVER_INVALID = frozenset({"iso8859-1", "latin-1"})  # every byte is a character
_NUMERIC_BYTES = b"0123456789-\n"
_FAST_SEP = b"\t"  # what a multi-character separator is replaced by (only when absent)


def to_int(text: str) -> int:
    """An integer field; also accepts ``"3.0"`` (RecBole writes float columns)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not value.is_integer():
            raise
        return int(value)


def _codec(encoding: str) -> str:
    return "utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding


def _read_bytes(path: Path, label: str, encoding: str) -> bytes:
    """The file's bytes after the checks of :func:`read_text` (empty, UTF-16/NUL, decoding)."""
    if not path.is_file():
        raise DataError(f"{label}: file not found")
    data = path.read_bytes()
    if not data[:4096].strip() and not data.strip():  # the prefix spares a copy of a large file
        raise DataError(f"{label}: file is empty; restore it from the dataset's download")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise DataError(
            f"{label}: looks like UTF-16 or binary (NUL bytes); save it as {encoding} text"
        )
    if codecs.lookup(_codec(encoding)).name not in _NEVER_INVALID:
        _decode(data, label, encoding)
    return data


def _decode(data: bytes, label: str, encoding: str) -> str:
    try:
        return data.decode(_codec(encoding))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{label} line {line}: bytes {data[exc.start : exc.end]!r} are not valid {encoding}; "
            f"save the file as {encoding}"
        ) from exc


def read_text(path: Path, label: str, encoding: str) -> str:
    """The whole file decoded strictly with ``encoding`` (a UTF-8 BOM is dropped)."""
    return _decode(_read_bytes(path, label, encoding), label, encoding)


def read_table(
    path: Path,
    label: str,
    *,
    sep: str,
    columns: Sequence[Column],
    encoding: str,
    header: Sequence[str] | None = None,
    rest_in_last: bool = False,
) -> dict[str, Sequence]:
    """Parse a delimited file into ``{column: values}`` plus ``"_line"``: each row's line number.

    ``header``: the expected first line's field names (checked, then skipped); a header line whose
    first field is not one of them is a data line. ``rest_in_last``: the last column takes the rest
    of the line, separators included (e.g. ``354::Depths of Fear :: Knossos``).
    Lines are split on ``\\n`` only (not ``str.splitlines``: ISO-8859-1 ``\\x85`` is a character);
    blank lines are skipped.

    Columns are lists, or int64 numpy arrays for a table of numbers read by the fast path (same
    values either way).
    """
    data = _read_bytes(path, label, encoding)
    fast = _read_numeric_fast(data, sep=sep, columns=columns, encoding=encoding, header=header)
    if fast is not None:
        return fast
    return _parse_lines(
        _decode(data, label, encoding),
        label,
        sep=sep,
        columns=columns,
        header=header,
        rest_in_last=rest_in_last,
    )


def _parse_lines(
    text: str,
    label: str,
    *,
    sep: str,
    columns: Sequence[Column],
    header: Sequence[str] | None,
    rest_in_last: bool,
) -> dict[str, Sequence]:
    """The reference parser: line by line, every rule and message of :func:`read_table`."""
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
                    f"{label} line 1: expected the header {sep.join(header)!r}, found {line[:80]!r}; is it the right file?"
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
                    f"{label} line {lineno}: {name} {field!r} is not a number; fix or remove that line"
                ) from None
            out[name].append(value)
        out["_line"].append(lineno)
    if not out[names[0]]:
        raise DataError(f"{label}: no data lines; restore it from the dataset's download")
    return out


def _read_numeric_fast(
    data: bytes,
    *,
    sep: str,
    columns: Sequence[Column],
    encoding: str,
    header: Sequence[str] | None,
) -> dict[str, Sequence] | None:
    """The table read by pyarrow, or ``None`` when the Python parser must decide.

    Only for columns that are all ``int``/``to_int``, an ASCII-safe encoding and a separator of
    ASCII characters other than digits, ``-`` and newlines. Admitted bytes: ASCII digits, ``-``,
    the separator and ``\\n`` (a ``\\r`` only right before ``\\n``). Every such field is
    ``-?[0-9]+`` or something pyarrow refuses (``""``, ``"-"``, ``"1-2"``, out of int64), and
    on ``-?[0-9]+`` pyarrow's int64 and Python's ``int`` agree.
    """
    if any(conv not in (int, to_int) for _, conv in columns) or not sep:
        return None
    try:
        if codecs.lookup(encoding).name not in _ASCII_SAFE:
            return None
    except LookupError:
        return None
    sep_bytes = sep.encode("ascii", errors="replace")
    if not sep.isascii() or set(sep_bytes) & set(_NUMERIC_BYTES + b"\r"):
        return None
    if data.startswith(codecs.BOM_UTF8) and _codec(encoding) == "utf-8-sig":
        data = data[len(codecs.BOM_UTF8) :]
    first_line = 1
    if header is not None:
        first, _, rest = data.partition(b"\n")
        line = first.decode("ascii", errors="replace").rstrip("\r")
        if not line.strip() or [f.strip() for f in line.split(sep)] != list(header):
            return None  # a blank first line or a wrong header: the Python parser's rules
        data, first_line = rest, 2
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")  # str.rstrip("\r") of each line; a lone \r stays
    if len(sep_bytes) > 1:
        if _FAST_SEP in data:
            return None
        data = data.replace(sep_bytes, _FAST_SEP)  # non-overlapping, left to right: as str.split
        sep_bytes = _FAST_SEP
    if data.translate(None, _NUMERIC_BYTES + sep_bytes):
        return None  # a byte outside the admitted set
    end = len(data)
    while end and data[end - 1] == ord("\n"):  # blank lines at the end hold no rows
        end -= 1
    if data.find(b"\n\n", 0, end) >= 0 or data.startswith(b"\n"):
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == ord("\n"))
        starts = np.concatenate(([0], ends + 1))
        ends = np.concatenate((ends, [len(buf)]))
        lines = np.flatnonzero(ends > starts) + first_line  # non-blank lines
    else:
        lines = np.arange(first_line, first_line + (data.count(b"\n", 0, end) + 1 if end else 0))
    if len(lines) == 0:
        return None  # "no data lines": the Python parser's message
    table = _pyarrow_int_table(data, sep_bytes.decode("ascii"), len(columns))
    if table is None or table.num_rows != len(lines):
        return None
    out: dict[str, Sequence] = {
        name: table.column(i).to_numpy() for i, (name, _) in enumerate(columns)
    }
    out["_line"] = lines
    return out


def _pyarrow_int_table(data: bytes, sep: str, n: int):  # -> pa.Table | None
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(n)]
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(
                delimiter=sep, quote_char=False, escape_char=False, ignore_empty_lines=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.int64() for name in names},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        return None
    if table.num_columns != n or any(col.null_count for col in table.columns):
        return None
    return table
