"""detect-bench: the real poison() per policy and level, every detector through defend's
detect(), three output files; P-Scanner's channel ablation from one fitted scanner; STRIP rows
on the attack sets; one-line errors."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from recbackdoor.attack import AttackConfig, poison
from recbackdoor.cli import main
from recbackdoor.data.io import save_dataset
from recbackdoor.data.samples import build_samples
from recbackdoor.data.types import Catalog, SplitDataset
from recbackdoor.defense import bench
from recbackdoor.defense.bench import BenchConfig, bench_strip, parse_models
from recbackdoor.defense.defend import training_items
from recbackdoor.errors import ConfigError
from recbackdoor.experiments.detect import run_detect_bench

from .test_strip import StubVictim

N_ITEMS = 150


def ml100k_slice(source: Path, n_items: int = N_ITEMS, seed: int = 0) -> SplitDataset:
    """Real ML-100K titles and ratings restricted to the first ``n_items`` movies (a small,
    fast catalog with real titles), samples built as `data prepare` builds them."""
    lines = (source / "u.item").read_text(encoding="iso-8859-1").splitlines()
    titles = tuple(line.split("|")[1] for line in lines[:n_items])
    events: dict[int, list[tuple[int, int]]] = {}
    for line in (source / "u.data").read_text().splitlines():
        user, item, _, ts = (int(v) for v in line.split("\t"))
        if item <= n_items:
            events.setdefault(user, []).append((ts, item - 1))
    sequences = {u: [i for _, i in sorted(ev)] for u, ev in events.items() if len(ev) >= 5}
    splits = build_samples(sequences, n_items, seed=seed)
    manifest = {"dataset": "ml100k-slice", "seed": seed}
    return SplitDataset(catalog=Catalog(titles=titles, domain="movies"), manifest=manifest, **splits)


@pytest.fixture(scope="module")
def slice_dir(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slice") / "ml100k-slice"
    save_dataset(ml100k_slice(shared_data / "movielens" / "ml-100k"), out)
    return out


def expected_poisoned_titles(data_dir: Path, level: str, policy: str, ratio: float) -> tuple[int, int]:
    """(distinct training titles, of which poisoned), computed here from poison() itself."""
    from recbackdoor.data.io import load_dataset

    ds = load_dataset(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = poison(ds, AttackConfig(level=level, policy=policy, ratio=ratio, seed=0))
    items = training_items(result.dataset)
    titles = {result.dataset.catalog.titles[i] for i in items}
    poisoned = {result.dataset.catalog.titles[i] for i in items if i in set(result.manifest["triggered_items"])}
    return len(titles), len(poisoned)


def test_detect_bench_cli_writes_csv_json_and_markdown(slice_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["detect-bench", "--data", str(slice_dir), "--out", str(out), "--methods", "stat",
               "--levels", "char,sentence", "--policy", "per-sample,fixed",
               "--ratio", "0.05"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(bench.FILES)
    assert "[fixed sentence] poisoned:" in captured.err  # progress lines
    with open(out / "detect_bench.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cells = [(r["policy"], r["level"], r["detector"]) for r in rows]
    assert cells == [(p, lv, d) for p in ("per-sample", "fixed") for lv in ("char", "sentence") for d in ("stat",)]
    report = json.loads((out / "detect_bench.json").read_text())
    assert len(report["rows"]) == 4 and report["settings"]["ratio"] == 0.05
    assert report["machine"]["cpus"] >= 1
    for r in report["rows"]:
        n, n_poisoned = expected_poisoned_titles(slice_dir, r["level"], r["policy"], 0.05)
        assert (r["n"], r["n_poisoned"]) == (n, n_poisoned) and r["unit"] == "titles"
        assert r["tp"] + r["fp"] == r["n_flagged"] and r["tp"] + r["fn"] == n_poisoned
        assert r["s_per_1k"] == pytest.approx(1000 * r["seconds"] / n, rel=1e-2, abs=1e-3)
    stat = {(r["policy"], r["level"]): r for r in report["rows"] if r["detector"] == "stat"}
    assert stat[("fixed", "char")]["n_poisoned"] == 10  # the fixed policy's 10 targets
    assert all(r["recall"] == 1.0 and r["f1"] >= 0.9 for r in stat.values())  # one shared trigger
    md = (out / "detect_bench.md").read_text()
    assert "## policy per-sample" in md and "## policy fixed" in md
    assert "| stat | char | `5v` |" in md and "| stat | sentence | `I watched this 3D movie` |" in md
    assert md in captured.out  # the CLI prints the table


class FakeScanner:
    """Stands in for a fitted P-Scanner: per-title scores known, channels switchable; counts
    how often it is trained, fitted and scored."""

    name = "pscanner"
    instances: list[FakeScanner] = []

    def __init__(self, with_channels: bool = True):
        self.channels, self.trained, self.fits, self.scored = "both", 0, 0, []
        self.threshold, self.model = 0.5, None
        if not with_channels:
            self.set_channels = None
        FakeScanner.instances.append(self)

    def set_channels(self, mode):
        self.channels = mode
        return self

    def fit(self, titles, domain):
        self.fits += 1
        if self.model is None:  # as CatalogTrainedScanner: trains on its first fit only
            self.model = object()
            self.trained += 1
        return self

    def score(self, titles):
        self.scored.append(self.channels)
        marked = np.array([float("_5v" in t) for t in titles])
        if self.channels == "llm":
            return 0.3 * marked  # the per-title channel misses everything
        return marked


def test_pscanner_ablation_rows_come_from_one_fitted_scanner(slice_dir, tmp_path, monkeypatch):
    from recbackdoor.defense import defend as defend_module

    FakeScanner.instances.clear()
    monkeypatch.setattr(defend_module, "build_detector",
                        lambda method, *a, **k: FakeScanner())  # fmt: skip
    report = run_detect_bench(slice_dir, tmp_path / "b", BenchConfig(methods=("pscanner",), levels=("char",)), progress=False)
    assert [r["detector"] for r in report["rows"]] == ["pscanner", "pscanner-llm", "pscanner-evidence"]
    (sc,) = FakeScanner.instances
    assert sc.trained == 1 and sc.fits == 3 and sc.channels == "both"
    assert sc.scored[0] == "both" and "llm" in sc.scored and "evidence" in sc.scored
    f1 = {r["detector"]: r["f1"] for r in report["rows"]}
    assert f1 == {"pscanner": 1.0, "pscanner-llm": 0.0, "pscanner-evidence": 1.0}
    rows = {r["detector"]: r for r in report["rows"]}
    assert rows["pscanner-llm"]["seconds"] >= rows["pscanner"]["seconds"]  # includes the shared pass

    FakeScanner.instances.clear()
    monkeypatch.setattr(defend_module, "build_detector", lambda method, *a, **k: FakeScanner(False))
    report = run_detect_bench(slice_dir, tmp_path / "c", BenchConfig(methods=("pscanner",), levels=("char",)), progress=False)
    assert [r["detector"] for r in report["rows"]] == ["pscanner"]
    assert "set_channels is not available" in report["rows"][0]["note"]


def test_bench_strip_rows_on_the_attack_sets(slice_dir):
    from recbackdoor.data.io import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = poison(load_dataset(slice_dir), AttackConfig(level="char", ratio=0.05, seed=0))
    config = BenchConfig(methods=("strip",), model="stub", strip_copies=6, strip_frr=0.05).check()
    rows = bench_strip(StubVictim(), result.attack_sets, result.dataset.catalog, config, progress=False)
    assert [r["detector"] for r in rows] == ["strip:seen", "strip:unseen"]
    n_clean = len(result.attack_sets["clean"])
    for r in rows:
        assert r["unit"] == "prompts" and r["recall"] == 1.0  # the stub always picks the trigger
        assert r["victim_asr"] == 1.0
        assert r["n"] - r["n_poisoned"] == n_clean - r["calibration_prompts"]  # the other half
        assert r["fpr"] <= 0.2
    assert rows[0]["calibration_prompts"] == n_clean // 2


def test_strip_through_the_cli_with_a_backbone(slice_dir, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["detect-bench", "--data", str(slice_dir), "--out", str(out), "--methods", "strip",
               "--model", "tiny-random", "--levels", "word", "--strip-copies", "2",
               "--strip-max-prompts", "4"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rows = json.loads((out / "detect_bench.json").read_text())["rows"]
    assert [(r["detector"], r["n"], r["n_poisoned"]) for r in rows] == [("strip:seen", 8, 4), ("strip:unseen", 8, 4)]
    assert all(0.0 <= r["victim_asr"] <= 1.0 and "victim tiny-random" in r["note"] for r in rows)


def test_parse_models():
    assert parse_models(None) is None
    assert parse_models(["runs/victim"]) == "runs/victim"
    assert parse_models(["char=a", "word=b"]) == {"char": "a", "word": "b"}
    with pytest.raises(ConfigError, match="LEVEL=DIR"):
        parse_models(["char=a", "b"])


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--levels", "char,emoji"], "unknown level 'emoji'"),
        (["--methods", "stat,lasso"], "unknown method 'lasso'"),
        (["--policy", "random"], "unknown policy 'random'"),
        (["--methods", "stat,strip"], "method strip needs a victim"),
        (["--methods", "stat", "--scanner", "x"], "--scanner is only used by method pscanner"),
        (["--ratio", "1.5"], "--ratio must be in (0, 1)"),
        (["--position", "middle"], "unknown --position 'middle'"),
        (["--model", "char=a", "--model", "word=b"], "no victim for level(s) sentence"),
    ],
)
def test_detect_bench_errors_are_one_line(slice_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    rc = main(["detect-bench", "--data", str(slice_dir), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_detect_bench_refuses_a_poisoned_dataset_and_an_existing_output(slice_dir, tmp_path, capsys):
    from recbackdoor.attack import save_poisoned
    from recbackdoor.data.io import load_dataset

    poisoned = tmp_path / "poisoned"
    save_poisoned(poison(load_dataset(slice_dir), AttackConfig(ratio=0.05)), poisoned)
    rc = main(["detect-bench", "--data", str(poisoned), "--out", str(tmp_path / "o"), "--methods", "stat"])
    assert rc == 2 and "already poisoned" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    rc = main(["detect-bench", "--data", str(slice_dir), "--out", str(tmp_path / "exists"), "--methods", "stat"])
    assert rc == 2 and "output directory exists" in capsys.readouterr().err


def test_reuse_models_builds_one_detector_per_method(slice_dir, tmp_path, monkeypatch):
    from recbackdoor.defense import defend as defend_module

    built: list[str] = []
    real = defend_module.build_detector

    def counting(method, *a, **k):
        built.append(method)
        return real(method, *a, **k)

    monkeypatch.setattr(defend_module, "build_detector", counting)
    levels = ("char", "word", "sentence")
    fresh = run_detect_bench(slice_dir, tmp_path / "a", BenchConfig(methods=("stat",), levels=levels), progress=False)
    assert built == ["stat"] * 3
    built.clear()
    reused = run_detect_bench(slice_dir, tmp_path / "b", BenchConfig(methods=("stat",), levels=levels, reuse_models=True),
                              progress=False)  # fmt: skip
    assert built == ["stat"] and any("--reuse-models" in n for n in reused["notes"])
    strip_t = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "s_per_1k")} for r in rows]  # noqa: E731
    assert strip_t(fresh["rows"]) == strip_t(reused["rows"])  # same detections either way


def test_detect_bench_with_trigger_families(slice_dir, tmp_path, capsys):
    """--trigger-family: every poisoned title its own member of the level's family. The
    statistical baseline, which counts one repeated fragment, loses what it had on one
    reused trigger (F1 >= 0.9 above)."""
    out = tmp_path / "bench"
    rc = main(["detect-bench", "--data", str(slice_dir), "--out", str(out), "--methods", "stat",
               "--levels", "word", "--ratio", "0.05", "--trigger-family"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "detect_bench.json").read_text())
    (row,) = report["rows"]
    assert report["settings"]["trigger_family"] is True
    assert row["trigger"].startswith("word family, ") and int(row["trigger"].split(", ")[1].split()[0]) > 1
    assert row["n_poisoned"] > 0 and row["recall"] < 0.5
    assert "--trigger-family" in (out / "detect_bench.md").read_text()


def test_detect_study_kind_is_detect_bench_as_a_cached_study(shared_data, tmp_path, capsys):
    """`[run] kind = "detect"`: stealthy families x both policies x two detectors as stages of
    the one runner; a rerun reuses every stage; `detect-bench` on the same prepared data gives
    the same detections."""
    config = tmp_path / "detect.toml"
    config.write_text(
        '[run]\nkind = "detect"\nname = "detect-smoke"\nthreads = 1\n'
        '[data]\ndatasets = ["lastfm"]\ncandidates = 10\nhistory = 5\n'
        '[attack]\nlevels = ["char", "word"]\ntrigger_family = ["lookalike", "domain"]\nratios = [0.01]\n'
        'policy = ["per-sample", "fixed"]\n'
        '[detect]\nmethods = ["stat", "hidden-chars"]\n'
    )
    out, stages = tmp_path / "run", tmp_path / "stages"
    argv = ["run", str(config), "--out", str(out), "--data", str(shared_data), "--stages", str(stages)]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "detect" and set(results["settings"]) == {"lastfm"}
    cells = [(r["policy"], r["level"], r["trigger"].split()[0], r["detector"]) for r in results["rows"]]
    assert cells == [(p, f"{lv} ({fam})", fam, d) for p in ("per-sample", "fixed")
                     for lv, fam in (("char", "lookalike"), ("word", "domain")) for d in ("stat", "hidden-chars")]
    for r in results["rows"]:
        assert r["tp"] + r["fn"] == r["n_poisoned"] > 0 and r["ratio"] == 0.01
    hidden = {(r["policy"], r["level"]): r for r in results["rows"] if r["detector"] == "hidden-chars"}
    assert hidden[("per-sample", "char (lookalike)")]["recall"] > 0.5  # look-alike characters are what it reads
    assert hidden[("per-sample", "word (domain)")]["tp"] == 0  # ordinary words carry no hidden character
    assert "| hidden-chars | **" in (out / "detect_bench.md").read_text()  # the F1 overview: one column per family
    for name in ("report.md", "detect_bench.csv", "detect_bench.md", "detect_bench.json", "detection_f1.png"):
        assert (out / name).is_file(), name
    assert "### policy fixed" in (out / "report.md").read_text()
    capsys.readouterr()

    assert main(argv) == 0  # every stage reused
    err = capsys.readouterr().err
    n_stages = len(json.loads((out / "stages.json").read_text()))
    assert n_stages == 1 + 4 + 8 and err.count("(reused)") == n_stages and "done in" not in err
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]

    data_dir = next(p for p in stages.iterdir() if p.name.startswith("data-"))
    bench_out = tmp_path / "bench"
    assert main(["detect-bench", "--data", str(data_dir), "--out", str(bench_out), "--methods", "stat,hidden-chars",
                 "--family", "lookalike", "--policy", "per-sample,fixed"]) == 0
    timeless = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "s_per_1k", "dataset", "position", "ratio")}  # noqa: E731
    bench_rows = json.loads((bench_out / "detect_bench.json").read_text())["rows"]
    study_rows = [r for r in results["rows"] if r["level"] == "char (lookalike)"]
    assert [timeless(r) for r in bench_rows] == [timeless(r) for r in study_rows]
