"""Does BadRec show on a real model on a CPU? Clean-trained vs poisoned vs untrained victims.

    python benchmarks/backdoor_cpu.py [--backbone smollm2-135m] [--data DIR] [--ratio 0.2]
        [--train-samples 640] [--epochs 1] [--lr 1e-3] [--eval-samples 122] [--work DIR]
        [--threads 1] [--jobs 2]

Stages (each in its own folder under ``--work``, named by a hash of its options, reused when
finished): prepare the LLaRA LastFM data (``--candidates``, ``--history``) -> keep a seeded
random subset of ``--train-samples`` training samples (the CPU budget; valid/test untouched) ->
BadRec (char trigger ``5v``, ``--policy``, ``--position``, ``--ratio`` of the *subset*, so every
triggered item really is a label the poisoned model trains on) -> train the ``tallrec`` victim
on the clean subset and on the poisoned one -> score the attack sets (clean, triggered-seen,
triggered-unseen) with the untrained backbone, the clean-trained and the poisoned model. One
scoring pass per model gives both ``sum`` and ``mean`` rankings. ``--jobs 2`` runs the two
trainings (and then the evaluations) as parallel processes with ``--threads`` each.

Prints and writes (``benchmarks/results/<name>.json`` and ``.md``) the settings, the machine,
the results table (HR@1 and HR@5 on the clean set, ASR on both triggered sets, sum and mean
scoring) and the train and eval wall times. With ~120 prompts a rate has a standard error of
about 0.03-0.04: an effect is a clear difference from the untrained and clean-trained rates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine_info import cpu_model  # sibling module: benchmarks run as scripts from this folder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lastfm" / "llara"
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("untrained", "clean", "poisoned")
SCORINGS = ("sum", "mean")
DONE = "stage_done.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="LLaRA-format LastFM directory")
    p.add_argument("--candidates", type=int, default=10, help="candidates per prompt")
    p.add_argument("--history", type=int, default=5, help="max history items per prompt")
    p.add_argument("--train-samples", type=int, default=640, help="clean training samples kept")
    p.add_argument("--ratio", type=float, default=0.2, help="poisoning ratio P_R")
    p.add_argument("--policy", default="per-sample", choices=("per-sample", "fixed"))
    p.add_argument("--position", default="suffix", choices=("suffix", "prefix", "random"))
    p.add_argument("--trigger", default="5v")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--template", type=int, default=0, help="prompt template (evaluation uses 0)")
    p.add_argument("--eval-samples", type=int, default=122, help="prompts per attack set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="parallel processes")
    p.add_argument("--work", default="/tmp/backdoor_cpu", help="stage folders (reused)")
    p.add_argument("--name", default="backdoor_cpu_lastfm", help="results file name")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)  # one stage (subprocess)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- stage folders


def _key(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]


def stage_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Options of every stage, each including those of the stages it depends on."""
    data = {
        "source": str(Path(args.data).resolve()),
        "candidates": args.candidates,
        "history": args.history,
        "train_samples": args.train_samples,
        "seed": args.seed,
    }
    attack = {**data, "ratio": args.ratio, "policy": args.policy, "position": args.position,
              "trigger": args.trigger}
    train = {"backbone": args.backbone, "lr": args.lr, "epochs": args.epochs,
             "batch_size": args.batch_size, "lora_dropout": args.lora_dropout,
             "template": args.template, "seed": args.seed}
    return {
        "data": data,
        "attack": attack,
        "train-clean": {**data, **train},
        "train-poisoned": {**attack, **train},
        **{f"eval-{m}": {**attack, **(train if m != "untrained" else {"backbone": args.backbone}),
                         "model": m, "eval_samples": args.eval_samples} for m in MODELS},
    }


def stage_dirs(args: argparse.Namespace) -> dict[str, Path]:
    work = Path(args.work)
    return {name: work / f"{name}-{_key(opts)}" for name, opts in stage_options(args).items()}


def _done(path: Path) -> bool:
    """Every stage writes its folder atomically (temp dir + rename): present means finished."""
    return path.is_dir()


# --------------------------------------------------------------------------- stages


def run_data(args: argparse.Namespace, out: Path) -> None:
    """Prepare the dataset, then keep a seeded random subset of the training samples."""
    import numpy as np

    from recbackdoor.data.io import save_dataset
    from recbackdoor.data.prepare import prepare_dataset

    ds = prepare_dataset(
        "llara", args.data, args.seed, n_candidates=args.candidates, max_history=args.history,
        domain="music",
    )
    n = min(args.train_samples, len(ds.train))
    keep = np.sort(np.random.default_rng([args.seed, 99]).choice(len(ds.train), n, replace=False))
    manifest = {**ds.manifest, "train_subset": {
        "n": int(n), "of": len(ds.train), "how": "seeded random subset, original order",
        "rng": [args.seed, 99]}}
    ds = ds.replace(train=tuple(ds.train[i] for i in keep), manifest=manifest)
    save_dataset(ds, out)


def run_attack(args: argparse.Namespace, data_dir: Path, out: Path) -> None:
    import warnings

    from recbackdoor.attack import AttackConfig, poison, save_poisoned
    from recbackdoor.data.io import load_dataset

    config = AttackConfig(level="char", trigger=args.trigger, position=args.position,
                          ratio=args.ratio, policy=args.policy, seed=args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        result = poison(load_dataset(data_dir), config, source=data_dir)
    save_poisoned(result, out)


def run_train(args: argparse.Namespace, data_dir: Path, out: Path) -> None:
    from recbackdoor.models.lora import make_train_config
    from recbackdoor.victims.tallrec import train_victim

    config = make_train_config(
        backbone=args.backbone, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
        lora_dropout=args.lora_dropout, template=args.template, seed=args.seed,
    )
    t0 = time.perf_counter()
    train_victim(data_dir, out, config)
    (out / DONE).write_text(json.dumps({"wall_s": round(time.perf_counter() - t0, 1)}))


def run_eval(args: argparse.Namespace, model: str, attack_dir: Path, out: Path) -> None:
    """Score the three attack sets once; metrics for both sum and mean scoring."""
    from recbackdoor.attack import load_attack_sets
    from recbackdoor.data.io import load_dataset
    from recbackdoor.eval.evaluate import TEMPLATE, build_eval_prompts, set_metrics
    from recbackdoor.eval.protocols import score_protocol
    from recbackdoor.io_utils import atomic_output_dir, write_json
    from recbackdoor.victims import load_victim

    catalog = load_dataset(attack_dir).catalog
    sets = {
        name: [(p.sample, p.triggered_item, p.triggered_title) for p in prompts[: args.eval_samples]]
        for name, prompts in load_attack_sets(attack_dir).items()
    }
    prompts = build_eval_prompts(catalog, sets, TEMPLATE)
    t0 = time.perf_counter()
    victim, tokenizer, _ = load_victim(model, device="cpu")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = score_protocol(victim, tokenizer, [p.prompt for p in prompts],
                            [list(p.titles) for p in prompts], batch_size=8, progress=True)
    eval_s = time.perf_counter() - t0
    report: dict[str, Any] = {"model": model, "dtype": str(next(victim.parameters()).dtype),
                              "load_s": round(load_s, 1), "eval_s": round(eval_s, 1),
                              "n_prompts": len(prompts), "metrics": {}}
    for scoring in SCORINGS:
        results = [{"prediction": int(r[0]), "ranking": [int(i) for i in r]}
                   for r in scores.rankings(scoring)]
        report["metrics"][scoring] = {
            name: set_metrics([p for p in prompts if p.set_name == name],
                              [r for p, r in zip(prompts, results, strict=True)
                               if p.set_name == name], "score")
            for name in sets
        }
    with atomic_output_dir(out) as tmp:
        write_json(tmp / "eval.json", report)
        write_json(tmp / DONE, {"eval_s": report["eval_s"]})


def run_stage(args: argparse.Namespace, name: str) -> None:
    dirs = stage_dirs(args)
    out = dirs[name]
    if _done(out):
        print(f"[{name}] reusing {out}", flush=True)
        return
    print(f"[{name}] -> {out}", flush=True)
    t0 = time.perf_counter()
    if name == "data":
        run_data(args, out)
    elif name == "attack":
        run_attack(args, dirs["data"], out)
    elif name == "train-clean":
        run_train(args, dirs["data"], out)
    elif name == "train-poisoned":
        run_train(args, dirs["attack"], out)
    else:
        model = name.removeprefix("eval-")
        target = args.backbone if model == "untrained" else str(dirs[f"train-{model}"])
        run_eval(args, target, dirs["attack"], out)
    print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", flush=True)


def run_group(args: argparse.Namespace, names: list[str], argv: list[str]) -> None:
    """Run stages one after the other, or ``--jobs 2`` at a time as subprocesses."""
    if args.jobs == 1:
        for name in names:
            run_stage(args, name)
        return
    todo = [n for n in names if not _done(stage_dirs(args)[n])]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    while todo:
        batch, todo = todo[: args.jobs], todo[args.jobs :]
        procs = [subprocess.Popen([sys.executable, __file__, *argv, "--only", n], env=env)
                 for n in batch]
        codes = [p.wait() for p in procs]
        if any(codes):
            sys.exit(f"error: stage(s) {batch} failed with exit codes {codes}")


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    import torch

    cpu = cpu_model()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "load_avg_at_report": [round(x, 2) for x in os.getloadavg()]}


def collect(args: argparse.Namespace) -> dict[str, Any]:
    dirs = stage_dirs(args)
    pm = json.loads((dirs["attack"] / "poison_manifest.json").read_text())
    train = {}
    for m in ("clean", "poisoned"):
        timing = json.loads((dirs[f"train-{m}"] / "timing.json").read_text())
        info = json.loads((dirs[f"train-{m}"] / "victim.json").read_text())
        log = [json.loads(line) for line in
               (dirs[f"train-{m}"] / "training_log.jsonl").read_text().splitlines()]
        train[m] = {"train_s": timing["train_seconds"], "steps": timing["steps"],
                    "tokens_per_s": timing["tokens_per_s"], "samples": info["train_samples"],
                    "tokens_per_sample": info["tokens_per_sample"]["mean"],
                    "loss_first": log[0]["loss"] if log else None,
                    "loss_last5": round(sum(r["loss"] for r in log[-5:]) / max(1, len(log[-5:])), 4)}
    evals = {m: json.loads((dirs[f"eval-{m}"] / "eval.json").read_text()) for m in MODELS}
    table = {
        scoring: {
            m: {
                "HR@1": evals[m]["metrics"][scoring]["clean"]["HR@1"],
                "HR@5": evals[m]["metrics"][scoring]["clean"]["HR@5"],
                "ASR-seen": evals[m]["metrics"][scoring]["triggered-seen"]["ASR"],
                "ASR-unseen": evals[m]["metrics"][scoring]["triggered-unseen"]["ASR"],
            }
            for m in MODELS
        }
        for scoring in SCORINGS
    }
    n_sets = {k: v["n"] for k, v in evals["clean"]["metrics"]["sum"].items()}
    settings = {k: v for k, v in vars(args).items() if k not in ("only", "work", "name")}
    return {
        "settings": settings,
        "attack": {k: pm[k] for k in ("trigger", "level", "position", "policy", "P_R_actual",
                                      "m", "n")} | {"n_triggered_items": len(pm["triggered_items"])},
        "machine": {**machine(), "threads_per_process": args.threads, "jobs": args.jobs},
        "n_prompts": n_sets,
        "chance_HR@1": round(1 / args.candidates, 3),
        "results": table,
        "train": train,
        "eval_s": {m: evals[m]["eval_s"] for m in MODELS},
        "eval_dtype": {m: evals[m]["dtype"] for m in MODELS},
        "stage_dirs": {k: str(v) for k, v in dirs.items()},
    }


def run_label(settings: dict[str, Any]) -> str:
    """Short name of a run: the options that differ between runs of this benchmark."""
    keys = ("candidates", "history", "train_samples", "ratio", "policy", "position", "epochs",
            "lr")
    return ", ".join(f"{k}={settings[k]}" for k in keys)


def save_results(res: dict[str, Any], name: str) -> str:
    """Add (or replace) this run in ``benchmarks/results/<name>.json`` and re-render the .md
    with every run in it, in the order they were first added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else {}
    runs[run_label(res["settings"])] = res
    path.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    md = "\n".join(["# BadRec on a CPU: smollm2 on LastFM, clean vs poisoned vs untrained",
                    "", "Written by `benchmarks/backdoor_cpu.py`; one section per run.", "",
                    *(markdown(r) for r in runs.values())])
    (RESULTS / f"{name}.md").write_text(md)
    return md


def markdown(res: dict[str, Any]) -> str:
    s, a, mc = res["settings"], res["attack"], res["machine"]
    lines = [
        f"## Run: {run_label(res['settings'])}",
        "",
        f"Backbone `{s['backbone']}`, LastFM (LLaRA split), {s['candidates']} candidates, "
        f"history <= {s['history']}; {a['n']} clean training samples (seeded subset) + "
        f"{a['m']} fake (P_R {a['P_R_actual']:.3f}, policy `{a['policy']}`, "
        f"{a['n_triggered_items']} triggered items, {a['level']} trigger `{a['trigger']}` "
        f"{a['position']}); LoRA r=8, lr {s['lr']}, {s['epochs']} epoch(s), batch "
        f"{s['batch_size']}, dropout {s['lora_dropout']}, template {s['template']}, seed "
        f"{s['seed']}.",
        f"Machine: {mc['cpu']}, {mc['cores']} cores, torch {mc['torch']}, "
        f"{mc['threads_per_process']} thread(s) x {mc['jobs']} process(es).",
        f"Prompts per set: {res['n_prompts']}; chance HR@1 = ASR by chance = "
        f"{res['chance_HR@1']}; standard error of a rate near 0.1-0.5 at this size ~0.03-0.05.",
        "",
        "| scoring | model | HR@1 (clean set) | HR@5 | ASR seen | ASR unseen |",
        "|---|---|---|---|---|---|",
    ]
    for scoring, rows in res["results"].items():
        for m, r in rows.items():
            lines.append(f"| {scoring} | {m} | {r['HR@1']:.3f} | {r['HR@5']:.3f} | "
                         f"{r['ASR-seen']:.3f} | {r['ASR-unseen']:.3f} |")
    lines += ["", "Poisoned minus clean-trained (the attack's effect; a difference under ~0.08 is "
              "within two standard errors):", "",
              "| scoring | HR@1 | ASR seen | ASR unseen |", "|---|---|---|---|"]
    for scoring, rows in res["results"].items():
        d = {k: rows["poisoned"][k] - rows["clean"][k] for k in ("HR@1", "ASR-seen", "ASR-unseen")}
        lines.append(f"| {scoring} | {d['HR@1']:+.3f} | {d['ASR-seen']:+.3f} | "
                     f"{d['ASR-unseen']:+.3f} |")
    lines += ["", "| model | train samples | steps | tokens/sample | train s | tokens/s | "
              "loss first -> last 5 | eval s |", "|---|---|---|---|---|---|---|---|"]
    for m in MODELS:
        t = res["train"].get(m)
        ev = res["eval_s"][m]
        if t is None:
            lines.append(f"| {m} | - | - | - | - | - | - | {ev:.0f} |")
        else:
            lines.append(f"| {m} | {t['samples']} | {t['steps']} | {t['tokens_per_sample']:.0f} | "
                         f"{t['train_s']:.0f} | {t['tokens_per_s']:.0f} | {t['loss_first']:.2f} -> "
                         f"{t['loss_last5']:.2f} | {ev:.0f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.only:
        run_stage(args, args.only)
        return
    Path(args.work).mkdir(parents=True, exist_ok=True)
    print(json.dumps({"settings": vars(args), "machine": machine()}, indent=1), flush=True)
    t0 = time.perf_counter()
    run_stage(args, "data")
    run_stage(args, "attack")
    run_group(args, ["train-clean", "train-poisoned"], argv)
    run_group(args, [f"eval-{m}" for m in MODELS], argv)
    res = collect(args)
    res["total_wall_s_this_call"] = round(time.perf_counter() - t0, 1)
    print(markdown(res))
    save_results(res, args.name)


if __name__ == "__main__":
    main()
