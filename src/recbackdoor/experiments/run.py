"""``recbackdoor run CONFIG``: a whole study, stage by stage (docs/design.md §6).

For every dataset: prepare (+ a seeded subset of the training samples) -> train a clean victim.
For every level x position x P_R: BadRec -> train the poisoned victim -> evaluate the untrained
backbone, the clean-trained and the poisoned victim on the same clean / triggered-seen /
triggered-unseen prompts -> for every detector: detect + sanitize -> retrain -> evaluate.
Then ``results.json`` and the report (``report.py``).

Stages live in ``<out>/stages/`` keyed by their inputs (``stages.py``): a rerun reuses every
finished stage, resumes an interrupted training from its last checkpoint, and reruns exactly
the stages a changed option affects. ``results.json`` holds numbers only (no paths, no
timings), so the same config gives the same bytes however often the run was interrupted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io_utils import write_json
from .config import DATASET_SOURCES, ExperimentConfig
from .stages import StageStore
from .study import Stage, Study, _launch_training, model_metrics, rate_se, run_stages  # noqa: F401 (re-exported)


def default_data_root() -> Path:
    return Path(os.environ.get("RECBACKDOOR_DATA", "../shared/data"))


def run_study(
    config: ExperimentConfig,
    out: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    report: bool = True,
    stages_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run (or resume) every stage of ``config`` under ``out``; write ``results.json`` and the
    report; return the results. ``stages_dir`` (default ``<out>/stages``) may be shared by
    several studies: a stage one of them finished is reused by the others."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    if config.run.threads:
        import torch

        torch.set_num_threads(config.run.threads)
    out = Path(out)
    store = StageStore(Path(stages_dir) if stages_dir is not None else out / "stages")
    root = Path(data_root) if data_root is not None else default_data_root()
    for ds in config.data.datasets:  # before anything is written: a wrong --data is one line
        if not (root / DATASET_SOURCES[ds][1]).is_dir():
            raise ConfigError(f"{root / DATASET_SOURCES[ds][1]}: {ds} files not found; pass --data DIR "
                              f"(the folder holding {DATASET_SOURCES[ds][1]}) or set RECBACKDOOR_DATA")
    if config.run.kind == "utility":
        from .utility import UtilityStudy

        study: Study = UtilityStudy(config, root, store)
    elif config.run.kind == "detect":
        from .detect import DetectStudy

        study = DetectStudy(config, root, store)
    else:
        study = Study(config, root, store)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config.model_dump(mode="json"))
    t_total = time.perf_counter()
    timing = run_stages(study, store)
    results = study.results()
    write_json(out / "results.json", results)
    from ..models.machine import describe as describe_machine

    write_json(out / "timing.json", {"stages": timing, "this_call_seconds": round(time.perf_counter() - t_total, 1),
                                     "machine": describe_machine()})
    write_json(out / "stages.json", {name: {"label": s.label, "dir": str(store.path(s))} for name, s in study.stages.items()})
    if report:
        from .report import write_report

        path = write_report(out)
        console.print(f"report: {path}")
    return results
