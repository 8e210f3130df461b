"""``[run] kind = "detect"`` and ``recbackdoor detect-bench``: every detector on real BadRec output.

No victim is trained. For every dataset x policy x level (or stealthy family) x position x P_R
the clean dataset is poisoned by the attack stage a backdoor study uses (cached, shared), and
every detector of ``[detect] methods`` scores it in its own ``detect`` stage
(:func:`recbackdoor.defense.bench.bench_title_method` for title detectors, ``bench_strip`` for
prompt detectors): rows of precision, recall, F1, AUROC, FPR and seconds. Stages are cached and
resumable like any study's; ``detect-bench`` is this study on one prepared dataset folder, with
its stages in a temporary folder unless ``--stages`` keeps them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..defense.bench import BenchConfig, render_csv, render_markdown
from ..defense.registry import DETECTORS, detector_names
from ..errors import ConfigError
from ..io_utils import atomic_output_dir, check_output_dir, read_json, write_json
from .config import ExperimentConfig
from .stages import Stage, StageStore
from .study import Study, run_stages


def bench_config(cfg: ExperimentConfig) -> BenchConfig:
    """The per-cell detector settings of a detect config (checked: one ConfigError line)."""
    a, d = cfg.attack, cfg.detect
    levels = tuple(dict.fromkeys(level for level, _ in a.attacks()))
    family = a.trigger_family if not isinstance(a.trigger_family, list) else False
    return BenchConfig(
        levels=levels, methods=tuple(d.methods) or detector_names("titles"), policies=tuple(a.policies()),
        ratio=a.ratios[0], position=a.positions[0], trigger_family=family, scanner_dir=cfg.defense.scanner,
        model=d.model, backbone=cfg.run.backbone, seed=cfg.run.seed, strip_copies=d.strip_copies,
        strip_frr=d.strip_frr, strip_history_share=d.strip_history_share, strip_max_prompts=d.strip_max_prompts,
        strip_batch_size=d.strip_batch_size, reuse_models=d.reuse_models,
    ).check()


class DetectStudy(Study):
    """The stages of a detect config; ``prepared`` (dataset name -> folder) replaces the
    prepare stage by a copy of an already prepared dataset (``detect-bench --data``)."""

    def __init__(self, config: ExperimentConfig, data_root: Path, store: StageStore,
                 prepared: dict[str, Path] | None = None, progress: bool = True) -> None:
        self.prepared = prepared or {}
        self.progress = progress
        self.bench = bench_config(config)
        self._kept: dict[tuple[str, str | None], Any] = {}  # reuse_models: detector per (method, victim)
        self._scorers: dict[str, Any] = {}  # prompt detectors: victim scorer per model
        self._shared_lms: dict[str, Any] = {}
        self._announced: set[str] = set()
        super().__init__(config, data_root, store)

    def _plan(self) -> None:
        a = self.cfg.attack
        self.detections: list[tuple[dict[str, Any], Stage, Stage]] = []  # (labels, attack, detect stage)
        names = list(self.prepared) or self.cfg.data.datasets
        for ds in names:
            data = self._add(self._prepared_stage(ds, self.prepared[ds]) if ds in self.prepared
                             else self._data_stage(ds, self.cfg.data.train_samples))
            for policy in a.policies():
                for level, family in a.attacks():
                    for position in a.positions:
                        for ratio in a.ratios_for(position):
                            attack = self._add(self._attack_stage(data, level, position, ratio, family, policy))
                            labels = {"dataset": ds, "policy": policy, "level": level, "position": position,
                                      "ratio": ratio, "family": family}
                            for method in self.bench.methods:
                                stage = self._add(self._detect_stage(attack, method, labels))
                                self.detections.append((labels, attack, stage))

    def _prepared_stage(self, name: str, folder: Path) -> Stage:
        """A copy of a prepared dataset folder, keyed by its files' content."""
        folder = Path(folder)
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
        options = {"prepared": name, "sha256": digest.hexdigest()}

        def build(out: Path, work: Path) -> None:
            import shutil

            shutil.copytree(folder, out)

        return Stage("data", f"dataset {folder}", options, build)

    def _detect_stage(self, attack: Stage, method: str, labels: dict[str, Any]) -> Stage:
        b, entry, level = self.bench, DETECTORS[method], labels["level"]
        model = b.model_for(level) if entry.victim != "no" else None
        options = {"attack": attack.key, "method": method, "backbone": b.backbone, "seed": b.seed,
                   "scanner": b.scanner_dir if entry.loads else None, "model": model, **entry.stage_options()}
        if entry.unit == "prompts":
            options.update({k: getattr(b, k) for k in ("strip_copies", "strip_frr", "strip_history_share",
                                                       "strip_max_prompts", "strip_batch_size")})

        def build(out: Path, work: Path) -> None:
            where = f"[{labels['policy']} {level}]"
            if self.progress and attack.key not in self._announced:
                self._announced.add(attack.key)
                man = read_json(self.store.path(attack) / "poison_manifest.json")
                print(f"{where} poisoned: {man['m']} fake samples, {len(man['triggered_items'])} triggered items, "
                      f"trigger {trigger_label(man)!r}", file=sys.stderr, flush=True)
            rows = self._detect(self.store.path(attack), method, level, model)
            for row in rows if self.progress else ():
                print(f"{where} {row['detector']:18s} P {_fmt(row['precision'])} R {_fmt(row['recall'])} "
                      f"F1 {_fmt(row['f1'])} AUROC {_fmt(row['auroc'])} FPR {_fmt(row['fpr'])} "
                      f"({row['n']} {row['unit']}, {row['n_poisoned']} poisoned; {row['seconds']:.1f}s)",
                      file=sys.stderr, flush=True)
            out.mkdir()
            write_json(out / "rows.json", rows)

        return Stage("detect", f"detect {method} ({attack.label})", options, build)

    def _detect(self, attack_dir: Path, method: str, level: str, model: str | None) -> list[dict[str, Any]]:
        from ..data.io import load_dataset
        from ..defense.bench import bench_strip, bench_title_method

        b, entry = self.bench, DETECTORS[method]
        dataset = load_dataset(attack_dir)
        if entry.unit == "prompts":
            from ..attack import load_attack_sets
            from ..defense.baselines.strip import VictimScorer

            if model not in self._scorers:
                self._scorers[model] = VictimScorer.load(model, dataset.catalog.domain, batch_size=b.strip_batch_size,
                                                         progress=self.progress)
            return bench_strip(self._scorers[model], load_attack_sets(attack_dir), dataset.catalog, b,
                               note=f"victim {model}", progress=self.progress)
        triggered = {int(i) for i in read_json(attack_dir / "poison_manifest.json")["triggered_items"]}
        built = None
        # a detector that fit trains on one cell's catalog must not serve another
        if b.reuse_models and (not entry.loads or b.scanner_dir):
            if (method, model) not in self._kept:
                from ..defense import defend

                self._kept[(method, model)] = defend.build_detector(
                    method, b.backbone, b.scanner_dir if entry.loads else None, b.seed, model_dir=model)
                self._share_title_lm(self._kept[(method, model)], model)
            built = self._kept[(method, model)]
        return bench_title_method(method, dataset, triggered, b, level, self.progress, built)

    def _share_title_lm(self, detector: Any, model: str | None) -> None:
        """With ``reuse_models``: LM detectors reading the same base backbone (ONION, a BKI
        without a victim) share one ``TitleLM`` (one forward pass gives NLL and embedding)."""
        from ..defense.baselines.common import LMDetectorBase

        if not isinstance(detector, LMDetectorBase) or model is not None:
            return
        key = str(detector.backbone)
        if key in self._shared_lms:
            detector._lm = self._shared_lms[key]
        else:
            self._shared_lms[key] = detector.lm

    # ------------------------------------------------------------------ results
    def results(self) -> dict[str, Any]:
        """``{"kind": "detect", "settings": {dataset: ...}, "rows": [...], "notes": [...]}``: one
        row per cell x detector (x channel), in plan order. Rows carry seconds: unlike the
        other kinds, a rerun's results differ in those."""
        rows = []
        for labels, attack, stage in self.detections:
            man = read_json(self.store.path(attack) / "poison_manifest.json")
            family, level = labels["family"], labels["level"]
            cell = {"dataset": labels["dataset"], "policy": labels["policy"], "trigger": trigger_label(man),
                    "level": level if family in (None, level) else f"{level} ({family})"}  # one column per attack
            for row in read_json(self.store.path(stage) / "rows.json"):
                rows.append({**row, **cell, "position": labels["position"], "ratio": labels["ratio"]})
        names = list(dict.fromkeys(labels["dataset"] for labels, _, _ in self.detections))
        return {"study": self.cfg.run.name, "kind": "detect", "config": self.cfg.model_dump(mode="json"),
                "settings": {name: self._settings(name) for name in names}, "rows": rows,
                "notes": [*self.bench.notes, *self._notes()]}

    def _notes(self) -> list[str]:
        b, notes = self.bench, []
        readers = [m for m in b.methods if DETECTORS[m].victim == "optional"]
        if readers and not b.model:
            notes.append(f"{', '.join(readers)} read the base backbone {b.backbone or 'smollm2-135m'}: no victim (model) was given")
        if b.reuse_models:
            notes.append("--reuse-models: one detector per method for all cells (LM detectors without a victim share "
                         "one LM), so a cell's seconds count only the titles no earlier cell or detector scored; the "
                         "first cell of each detector has the full cost")
        return notes

    def _settings(self, dataset: str) -> dict[str, Any]:
        """One dataset's settings: the detector settings and the data."""
        from ..data.io import load_dataset

        data = next(st for st in self.stages.values() if st.kind == "data"
                    and dataset in (st.options.get("dataset"), st.options.get("prepared")))
        ds = load_dataset(self.store.path(data))
        settings = {k: v for k, v in asdict(self.bench).items() if k != "notes"}
        settings.update(data=str(self.prepared.get(dataset, dataset)), dataset=str(ds.manifest.get("dataset") or dataset),
                        domain=ds.catalog.domain, n_items=len(ds.catalog))
        return settings


def trigger_label(manifest: dict[str, Any]) -> str:
    """A poison manifest's trigger in one string: the trigger, or the family and its size."""
    if manifest.get("trigger_family"):
        return f"{manifest['trigger_family']} family, {len(set(manifest['item_triggers'].values()))} triggers"
    trig = manifest["trigger"]
    return trig if isinstance(trig, str) else "|".join(trig)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def write_detect_tables(results: dict[str, Any], out: Path) -> list[Path]:
    """``detect_bench.csv`` (every row) and per dataset ``detect_bench[_NAME].json`` / ``.md``
    (no suffix with one dataset); returns the markdown files."""
    from ..models.machine import describe

    machine = describe()
    (out / "detect_bench.csv").write_text(render_csv(results["rows"]), encoding="utf-8")
    names = list(results["settings"])
    written = []
    for name in names:
        report = {"settings": results["settings"][name], "machine": machine,
                  "rows": [r for r in results["rows"] if r["dataset"] == name], "notes": results["notes"]}
        suffix = "" if len(names) == 1 else f"_{name}"
        write_json(out / f"detect_bench{suffix}.json", report)
        (out / f"detect_bench{suffix}.md").write_text(render_markdown(report), encoding="utf-8")
        written.append(out / f"detect_bench{suffix}.md")
    return written


@contextmanager
def _stage_store(stages: str | os.PathLike | None) -> Iterator[StageStore]:
    if stages is not None:
        yield StageStore(Path(stages))
        return
    with tempfile.TemporaryDirectory(prefix="detect-bench-") as tmp:
        yield StageStore(Path(tmp))


def detect_config(bench: BenchConfig) -> ExperimentConfig:
    """The detect config equal to ``detect-bench``'s options."""
    from .config import validate_config

    detect = {"methods": list(bench.methods), "model": bench.model, "reuse_models": bench.reuse_models,
              **{k: getattr(bench, k) for k in ("strip_copies", "strip_frr", "strip_history_share",
                                                "strip_max_prompts", "strip_batch_size")}}
    return validate_config({
        "run": {"kind": "detect", "name": "detect-bench", "seed": bench.seed, **({"backbone": bench.backbone} if bench.backbone else {})},
        "attack": {"levels": list(bench.levels), "positions": [bench.position], "ratios": [bench.ratio],
                   "policy": list(bench.policies), "trigger_family": bench.trigger_family},
        "detect": detect, "defense": {"scanner": bench.scanner_dir},
    }, "detect-bench")


def run_detect_bench(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    config: BenchConfig | None = None,
    force: bool = False,
    progress: bool = True,
    stages: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """``detect-bench``: the detect study on one prepared dataset folder; writes the three
    files into ``out`` atomically and returns ``{"settings", "machine", "rows", "notes"}``.
    ``stages``: keep (and reuse) the poisoned datasets and detections there."""
    bench = (config or BenchConfig()).check()
    check_output_dir(out, force)  # fail before the work, not after
    data_dir = Path(data_dir)
    if (data_dir / "poison_manifest.json").is_file():
        raise ConfigError(f"{data_dir}: already poisoned (poison_manifest.json); pass the clean dataset from `recbackdoor data prepare`")
    if not (data_dir / "manifest.json").is_file():
        raise ConfigError(f"{data_dir}: not a prepared dataset (no manifest.json); run `recbackdoor data prepare`")
    cfg = detect_config(bench)
    name = str(read_json(data_dir / "manifest.json").get("dataset") or data_dir.name)
    with _stage_store(stages) as store:
        study = DetectStudy(cfg, data_dir.parent, store, prepared={name: data_dir}, progress=progress)
        study.bench.notes.extend(bench.notes)
        if progress:
            from ..models.machine import one_line

            print(f"detect-bench {name}: policies {','.join(bench.policies)}, levels {','.join(bench.levels)}, "
                  f"methods {','.join(bench.methods)}\nmachine: {one_line()}", file=sys.stderr, flush=True)
        run_stages(study, store, progress=progress)
        results = study.results()
        with atomic_output_dir(out, force=force) as tmp:
            write_detect_tables(results, tmp)
    return read_json(Path(out) / "detect_bench.json")
