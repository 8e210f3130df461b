"""`recbackdoor data prepare|stats`: real datasets end to end, and every bad input -> one line,
exit 2, no output directory."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pandas as pd
import pytest

from recbackdoor.cli import main
from recbackdoor.data.io import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def _prepare(*args: str) -> int:
    return main(["data", "prepare", *args])


# --------------------------------------------------------------------------- real data


def test_lastfm_llara_counts(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    source = os.path.relpath(shared_data / "lastfm" / "llara", ROOT)  # ../shared/data/lastfm/llara
    out = tmp_path / "lastfm"
    assert _prepare("--dataset", "lastfm", "--source", source, "--out", str(out)) == 0
    assert "4606" in capsys.readouterr().out
    ds = load_dataset(out)
    assert len(ds.test) == 122 and len(ds.valid) == 122 and len(ds.catalog) == 4606
    assert ds.catalog.domain == "music"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"][0]["path"] == f"{Path(source).as_posix()}/id2name.txt"
    assert manifest["counts"]["test_samples"] == 122


def test_ml100k_from_recbole_wheel_and_stats(tmp_path, capsys):
    out = tmp_path / "ml100k"
    assert _prepare("--dataset", "ml100k", "--out", str(out), "--title-style", "llara") == 0
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["items"] == 1682 and stats["users"] <= 943
    assert stats["samples"]["test"] == stats["users_per_split"]["test"] > 80
    assert load_dataset(out).catalog.titles[0] == "Toy Story"
    assert main(["data", "stats", str(out)]) == 0
    assert "train" in capsys.readouterr().out


def test_hetrec_lastfm_raw(shared_data, tmp_path):
    out = tmp_path / "hetrec"
    src = shared_data / "lastfm" / "hetrec2011-lastfm-2k"
    assert (
        _prepare("--dataset", "lastfm", "--source", str(src), "--out", str(out), "--seed", "2") == 0
    )
    ds = load_dataset(out)
    assert len(ds.catalog) == 17632 and ds.catalog.domain == "music"
    n_users = len({s.user for s in ds.train + ds.valid + ds.test})
    assert abs(len({s.user for s in ds.test}) - n_users / 10) <= 2  # 8:1:1 user split


def test_force_replaces_existing_output(shared_data, tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "old.txt").write_text("x")
    src = str(shared_data / "movielens" / "llara")
    assert _prepare("--dataset", "llara", "--source", src, "--out", str(out), "--force") == 0
    assert not (out / "old.txt").exists() and (out / "manifest.json").is_file()


# --------------------------------------------------------------------------- bad inputs


def _movies(directory: Path, n: int = 30) -> None:
    lines = [f"{i}::Movie {i} ({1950 + i})::Drama" for i in range(1, n + 1)]
    (directory / "movies.dat").write_text("\n".join(lines) + "\n", encoding="iso-8859-1")


def _ratings(directory: Path, lines: list[str]) -> None:
    (directory / "ratings.dat").write_text(
        "".join(f"{line}\n" for line in lines), encoding="iso-8859-1"
    )


def _good_ratings() -> list[str]:
    return [f"{u}::{m}::4::{1000 + m}" for u in range(1, 11) for m in range(1, 8)]


def _frame(rows: list[tuple[list[int], int, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=pd.Index(["seq", "len_seq", "next"], dtype=object))
    return frame


def _llara_dir(directory: Path, n_items: int = 30) -> Path:
    """A tiny LLaRA-format directory (pad id = n_items)."""
    directory.mkdir()
    (directory / "id2name.txt").write_text("".join(f"{i}::Artist {i}\n" for i in range(n_items)))

    def row(items: list[int]) -> tuple[list[int], int, int]:
        history = items[:-1]
        return history + [n_items] * (10 - len(history)), len(history), items[-1]

    _frame([row(list(range(k))) for k in range(2, 8)]).to_pickle(directory / "train_data.df")
    _frame([row([3, 4, 5, 6]), row([7, 8, 9, 10, 11])]).to_pickle(directory / "Val_data.df")
    _frame([row([12, 13, 14, 15])]).to_pickle(directory / "Test_data.df")
    return directory


def test_tiny_llara_dir_is_valid(tmp_path):
    """The bad-input cases below start from this directory: make sure it works as is."""
    src = _llara_dir(tmp_path / "src")
    assert _prepare("--dataset", "lastfm", "--source", str(src), "--out", str(tmp_path / "o")) == 0
    ds = load_dataset(tmp_path / "o")
    assert [s.history for s in ds.valid] == [(3, 4, 5), (7, 8, 9, 10)]


def _case_missing_file(src: Path) -> tuple[str, str]:
    _movies(src)
    return "ml1m", "ratings.dat: file not found"


def _case_wrong_separator(src: Path) -> tuple[str, str]:
    _movies(src)
    _ratings(src, [line.replace("::", "\t") for line in _good_ratings()])
    return "ml1m", "ratings.dat line 1: expected 4 fields separated by '::'"


def _case_unknown_item(src: Path) -> tuple[str, str]:
    _movies(src)
    lines = _good_ratings()
    lines[2] = "1::999999::5::978300760"
    _ratings(src, lines)
    return "ml1m", "ratings.dat line 3: item id 999999 is not in"


def _case_not_a_number(src: Path) -> tuple[str, str]:
    _movies(src)
    lines = _good_ratings()
    lines[4] = "1::2::five::978300760"
    _ratings(src, lines)
    return "ml1m", "ratings.dat line 5: rating 'five' is not a number"


def _case_empty_file(src: Path) -> tuple[str, str]:
    _movies(src)
    _ratings(src, [])
    return "ml1m", "ratings.dat: file is empty"


def _case_utf16(src: Path) -> tuple[str, str]:
    _llara_dir(src)
    text = (src / "id2name.txt").read_text()
    (src / "id2name.txt").write_bytes(text.encode("utf-16"))
    return "lastfm", "id2name.txt: looks like UTF-16"


def _case_invalid_utf8(src: Path) -> tuple[str, str]:
    src.mkdir()
    head = "id\tname\turl\tpictureURL\n1\tA\tu\tp\n"
    (src / "artists.dat").write_bytes(head.encode() + b"2\tCaf\xe9\tu\tp\n")
    (src / "user_artists.dat").write_text("userID\tartistID\tweight\n2\t1\t10\n")
    return "lastfm", "artists.dat line 3: bytes b'\\xe9' are not valid utf-8"


def _case_malicious_pickle(src: Path) -> tuple[str, str]:
    _llara_dir(src)

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {src / 'pwned'}",)

    (src / "Val_data.df").write_bytes(pickle.dumps(Evil()))
    return "lastfm", "Val_data.df: refused to load pickle: it references "


def _case_missing_source(src: Path) -> tuple[str, str]:
    return "steam", "source directory not found"


CASES = {name[len("_case_") :]: fn for name, fn in globals().items() if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_and_no_output(tmp_path, capsys, case):
    src = tmp_path / "src"
    if case not in ("invalid_utf8", "utf16", "malicious_pickle", "missing_source"):
        src.mkdir()
    dataset, expected = CASES[case](src)
    out = tmp_path / "parent" / "out"
    assert _prepare("--dataset", dataset, "--source", str(src), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))
    assert not (src / "pwned").exists()


def test_existing_output_without_force(shared_data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    src = str(shared_data / "movielens" / "llara")
    assert _prepare("--dataset", "llara", "--source", src, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output directory exists" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_stats_of_missing_directory(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "nope")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
