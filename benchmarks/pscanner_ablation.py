"""P-Scanner training ablation (issue 11): supervised only / + policy optimisation (DPO or
GRPO) / + adversarial rounds, measured on real BadRec output with the per-title LLM channel
alone (``pscanner-llm``: F1 at the calibrated per-title threshold, AUROC) and with both
channels (``pscanner``).

For each variant: a scanner trained with ``ScannerConfig()`` defaults plus the variant's
overrides on the clean dataset's distinct training titles (a trusted catalog of the domain),
saved under ``--work`` and reused on rerun; then ``detect-bench`` (``run_detect_bench``) with
that scanner on fixed triggers (BadRec's one trigger, both policies, 3 levels) and on varied
triggers (``--trigger-family``). The triggers it is measured on are the attack's own, which
scanner training never uses (``ScannerConfig.exclude_triggers``; families are drawn by the
attack, not by the scanner's generators).

    .venv/bin/python benchmarks/pscanner_ablation.py --dataset ml100k --results benchmarks/results
    .venv/bin/python benchmarks/pscanner_ablation.py --variants supervised,dpo --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from detect_bench import ROOT, SOURCES, machine, prepared  # sibling module: run from this folder

# variant -> ScannerConfig overrides (everything else: the defaults of `scanner train`)
VARIANTS = {
    "supervised": {"policy": "none", "rounds": 0},
    "dpo": {"policy": "dpo", "rounds": 0},
    "grpo": {"policy": "grpo", "rounds": 0},
    "dpo+rounds": {"policy": "dpo", "rounds": 3},
}


def train_variant(data: Path, out: Path, overrides: dict, seed: int) -> tuple[Path, float | None]:
    """The variant's scanner in ``out`` (trained once); returns it and the training seconds
    (when reused, the ``total`` its ``timing.json`` recorded)."""
    from recbackdoor.data.io import load_dataset
    from recbackdoor.defense.defend import training_items
    from recbackdoor.defense.pscanner import ScannerConfig, train_scanner

    if (out / "scanner.json").is_file():
        timing = out / "timing.json"
        return out, json.loads(timing.read_text()).get("total") if timing.is_file() else None
    clean = load_dataset(data)
    titles = sorted({clean.catalog.titles[i] for i in training_items(clean)})
    start = time.perf_counter()
    train_scanner(titles, clean.catalog.domain, ScannerConfig(seed=seed, **overrides), out=out, progress=True)
    return out, time.perf_counter() - start


def bench_rows(data: Path, out: Path, scanner: Path, family: bool, seed: int) -> list[dict]:
    from recbackdoor.defense.bench import BenchConfig
    from recbackdoor.experiments.detect import run_detect_bench

    config = BenchConfig(
        methods=("pscanner",), policies=("per-sample", "fixed"), trigger_family=family,
        scanner_dir=str(scanner), seed=seed, reuse_models=True,
    )  # fmt: skip
    run_detect_bench(data, out, config, force=True)
    return json.loads((out / "detect_bench.json").read_text())["rows"]


def summary(rows: list[dict], detector: str) -> dict:
    pick = [r for r in rows if r["detector"] == detector]
    f1 = [r["f1"] or 0.0 for r in pick]
    auroc = [r["auroc"] for r in pick if r["auroc"] is not None]
    return {
        "cells": len(pick),
        "f1_mean": float(np.mean(f1)), "f1_min": float(np.min(f1)), "f1_max": float(np.max(f1)),
        "auroc_mean": float(np.mean(auroc)) if auroc else None,
        "per_cell": {f"{r['policy']}/{r['level']}": {"f1": r["f1"], "auroc": r["auroc"]} for r in pick},
    }  # fmt: skip


def markdown(dataset: str, results: dict, header: str) -> str:
    lines = [
        f"# P-Scanner training ablation: {dataset}", "", header, "",
        "Per-title LLM channel alone (`pscanner-llm`): mean F1 (min-max) and mean AUROC over the 6 cells "
        "(per-sample and fixed policy x char/word/sentence); both channels (`pscanner`): mean F1. The last "
        "column is the scanner's own probe set (hidden rule triggers, 200 held-out titles) after its last round.",
        "",
        "| variant | train s | fixed triggers: LLM F1 | LLM AUROC | both F1 | varied triggers: LLM F1 | LLM AUROC | both F1 | probe F1 / AUROC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, res in results.items():
        cells = []
        for kind in ("fixed", "varied"):
            llm, both = res[kind]["pscanner-llm"], res[kind]["pscanner"]
            cells += [f"{llm['f1_mean']:.2f} ({llm['f1_min']:.2f}-{llm['f1_max']:.2f})", f"{llm['auroc_mean']:.3f}",
                      f"{both['f1_mean']:.2f}"]  # fmt: skip
        probe = res.get("probe") or {}
        probe_s = f"{probe['f1']:.2f} / {probe['auroc']:.3f}" if probe else "-"
        secs = "reused" if res["train_seconds"] is None else f"{res['train_seconds']:.0f}"
        lines.append(f"| {name} | {secs} | " + " | ".join(cells) + f" | {probe_s} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml100k", choices=sorted(SOURCES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "pscanner-ablation")
    ap.add_argument("--results", type=Path, default=None, help="write pscanner_ablation_<dataset>.{md,json} here")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    header = f"machine: {machine()}; settings: {json.dumps({k: str(v) for k, v in vars(args).items()})}"
    print(header, flush=True)
    data = prepared(args.dataset, args.work)
    results: dict[str, dict] = {}
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; use {', '.join(VARIANTS)}")
        scanner, seconds = train_variant(data, args.work / f"scanner-{args.dataset}-{name}", VARIANTS[name], args.seed)
        meta = json.loads((scanner / "scanner.json").read_text())
        res: dict = {"overrides": VARIANTS[name], "train_seconds": seconds, "policy_step": meta["log"].get("policy"),
                     "probe": meta["log"]["rounds"][-1].get("probe"),
                     "rounds": [{k: r.get(k) for k in ("round", "recall_fresh", "agent_evasion_rate", "probe")}
                                for r in meta["log"]["rounds"]]}  # fmt: skip
        for kind, family in (("fixed", False), ("varied", True)):
            rows = bench_rows(data, args.work / f"bench-{args.dataset}-{name}-{kind}", scanner, family, args.seed)
            res[kind] = {det: summary(rows, det) for det in ("pscanner-llm", "pscanner")}
        results[name] = res
        print(markdown(args.dataset, {name: res}, ""), flush=True)
    table = markdown(args.dataset, results, header)
    print(table, flush=True)
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        tag = f"pscanner_ablation_{args.dataset}"
        if args.variants != ",".join(VARIANTS):
            tag += "_" + args.variants.replace(",", "_").replace("+", "")
        (args.results / f"{tag}.md").write_text(table)
        (args.results / f"{tag}.json").write_text(json.dumps({"machine": machine(), "settings": vars(args) | {
            "work": str(args.work), "results": str(args.results)}, "results": results}, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
