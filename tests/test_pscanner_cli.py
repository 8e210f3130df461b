"""`recbackdoor scanner train` and `recbackdoor scan` on small CSV / JSONL / Parquet catalogs
(tiny-random backbone)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from recbackdoor.cli import main
from recbackdoor.defense.pscanner.catalog_io import OUTPUT_COLUMNS, read_catalog

WORDS_A = ("Blue", "Night", "City", "Lost", "Wild", "Silent", "Golden")
WORDS_B = ("River", "Dream", "Heart", "Road", "Star", "Garden")
TITLES = [f"{a} {b}" for a in WORDS_A for b in WORDS_B] + ["Blue River_x7", "Lost Star_x7", "Wild Road_x7"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    d = tmp_path_factory.mktemp("catalogs")
    frame = pd.DataFrame({"item_id": [f"i{k}" for k in range(len(TITLES))], "name": TITLES, "extra": 1})
    frame.to_csv(d / "cat.csv", index=False)
    frame.to_json(d / "cat.jsonl", orient="records", lines=True)
    frame.to_parquet(d / "cat.parquet")
    (d / "cat.txt").write_text("hello\n")
    (d / "bad.parquet").write_bytes(b"not parquet at all")
    return d


@pytest.fixture(scope="module")
def scanner_dir(catalogs, tmp_path_factory, monkeypatch_module):
    """A scanner trained through the CLI, with the CLI's config patched down to tiny sizes."""
    import recbackdoor.defense.pscanner as pscanner

    @dataclasses.dataclass
    class TinyConfig(pscanner.ScannerConfig):
        dtype: str | None = "fp32"
        n_train: int = 32
        n_policy: int = 4
        n_rule_triggers: int = 3
        n_agent_triggers: int = 1
        n_val_clean: int = 12
        round_triggers: int = 1
        round_replay: int = 4
        agent_pairs: int = 1
        batch_size: int = 8
        score_batch_size: int = 16

    monkeypatch_module.setattr(pscanner, "ScannerConfig", TinyConfig)
    out = tmp_path_factory.mktemp("sc") / "scanner"
    rc = main([
        "scanner", "train", "--catalog", str(catalogs / "cat.csv"), "--title-column", "name",
        "--domain", "movies", "--out", str(out), "--backbone", "tiny-random", "--rounds", "1",
    ])  # fmt: skip
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_scanner_train_cli_writes_a_scanner(scanner_dir, capsys):
    assert (scanner_dir / "scanner.json").is_file() and (scanner_dir / "adapter").is_dir()
    lines = (scanner_dir / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [0, 1]
    meta = json.loads((scanner_dir / "scanner.json").read_text())
    assert meta["config"]["rounds"] == 1 and meta["config"]["n_train"] == 32


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_scan_writes_the_right_columns(fmt, catalogs, scanner_dir, tmp_path, capsys):
    out = tmp_path / "flagged.csv"
    rc = main([
        "scan", str(catalogs / f"cat.{fmt}"), "--scanner", str(scanner_dir), "--title-column", "name",
        "--id-column", "item_id", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    res = pd.read_csv(out, keep_default_na=False)
    assert tuple(res.columns) == OUTPUT_COLUMNS
    assert list(res["id"]) == [f"i{k}" for k in range(len(TITLES))]
    assert list(res["title"]) == TITLES
    assert res["score"].between(0, 1).all() and set(res["flagged"]) <= {0, 1}
    meta = json.loads((scanner_dir / "scanner.json").read_text())
    assert ((res["score"] >= meta["threshold"] - 1e-6) == res["flagged"].astype(bool)).all()
    assert "flagged" in capsys.readouterr().out


def test_scan_same_scores_for_every_format(catalogs, scanner_dir, tmp_path):
    got = []
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"{fmt}.csv"
        assert main(["scan", str(catalogs / f"cat.{fmt}"), "--scanner", str(scanner_dir),
                     "--title-column", "name", "--id-column", "item_id", "--out", str(out)]) == 0  # fmt: skip
        got.append(pd.read_csv(out)["score"])
    assert got[0].equals(got[1])


@pytest.mark.parametrize(
    "args, message",
    [
        (["cat.csv", "--title-column", "title", "--id-column", "item_id"], "no column 'title'"),
        (["cat.csv", "--title-column", "name", "--id-column", "id"], "no column 'id'"),
        (["cat.txt", "--title-column", "name"], "unknown catalog format"),
        (["bad.parquet", "--title-column", "name"], "cannot read it as parquet"),
        (["missing.csv", "--title-column", "name"], "not found"),
    ],
)
def test_scan_errors_are_one_line(args, message, catalogs, scanner_dir, tmp_path, capsys):
    argv = ["scan", str(catalogs / args[0]), *args[1:], "--scanner", str(scanner_dir), "--out", str(tmp_path / "o.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "o.csv").exists()


def test_scan_without_scanner_needs_a_domain(catalogs, tmp_path, capsys):
    rc = main(["scan", str(catalogs / "cat.csv"), "--title-column", "name", "--id-column", "item_id",
               "--out", str(tmp_path / "o.csv")])  # fmt: skip
    assert rc == 2 and "--domain is required" in capsys.readouterr().err


def test_scan_refuses_a_scanner_of_another_domain(catalogs, scanner_dir, tmp_path, capsys):
    rc = main(["scan", str(catalogs / "cat.csv"), "--title-column", "name", "--id-column", "item_id",
               "--scanner", str(scanner_dir), "--domain", "music", "--out", str(tmp_path / "o.csv")])  # fmt: skip
    assert rc == 2 and "domain" in capsys.readouterr().err


def test_read_catalog_ids_and_titles(catalogs):
    ids, titles = read_catalog(catalogs / "cat.jsonl", "name", "item_id")
    assert ids[:2] == ["i0", "i1"] and titles == TITLES
    ids, _ = read_catalog(catalogs / "cat.csv", "name", None)
    assert ids == list(range(len(TITLES)))


def test_scan_trains_a_scanner_on_the_catalog_when_none_is_given(catalogs, scanner_dir, tmp_path):
    # scanner_dir's fixture has patched the default config down to tiny sizes
    out = tmp_path / "flagged.csv"
    rc = main(["scan", str(catalogs / "cat.jsonl"), "--title-column", "name", "--id-column", "item_id",
               "--domain", "movies", "--backbone", "tiny-random", "--rounds", "0", "--out", str(out)])  # fmt: skip
    assert rc == 0
    res = pd.read_csv(out)
    assert tuple(res.columns) == OUTPUT_COLUMNS and len(res) == len(TITLES)
