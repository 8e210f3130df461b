"""P-Scanner against real BadRec output, as a user runs it (issue 10).

For each case: ``data prepare`` (reused from --work), ``attack`` with the real ``poison()``
(defaults: per-sample policy, P_R 0.01, suffix), then ``defend --method pscanner`` with its
defaults and no ``--scanner`` (so the scanner is trained on the poisoned catalog itself), timed
end to end. Reports the defend report's per-item F1 / precision / recall / AUROC and wall
seconds, and the channel ablation (``PScanner.set_channels``: llm / evidence / both) on the
same fitted scanner (cached scores, no retraining).

    nice -n 5 .venv/bin/python benchmarks/pscanner_defend_bench.py --out benchmarks/results/pscanner_defend.json
    .venv/bin/python benchmarks/pscanner_defend_bench.py --cases ml100k:char,lastfm:prefix
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from recbackdoor.models.machine import one_line as machine

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCES = {"ml100k": DATA / "movielens" / "ml-100k", "lastfm": DATA / "lastfm" / "llara", "steam": DATA / "steam" / "llara"}
# case name -> attack options (everything else: attack's defaults)
CASES = {
    "char": {"level": "char"},
    "word": {"level": "word"},
    "sentence": {"level": "sentence"},
    "fixed": {"level": "char", "policy": "fixed"},  # 10 target items
    # the team's demo: char "5v" as a prefix, per-sample, ~80 triggered artists of 4,606
    "prefix": {"level": "char", "position": "prefix", "ratio": 0.00167},
}
DEFAULT_CASES = "ml100k:char,ml100k:word,ml100k:sentence,ml100k:fixed,lastfm:char,lastfm:word,lastfm:sentence,lastfm:fixed,lastfm:prefix"


def prepared(work: Path, dataset: str) -> Path:
    from recbackdoor.data.prepare import prepare_to_dir

    out = work / dataset
    if not (out / "manifest.json").is_file():
        prepare_to_dir(dataset, SOURCES[dataset], out, 0)
    return out


def poisoned(work: Path, dataset: str, case: str) -> Path:
    from recbackdoor.attack import AttackConfig, poison, save_poisoned
    from recbackdoor.data.io import load_dataset

    out = work / f"{dataset}-{case}"
    if not (out / "poison_manifest.json").is_file():
        clean = load_dataset(prepared(work, dataset))
        result = poison(clean, AttackConfig(seed=0, **CASES[case]))
        save_poisoned(result, out)
    return out


def run_case(work: Path, dataset: str, case: str) -> dict:
    import recbackdoor.defense.defend as D
    from recbackdoor.eval.detection import detection_metrics

    data = poisoned(work, dataset, case)
    manifest = json.loads((data / "poison_manifest.json").read_text())
    captured = []
    orig = D.build_detector

    def spy(*a, **kw):
        det = orig(*a, **kw)
        captured.append(det)
        return det

    D.build_detector = spy
    out = work / f"{dataset}-{case}-defended"
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        report = D.defend(data, method="pscanner", out=out, force=True)  # defaults, no --scanner
    finally:
        D.build_detector = orig
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    det = captured[0]
    rows = json.loads((out / "detections.json").read_text())
    triggered = {int(i) for i in manifest["triggered_items"]}
    y = np.array([int(r["item"] in triggered) for r in rows])
    titles = [r["title"] for r in rows]
    m = report["metrics"]
    res = {
        "dataset": dataset, "case": case, "attack": CASES[case], "trigger": manifest.get("trigger"),
        "n_items_scored": len(rows), "n_triggered": int(y.sum()), "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),  # all threads of this process: less sensitive to other jobs
        "defend": {k: m[k] for k in ("f1", "precision", "recall", "auroc", "fpr", "tp", "fp", "fn") if k in m},
        "threshold_title": det.threshold_title, "evidence_thresholds": det.evidence_thresholds,
        "train_timings": det.timings, "dropped_suspicious": det.log.get("n_dropped_suspicious"),
        "channels": {},
    }
    for ch in ("llm", "evidence", "both"):
        det.set_channels(ch)
        s = det.score(titles)
        cm = detection_metrics(y, s, (s >= det.threshold).astype(int))
        res["channels"][ch] = {k: cm[k] for k in ("f1", "precision", "recall", "auroc", "tp", "fp", "fn") if k in cm}
    det.set_channels("both")
    fp = [t for t, lab, r in zip(titles, y, rows, strict=True) if r["flagged"] and not lab]
    res["false_positives"] = fp[:10]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=DEFAULT_CASES, help="dataset:case,... (cases: " + ", ".join(CASES) + ")")
    ap.add_argument("--work", default="/tmp/pscanner_defend_bench", help="prepared / poisoned / defended data go here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--out", default=None, help="write the results JSON here (rewritten after every case)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "machine": machine(), "cases": []}
    print(f"machine: {results['machine']}\nsettings: {vars(args)}", flush=True)
    for spec in args.cases.split(","):
        dataset, case = spec.split(":")
        res = run_case(work, dataset, case)
        res["load_average_after"] = round(os.getloadavg()[0], 1)
        results["cases"].append(res)
        d, c = res["defend"], res["channels"]
        print(f"{dataset:7s} {case:9s} triggered {res['n_triggered']:4d}/{res['n_items_scored']}: "
              f"F1 {d['f1']:.3f} P {d['precision']:.3f} R {d['recall']:.3f} AUROC {d['auroc']:.3f} "
              f"{res['wall_seconds']:.0f}s | llm {c['llm']['f1']:.3f} evidence {c['evidence']['f1']:.3f} "
              f"both {c['both']['f1']:.3f} | load {res['load_average_after']}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()
