"""The restricted unpickler loads LLaRA's DataFrames and runs nothing else."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from recbackdoor.data.safe_pickle import safe_load
from recbackdoor.errors import DataError


class _Reduce:
    """Pickles as ``func(*args)``: what an attacker's file would run on a plain pickle.load."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _frame() -> pd.DataFrame:
    frame = pd.DataFrame(
        {"seq": [[1, 2, 5], [3, 4, 0]], "len_seq": [2, 3], "next": [(7, 4), (8, 1)]}
    )
    frame.columns = pd.Index(list(frame.columns), dtype=object)  # not Arrow-backed (pandas 3)
    return frame


def _payloads(marker: Path) -> dict[str, object]:
    return {
        "os.system": _Reduce(os.system, (f"touch {marker}",)),
        "builtins.open": _Reduce(builtins.open, (str(marker), "w")),
        "builtins.eval": _Reduce(builtins.eval, (f"open({str(marker)!r}, 'w')",)),
        "subprocess": _Reduce(subprocess.call, (["touch", str(marker)],)),
        "after a valid frame": [_frame(), _Reduce(os.system, (f"touch {marker}",))],
    }


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("kind", list(_payloads(Path("x"))))
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "Val_data.df"
    path.write_bytes(pickle.dumps(_payloads(marker)[kind], protocol=protocol))
    with pytest.raises(DataError, match="refused to load pickle") as info:
        safe_load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_hand_written_global_opcode_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.df"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(DataError, match=r"os\.system"):
        safe_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["numpy load", "builtins getattr", "builtins __import__"])
def test_other_names_in_allowed_modules_are_refused(tmp_path, name):
    module, attr = name.split()
    path = tmp_path / "x.df"
    path.write_bytes(f"c{module}\n{attr}\n.".encode())
    with pytest.raises(DataError, match=f"{module}.{attr}"):
        safe_load(path)


def test_round_trips_a_pandas_frame(tmp_path):
    path = tmp_path / "ok.df"
    _frame().to_pickle(path)
    loaded = safe_load(path)
    assert loaded.equals(_frame())


def test_loads_llara_reference_frames(shared_data):
    frame = safe_load(shared_data / "movielens" / "llara" / "Val_data.df")
    assert list(frame.columns) == ["seq", "len_seq", "next"]
    assert len(frame) == 94
    item, rating = frame["next"].iloc[0]
    assert int(item) >= 0 and 1 <= int(rating) <= 5


@pytest.mark.parametrize("content", [b"", b"\x80\x05\x95", b"not a pickle at all"])
def test_empty_truncated_or_foreign_file_is_a_data_error(tmp_path, content):
    path = tmp_path / "bad.df"
    path.write_bytes(content)
    with pytest.raises(DataError, match=str(path)):
        safe_load(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        safe_load(tmp_path / "nope.df")
