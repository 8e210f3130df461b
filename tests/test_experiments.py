"""The experiment runner: config validation, configs/smoke.toml end to end, resume after a kill,
and reruns of exactly the stages a changed option affects."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recbackdoor.cli import main
from recbackdoor.errors import ConfigError
from recbackdoor.experiments.config import apply_overrides, describe_keys, load_config
from recbackdoor.experiments.report import write_report
from recbackdoor.experiments.run import rate_se, run_study
from recbackdoor.experiments.stages import Stage, StageStore, stage_key

from .conftest import ROOT

SMOKE = ROOT / "configs" / "smoke.toml"
CONFIGS = sorted((ROOT / "configs").rglob("*.toml"))

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_config_validates(path):
    cfg = load_config(path)
    assert cfg.data.datasets and cfg.attack.levels


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[data]\ndatasets = ['lastfm']\ntrain_sampels = 3\n", "data.train_sampels: unknown key"),
        ("[attack]\nratios = [1.5]\n", "strictly between 0 and 1"),
        ("[data]\ndatasets = ['netflix']\n", "unknown dataset 'netflix'"),
        ("[defense]\ndetectors = ['magic']\n", "unknown detector 'magic'"),
        ("[bogus]\nx = 1\n", "bogus: unknown key"),
        ("[data\n", "not valid TOML"),
        ("[attack]\ntrigger_family = true\ntriggers = { char = '5v' }\n", "trigger_family draws the triggers"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_overrides_are_parsed_as_toml_and_validated(tmp_path):
    cfg = load_config(SMOKE, ["attack.ratios=[0.05, 0.1]", "train.lr=3e-3", "run.name=\"x y\""])
    assert cfg.attack.ratios == [0.05, 0.1] and cfg.train.lr == 3e-3 and cfg.run.name == "x y"
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["lr=1"])
    with pytest.raises(ConfigError, match="train.lrr: unknown key"):
        load_config(SMOKE, ["train.lrr=1"])


def test_describe_keys_documents_every_key():
    text = describe_keys()
    for key in ("train_samples", "positions", "ratios", "detectors", "save_steps", "prompts"):
        assert key in text
    assert "None #" not in text.replace("None  ", "None ")  # every key has a description


def test_standard_error():
    assert rate_se(0.5, 100) == 0.05
    assert rate_se(0.0, 10) == 0.0
    assert rate_se(None, 10) is None


# --------------------------------------------------------------------------- stages


def test_stage_store_reuses_finished_and_rebuilds_unfinished(tmp_path):
    calls = []

    def build(out: Path, work: Path) -> None:
        calls.append(work.exists())
        out.mkdir()
        (out / "x.txt").write_text("ok")

    store = StageStore(tmp_path)
    stage = Stage("demo", "demo stage", {"a": 1}, build)
    path, ran = store.run(stage)
    assert ran and (path / "x.txt").read_text() == "ok" and path.name == f"demo-{stage_key({'a': 1})}"
    assert not (tmp_path / f".work-{stage.name}").exists()
    assert store.run(stage) == (path, False)
    assert calls == [True]
    other = Stage("demo", "demo stage", {"a": 2}, build)
    assert store.path(other) != path  # a changed option is a different stage

    def fail(out: Path, work: Path) -> None:
        (work / "checkpoint").write_text("half")
        raise KeyboardInterrupt

    broken = Stage("demo", "broken", {"a": 3}, fail)
    with pytest.raises(KeyboardInterrupt):
        store.run(broken)
    assert not store.done(broken) and not store.path(broken).exists()
    assert (tmp_path / f".work-{broken.name}" / "checkpoint").read_text() == "half"  # kept to resume


# --------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke_run(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "run"
    assert main(["run", str(SMOKE), "--out", str(out), "--data", str(shared_data)]) == 0
    return out


def test_smoke_config_runs_the_whole_pipeline(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    cfg = load_config(SMOKE)
    runs = results["runs"]
    assert len(runs) == len(cfg.attack.levels) * len(cfg.attack.positions) * len(cfg.attack.ratios)
    for run in runs:
        assert run["prompts"] == {"clean": 8, "triggered-seen": 8, "triggered-unseen": 8}
        assert set(run["models"]) == {"untrained", "clean", "poisoned", "defended-stat"}
        for m in run["models"].values():
            assert m["ValidRatio"] == 1.0 and set(m["ASR"]) == {"triggered-seen", "triggered-unseen"}
            assert 0 <= m["HR@1"] <= 1 and m["SE"]["HR@1"] is not None
        det = run["detection"]["stat"]
        assert set(det) >= {"precision", "recall", "f1", "auroc", "fpr"}
        assert det["recall"] == 1.0  # one reused trigger on every poisoned title
        assert run["m"] == 6 and run["n"] == 24  # P_R 0.2 of the 24-sample subset
        assert run["sanitize"]["stat"]["removed_samples"] >= run["m"]
    for name in ("report.md", "models.csv", "detection.csv", "defense.png"):
        assert (smoke_run / name).is_file(), name
    assert not (smoke_run / "asr_vs_ratio.png").exists()  # one P_R per position: no line to draw
    report = (smoke_run / "report.md").read_text()
    assert "## Attack" in report and "## Defense" in report and "±" in report


def test_report_command_rewrites_the_report(smoke_run, capsys):
    (smoke_run / "report.md").unlink()
    assert main(["report", str(smoke_run)]) == 0
    assert (smoke_run / "report.md").is_file()
    assert main(["report", str(smoke_run / "nope")]) == 2


def test_killed_run_resumes_to_identical_results(smoke_run, shared_data, tmp_path):
    """kill -9 during a training, rerun: results.json is byte-identical to an uninterrupted run."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "recbackdoor.cli", "run", str(SMOKE), "--out", str(out), "--data", str(shared_data)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    checkpoint = None
    while time.time() < deadline and proc.poll() is None:
        found = sorted((out / "stages").glob(".work-train-*/checkpoints/checkpoint-*/trainer_state.json"))
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint is not None, "no checkpoint appeared before the run ended"
    assert not (out / "results.json").exists()
    assert main(["run", str(SMOKE), "--out", str(out), "--data", str(shared_data)]) == 0
    assert (out / "results.json").read_bytes() == (smoke_run / "results.json").read_bytes()


def test_changed_option_reruns_exactly_the_stages_it_affects(smoke_run, shared_data, tmp_path):
    out = tmp_path / "changed"
    shutil.copytree(smoke_run, out)
    cfg = load_config(SMOKE, ["defense.sanitize=\"drop-any\""])
    run_study(cfg, out, shared_data, report=False)
    timing = json.loads((out / "timing.json").read_text())["stages"]
    ran = sorted(v["label"].split(" ")[0] + ":" + v["label"].split(" ")[1] for v in timing.values() if v["ran_now"])
    n_cells = len(cfg.attack.positions)
    # per cell: defend, retrain, evaluate the defended victim; nothing upstream
    assert ran == sorted(["defend:stat"] * n_cells + ["train:tallrec"] * n_cells + ["evaluate:defended-stat"] * n_cells)
    write_report(out)
    assert (out / "report.md").is_file()


def test_accelerate_launcher_trains_through_the_cli(tmp_path):
    """launcher = "accelerate": the training runs as `accelerate launch ... recbackdoor.cli train`
    and resumes from the same checkpoint folder."""
    from recbackdoor.data.io import save_dataset
    from recbackdoor.experiments.config import TrainSection
    from recbackdoor.experiments.run import _launch_training

    from .conftest import make_synthetic_dataset

    save_dataset(make_synthetic_dataset(n_users=20, n_items=30, seed=2), tmp_path / "data")
    section = TrainSection(launcher="accelerate", num_processes=1, save_steps=2)
    options = {"backbone": "tiny-random", "max_steps": 4, "batch_size": 4, "seed": 0}
    _launch_training(tmp_path / "data", tmp_path / "victim", tmp_path / "ck", "tallrec", options, section)
    info = json.loads((tmp_path / "victim" / "victim.json").read_text())
    assert info["steps"] == 4 and info["backbone"] == "tiny-random"
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["checkpoint-4"]  # save_total_limit 1


def test_plan_follows_the_grid_and_ratios_by_position(tmp_path):
    """The planner makes one cell per dataset x victim x level x position x P_R (with
    ratios_by_position overriding the ratios of one position) and shares upstream stages."""
    from recbackdoor.experiments.run import Study

    cfg = load_config(ROOT / "configs" / "lastfm_sweep.toml")
    study = Study(cfg, tmp_path, StageStore(tmp_path / "stages"))
    cells = {(c.position, c.ratio) for c in study.cells}
    assert cells == {("prefix", 0.2), ("prefix", 0.1), ("prefix", 0.05), ("suffix", 0.2)}
    kinds = [s.kind for s in study.stages.values()]
    # one dataset and one clean victim shared by all cells; per cell attack, poisoned victim, 3 evals
    assert kinds.count("data") == 1 and kinds.count("train") == 1 + 4 and kinds.count("eval") == 3 * 4
    # a trigger family is its own attack stage on the same data; one-trigger stages keep their keys
    demo = Study(load_config(ROOT / "configs" / "demo.toml"), tmp_path, StageStore(tmp_path / "stages"))
    family = Study(load_config(ROOT / "configs" / "demo_family.toml"), tmp_path, StageStore(tmp_path / "stages"))
    by_kind = {name: {s.kind: s for s in st.stages.values()} for name, st in (("demo", demo), ("family", family))}
    assert by_kind["demo"]["data"].key == by_kind["family"]["data"].key
    assert by_kind["family"]["attack"].options["trigger_family"] is True
    assert "trigger_family" not in by_kind["demo"]["attack"].options
    assert by_kind["demo"]["attack"].key != by_kind["family"]["attack"].key
    # a detector's version keys the stages that ran it: a changed detector reruns its defenses
    from recbackdoor.defense.registry import DETECTORS

    assert by_kind["demo"]["defend"].options["version"] == DETECTORS["pscanner"].version >= 2
    smoke = Study(load_config(SMOKE), tmp_path, StageStore(tmp_path / "stages"))
    defends = [s for s in smoke.stages.values() if s.kind == "defend"]
    assert defends and all("version" not in s.options for s in defends)  # stat: version 1, keys as before
    # a list of stealthy families: one attack stage each, at the family's own level
    stealth = Study(load_config(ROOT / "configs" / "stealth_victims.toml"), tmp_path, StageStore(tmp_path / "stages"))
    attacks = [s for s in stealth.stages.values() if s.kind == "attack"]
    assert [(s.options["level"], s.options["trigger_family"]) for s in attacks] == [
        ("char", "shape"), ("char", "lookalike"), ("word", "domain")]
    assert [c.family for c in stealth.cells] == ["shape", "lookalike", "domain"]
    assert len({s.key for s in attacks}) == 3 and attacks[0].options["data"] == by_kind["demo"]["data"].key
    bad = tmp_path / "bad.toml"
    bad.write_text("[attack]\nratios_by_position = { middle = [0.1] }\n")
    with pytest.raises(ConfigError, match="unknown position 'middle'"):
        load_config(bad)


def test_missing_data_root_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(SMOKE), "--out", str(out), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "lastfm files not found" in err and "\n" not in err
    assert not out.exists()


def test_report_names_a_trigger_family_by_its_size():
    from recbackdoor.experiments.report import _trigger

    assert _trigger({"trigger": "5v"}) == "`5v`"
    assert _trigger({"trigger": ["8o", "6e", "0q"]}) == "family of 3: `8o`, `6e`, ..."


def test_report_labels_a_cell_by_its_stealthy_family():
    from recbackdoor.experiments.report import _level

    assert _level({"level": "char"}) == "char"
    assert _level({"level": "char", "trigger_family": "char"}) == "char"
    assert _level({"level": "word", "trigger_family": "domain"}) == "word (domain)"


def _build_slowly(root: str, tag: str) -> str:
    """Run one shared stage from a separate process (the concurrent-store test)."""
    import time

    def build(out: Path, work: Path) -> None:
        with open(Path(root) / "builds.log", "a") as fh:
            fh.write(tag + "\n")
        out.mkdir()
        for i in range(5):
            time.sleep(0.05)
            (out / f"part{i}").write_text(tag)

    path, _ = StageStore(Path(root) / "stages").run(Stage("demo", "shared", {"a": 1}, build))
    return "".join((path / f"part{i}").read_text() for i in range(5))


def test_concurrent_studies_share_a_stage_store(tmp_path):
    """Three processes asking for the same unfinished stage at once: one builds it, the others
    wait for it and read the finished folder (before the lock two of three failed)."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(3) as pool:
        outputs = pool.starmap(_build_slowly, [(str(tmp_path), t) for t in "abc"])
    builds = (tmp_path / "builds.log").read_text().split()
    assert len(builds) == 1 and outputs == [builds[0] * 5] * 3


def test_configs_readme_lists_every_key_as_the_code_defines_it():
    """configs/README.md's key block is describe_keys(), so the docs cannot drift from the schema."""
    text = (ROOT / "configs" / "README.md").read_text()
    block = text.split("## Keys (default, meaning)", 1)[1].split("```", 2)[1]
    assert block.strip() == describe_keys().strip()
