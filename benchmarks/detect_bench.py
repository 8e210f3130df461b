"""Detection benchmark on ML-100K titles: each detector against 12 triggered titles per level.

For each trigger level (char / word / sentence, the attack module's default triggers, suffix
position), ``--n-poison`` distinct titles of the ML-100K catalog get the trigger (seeded), and
every detector is fitted on that poisoned catalog (the defender sees only titles) and scored on
it. Reported per detector and level: precision, recall, F1, FPR at the detector's default
threshold, AUROC, flagged count, seconds. The LM-based detectors share one LM and cache clean
titles' scores, so later levels only score the changed titles (their time is lower).

    nice -n 10 .venv/bin/python benchmarks/detect_bench.py
    .venv/bin/python benchmarks/detect_bench.py --detectors stat,embed --out bench.json
    .venv/bin/python benchmarks/detect_bench.py --detectors pscanner --scanner runs/scanner
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("RECBACKDOOR_DATA", ROOT.parent / "shared" / "data"))


def ml100k_titles(path: Path) -> list[str]:
    """Distinct titles of ``u.item`` (``|``-separated, ISO-8859-1), in file order."""
    titles = [line.split("|")[1] for line in path.read_text(encoding="iso-8859-1").splitlines() if line]
    return list(dict.fromkeys(titles))


def poisoned(titles: list[str], level: str, n: int, position: str, seed: int) -> tuple[list[str], np.ndarray, str]:
    from recbackdoor.attack.triggers import default_trigger, insert_trigger

    trigger = default_trigger(level, "movies")
    rng = np.random.default_rng([seed, ["char", "word", "sentence"].index(level)])
    idx = rng.choice(len(titles), n, replace=False)
    out, y = list(titles), np.zeros(len(titles), dtype=int)
    for i in idx:
        out[i] = insert_trigger(out[i], trigger, level, position, rng)
        y[i] = 1
    return out, y, trigger


def make(name: str, args: argparse.Namespace, shared: dict[str, Any]) -> Any:
    """One detector per name, built once (LM shared between onion and bki)."""
    if name == "pscanner":
        from recbackdoor.defense.pscanner.scanner import load_scanner

        if not args.scanner:
            raise SystemExit("--detectors pscanner needs --scanner DIR (a trained scanner)")
        return load_scanner(args.scanner, progress=True)
    from recbackdoor.defense.baselines import make_detector

    options: dict[str, Any] = {"seed": args.seed, "progress": True}
    if name in ("onion", "bki"):
        if "lm" not in shared:
            from recbackdoor.defense.baselines.lm import TitleLM

            shared["lm"] = TitleLM(args.backbone, batch_size=args.batch_size, progress=True)
        options.update(backbone=args.backbone, lm=shared["lm"])
    return make_detector(name, **options)


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "movielens" / "ml-100k" / "u.item")
    parser.add_argument("--detectors", default="stat,embed,onion,bki")
    parser.add_argument("--levels", default="char,word,sentence")
    parser.add_argument("--n-poison", type=int, default=12)
    parser.add_argument("--position", default="suffix")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--scanner", default=None, help="trained P-Scanner folder (detector pscanner)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()

    from recbackdoor.defense.base import flag
    from recbackdoor.eval.detection import detection_metrics

    titles = ml100k_titles(args.data)
    settings = {
        "data": str(args.data), "distinct_titles": len(titles), "n_poison": args.n_poison,
        "position": args.position, "backbone (onion, bki)": args.backbone, "seed": args.seed,
        "thresholds": "each detector's default rule (stat 0.8; others: flag <= 1% of the catalog)",
    }  # fmt: skip
    info = machine()
    print("settings:", json.dumps(settings))
    print("machine: ", json.dumps(info))
    shared: dict[str, Any] = {}
    detectors = {name: make(name, args, shared) for name in args.detectors.split(",")}
    rows = []
    header = f"{'detector':9} {'level':9} {'P':>6} {'R':>6} {'F1':>6} {'FPR':>7} {'AUROC':>6} {'flag':>5} {'sec':>7}  trigger"
    print(header)
    for level in args.levels.split(","):
        cat, y, trigger = poisoned(titles, level, args.n_poison, args.position, args.seed)
        for name, det in detectors.items():
            start = time.perf_counter()
            det.fit(cat, "movies")
            scores, flags = flag(det, cat)
            seconds = time.perf_counter() - start
            m = detection_metrics(y, scores, flags)
            rows.append({"detector": name, "level": level, "trigger": trigger, "seconds": seconds,
                         "threshold": float(det.threshold), **m})  # fmt: skip
            print(
                f"{name:9} {level:9} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} "
                f"{m['fpr']:7.4f} {m['auroc']:6.3f} {m['n_flagged']:5d} {seconds:7.1f}  {trigger!r}",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps({"settings": settings, "machine": info, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
