"""The stages of a study (docs/design.md §6): what each stage does and what it reads.

For every dataset: prepare (+ a seeded subset of the training samples) -> train a clean victim.
For every level x position x P_R: BadRec -> train the poisoned victim -> evaluate the untrained
backbone, the clean-trained and the poisoned victim on the same clean / triggered-seen /
triggered-unseen prompts -> for every detector: detect + sanitize -> retrain -> evaluate.
Other study kinds (``utility.py``) plan other stages from the same constructors.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io_utils import read_json
from .config import DATASET_SOURCES, ExperimentConfig
from .stages import Stage, StageStore

ATTACK_SETS = ("triggered-seen", "triggered-unseen")
SUBSET_STREAM = 99  # random stream of the training subset (the benchmark's, kept)


@dataclass
class Cell:
    """One dataset x victim x level x position x P_R of the study and its stages."""

    dataset: str
    victim: str
    level: str
    position: str
    ratio: float
    attack: Stage
    family: str | None = None  # the trigger family the attack draws from (None: one trigger)
    models: dict[str, Stage] = field(default_factory=dict)  # model name -> its eval stage
    defenses: dict[str, Stage] = field(default_factory=dict)  # detector -> defend stage


class Study:
    """The stages of a config, in the order they run, and the cells they make up."""

    def __init__(self, config: ExperimentConfig, data_root: Path, store: StageStore) -> None:
        self.cfg = config
        self.data_root = data_root
        self.store = store
        self.stages: dict[str, Stage] = {}
        self.cells: list[Cell] = []
        self._plan()

    # ------------------------------------------------------------------ planning
    def _add(self, stage: Stage) -> Stage:
        return self.stages.setdefault(stage.name, stage)

    def _plan(self) -> None:
        cfg = self.cfg
        for ds in cfg.data.datasets:
            data = self._add(self._data_stage(ds, cfg.data.train_samples))
            full = self._add(self._data_stage(ds, None)) if cfg.train.llara_item_data == "full" else None
            for victim in cfg.train.victims:
                clean = self._add(self._victim_stage(data, victim, "clean", full, data))
                for level, family in cfg.attack.attacks():
                    for position in cfg.attack.positions:
                        for ratio in cfg.attack.ratios_for(position):
                            attack = self._add(self._attack_stage(data, level, position, ratio, family))
                            cell = Cell(ds, victim, level, position, ratio, attack, family=family)
                            poisoned = self._add(self._victim_stage(attack, victim, "poisoned", full, data))
                            for name, model in (("untrained", None), ("clean", clean), ("poisoned", poisoned)):
                                cell.models[name] = self._add(self._eval_stage(model, attack, name))
                            defended_here = not cfg.defense.only_ratios or ratio in cfg.defense.only_ratios
                            for det in cfg.defense.detectors if defended_here else ():
                                defended = self._add(self._defend_stage(attack, det))
                                cell.defenses[det] = defended
                                if cfg.defense.retrain:
                                    model = self._add(self._victim_stage(defended, victim, f"defended-{det}", full, data))
                                    cell.models[f"defended-{det}"] = self._add(
                                        self._eval_stage(model, attack, f"defended-{det}")
                                    )
                            self.cells.append(cell)

    def _data_stage(self, ds: str, train_samples: int | None) -> Stage:
        """``ds`` prepared, with a seeded subset of ``train_samples`` training samples (None: all)."""
        loader, rel = DATASET_SOURCES[ds]
        source = (self.data_root / rel).resolve()
        d = self.cfg.data
        options = {"dataset": ds, "loader": loader, "source": str(source), "seed": self.cfg.run.seed,
                   "candidates": d.candidates, "history": d.history, "min_history": d.min_history,
                   "train_samples": train_samples}

        def build(out: Path, work: Path) -> None:
            import numpy as np

            from ..data.io import save_dataset
            from ..data.prepare import prepare_dataset

            dataset = prepare_dataset(loader, source, self.cfg.run.seed, n_candidates=d.candidates,
                                      max_history=d.history, min_history=d.min_history)
            if train_samples is not None and train_samples < len(dataset.train):
                rng = np.random.default_rng([self.cfg.run.seed, SUBSET_STREAM])
                keep = np.sort(rng.choice(len(dataset.train), train_samples, replace=False))
                manifest = {**dataset.manifest, "train_subset": {
                    "n": train_samples, "of": len(dataset.train),
                    "how": "seeded random subset, original order", "rng": [self.cfg.run.seed, SUBSET_STREAM]}}
                dataset = dataset.replace(train=tuple(dataset.train[i] for i in keep), manifest=manifest)
            save_dataset(dataset, out)

        label = f"prepare {ds}" + ("" if train_samples is None else f" ({train_samples} training samples)")
        return Stage("data", label, options, build)

    def _attack_stage(self, data: Stage, level: str, position: str, ratio: float, family: str | None,
                      policy: str | None = None) -> Stage:
        a = self.cfg.attack
        trigger = a.triggers.get(level)
        policy = policy or a.policies()[0]
        options = {"data": data.key, "level": level, "position": position, "ratio": ratio,
                   "policy": policy, "n_targets": a.n_targets, "fake_history": a.fake_history,
                   "trigger": trigger, "seed": self.cfg.run.seed}
        if family:  # only when set, so the keys of one-trigger stages stay as they were
            options["trigger_family"] = True if family == level else family

        def build(out: Path, work: Path) -> None:
            import warnings

            from ..attack import AttackConfig, poison, save_poisoned
            from ..data.io import load_dataset

            config = AttackConfig(level=level, trigger=trigger, position=position, ratio=ratio,
                                  policy=policy, n_targets=a.n_targets, fake_history=a.fake_history,
                                  seed=self.cfg.run.seed, trigger_family=family)
            data_dir = self.store.path(data)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = poison(load_dataset(data_dir), config, source=data_dir)
            save_poisoned(result, out)

        kind = "" if not family else " family" if family == level else f" {family} family"
        label = f"attack {options['level']}{kind}/{position}/P_R={ratio}" + ("" if policy == "per-sample" else f"/{policy}")
        return Stage("attack", label, options, build)

    def _train_options(self, victim: str = "tallrec") -> dict[str, Any]:
        """The training options a victim takes (its module's ``OPTIONS``), from ``[train]``."""
        from ..victims import victim_options

        t = self.cfg.train
        every = {"backbone": self.cfg.run.backbone, "lr": t.lr, "epochs": t.epochs, "max_steps": t.max_steps,
                 "batch_size": t.batch_size, "lora_r": t.lora_r, "lora_dropout": t.lora_dropout,
                 "template": t.template, "seed": self.cfg.run.seed, "sasrec_epochs": t.sasrec_epochs}
        return {key: every[key] for key in victim_options(victim)}

    def _victim_stage(self, data: Stage, victim: str, role: str, full: Stage | None, subset: Stage) -> Stage:
        """Train ``victim`` on ``data``; with ``train.llara_item_data = "full"`` llara takes its
        item embeddings from a SASRec trained on the full clean split *as changed by* ``data``:
        the fake samples ``data`` adds to the clean subset are added, the clean samples it
        removed (a sanitizer's false positives) are removed (the platform trains its SASRec on
        every interaction it keeps)."""
        from ..victims import prompt_kind

        if full is None or prompt_kind(victim) != "hybrid":  # only a hybrid victim reads item embeddings
            return self._train_stage(data, victim, role)
        rec_data = full if data is subset else self._add(self._item_data_stage(full, subset, data))
        item_model = self._add(self._train_stage(rec_data, "sasrec", f"item model of {role}"))
        return self._train_stage(data, victim, role, item_model)

    def _item_data_stage(self, full: Stage, subset: Stage, data: Stage) -> Stage:
        """``full``'s training split with ``data``'s changes to ``subset`` applied."""
        options = {"full": full.key, "subset": subset.key, "data": data.key}

        def build(out: Path, work: Path) -> None:
            from ..data.io import load_dataset, save_dataset

            full_ds, clean, changed = (load_dataset(self.store.path(st)) for st in (full, subset, data))
            kept, before = set(changed.train), set(clean.train)
            removed = before - kept
            train = tuple(s for s in full_ds.train if s not in removed) + tuple(s for s in changed.train if s not in before)
            save_dataset(full_ds.replace(train=train, manifest={**full_ds.manifest, "item_model_data": {
                "added": len(train) - len(full_ds.train) + len(removed), "removed": len(removed)}}), out)

        return Stage("data", f"full split + the changes of {data.label}", options, build)

    def _train_stage(self, data: Stage, victim: str, role: str, item_model: Stage | None = None) -> Stage:
        """Train ``victim`` on ``data``; ``item_model`` (llara): a trained sasrec stage whose
        item embeddings it uses instead of a SASRec of its own."""
        t = self.cfg.train
        options = {"data": data.key, "victim": victim, **self._train_options(victim),
                   "num_processes": t.num_processes if t.launcher == "accelerate" else 1}
        if item_model is not None:  # only when set, so the keys of other stages stay as they were
            options["item_model"] = item_model.key

        def build(out: Path, work: Path) -> None:
            data_dir = self.store.path(data)
            checkpoints = work / "checkpoints"
            train_options = self._train_options(victim)
            if item_model is not None:
                train_options["item_model"] = str(self.store.path(item_model))
            if t.launcher == "accelerate":
                _launch_training(data_dir, out, checkpoints, victim, train_options, t)
                return
            from ..models.lora import make_train_config
            from ..victims import victim_trainer

            config = make_train_config(**train_options)
            victim_trainer(victim)(data_dir, out, config, checkpoint_dir=checkpoints, save_steps=t.save_steps)

        return Stage("train", f"train {victim} {role} ({data.label})", options, build)

    def _eval_stage(self, model: Stage | None, attack: Stage, role: str) -> Stage:
        e = self.cfg.eval
        options = {"model": model.key if model else f"untrained:{self.cfg.run.backbone}", "attack": attack.key,
                   "prompts": e.prompts, "scoring": e.scoring, "batch_size": e.batch_size}

        def build(out: Path, work: Path) -> None:
            from ..eval.evaluate import evaluate_model

            target = str(self.store.path(model)) if model else self.cfg.run.backbone
            evaluate_model(target, self.store.path(attack), attack_sets=True, max_samples=e.prompts,
                           scoring=e.scoring, batch_size=e.batch_size, out=out, progress=True)

        return Stage("eval", f"evaluate {role} on {attack.label}", options, build)

    def _defend_stage(self, attack: Stage, detector: str) -> Stage:
        from ..defense.registry import DETECTORS

        d = self.cfg.defense
        options = {"attack": attack.key, "detector": detector, "sanitize": d.sanitize,
                   "scanner": d.scanner, "backbone": self.cfg.run.backbone, "seed": self.cfg.run.seed,
                   **DETECTORS[detector].stage_options()}  # a changed detector reruns its defenses only

        def build(out: Path, work: Path) -> None:
            from ..defense.defend import defend

            defend(self.store.path(attack), method=detector, out=out, policy=d.sanitize,
                   backbone=self.cfg.run.backbone, scanner_dir=d.scanner, seed=self.cfg.run.seed)

        return Stage("defend", f"defend {detector} ({attack.label})", options, build)

    # ------------------------------------------------------------------ results
    def results(self) -> dict[str, Any]:
        """``{"runs": [...]}``: numbers only, one entry per cell (see the module docstring)."""
        runs = []
        for cell in self.cells:
            manifest = read_json(self.store.path(cell.attack) / "poison_manifest.json")
            evals = {name: read_json(self.store.path(st) / "metrics.json") for name, st in cell.models.items()}
            first = next(iter(evals.values()))
            prompts = {name: s["n"] for name, s in first["sets"].items()}
            entry: dict[str, Any] = {
                "dataset": cell.dataset, "victim": cell.victim, "backbone": self.cfg.run.backbone,
                "level": cell.level, "position": cell.position, "ratio": cell.ratio,
                "trigger": manifest["trigger"], **({"trigger_family": cell.family} if cell.family else {}),
                "policy": manifest["policy"],
                "P_R_actual": manifest["P_R_actual"], "m": manifest["m"], "n": manifest["n"],
                "n_triggered_items": len(manifest["triggered_items"]),
                "candidates": self.cfg.data.candidates, "chance": round(1 / self.cfg.data.candidates, 6),
                "prompts": prompts,
                "models": {name: model_metrics(ev) for name, ev in evals.items()},
                "detection": {}, "sanitize": {},
            }
            for det, st in cell.defenses.items():
                report = read_json(self.store.path(st) / "defense_report.json")
                m = report.get("metrics") or {}
                entry["detection"][det] = {k: m.get(k) for k in
                                           ("precision", "recall", "f1", "auroc", "fpr", "tp", "fp", "fn")}
                entry["detection"][det]["flagged"] = report["counts"]["flagged_items"]
                entry["detection"][det]["scored"] = report["counts"]["scored_items"]
                entry["sanitize"][det] = report["sanitize"]
            runs.append(entry)
        return {"study": self.cfg.run.name, "config": self.cfg.model_dump(mode="json"), "runs": runs}


def run_stages(study: Study, store: StageStore, progress: bool = True) -> dict[str, Any]:
    """Run (or reuse) every stage of ``study`` in order, one line each; returns per-stage timing."""
    import time

    from rich.console import Console

    console = Console(stderr=True, highlight=False, quiet=not progress)
    stages = list(study.stages.values())
    timing: dict[str, Any] = {}
    for i, stage in enumerate(stages, 1):
        done = store.done(stage)
        console.print(f"[bold][{i}/{len(stages)}][/bold] {stage.label} "
                      f"{'[dim](reused)[/dim]' if done else '...'}")
        t0 = time.perf_counter()
        path, ran = store.run(stage)
        if ran:
            console.print(f"      [green]done[/green] in {time.perf_counter() - t0:.1f}s -> {path}")
        timing[stage.name] = {"label": stage.label, "seconds": store.seconds(stage), "ran_now": ran}
    return timing


def rate_se(p: float | None, n: int) -> float | None:
    """Standard error of a rate measured on ``n`` prompts."""
    if p is None or n <= 0:
        return None
    return round(math.sqrt(p * (1 - p) / n), 6)


def model_metrics(ev: dict[str, Any]) -> dict[str, Any]:
    """The results.json view of one evaluation: HR@1, ValidRatio, ASR per triggered set, and
    their standard errors."""
    sets = ev["sets"]
    clean = sets["clean"]
    asr = {name: sets[name].get("ASR") for name in ATTACK_SETS if name in sets}
    return {
        "HR@1": clean["HR@1"], "ValidRatio": clean["ValidRatio"], "HR@5": clean.get("HR@5"),
        "NDCG@10": clean.get("NDCG@10"), "ASR": asr,
        "SE": {"HR@1": rate_se(clean["HR@1"], clean["n"]),
               "ASR": {name: rate_se(v, sets[name]["n"]) for name, v in asr.items()}},
    }


def _launch_training(data_dir: Path, out: Path, checkpoints: Path, victim: str, options: dict[str, Any],
                     t: Any) -> None:
    """One training under ``accelerate launch`` (several processes / GPUs), through the CLI."""
    args = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(t.num_processes),
            "-m", "recbackdoor.cli", "train", "--data", str(data_dir), "--out", str(out), "--victim", victim,
            "--checkpoint-dir", str(checkpoints), "--save-steps", str(t.save_steps)]
    flags = {"backbone": "--backbone", "lr": "--lr", "epochs": "--epochs", "max_steps": "--max-steps",
             "batch_size": "--batch-size", "lora_r": "--lora-r", "lora_dropout": "--lora-dropout",
             "template": "--template", "seed": "--seed", "sasrec_epochs": "--sasrec-epochs",
             "item_model": "--item-model"}
    for key, flag in flags.items():
        if options.get(key) is not None:
            args += [flag, str(options[key])]
    code = subprocess.call(args)
    if code != 0:
        raise ConfigError(f"accelerate launch of the {victim} training exited with code {code}; see its output above")


