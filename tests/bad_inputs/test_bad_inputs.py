"""The bad-input corpus: every ``cases/*.toml`` is one damaged or hostile input run through
the CLI. Each must end with exactly one line ``error: ...`` on stderr that names the file
(the case's ``expect`` strings, hints included), a non-zero exit, no traceback, nothing on
stdout, no new file or folder anywhere under the case's folder (no partial output), and no
code from the input run (pickle payloads try to create a marker file).

A case file::

    what = "one line: the input and what should happen"
    family = "data:ml1m"              # grouping for the README count
    bases = ["ml1m"]                  # valid fixtures set up first (see BASES), then damaged
    args = ["data", "prepare", ...]   # {tmp}: the case folder, {marker}: the payload marker
    expect = ["movies.dat", "UTF-16"] # substrings of the error line

    [[files]]                         # written after the bases, in order; one of:
    path = "src/movies.dat"           #   text (+ encoding, default utf-8; {big} = 100 kB of 'A')
    text = "..."                      #   hex (raw bytes), json (any TOML value, as JSON),
                                      #   delete = true, truncate = N (keep the first N bytes),
                                      #   generator = "name" + params = {...} (see GENERATORS)

``test_bases_are_valid`` runs each base undamaged, so a case fails because of its damage.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recbackdoor.cli import main
from recbackdoor.data.io import save_dataset
from tests.conftest import make_synthetic_dataset

HERE = Path(__file__).parent
CASES = sorted((HERE / "cases").glob("*.toml"))
BIG = "A" * 100_000


# --------------------------------------------------------------------------- valid bases


def _ml1m(root: Path) -> None:
    src = root / "src"
    src.mkdir(exist_ok=True)
    (src / "movies.dat").write_text("".join(f"{i}::Movie {i} (19{50 + i})::Drama|Comedy\n" for i in range(1, 31)), encoding="latin-1")
    rows = [f"{u}::{(u * 7 + k * 3) % 30 + 1}::{k % 5 + 1}::{978300000 + u * 100 + k}\n" for u in range(1, 21) for k in range(6)]
    (src / "ratings.dat").write_text("".join(rows), encoding="latin-1")


def _ml100k(root: Path) -> None:
    src = root / "src"
    src.mkdir(exist_ok=True)
    genres = "|0" * 19
    (src / "u.item").write_text("".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x{genres}\n" for i in range(1, 31)), encoding="latin-1")
    rows = [f"{u}\t{(u * 7 + k * 3) % 30 + 1}\t{k % 5 + 1}\t{880000000 + u * 100 + k}\n" for u in range(1, 21) for k in range(6)]
    (src / "u.data").write_text("".join(rows), encoding="latin-1")


def _hetrec(root: Path) -> None:
    src = root / "src"
    src.mkdir(exist_ok=True)
    artists = "id\tname\turl\tpictureURL\n" + "".join(f"{i}\tArtist {i}\thttp://x/{i}\thttp://p/{i}\n" for i in range(1, 31))
    (src / "artists.dat").write_text(artists, encoding="utf-8")
    plays = "userID\tartistID\tweight\n" + "".join(f"{u}\t{(u * 7 + k * 3) % 30 + 1}\t{10 + k}\n" for u in range(1, 21) for k in range(6))
    (src / "user_artists.dat").write_text(plays, encoding="utf-8")


N_LLARA_ITEMS = 30


def _llara_frame(n_rows: int, offset: int = 0) -> pd.DataFrame:
    pad = N_LLARA_ITEMS
    seqs, lens, nexts = [], [], []
    for r in range(n_rows):
        hist = [(offset + r + k) % pad for k in range(5)]
        seqs.append(hist + [pad] * 5)
        lens.append(5)
        nexts.append((offset + r + 7) % pad)
    frame = pd.DataFrame({"seq": seqs, "len_seq": lens, "next": nexts})
    frame.columns = pd.Index(list(frame.columns), dtype=object)  # as LLaRA's (pandas 3: not Arrow)
    return frame


def _llara(root: Path) -> None:
    src = root / "src"
    src.mkdir(exist_ok=True)
    (src / "id2name.txt").write_text("".join(f"{i}::Game {i}\n" for i in range(N_LLARA_ITEMS)), encoding="utf-8")
    for name, n, off in (("train_data.df", 12, 0), ("Val_data.df", 3, 5), ("Test_data.df", 3, 9)):
        _llara_frame(n, off).to_pickle(src / name)


_PREPARED: dict[str, Path] = {}  # set by the module fixture below


@pytest.fixture(scope="module", autouse=True)
def _prepared_once(tmp_path_factory):
    """One synthetic prepared dataset (40 items), copied into each case that needs it."""
    _PREPARED["data"] = save_dataset(make_synthetic_dataset(n_users=30, n_items=40), tmp_path_factory.mktemp("prepared") / "data")
    yield
    _PREPARED.clear()


def _prepared(root: Path) -> None:
    shutil.copytree(_PREPARED["data"], root / "data")


def _safetensors(path: Path, tensors: dict[str, list[int]], dtype: str = "F32") -> None:
    """A safetensors file (zeros) with these shapes, written without torch."""
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header, offset = {}, 0
    for name, shape in tensors.items():
        n = size
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


ADAPTER_CONFIG = {
    "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 32, "lora_dropout": 0.1,
    "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "tiny-random", "bias": "none",
    "fan_in_fan_out": False, "inference_mode": True,
}  # fmt: skip
HIDDEN = 64  # tiny-random: hidden 64, 4 heads, 2 key/value heads (v_proj: 64 -> 32)


def _adapter_tensors(r: int = 8, hidden: int = HIDDEN) -> dict[str, list[int]]:
    out = {}
    for layer in range(2):
        for proj, width in (("q_proj", hidden), ("v_proj", hidden // 2)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            out[f"{key}.lora_A.weight"] = [r, hidden]
            out[f"{key}.lora_B.weight"] = [width, r]
    return out


def _write_adapter(adapter: Path) -> None:
    adapter.mkdir(parents=True, exist_ok=True)
    (adapter / "adapter_config.json").write_text(json.dumps(ADAPTER_CONFIG), encoding="utf-8")
    _safetensors(adapter / "adapter_model.safetensors", _adapter_tensors())


def _victim(root: Path) -> None:
    victim = root / "victim"
    victim.mkdir()
    (victim / "victim.json").write_text(json.dumps({"victim": "tallrec", "backbone": "tiny-random", "config": {}}), encoding="utf-8")
    _write_adapter(victim / "adapter")


def _scanner(root: Path) -> None:
    scanner = root / "scanner"
    scanner.mkdir()
    meta = {
        "format": "recbackdoor-pscanner", "prompt_version": 1, "backbone": "tiny-random", "domain": "movies",
        "threshold_title": 0.5, "evidence": "off", "config": {}, "log": {},
    }  # fmt: skip
    (scanner / "scanner.json").write_text(json.dumps(meta), encoding="utf-8")
    _write_adapter(scanner / "adapter")


def _catalog(root: Path) -> None:
    (root / "catalog.csv").write_text("id,title\n" + "".join(f"{i},Movie {i} (1995)\n" for i in range(40)), encoding="utf-8")


BASES: dict[str, Callable[[Path], None]] = {
    "ml1m": _ml1m, "ml100k": _ml100k, "hetrec": _hetrec, "llara": _llara, "prepared": _prepared,
    "victim": _victim, "scanner": _scanner, "catalog": _catalog,
}  # fmt: skip

# the command each base passes with (test_bases_are_valid)
VALID_RUNS: dict[str, list[str]] = {
    "ml1m": ["data", "prepare", "--dataset", "ml1m", "--source", "{tmp}/src", "--out", "{tmp}/out"],
    "ml100k": ["data", "prepare", "--dataset", "ml100k", "--source", "{tmp}/src", "--out", "{tmp}/out"],
    "hetrec": ["data", "prepare", "--dataset", "lastfm", "--source", "{tmp}/src", "--out", "{tmp}/out"],
    "llara": ["data", "prepare", "--dataset", "steam", "--source", "{tmp}/src", "--out", "{tmp}/out", "--min-history", "1", "--n-candidates", "5"],
    "prepared": ["attack", "--data", "{tmp}/data", "--out", "{tmp}/out", "--ratio", "0.1"],
    "victim": ["evaluate", "--model", "{tmp}/victim", "--data", "{tmp}/data", "--out", "{tmp}/out", "--max-samples", "2"],
}


# --------------------------------------------------------------------------- damage


class _Payload:
    """A pickle that runs ``func(*args)`` when loaded by a plain unpickler."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _gen_pickle_payload(path: Path, tmp: Path, marker: Path, how: str = "os.system", protocol: int = 4) -> None:
    import builtins
    import subprocess

    cmd = f"touch {marker}"
    payload = {
        "os.system": _Payload(os.system, cmd),
        "subprocess": _Payload(subprocess.call, ["touch", str(marker)]),
        "eval": _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "getattr": None,  # getattr(__import__("os"), "system")(cmd), written by hand below
        # the payload hidden inside a real DataFrame cell
        "in-frame": _llara_frame(1).assign(len_seq=[_Payload(os.system, cmd)]),
    }[how]
    if how == "getattr":
        path.write_bytes(
            b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'" + cmd.encode() + b"'\ntR."
        )
        return
    path.write_bytes(pickle.dumps(payload, protocol=protocol))


def _gen_pickle(path: Path, tmp: Path, marker: Path, what: str) -> None:
    obj: Any = {
        "list": [[1, 2, 3], 5, 4],
        "string": "not a frame",
        "missing-column": _llara_frame(3)[["seq", "len_seq"]],
        "empty-frame": _llara_frame(0),
        "unknown-item": _llara_frame(3).assign(next=[999, 1, 2]),
        "bad-item": _llara_frame(3).assign(next=["x", 1, 2]),
    }[what]
    path.write_bytes(pickle.dumps(obj, protocol=4))


def _gen_array_overrun(path: Path, tmp: Path, marker: Path) -> None:
    """An object array whose pickled shape (113,) exceeds its 3 items: numpy's own
    ``__setstate__`` reads past the list and crashes the interpreter (found by fuzzing)."""
    import numpy as np

    data = pickle.dumps(np.array(["seq", "len_seq", "next"], dtype=object), protocol=4)
    assert data.count(b"K\x03\x85") == 1
    path.write_bytes(data.replace(b"K\x03\x85", b"Kq\x85"))


def _gen_safetensors(path: Path, tmp: Path, marker: Path, rank: int = 8, hidden: int = HIDDEN, dtype: str = "F32") -> None:
    _safetensors(path, _adapter_tensors(rank, hidden), dtype)


def _gen_adapter_bin(path: Path, tmp: Path, marker: Path) -> None:
    """A pickled ``adapter_model.bin`` (torch.save format) whose loading would run code."""
    path.write_bytes(pickle.dumps(_Payload(os.system, f"touch {marker}")))


def _gen_parquet(path: Path, tmp: Path, marker: Path, what: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = {
        "catalog-no-title": pa.table({"item": pa.array([0, 1], pa.int32()), "name": ["a", "b"]}),
        "catalog-sparse-ids": pa.table({"item": pa.array([0, 5], pa.int32()), "title": ["a", "b"]}),
        "catalog-control": pa.table({"item": pa.array(range(40), pa.int32()), "title": [f"M {i}" if i != 3 else "M \x1b[2J" for i in range(40)]}),
        "catalog-big-title": pa.table({"item": pa.array(range(40), pa.int32()), "title": [f"M {i}" if i != 3 else BIG for i in range(40)]}),
        "samples-no-target": pa.table({"user": [0], "history": [[1, 2]], "candidates": [[1, 2, 3]]}),
        "samples-out-of-range": pa.table({"user": [0], "history": [[1, 2]], "candidates": [[1, 2, 999]], "target": [999]}),
    }[what]
    pq.write_table(table, path)


GENERATORS: dict[str, Callable[..., None]] = {
    "pickle_payload": _gen_pickle_payload,
    "pickle": _gen_pickle,
    "array_overrun": _gen_array_overrun,
    "safetensors": _gen_safetensors,
    "adapter_bin": _gen_adapter_bin,
    "parquet": _gen_parquet,
}


def _subst(value: str, tmp: Path, marker: Path) -> str:
    return value.replace("{tmp}", str(tmp)).replace("{marker}", str(marker)).replace("{big}", BIG)


def _apply(spec: dict[str, Any], tmp: Path, marker: Path) -> None:
    path = tmp / spec["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.get("delete"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif "truncate" in spec:
        path.write_bytes(path.read_bytes()[: spec["truncate"]])
    elif "symlink" in spec:
        path.symlink_to(spec["symlink"])
    elif "text" in spec:
        text = _subst(spec["text"], tmp, marker)
        path.write_bytes(text.encode(spec.get("encoding", "utf-8")))
    elif "hex" in spec:
        path.write_bytes(bytes.fromhex(spec["hex"].replace(" ", "")))
    elif "json" in spec:
        path.write_text(json.dumps(spec["json"]), encoding="utf-8")
    elif "generator" in spec:
        GENERATORS[spec["generator"]](path, tmp, marker, **spec.get("params", {}))
    else:
        raise AssertionError(f"file spec without content: {spec}")


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.lstat().st_size if p.is_file() else -1) for p in root.rglob("*")}


def _load(path: Path) -> dict[str, Any]:
    case = tomllib.loads(path.read_text(encoding="utf-8"))
    missing = {"what", "family", "args", "expect"} - set(case)
    assert not missing, f"{path.name}: missing {missing}"
    return case


# --------------------------------------------------------------------------- the tests


def test_corpus_size():
    assert len(CASES) >= 40, len(CASES)
    families = {_load(p)["family"].split(":")[0] for p in CASES}
    assert {"data", "dataset", "config", "cli", "scan", "pickle", "model"} <= families, families


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    root = tmp_path / "case"
    root.mkdir()
    return root


@pytest.mark.parametrize("case_file", CASES, ids=[p.stem for p in CASES])
def test_bad_input(case_file: Path, case_dir: Path, capsys, monkeypatch):
    case = _load(case_file)
    marker = case_dir.parent / "MARKER-code-ran"
    for base in case.get("bases", []):
        BASES[base](case_dir)
    for spec in case.get("files", []):
        _apply(spec, case_dir, marker)
    before = _snapshot(case_dir)
    monkeypatch.chdir(case_dir)
    capsys.readouterr()
    code = main([_subst(a, case_dir, marker) for a in case["args"]])
    out, err = capsys.readouterr()
    assert code != 0, f"{case_file.name}: exit 0 for a bad input ({case['what']})"
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case_file.name}: stderr is not one error line:\n{err}"
    for needle in case["expect"]:
        assert _subst(needle, case_dir, marker) in lines[0], f"{case_file.name}: {needle!r} not in {lines[0]!r}"
    assert out == "", f"{case_file.name}: output on stdout: {out!r}"
    if os.environ.get("BAD_INPUTS_SHOW"):  # BAD_INPUTS_SHOW=1 pytest -s: read every message
        print(f"\n{case_file.stem}: {lines[0].replace(str(case_dir), '{tmp}')}", file=sys.__stderr__)
    assert _snapshot(case_dir) == before, f"{case_file.name}: files changed or left behind"
    assert not marker.exists(), f"{case_file.name}: the input ran code"


@pytest.mark.parametrize("base", sorted(VALID_RUNS))
def test_bases_are_valid(base: str, case_dir: Path, capsys):
    if base == "victim":
        BASES["prepared"](case_dir)
    BASES[base](case_dir)
    code = main([_subst(a, case_dir, case_dir) for a in VALID_RUNS[base]])
    assert code == 0, capsys.readouterr().err
