"""Detection benchmark on real BadRec output: a thin caller of ``recbackdoor detect-bench``
(:func:`recbackdoor.experiments.detect.run_detect_bench`, the detect study) over the reference datasets.

For each dataset (LastFM, ML-100K, Steam from ../shared/data): ``data prepare`` into
``--work`` (once; reused), then ``detect-bench`` (the attack's own ``poison()`` per policy and
level, every detector through ``defend``'s ``detect()``), and the tables are copied to
``--results`` as ``detect_bench_<dataset>.{md,json,csv}``. Prints the machine and settings first.

    nice -n 10 .venv/bin/python benchmarks/detect_bench.py --datasets ml100k --methods stat,embed
    .venv/bin/python benchmarks/detect_bench.py --policies per-sample,fixed --reuse-models
    .venv/bin/python benchmarks/detect_bench.py --methods pscanner --scanner-dir runs/scanners  # DIR/<dataset>

P-Scanner: without ``--scanner-dir`` one scanner per dataset is trained on the clean training
titles (``--scanner-from clean``, the default) and reused in every cell; ``--scanner-from
cell`` trains one per poisoned catalog, as ``defend`` does (see pscanner_defend_bench.py for
that path, timed end to end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from recbackdoor.models.machine import one_line as machine

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECBACKDOOR_DATA", ROOT.parent / "shared" / "data"))
SOURCES = {  # name -> (data prepare --dataset, source folder)
    "lastfm": ("lastfm", DATA / "lastfm" / "llara"),
    "ml100k": ("ml100k", DATA / "movielens" / "ml-100k"),
    "steam": ("steam", DATA / "steam" / "llara"),
}


def prepared(name: str, work: Path) -> Path:
    """``work/<name>``: the dataset prepared with the defaults (seed 0), made once."""
    from recbackdoor.data.prepare import prepare_to_dir

    out = work / name
    if not (out / "manifest.json").is_file():
        dataset, source = SOURCES[name]
        start = time.perf_counter()
        prepare_to_dir(dataset, source, out, 0, force=out.exists())
        print(f"{name}: prepared {out} in {time.perf_counter() - start:.1f}s", flush=True)
    return out


def trusted_scanner(data: Path, out: Path, backbone: str | None, seed: int, n_train: int | None = None) -> Path:
    """A P-Scanner trained once (``ScannerConfig.fast``, as ``defend`` trains; ``n_train``
    synthetic examples instead of its 960 if given) on the clean dataset's distinct training
    titles, saved to ``out`` and reused by every cell: the "trusted catalog of the domain" way
    to avoid learning a poisoned catalog's trigger as clean."""
    from recbackdoor.data.io import load_dataset
    from recbackdoor.defense.defend import training_items
    from recbackdoor.defense.pscanner import CatalogTrainedScanner, ScannerConfig

    if (out / "scanner.json").is_file():
        return out
    clean = load_dataset(data)
    titles = sorted({clean.catalog.titles[i] for i in training_items(clean)})
    start = time.perf_counter()
    cfg = ScannerConfig.fast(**({"backbone": backbone} if backbone else {}), **({"n_train": n_train} if n_train else {}), seed=seed)
    scanner = CatalogTrainedScanner(cfg).fit(titles, clean.catalog.domain)
    scanner.save(out)
    print(f"trained a scanner on {len(titles)} clean titles of {data.name} in {time.perf_counter() - start:.0f}s: {out}", flush=True)
    return out


def parser(description: str, default_methods: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="lastfm,ml100k,steam")
    ap.add_argument("--methods", default=default_methods)
    ap.add_argument("--levels", default="char,word,sentence")
    ap.add_argument("--policies", default="per-sample,fixed")
    ap.add_argument("--ratio", type=float, default=0.01)
    ap.add_argument("--trigger-family", action="store_true", help="vary the trigger per item (attack --trigger-family); tables get a _family suffix")
    ap.add_argument("--scanner-dir", default=None, help="trained P-Scanners: DIR/<dataset> (default: see --scanner-from)")
    ap.add_argument(
        "--scanner-from", choices=("clean", "cell"), default="clean",
        help="without --scanner-dir: 'clean' trains one scanner per dataset (ScannerConfig.fast) on the clean "
        "training titles, a trusted catalog of the domain, and reuses it in every cell; 'cell' lets fit train "
        "one on each poisoned catalog, as `defend` does without --scanner (minutes per cell)",
    )  # fmt: skip
    ap.add_argument("--scanner-n-train", type=int, default=None, help="with --scanner-from clean: synthetic training examples (default: ScannerConfig.fast's 960); tables get a _n<N> suffix")
    ap.add_argument("--model", default=None, help="victim for bki/strip (one for every dataset; default: base backbone)")
    ap.add_argument("--backbone", default=None, help="onion/bki LM and P-Scanner backbone (default smollm2-135m)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse-models", action="store_true", help="keep one detector per method across cells (caches)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "detect-bench", help="prepared data + bench outputs")
    ap.add_argument("--results", type=Path, default=None, help="also copy the tables here (e.g. benchmarks/results)")
    return ap


def main(description: str = __doc__, default_methods: str = "pscanner,stat,onion,bki,embed", tag: str = "detect_bench") -> None:
    args = parser(description, default_methods).parse_args()
    import torch

    from recbackdoor.defense.bench import BenchConfig
    from recbackdoor.experiments.detect import run_detect_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}\nsettings: {json.dumps({k: str(v) for k, v in vars(args).items()})}", flush=True)
    for name in args.datasets.split(","):
        if name not in SOURCES:
            raise SystemExit(f"unknown dataset {name!r}; use {', '.join(SOURCES)}")
        data = prepared(name, args.work)
        scanner = None
        if args.scanner_dir and "pscanner" in args.methods.split(","):
            scanner = str(Path(args.scanner_dir) / name)
        elif args.scanner_from == "clean" and "pscanner" in args.methods.split(","):
            suffix = f"-n{args.scanner_n_train}" if args.scanner_n_train else ""
            scanner = str(trusted_scanner(data, args.work / f"scanner-{name}{suffix}", args.backbone, args.seed, args.scanner_n_train))
        config = BenchConfig(
            levels=tuple(args.levels.split(",")), methods=tuple(args.methods.split(",")),
            policies=tuple(args.policies.split(",")), ratio=args.ratio, trigger_family=args.trigger_family,
            scanner_dir=scanner, model=args.model,
            backbone=args.backbone, seed=args.seed, reuse_models=args.reuse_models,
        )  # fmt: skip
        tag_name = f"{tag}_{name}_family" if args.trigger_family else f"{tag}_{name}"
        if args.scanner_n_train:
            tag_name += f"_n{args.scanner_n_train}"
        out = args.work / tag_name.replace("_", "-")
        start = time.perf_counter()
        run_detect_bench(data, out, config, force=True)
        print(f"{name}: {time.perf_counter() - start:.0f}s; wrote {out}", flush=True)
        print((out / "detect_bench.md").read_text(), flush=True)
        if args.results:
            args.results.mkdir(parents=True, exist_ok=True)
            for ext in ("md", "json", "csv"):
                shutil.copyfile(out / f"detect_bench.{ext}", args.results / f"{tag_name}.{ext}")


if __name__ == "__main__":
    main()
