"""Load LLaRA's pickled pandas DataFrames without letting the file run code.

A pickle is a small program: its GLOBAL opcodes import any callable and its REDUCE opcodes call
it, so ``pickle.load`` of a downloaded file can run ``os.system``. :func:`safe_load` uses an
unpickler whose ``find_class`` admits only the pandas/numpy/builtin names that a plain DataFrame
of ints, lists and tuples needs (found with ``pickletools.dis`` on LLaRA's files, plus the
module paths newer pandas writes); any other name raises :class:`DataError` before it is called,
so nothing in the file runs. Arrow-backed columns (pandas 3's default ``str`` dtype pickles
through ``pyarrow.lib``) are refused too: building Arrow arrays from untrusted buffers is not
validated; re-save such frames with object-dtype columns.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

# numpy 2 renamed numpy.core to numpy._core; old pickles name the former (deprecated alias).
_RENAMED_MODULES = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        # plain containers and values
        ("builtins", "slice"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "dict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "complex"),
        ("builtins", "bool"),
        ("builtins", "str"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        # numpy arrays, dtypes and scalars
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        # pandas frames, series, indexes and their block managers (old and new module paths)
        ("pandas", "DataFrame"),
        ("pandas", "Series"),
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.series", "Series"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas.core.internals.managers", "SingleBlockManager"),
        ("pandas._libs.internals", "_unpickle_block"),
    }
)


class _CheckedArray(np.ndarray):
    """What ``numpy._core.multiarray._reconstruct`` gives inside :func:`safe_load`: an array
    whose ``__setstate__`` checks the state against its shape first. numpy itself does not:
    an object array whose pickled list is shorter than its shape reads past the list and
    crashes the interpreter (found by fuzzing, numpy 2.4: ``(113,)`` with 3 names). The
    consumers below turn these back into plain ``ndarray`` views."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError("malformed ndarray state")
        shape, dtype, raw = state[-4], state[-3], state[-1]
        if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple):
            raise ValueError("malformed ndarray state")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"bad ndarray shape {shape!r}")
        count = math.prod(shape)
        if dtype.hasobject:
            if dtype.fields is not None or not isinstance(raw, list) or len(raw) != count:
                raise ValueError(f"object array of shape {shape} with {len(raw) if isinstance(raw, list) else type(raw).__name__} items")
        elif not isinstance(raw, bytes | bytearray) or len(raw) != count * dtype.itemsize:
            raise ValueError(f"array of shape {shape} and dtype {dtype} with the wrong number of bytes")
        super().__setstate__(state)


def _plain(value: Any) -> Any:
    return value.view(np.ndarray) if isinstance(value, _CheckedArray) else value


def _checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise ValueError("only plain numpy arrays are loaded")
    return np.ndarray.__new__(_CheckedArray, shape, dtype)


def _unpickle_block(values: Any, placement: Any, ndim: Any) -> Any:
    from pandas._libs.internals import _unpickle_block as unpickle

    return unpickle(_plain(values), placement, ndim)


def _new_index(cls: Any, d: Any) -> Any:
    from pandas.core.indexes.base import _new_Index

    if isinstance(d, dict) and "data" in d:
        d = {**d, "data": _plain(d["data"])}
    return _new_Index(cls, d)


_CHECKED = {
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("pandas._libs.internals", "_unpickle_block"): _unpickle_block,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`; ``label`` names the file."""

    def __init__(self, file: io.BufferedIOBase, label: str) -> None:
        super().__init__(file)
        self.label = label

    def find_class(self, module: str, name: str) -> Any:
        module = _RENAMED_MODULES.get(module, module)
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"{self.label}: refused to load pickle: it references {module}.{name}, "
                "which is not on the allowed list of pandas/numpy/builtin data types "
                "(the file may be malicious); use LLaRA's original data files"
            )
        if (module, name) in _CHECKED:
            return _CHECKED[(module, name)]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.label}: refused to load pickle: it uses persistent ids")


def safe_load(path: str | os.PathLike, label: str | None = None) -> Any:
    """Unpickle ``path`` admitting only pandas/numpy/builtin data types.

    Raises :class:`DataError` (one line naming the file) for a missing, empty, truncated or
    foreign file and for any other global: nothing named by the file is called.
    """
    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        raise DataError(f"{label}: file not found")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{label}: file is empty; expected a pickled pandas DataFrame")
    try:
        return RestrictedUnpickler(io.BytesIO(data), label).load()
    except DataError:
        raise
    except Exception as exc:  # truncated/corrupt input raises many types (EOFError, KeyError...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""  # one line
        raise DataError(
            f"{label}: not a readable pickled pandas DataFrame ({type(exc).__name__}: {first}); "
            "the file is damaged or incomplete: download it again"
        ) from exc
