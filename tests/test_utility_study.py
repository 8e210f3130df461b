"""Does a victim learn to recommend? The utility study kind, the popularity reference, SASRec's
early stop and llara's pretrained item model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recbackdoor.cli import main
from recbackdoor.data.io import load_dataset
from recbackdoor.errors import ConfigError, RecBackdoorError
from recbackdoor.eval.evaluate import evaluate_model
from recbackdoor.experiments.config import load_config
from recbackdoor.experiments.stages import StageStore
from recbackdoor.models.lora import make_train_config
from recbackdoor.victims import load_victim, victim_trainer
from recbackdoor.victims.sasrec import SASRecConfig, train_sasrec

from .conftest import make_synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]

UTILITY = """
[run]
kind = "utility"
name = "utility-test"
backbone = "tiny-random"
threads = 1
[data]
datasets = ["lastfm"]
candidates = 10
history = 5
[utility]
train_samples = [8, 16]
[train]
victims = ["tallrec", "llara"]
llara_item_data = "full"
sasrec_epochs = 2
max_steps = 2
batch_size = 4
[eval]
prompts = 6
"""


# --------------------------------------------------------------------------- popularity


def test_popularity_victim_counts_targets_and_ranks_by_them(dataset_dir, tmp_path, capsys):
    out = tmp_path / "pop"
    assert main(["train", "--victim", "popularity", "--data", str(dataset_dir), "--out", str(out)]) == 0
    assert "trained popularity" in capsys.readouterr().out
    dataset = load_dataset(dataset_dir)
    model, tokenizer, info = load_victim(out)
    assert tokenizer is None and info["victim"] == "popularity"
    expected = Counter(s.target for s in dataset.train)
    assert {i: c for i, c in enumerate(model.counts) if c} == dict(expected)
    report = evaluate_model(str(out), dataset_dir, out=tmp_path / "eval", progress=False)
    # the most-counted candidate wins; ties keep the stored candidate order
    hits = [max(s.candidates, key=lambda c: expected.get(c, 0)) == s.target for s in dataset.test]
    assert report["HR@1"] == pytest.approx(float(np.mean(hits)))
    with pytest.raises(ConfigError, match="popularity victim ranks candidates"):
        evaluate_model(str(out), dataset_dir, protocol="generate", out=tmp_path / "gen", progress=False)


def test_popularity_counts_of_another_catalog_are_refused(dataset_dir, tmp_path):
    out = victim_trainer("popularity")(dataset_dir, tmp_path / "pop")
    info = json.loads((out / "victim.json").read_text())
    (out / "victim.json").write_text(json.dumps({**info, "n_items": info["n_items"] + 1}))
    with pytest.raises(RecBackdoorError, match="counts for"):
        load_victim(out)


# --------------------------------------------------------------------------- SASRec early stop


def test_sasrec_stops_after_patience_epochs_without_a_better_validation_epoch():
    dataset = make_synthetic_dataset(n_users=40, n_items=30, seed=2)
    _, summary, log = train_sasrec(dataset, SASRecConfig(epochs=40, patience=2), progress=False)
    best = summary["best_epoch"]
    assert summary["epochs_run"] == best + 2 < 40  # stopped two epochs after the best one
    assert max(r["valid_HR@1"] for r in log[best:]) <= log[best - 1]["valid_HR@1"]
    _, full, _ = train_sasrec(dataset, SASRecConfig(epochs=12, patience=None), progress=False)
    assert full["epochs_run"] == 12


# --------------------------------------------------------------------------- llara item model


def test_llara_takes_a_pretrained_sasrec_as_its_item_model(dataset_dir, tmp_path):
    rec = victim_trainer("sasrec")(dataset_dir, tmp_path / "rec", make_train_config(sasrec_epochs=2))
    cfg = make_train_config(backbone="tiny-random", max_steps=1, batch_size=4, item_model=str(rec))
    out = victim_trainer("llara")(dataset_dir, tmp_path / "llara", cfg)
    given = (rec / "sasrec.safetensors").read_bytes()
    assert (out / "sasrec" / "sasrec.safetensors").read_bytes() == given  # E is the given SASRec's
    assert json.loads((out / "victim.json").read_text())["config"]["item_model"] == str(rec)
    with pytest.raises(RecBackdoorError, match="not a sasrec victim folder"):
        victim_trainer("llara")(dataset_dir, tmp_path / "bad", make_train_config(
            backbone="tiny-random", max_steps=1, item_model=str(tmp_path)))


def test_llara_item_model_of_another_catalog_is_refused(dataset_dir, tmp_path):
    from recbackdoor.data.io import save_dataset

    other = tmp_path / "other"
    save_dataset(make_synthetic_dataset(n_users=30, n_items=50, seed=1), other)
    rec = victim_trainer("sasrec")(other, tmp_path / "rec", make_train_config(sasrec_epochs=1))
    with pytest.raises(RecBackdoorError, match="50 items, the dataset's catalog has 40"):
        victim_trainer("llara")(dataset_dir, tmp_path / "llara", make_train_config(
            backbone="tiny-random", max_steps=1, item_model=str(rec)))


# --------------------------------------------------------------------------- the study


@pytest.fixture(scope="module")
def utility_run(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("utility")
    config = root / "utility.toml"
    config.write_text(UTILITY)
    out = root / "run"
    assert main(["run", str(config), "--out", str(out), "--data", str(shared_data)]) == 0
    return config, out


def test_utility_study_rows_references_and_report(utility_run, shared_data):
    config, out = utility_run
    results = json.loads((out / "results.json").read_text())
    rows = {(r["model"], r["train_samples"]): r for r in results["rows"]}
    assert set(rows) == {("untrained", 0), ("popularity", "all"), ("sasrec", "all"),
                         ("tallrec", 8), ("llara", 8), ("tallrec", 16), ("llara", 16)}
    for r in rows.values():
        assert set(r["splits"]) == {"valid", "test"} and r["n"] == 12  # 6 prompts of each split, pooled
        hits = sum(s["HR@1"] * s["n"] for s in r["splits"].values())
        assert r["HR@1"] == pytest.approx(hits / 12)
        assert r["SE"] == pytest.approx(np.sqrt(r["HR@1"] * (1 - r["HR@1"]) / 12), abs=1e-6)
    # the popularity row counts the *full* training split's targets
    from recbackdoor.data.prepare import prepare_dataset

    full = prepare_dataset("lastfm", shared_data / "lastfm" / "llara", 0, n_candidates=10, max_history=5)
    counts = Counter(s.target for s in full.train)
    prompts = list(full.valid[:6]) + list(full.test[:6])
    expected = np.mean([max(s.candidates, key=lambda c: counts.get(c, 0)) == s.target for s in prompts])
    assert rows[("popularity", "all")]["HR@1"] == pytest.approx(expected)
    # llara used the full-split SASRec of the reference row, not one of its own
    stages = json.loads((out / "stages.json").read_text())
    llara = [v["dir"] for v in stages.values() if v["label"].startswith("train llara")]
    ref = next(v["dir"] for v in stages.values() if v["label"].startswith("train sasrec reference"))
    for d in llara:
        assert (Path(d) / "sasrec" / "sasrec.safetensors").read_bytes() == (Path(ref) / "sasrec.safetensors").read_bytes()
    report = (out / "report.md").read_text()
    assert "does the victim learn to recommend" in report and "| lastfm | popularity | all | 12 |" in report
    assert (out / "learning_curve.png").stat().st_size > 0 and (out / "utility.csv").is_file()


def test_utility_rerun_reuses_every_stage_and_gives_the_same_bytes(utility_run, shared_data, capsys):
    config, out = utility_run
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--data", str(shared_data)]) == 0
    err = capsys.readouterr().err
    assert "..." not in err.replace("(reused)", "")  # no stage ran
    assert (out / "results.json").read_bytes() == before


def test_a_budget_shares_its_clean_model_with_a_backdoor_study(tmp_path):
    """The utility point at n samples and a backdoor study with data.train_samples = n train
    the same clean victim (one stage key): the headline reuses the learning curve."""
    from recbackdoor.experiments.run import Study
    from recbackdoor.experiments.utility import UtilityStudy

    config = tmp_path / "u.toml"
    config.write_text(UTILITY.replace('victims = ["tallrec", "llara"]', 'victims = ["tallrec"]'))
    utility = UtilityStudy(load_config(config), tmp_path, StageStore(tmp_path / "s"))
    backdoor_toml = tmp_path / "b.toml"
    backdoor_toml.write_text(
        '[run]\nbackbone = "tiny-random"\n[data]\ndatasets = ["lastfm"]\ncandidates = 10\nhistory = 5\n'
        'train_samples = 16\n[train]\nmax_steps = 2\nbatch_size = 4\n[eval]\nprompts = 6\n')
    backdoor = Study(load_config(backdoor_toml), tmp_path, StageStore(tmp_path / "s"))
    clean = {s.key for s in backdoor.stages.values() if s.label.startswith("train tallrec clean")}
    assert clean and clean <= {s.key for s in utility.stages.values()}


@pytest.mark.parametrize(("text", "message"), [
    ('[run]\nkind = "utility"\n[data]\ntrain_samples = 10\n', "utility.train_samples"),
    ('[run]\nkind = "utility"\n[utility]\ntrain_samples = [10, 10]\n', "positive and distinct"),
    ('[run]\nkind = "curve"\n', "run.kind"),
])
def test_bad_utility_configs_are_one_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_asr_plot_needs_more_than_one_ratio(tmp_path):
    from recbackdoor.experiments.report import plot_asr_vs_ratio

    model = {"ASR": {"triggered-unseen": 0.5}, "SE": {"ASR": {"triggered-unseen": 0.1}}}
    run = {"dataset": "lastfm", "victim": "tallrec", "level": "char", "position": "prefix", "chance": 0.1,
           "models": {"poisoned": model, "clean": model}}
    assert plot_asr_vs_ratio([{**run, "ratio": 0.2}], tmp_path / "one.png") is False
    assert not (tmp_path / "one.png").exists()
    assert plot_asr_vs_ratio([{**run, "ratio": 0.2}, {**run, "ratio": 0.05}], tmp_path / "two.png") is True


def test_defense_only_at_the_given_ratios(tmp_path):
    from recbackdoor.experiments.run import Study

    path = tmp_path / "sweep.toml"
    path.write_text('[run]\nbackbone = "tiny-random"\n[attack]\nratios = [0.01, 0.03]\n'
                    '[defense]\ndetectors = ["stat"]\nonly_ratios = [0.01]\n')
    study = Study(load_config(path), tmp_path, StageStore(tmp_path / "s"))
    assert {c.ratio: sorted(c.defenses) for c in study.cells} == {0.01: ["stat"], 0.03: []}
    assert sum(s.kind == "defend" for s in study.stages.values()) == 1


def test_machine_description_names_the_dtype_the_library_computes_in():
    import torch

    from recbackdoor.models.backbones import default_dtype
    from recbackdoor.models.machine import describe, one_line

    info = describe()
    assert info["compute_dtype"] == str(default_dtype("cpu" if not torch.cuda.is_available() else "cuda")).split(".")[-1]
    assert info["cpus"] >= 1 and info["cpu"]
    line = one_line(info)
    assert f"computes in {info['compute_dtype']}" in line and info["cpu"] in line


def test_llara_full_item_model_in_a_backdoor_study_sees_the_fake_users(shared_data, tmp_path):
    """Clean llara: SASRec on the full clean split; poisoned: full split + the attack's fake
    samples; defended: what the sanitizer kept of them (nothing, for stat's exact flags)."""
    from recbackdoor.data.io import load_dataset

    path = tmp_path / "b.toml"
    path.write_text(
        '[run]\nbackbone = "tiny-random"\nthreads = 1\n[data]\ndatasets = ["lastfm"]\ncandidates = 10\nhistory = 5\n'
        'train_samples = 24\n[attack]\nratios = [0.2]\nlevels = ["char"]\n[train]\nvictims = ["llara"]\n'
        'llara_item_data = "full"\nsasrec_epochs = 1\nmax_steps = 1\nbatch_size = 4\n[eval]\nprompts = 4\n'
        '[defense]\ndetectors = ["stat"]\n')
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--data", str(shared_data)]) == 0
    stages = json.loads((out / "stages.json").read_text())
    dirs = {v["label"]: Path(v["dir"]) for v in stages.values()}
    full = next(d for label, d in dirs.items() if label == "prepare lastfm")
    n_full = len(load_dataset(full).train)
    rec_data = {label: load_dataset(d) for label, d in dirs.items() if label.startswith("full split + the changes")}
    fake = json.loads((next(d for label, d in dirs.items() if label.startswith("attack")) / "poison_manifest.json").read_text())["m"]
    defended = json.loads((next(d for label, d in dirs.items() if label.startswith("defend"))
                           / "defense_report.json").read_text())["sanitize"]["ground_truth"]
    sizes = sorted(len(d.train) for d in rec_data.values())
    # poisoned: every fake sample added; defended: the fake samples the sanitizer kept added and
    # the clean samples it removed (its false positives) removed
    assert sizes == sorted([n_full + fake, n_full + defended["fake_kept"] - defended["clean_removed"]])
    assert defended["clean_removed"] + defended["fake_kept"] > 0 or sizes[0] == n_full
    item_models = [d for label, d in dirs.items() if label.startswith("train sasrec item model")]
    assert len(item_models) == 3  # clean (the full split), poisoned, defended
    for label, d in dirs.items():
        if label.startswith("train llara"):
            assert json.loads((d / "victim.json").read_text())["config"]["item_model"] in {str(m) for m in item_models}


def test_learned_needs_twice_chance_and_three_untrained_standard_errors():
    from recbackdoor.experiments.report import learned

    untrained = {"model": "untrained", "HR@1": 0.10, "SE": 0.02, "chance": 0.1}
    row = {"model": "tallrec", "chance": 0.1}
    assert learned({**row, "HR@1": 0.20}, untrained) == "yes"
    assert learned({**row, "HR@1": 0.19}, untrained) == "no"  # below 2x chance
    assert learned({**row, "HR@1": 0.25}, {**untrained, "HR@1": 0.2}) == "no"  # within 3 SE of untrained
    assert learned(untrained, untrained) == "-"
