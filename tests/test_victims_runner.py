"""The runner with the three victims: configs/victims_lastfm.toml plans the demo's tallrec
stages (the demo's cell at P_R 0.2) under the same keys, so they are reused, and gives each
victim its options."""

from __future__ import annotations

from pathlib import Path

from recbackdoor.experiments.config import load_config
from recbackdoor.experiments.run import Study
from recbackdoor.experiments.stages import StageStore

ROOT = Path(__file__).resolve().parents[1]


def _study(name: str, tmp_path: Path, overrides: list[str] | None = None) -> Study:
    return Study(load_config(ROOT / "configs" / name, overrides), tmp_path, StageStore(tmp_path / "stages"))


def test_victims_config_reuses_the_demo_and_passes_each_victim_its_options(tmp_path):
    victims = _study("victims_lastfm.toml", tmp_path)
    demo = _study("demo.toml", tmp_path, ["attack.ratios=[0.2]"])  # the demo's cell at the victims' P_R
    assert [c.victim for c in victims.cells] == ["sasrec", "tallrec", "llara"]
    trains = {s.name: s for s in victims.stages.values() if s.kind == "train"}
    demo_trains = {s.name for s in demo.stages.values() if s.kind == "train" and "defended" not in s.label}
    by_victim = {v: [s for s in trains.values() if s.options["victim"] == v] for v in ("sasrec", "tallrec", "llara")}
    assert {s.name for s in by_victim["tallrec"]} == demo_trains  # same keys: the demo's stages are reused
    for stage in by_victim["sasrec"]:
        assert set(stage.options) == {"data", "victim", "sasrec_epochs", "seed", "num_processes"}
    for stage in by_victim["llara"]:
        assert stage.options["sasrec_epochs"] == 50 and stage.options["backbone"] == "smollm2-135m"
    cell = victims.cells[0]
    assert set(cell.models) == {"untrained", "clean", "poisoned"} and not cell.defenses
    # every victim is evaluated on the same attack stage (the same prompts)
    assert len({c.attack.name for c in victims.cells}) == 1
