"""P-Scanner detection benchmark (DESIGN 5, issue 5).

For each catalog (LastFM artists, ML-100K movies, Steam games from ../shared/data): train a
scanner on the clean catalog titles (the defender's catalog; the attack's default triggers are
held out of training), then build one BadRec-poisoned catalog per level (the default trigger
"5v" / "cf" / the domain's sentence, appended to ~1% of the items as BadRec does), scan each,
and report per-level detection metrics before (scanner state 0) and after the adversarial
rounds (state R), per title and with cross-title evidence, plus scan and training times.

    nice -n 10 .venv/bin/python benchmarks/scanner_bench.py --datasets lastfm --out bench.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from machine_info import cpu_model  # sibling module: benchmarks run as scripts from this folder

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CATALOGS = {
    "lastfm": ("music", DATA / "lastfm" / "llara" / "id2name.txt"),
    "ml100k": ("movies", DATA / "movielens" / "ml-100k" / "u.item"),
    "steam": ("games", DATA / "steam" / "llara" / "id2name.txt"),
}


def read_titles(name: str) -> tuple[str, list[str]]:
    domain, path = CATALOGS[name]
    if name == "ml100k":
        lines = path.read_text(encoding="iso-8859-1").splitlines()
        titles = [ln.split("|")[1] for ln in lines if ln.strip()]
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        titles = [ln.split("::", 1)[1] for ln in lines if "::" in ln]
    return domain, titles


def poisoned_catalogs(titles: list[str], domain: str, share: float, seed: int) -> dict[str, tuple[list[str], np.ndarray, str]]:
    """level -> (titles with the default trigger on ``share`` of them, truth, trigger)."""
    from recbackdoor.attack.triggers import default_trigger, insert_trigger

    out = {}
    for k, level in enumerate(("char", "word", "sentence")):
        rng = np.random.default_rng(seed + 1000 + k)
        trig = default_trigger(level, domain)
        n = max(1, int(round(share * len(titles))))
        chosen = rng.choice(len(titles), size=n, replace=False)
        new = list(titles)
        y = np.zeros(len(titles), dtype=int)
        for i in chosen:
            new[i] = insert_trigger(new[i], trig, level, "suffix")
            y[i] = 1
        out[level] = (new, y, trig)
    return out


def best_f1(y: np.ndarray, scores: np.ndarray) -> float:
    """The per-title F1 at the best threshold chosen WITH the labels: how well the score ranks,
    not a result a defender could get (the scanner's own threshold is the deployable one)."""
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(y, scores)
    return round(float(np.max(2 * p * r / np.maximum(p + r, 1e-12))), 4)


def machine() -> str:
    import os
    import platform

    import torch

    return (f"{cpu_model()}; {os.cpu_count()} cpus, torch {torch.__version__} with {torch.get_num_threads()} threads; "
            f"python {platform.python_version()}")


def evaluate(scanner, catalogs: dict, timing: dict, tag: str, dump: bool = False) -> dict:
    """Per level: metrics per title (LLM score alone) and with cross-title evidence."""
    from recbackdoor.eval.detection import detection_metrics

    res = {}
    for level, (titles, y, trig) in catalogs.items():
        t0 = time.perf_counter()
        own = scanner.title_scores(titles)
        t_own = time.perf_counter() - t0
        scanner.fit(titles, scanner.domain)  # evidence from this catalog (scores are cached)
        comb = scanner.score(titles)
        t_all = time.perf_counter() - t0
        timing.setdefault(f"{tag}_scan_seconds", []).append(round(t_all, 2))
        timing.setdefault(f"{tag}_scored_titles", []).append(len(set(titles)))
        timing.setdefault(f"{tag}_own_seconds", []).append(round(t_own, 2))
        row = {"trigger": trig, "n_poisoned": int(y.sum()), "n_items": len(y)}
        thr_ev = scanner.threshold if scanner.uses_evidence else None
        for name, s, thr in (("title", own, scanner.threshold_title), ("evidence", comb, thr_ev)):
            if thr is None:
                continue
            m = detection_metrics(y, s, (s >= thr).astype(int))
            row[name] = {k: m[k] for k in ("precision", "recall", "f1", "auroc", "fpr", "tp", "fp", "fn")}
        row["title_best_f1"] = best_f1(y, own)
        row["top_fp"] = [titles[i] for i in np.argsort(-comb) if y[i] == 0][:5]
        if dump:
            row["own_scores"] = [round(float(v), 5) for v in own]
            row["y"] = y.tolist()
            row["titles"] = titles
        res[level] = row
        print(f"  [{tag}] {level:8s} title F1 {row['title']['f1']:.3f} AUROC {row['title']['auroc']:.3f}"
              f" (best {row['title_best_f1']:.3f})"
              f" | evidence F1 {row.get('evidence', {}).get('f1', float('nan')):.3f}"
              f" (tp {row.get('evidence', {}).get('tp')}, fp {row.get('evidence', {}).get('fp')})"
              f"  scan {t_all:.1f}s", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="lastfm,ml100k,steam")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--share", type=float, default=0.01)
    ap.add_argument("--max-titles", type=int, default=2000, help="titles used for training (scan uses all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--no-agent", action="store_true")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    ap.add_argument("--save-dir", default=None, help="save each trained scanner under DIR/<dataset>")
    ap.add_argument("--dump-scores", action="store_true", help="keep every title's score in the JSON")
    args = ap.parse_args()

    import torch

    from recbackdoor.defense.pscanner import ScannerConfig, train_scanner

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"args": vars(args), "machine": machine(), "datasets": {}}
    print(f"machine: {results['machine']}\nsettings: {vars(args)}", flush=True)
    for name in args.datasets.split(","):
        domain, titles = read_titles(name)
        catalogs = poisoned_catalogs(titles, domain, args.share, args.seed)
        print(f"{name}: {len(titles)} titles ({domain}); triggers {[c[2] for c in catalogs.values()]}", flush=True)
        cfg = ScannerConfig(backbone=args.backbone, rounds=args.rounds, seed=args.seed, max_titles=args.max_titles,
                            dtype=args.dtype, use_agent=not args.no_agent)
        if args.n_train:
            cfg.n_train = args.n_train
        timing: dict = {}
        states: dict = {}
        eval_seconds = [0.0]

        def on_round(r, scanner, entry, _catalogs=catalogs, _timing=timing, _states=states, _last=cfg.rounds,
                     _spent=eval_seconds):
            if r in (0, _last):
                t0 = time.perf_counter()
                _states[f"round_{r}"] = {
                    "threshold_title": scanner.threshold_title,
                    "evidence_thresholds": scanner.evidence_thresholds,
                    "levels": evaluate(scanner, _catalogs, _timing, f"round_{r}", args.dump_scores),
                }
                scanner.clear_cache()
                _spent[0] += time.perf_counter() - t0

        t0 = time.perf_counter()
        sc = train_scanner(titles, domain, cfg, progress=True, callback=on_round)
        train_seconds = time.perf_counter() - t0 - eval_seconds[0]
        if args.save_dir:
            sc.save(Path(args.save_dir) / name)
        results["datasets"][name] = {
            "n_titles": len(titles),
            "domain": domain,
            "train_seconds": round(train_seconds, 1),
            "train_timings": sc.timings,
            "scan": timing,
            "states": states,
            "rounds": [{k: v for k, v in e.items() if k != "update"} for e in sc.log["rounds"]],
            "trigger_sources": sc.log["trigger_sources"],
            "val_triggers": sc.log["val_triggers"],
        }
        print(f"{name}: training {train_seconds:.0f}s (without benchmark scans)", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()
