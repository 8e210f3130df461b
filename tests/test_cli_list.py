"""`recbackdoor list` and the registries it reads: one pattern for datasets, victims,
backbones and detectors (a new one is a module plus a registry line)."""

from __future__ import annotations

from importlib import import_module

from recbackdoor.cli import main, registered
from recbackdoor.data.prepare import DATASET_DOMAINS, SOURCES
from recbackdoor.defense.baselines import BASELINES
from recbackdoor.defense.registry import detector_names
from recbackdoor.models.backbones import BACKBONES
from recbackdoor.victims import VICTIMS


def test_list_shows_every_registered_name_with_a_description(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*DATASET_DOMAINS, *VICTIMS, *BACKBONES, *detector_names("titles"), "strip", "drop-target", "per-sample", "sentence"]:
        assert f"  {name} " in out or out.count(f"  {name}\n"), name
    reg = registered()
    described = [k for k in reg if not k.startswith(("sanitize", "trigger positions", "target"))]
    for key in described:
        assert all(line.strip() for _, line in reg[key]), key  # every entry says what it is


def test_every_registered_dataset_and_victim_has_its_module():
    assert set(SOURCES) == set(DATASET_DOMAINS)
    assert all(callable(getattr(module, "load", None)) for module in SOURCES.values())
    for victim in VICTIMS:
        module = import_module(f"recbackdoor.victims.{victim}")
        assert callable(module.train_victim) and callable(module.load_victim), victim
    assert set(detector_names("titles")) == {"pscanner", *BASELINES}


def test_train_help_gives_each_victims_own_defaults(capsys):
    from recbackdoor.victims import option_help

    assert option_help("epochs", "1").startswith("default 1 (sasrec: 50")
    assert option_help("lora_r", "8") == "default 8"  # no victim overrides it
    assert main(["train", "--help"]) == 0
    assert "sasrec: 50" in " ".join(capsys.readouterr().out.split())
