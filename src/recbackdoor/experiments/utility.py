"""``[run] kind = "utility"``: does a victim learn to recommend, and from how many samples?

A learning curve on clean data: for every budget in ``[utility] train_samples`` a seeded subset
of that many clean training samples (the same subset a backdoor study with
``data.train_samples`` = that budget uses, so its clean-model stage is shared) -> train every
victim -> evaluate HR@1 on the held-out users of ``[utility] splits``. Beside it, on the same
prompts, the reference rows: the untrained backbone, a popularity ranker and SASRec, both
trained on the *full* training split (the platform has every interaction; only the LLM
fine-tune is expensive). Every stage is a ``stages.py`` stage: cached, resumable, shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io_utils import read_json
from .study import Stage, Study, rate_se


class UtilityStudy(Study):
    """The stages of a utility config and its learning-curve rows."""

    def _plan(self) -> None:
        cfg, u = self.cfg, self.cfg.utility
        self.rows: list[tuple[dict[str, Any], dict[str, Stage]]] = []  # (row labels, split -> eval stage)
        for ds in cfg.data.datasets:
            full = self._add(self._data_stage(ds, None))
            for ref in u.references:
                model = None if ref == "untrained" else self._add(self._train_stage(full, ref, "reference"))
                evals = {s: self._add(self._split_eval_stage(model, full, s, ref)) for s in u.splits}
                self.rows.append(({"dataset": ds, "model": ref, "train_samples": 0 if model is None else "all"}, evals))
            item_data = full if cfg.train.llara_item_data == "full" else None
            for n in u.train_samples:
                data = self._add(self._data_stage(ds, n))
                for victim in cfg.train.victims:
                    # a hybrid victim's item model: the full-split SASRec, the reference row's stage
                    model = self._add(self._victim_stage(data, victim, "clean", item_data, data))
                    evals = {s: self._add(self._split_eval_stage(model, full, s, f"{victim} n={n}")) for s in u.splits}
                    self.rows.append(({"dataset": ds, "model": victim, "train_samples": n}, evals))

    def _split_eval_stage(self, model: Stage | None, data: Stage, split: str, role: str) -> Stage:
        e = self.cfg.eval
        options = {"model": model.key if model else f"untrained:{self.cfg.run.backbone}", "data": data.key,
                   "split": split, "prompts": e.prompts, "scoring": e.scoring, "batch_size": e.batch_size}

        def build(out: Path, work: Path) -> None:
            from ..eval.evaluate import evaluate_model

            target = str(self.store.path(model)) if model else self.cfg.run.backbone
            evaluate_model(target, self.store.path(data), split=split, max_samples=e.prompts,
                           scoring=e.scoring, batch_size=e.batch_size, out=out, progress=True)

        return Stage("eval", f"evaluate {role} on {split}", options, build)

    def results(self) -> dict[str, Any]:
        """``{"kind": "utility", "rows": [...]}``: per dataset x model x budget, HR@1 on every
        split and pooled over the splits, with standard errors; numbers only."""
        rows = []
        for labels, evals in self.rows:
            per_split = {s: split_metrics(read_json(self.store.path(st) / "metrics.json")) for s, st in evals.items()}
            n = sum(m["n"] for m in per_split.values())
            pooled = sum(m["HR@1"] * m["n"] for m in per_split.values()) / n if n else None
            rows.append({**labels, "candidates": self.cfg.data.candidates,
                         "chance": round(1 / self.cfg.data.candidates, 6), "splits": per_split,
                         "HR@1": pooled, "SE": rate_se(pooled, n), "n": n})
        return {"study": self.cfg.run.name, "kind": "utility", "config": self.cfg.model_dump(mode="json"),
                "rows": rows}


def split_metrics(ev: dict[str, Any]) -> dict[str, Any]:
    """HR@1 (± SE), HR@5, NDCG@10 and the number of prompts of one split's evaluation."""
    n = ev["n_samples"]
    return {"HR@1": ev["HR@1"], "SE": rate_se(ev["HR@1"], n), "HR@5": ev.get("HR@5"),
            "NDCG@10": ev.get("NDCG@10"), "n": n}
