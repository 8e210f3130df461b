"""A new victim and a new detector are one module plus one registry line each: a toy of each,
defined here and registered at run time, goes through `list`, `train`, `evaluate`, `defend`
and a whole study without any other file knowing its name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from recbackdoor.cli import main
from recbackdoor.defense import registry
from recbackdoor.io_utils import atomic_output_dir, check_output_dir, read_json, write_json

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------- the toy victim
# An id-only ranker that prefers the lowest item id (this module is its implementation).

PROMPT = None
OPTIONS = ("seed",)
WEIGHT_FILES = ("toy.safetensors",)
ADAPTER = False


class LowestIdRanker:
    pass


def train_victim(data, out, config=None, *, force=False, checkpoint_dir=None, save_steps=10):
    from safetensors.numpy import save_file

    out = check_output_dir(out, force)
    with atomic_output_dir(out, force=force) as tmp:
        save_file({"bias": np.zeros(1)}, str(tmp / "toy.safetensors"))
        write_json(tmp / "victim.json", {"victim": "toy", "backbone": None, "seed": getattr(config, "seed", 0)})
        write_json(tmp / "timing.json", {"train_seconds": 0.0, "steps": 0, "tokens": 0, "tokens_per_s": 0.0,
                                         "processes": 1, "device": "cpu"})
    return out


def load_victim(model_dir, *, dtype=None, device=None, merge=False):
    return LowestIdRanker(), None, {**read_json(Path(model_dir) / "victim.json"), "dir": str(model_dir)}


def rank_candidates(model, samples):
    return [-np.asarray(s.candidates, dtype=float) for s in samples]


# --------------------------------------------------------------------------- the toy detector


class UnderscoreDetector:
    """Flags every title with an underscore (the char trigger's glue)."""

    name = "underscore"
    threshold = 0.5

    def fit(self, titles, domain):
        return self

    def score(self, titles):
        return np.asarray([float("_" in t) for t in titles])


@pytest.fixture
def toys():
    from recbackdoor.victims import VICTIMS, register_victim

    register_victim("toy", __name__, "prefers the lowest item id (a test plug-in)")
    registry.register(registry.DetectorEntry("underscore", "flags titles with an underscore (a test plug-in)",
                                             "titles", lambda options: UnderscoreDetector()))
    yield
    VICTIMS.pop("toy")
    registry.DETECTORS.pop("underscore")


def test_toy_victim_and_detector_through_list_train_evaluate_defend(toys, dataset_dir, tmp_path, capsys):
    assert __name__ in sys.modules
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "  toy " in listed and "  underscore " in listed

    victim = tmp_path / "toy"
    assert main(["train", "--victim", "toy", "--data", str(dataset_dir), "--out", str(victim)]) == 0
    assert "trained toy" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(victim), "--data", str(dataset_dir), "--out", str(tmp_path / "ev")]) == 0
    metrics = read_json(tmp_path / "ev" / "metrics.json")
    from recbackdoor.data.io import load_dataset

    test = load_dataset(dataset_dir).test
    assert metrics["HR@1"] == pytest.approx(np.mean([min(s.candidates) == s.target for s in test]))
    (victim / "toy.safetensors").unlink()  # its declared weights are checked before loading
    assert main(["evaluate", "--model", str(victim), "--data", str(dataset_dir), "--out", str(tmp_path / "ev2")]) == 2
    assert "toy.safetensors: weights file missing" in capsys.readouterr().err
    train_victim(dataset_dir, victim, force=True)

    poisoned = tmp_path / "poisoned"
    assert main(["attack", "--data", str(dataset_dir), "--level", "char", "--ratio", "0.2", "--out", str(poisoned)]) == 0
    defended = tmp_path / "defended"
    assert main(["defend", "--data", str(poisoned), "--method", "underscore", "--out", str(defended), "--retrain",
                 "--model", str(victim), "--eval-max-samples", "4"]) == 0
    report = read_json(defended / "defense_report.json")
    assert report["metrics"]["recall"] == 1.0  # every '_5v' title has an underscore
    assert report["after_defense"]["victim"] == "toy"


def test_toy_victim_and_detector_in_a_study(toys, shared_data, tmp_path):
    config = tmp_path / "toy.toml"
    config.write_text(
        '[run]\nbackbone = "tiny-random"\nthreads = 1\n[data]\ndatasets = ["lastfm"]\ntrain_samples = 24\n'
        'candidates = 10\nhistory = 5\n[attack]\nratios = [0.2]\n[train]\nvictims = ["toy"]\n[eval]\nprompts = 4\n'
        '[defense]\ndetectors = ["underscore"]\n')
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--data", str(shared_data)]) == 0
    run = json.loads((out / "results.json").read_text())["runs"][0]
    assert run["victim"] == "toy" and run["detection"]["underscore"]["recall"] == 1.0
    assert set(run["models"]) == {"untrained", "clean", "poisoned", "defended-underscore"}
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('victims = ["toy"]', 'victims = ["toyz"]'))
    assert main(["run", str(bad), "--out", str(tmp_path / "bad"), "--data", str(shared_data)]) == 2
