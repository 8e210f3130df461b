"""``recbackdoor report RUN_DIR``: the paper-style tables and plots of a run's ``results.json``.

Writes ``report.md`` (tables: attack, P_R sweep, defense), ``models.csv`` (one row per cell x
model), ``detection.csv`` (one row per cell x detector) and PNG plots (ASR vs P_R per position,
ASR and HR@1 before/after each defense, detection F1 per detector x level). Every rate carries
its standard error (``±``) and sits beside the chance and untrained rates.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import RecBackdoorError
from ..io_utils import read_json

SETS = ("triggered-seen", "triggered-unseen")


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pm(model: dict[str, Any], metric: str, set_name: str | None = None) -> str:
    """``0.967 ± 0.016`` for HR@1 or an ASR."""
    if set_name is None:
        value, se = model.get(metric), (model.get("SE") or {}).get(metric)
    else:
        value = (model.get("ASR") or {}).get(set_name)
        se = ((model.get("SE") or {}).get("ASR") or {}).get(set_name)
    return "-" if value is None else f"{value:.3f} ± {_f(se)}"


def _trigger(run: dict[str, Any]) -> str:
    """The trigger as a reader wants it: one string, or a family's size and two examples."""
    trig = run["trigger"]
    if isinstance(trig, str):
        return f"`{trig}`"
    return f"family of {len(trig)}: `{trig[0]}`, `{trig[1]}`, ..." if len(trig) > 2 else " ".join(f"`{t}`" for t in trig)


def _level(run: dict[str, Any]) -> str:
    """The level, and the stealthy family a cell's triggers come from."""
    family = run.get("trigger_family")
    return run["level"] if not family or family == run["level"] else f"{run['level']} ({family})"


def _cell_name(run: dict[str, Any]) -> str:
    return f"{run['dataset']} / {run['victim']} / {_level(run)} {_trigger(run)} {run['position']} / P_R {run['ratio']}"


def attack_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| dataset | victim | level | position | P_R (m/n) | prompts per set | model | HR@1 | ASR seen | ASR unseen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        head = (f"| {r['dataset']} | {r['victim']} | {_level(r)} {_trigger(r)} | {r['position']} | "
                f"{r['ratio']} ({r['m']}/{r['n']}) | {r['prompts'].get('clean')} |")
        for i, name in enumerate(("untrained", "clean", "poisoned")):
            m = r["models"].get(name)
            if m is None:
                continue
            prefix = head if i == 0 else "| | | | | | |"
            bold = "**" if name == "poisoned" else ""
            lines.append(f"{prefix} {name} | {_pm(m, 'HR@1')} | {bold}{_pm(m, 'ASR', SETS[0])}{bold} | "
                         f"{bold}{_pm(m, 'ASR', SETS[1])}{bold} |")
    return lines


def sweep_table(runs: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["victim"], _level(r), r["position"])].append(r)
    lines = ["| dataset | victim | level | position | P_R | fake m | HR@1 poisoned | ASR unseen clean-trained | ASR unseen poisoned | effect |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, victim, level, pos), rs in groups.items():
        for r in sorted(rs, key=lambda r: r["ratio"]):
            p, c = r["models"]["poisoned"], r["models"]["clean"]
            pu, cu = (p["ASR"] or {}).get(SETS[1]), (c["ASR"] or {}).get(SETS[1])
            effect = "-" if pu is None or cu is None else f"{pu - cu:+.3f}"
            lines.append(f"| {ds} | {victim} | {level} | {pos} | {r['ratio']} | {r['m']} | {_pm(p, 'HR@1')} | "
                         f"{_pm(c, 'ASR', SETS[1])} | {_pm(p, 'ASR', SETS[1])} | {effect} |")
    return lines


def defense_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| cell | detector | flagged / scored | precision | recall | F1 | AUROC | FPR | samples removed | HR@1 after | ASR unseen after | ASR unseen poisoned / clean |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for det, d in r["detection"].items():
            after = r["models"].get(f"defended-{det}")
            san = r["sanitize"].get(det, {})
            p, c = r["models"]["poisoned"], r["models"]["clean"]
            lines.append(
                f"| {_cell_name(r)} | {det} | {d.get('flagged')} / {d.get('scored')} | {_f(d.get('precision'))} | "
                f"{_f(d.get('recall'))} | {_f(d.get('f1'))} | {_f(d.get('auroc'))} | {_f(d.get('fpr'), 4)} | "
                f"{san.get('removed_samples', '-')} of {san.get('train_before', '-')} | "
                f"{_pm(after, 'HR@1') if after else '-'} | {_pm(after, 'ASR', SETS[1]) if after else '-'} | "
                f"{_pm(p, 'ASR', SETS[1])} / {_pm(c, 'ASR', SETS[1])} |"
            )
    return lines


def write_csvs(runs: list[dict[str, Any]], out: Path) -> None:
    keys = ("dataset", "victim", "level", "trigger", "position", "ratio", "P_R_actual", "m", "n")
    with open(out / "models.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*keys, "model", "prompts", "chance", "HR@1", "HR@1_se", "ValidRatio",
                    "ASR_seen", "ASR_seen_se", "ASR_unseen", "ASR_unseen_se"])
        for r in runs:
            for name, m in r["models"].items():
                se = m.get("SE") or {}
                w.writerow([*(r[k] for k in keys), name, r["prompts"].get("clean"), r["chance"], m["HR@1"],
                            se.get("HR@1"), m["ValidRatio"], m["ASR"].get(SETS[0]), se.get("ASR", {}).get(SETS[0]),
                            m["ASR"].get(SETS[1]), se.get("ASR", {}).get(SETS[1])])
    with open(out / "detection.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*keys, "detector", "precision", "recall", "f1", "auroc", "fpr", "flagged", "scored",
                    "removed_samples"])
        for r in runs:
            for det, d in r["detection"].items():
                w.writerow([*(r[k] for k in keys), det, d.get("precision"), d.get("recall"), d.get("f1"),
                            d.get("auroc"), d.get("fpr"), d.get("flagged"), d.get("scored"),
                            r["sanitize"].get(det, {}).get("removed_samples")])


def _save(fig: Any, ax: Any, path: Path, legend_size: int = 8) -> bool:
    """Legend, layout, PNG, close: the end of every plot."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_asr_vs_ratio(runs: list[dict[str, Any]], path: Path) -> bool:
    """ASR on triggered-unseen items (left) and HR@1 on clean prompts (right) against P_R, the
    poisoned and the clean-trained model, one line per dataset x level x position; only lines
    with more than one P_R are drawn."""
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["victim"], _level(r), r["position"])].append(r)
    groups = {k: rs for k, rs in groups.items() if len({r["ratio"] for r in rs}) > 1}
    if not groups:  # one P_R per line: nothing to plot against
        return False
    fig, (ax, ax_hr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (ds, _victim, level, pos), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["ratio"])
        x = [100 * r["ratio"] for r in rs]
        for model, style in (("poisoned", "-o"), ("clean", ":x")):
            y = [r["models"][model]["ASR"].get(SETS[1]) for r in rs]
            err = [r["models"][model]["SE"]["ASR"].get(SETS[1]) for r in rs]
            if not any(v is None for v in y):
                ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=f"{ds} {level} {pos}: {model}")
            hr = [r["models"][model].get("HR@1") for r in rs]
            hr_err = [r["models"][model]["SE"].get("HR@1") for r in rs]
            if not any(v is None for v in hr):
                ax_hr.errorbar(x, hr, yerr=hr_err, fmt=style, capsize=3, label=f"{ds} {level} {pos}: {model}")
    chance = runs[0]["chance"]
    for a in (ax, ax_hr):
        a.axhline(chance, color="grey", lw=0.8, ls="--", label=f"chance ({chance:.2f})")
        a.set_xlabel("poisoning ratio P_R (%)")
    ax.set_ylabel("ASR on triggered-unseen items")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("BadRec: attack success vs poisoning ratio (± 1 SE)", fontsize=9)
    ax.legend(fontsize=7)
    ax_hr.set_ylabel("HR@1 on clean prompts")
    ax_hr.set_title("Stealth: recommendation quality vs poisoning ratio (± 1 SE)", fontsize=9)
    return _save(fig, ax_hr, path, legend_size=7)


def plot_defense(runs: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in runs if any(k.startswith("defended-") for k in r["models"])]
    if not rows:
        return False
    r = rows[0] if len(rows) == 1 else max(rows, key=lambda r: r["ratio"])
    names = ["untrained", "clean", "poisoned", *[k for k in r["models"] if k.startswith("defended-")]]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = np.arange(len(names))
    for k, (label, get) in enumerate((
        ("HR@1", lambda m: (m["HR@1"], m["SE"]["HR@1"])),
        ("ASR unseen", lambda m: (m["ASR"].get(SETS[1]), m["SE"]["ASR"].get(SETS[1]))),
    )):
        vals = [get(r["models"][n]) for n in names]
        ax.bar(x + (k - 0.5) * 0.38, [v or 0 for v, _ in vals], 0.38, yerr=[e or 0 for _, e in vals],
               capsize=3, label=label)
    ax.axhline(r["chance"], color="grey", lw=0.8, ls="--", label=f"chance ({r['chance']:.2f})")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Before and after the defense: {_cell_name(r)}", fontsize=8)
    return _save(fig, ax, path)


def plot_detection(runs: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib.pyplot as plt
    import numpy as np

    f1: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        for det, d in r["detection"].items():
            if d.get("f1") is not None:
                f1[det][_level(r)].append(d["f1"])
    if not f1:
        return False
    levels = sorted({lv for d in f1.values() for lv in d})
    dets = sorted(f1)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = 0.8 / len(dets)
    for i, det in enumerate(dets):
        ax.bar(np.arange(len(levels)) + (i - (len(dets) - 1) / 2) * width,
               [float(np.mean(f1[det][lv])) if f1[det][lv] else 0 for lv in levels], width, label=det)
    ax.set_xticks(np.arange(len(levels)), levels)
    ax.set_ylabel("detection F1 (per item)")
    ax.set_ylim(0, 1.05)
    return _save(fig, ax, path)


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write report.md, the CSVs and the plots next to ``results.json``; returns report.md."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    if results.get("kind") == "utility":
        return write_utility_report(run_dir, results)
    if results.get("kind") == "detect":
        return write_detect_report(run_dir, results)
    runs = results.get("runs")
    if not isinstance(runs, list) or not runs:
        raise RecBackdoorError(f"{run_dir / 'results.json'}: no runs in it; run `recbackdoor run CONFIG` first")
    cfg = results.get("config", {})
    write_csvs(runs, run_dir)
    plots = {name: fn(runs, run_dir / name) for name, fn in (
        ("asr_vs_ratio.png", plot_asr_vs_ratio), ("defense.png", plot_defense), ("detection_f1.png", plot_detection))}
    data, train, ev = cfg.get("data", {}), cfg.get("train", {}), cfg.get("eval", {})
    lines = [
        f"# {results.get('study', 'study')}: BadRec attack and defense",
        "",
        f"Backbone `{runs[0]['backbone']}`; {data.get('candidates')} candidates per prompt (chance "
        f"HR@1 = chance ASR = {runs[0]['chance']:.3f}), history <= {data.get('history')}, "
        f"{data.get('train_samples') or 'all'} clean training samples; LoRA r={train.get('lora_r')}, "
        f"lr {train.get('lr')}, {train.get('epochs')} epoch(s), batch {train.get('batch_size')}; "
        f"score protocol ({ev.get('scoring')} log-likelihood). `± x` is one standard error of the "
        "rate at the number of prompts given (the Wald error; at a rate of 0 or 1 it is 0, and the "
        "rule of three's 95% bound, 3/n, is the better guide). *untrained*: the backbone before any fine-tuning; "
        "*clean*: trained on the clean data; *poisoned*: on the BadRec data; *defended-D*: on the "
        "data sanitized by detector D.",
        "",
        "## Attack",
        "",
        *attack_table(runs),
        "",
        "## Poisoning ratio and position",
        "",
        *sweep_table(runs),
        "",
    ]
    if plots["asr_vs_ratio.png"]:
        lines += ["![ASR vs P_R](asr_vs_ratio.png)", ""]
    if any(r["detection"] for r in runs):
        lines += ["## Defense", "", *defense_table(runs), ""]
        if plots["defense.png"]:
            lines += ["![defense](defense.png)", ""]
        if plots["detection_f1.png"]:
            lines += ["![detection F1](detection_f1.png)", ""]
    lines += ["Tables as CSV: `models.csv`, `detection.csv`; raw numbers: `results.json`.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def utility_table(rows: list[dict[str, Any]]) -> list[str]:
    """Learning-curve rows: per dataset x model x budget, pooled HR@1 ± SE and per split."""
    splits = [s for s in ("valid", "test") if rows and s in rows[0]["splits"]]
    untrained = {r["dataset"]: r for r in rows if r["model"] == "untrained"}
    lines = [f"| dataset | model | training samples | prompts | HR@1 pooled | {' | '.join(f'HR@1 {s}' for s in splits)} | HR@5 | vs chance | learned? |",
             "|---|---|---|---|---|" + "---|" * len(splits) + "---|---|---|"]
    for r in rows:
        per = " | ".join(f"{r['splits'][s]['HR@1']:.3f} ± {_f(r['splits'][s]['SE'])}" for s in splits)
        hr5 = [r["splits"][s].get("HR@5") for s in splits]
        hr5_pooled = None if any(v is None for v in hr5) else sum(
            v * r["splits"][s]["n"] for v, s in zip(hr5, splits, strict=True)) / r["n"]
        lines.append(f"| {r['dataset']} | {r['model']} | {r['train_samples']} | {r['n']} | "
                     f"**{r['HR@1']:.3f} ± {_f(r['SE'])}** | {per} | {_f(hr5_pooled)} | {r['HR@1'] / r['chance']:.2f}x | "
                     f"{learned(r, untrained.get(r['dataset']))} |")
    return lines


def learned(row: dict[str, Any], untrained: dict[str, Any] | None) -> str:
    """The headline's test of a clean victim: HR@1 >= 2x chance and >= the untrained model's
    + 3 standard errors (of the untrained rate); ``-`` for the untrained row itself."""
    if row["model"] == "untrained" or untrained is None:
        return "-"
    ok = row["HR@1"] >= 2 * row["chance"] and row["HR@1"] >= untrained["HR@1"] + 3 * (untrained["SE"] or 0)
    return "yes" if ok else "no"


def plot_learning_curve(rows: list[dict[str, Any]], path: Path) -> bool:
    """HR@1 (± 1 SE) against the clean training budget per LM victim; the references as
    horizontal bands; one panel per dataset."""
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.4 * len(datasets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = [r for r in rows if r["dataset"] == ds]
        curves: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in mine:
            if isinstance(r["train_samples"], int) and r["train_samples"] > 0:
                curves[r["model"]].append(r)
        for model, rs in sorted(curves.items()):
            rs = sorted(rs, key=lambda r: r["train_samples"])
            ax.errorbar([r["train_samples"] for r in rs], [r["HR@1"] for r in rs], yerr=[r["SE"] for r in rs],
                        fmt="-o", capsize=3, label=f"{model} (LoRA)")
        colours = iter(("tab:grey", "tab:green", "tab:purple", "tab:brown"))
        for r in mine:
            if r["model"] in curves:
                continue
            c = next(colours, "black")
            ax.axhline(r["HR@1"], color=c, ls="-.", lw=1, label=f"{r['model']} ({r['train_samples']}): {r['HR@1']:.3f}")
            ax.axhspan(r["HR@1"] - r["SE"], r["HR@1"] + r["SE"], color=c, alpha=0.12)
        ax.axhline(mine[0]["chance"], color="black", ls=":", lw=0.8, label=f"chance ({mine[0]['chance']:.2f})")
        budgets = sorted({r["train_samples"] for rs in curves.values() for r in rs})
        ax.set_xscale("log")
        if budgets:
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
        ax.set_xlabel("clean training samples of the LoRA fine-tune")
        ax.set_ylabel(f"HR@1 ({mine[0]['n']} prompts, ± 1 SE)")
        ax.set_title(f"{ds}: does the victim learn to recommend?")
    return _save(fig, axes[0][-1], path, legend_size=7)


def write_utility_report(run_dir: Path, results: dict[str, Any]) -> Path:
    """report.md, utility.csv and learning_curve.png of a utility study."""
    rows = results.get("rows")
    if not isinstance(rows, list) or not rows:
        raise RecBackdoorError(f"{run_dir / 'results.json'}: no rows in it; run `recbackdoor run CONFIG` first")
    cfg = results.get("config", {})
    data, train, ev, u = cfg.get("data", {}), cfg.get("train", {}), cfg.get("eval", {}), cfg.get("utility", {})
    with open(run_dir / "utility.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "model", "train_samples", "prompts", "HR@1", "SE", "chance"])
        for r in rows:
            w.writerow([r["dataset"], r["model"], r["train_samples"], r["n"], r["HR@1"], r["SE"], r["chance"]])
    plotted = plot_learning_curve(rows, run_dir / "learning_curve.png")
    lines = [
        f"# {results.get('study', 'study')}: does the victim learn to recommend?",
        "",
        f"Backbone `{cfg.get('run', {}).get('backbone')}`; {data.get('candidates')} candidates per prompt "
        f"(chance HR@1 = {rows[0]['chance']:.3f}), history <= {data.get('history')}; LoRA r={train.get('lora_r')}, "
        f"lr {train.get('lr')}, {train.get('epochs')} epoch(s), batch {train.get('batch_size')}, template "
        f"{train.get('template')}; score protocol ({ev.get('scoring')} log-likelihood). Prompts: the held-out "
        f"users of {' + '.join(u.get('splits', []))}, pooled. `± x` is one standard error. *untrained*: the "
        "backbone before any fine-tuning; *popularity* and *sasrec*: trained on the full training split "
        "(SASRec keeps its best validation epoch, so its valid rate is slightly optimistic).",
        "",
        *utility_table(rows),
        "",
    ]
    if plotted:
        lines += ["![learning curve](learning_curve.png)", ""]
    lines += ["Table as CSV: `utility.csv`; raw numbers: `results.json`.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def headline(results: dict[str, Any]) -> str:
    """The terminal summary of a run: per cell, every model's HR@1 and ASR (± SE) beside the
    chance rate, and every detector's precision / recall / F1 (a utility or detect study: its tables)."""
    if results.get("kind") == "utility":
        return "\n".join(utility_table(results["rows"]))
    if results.get("kind") == "detect":
        from ..defense.bench import render_markdown

        return "\n".join(render_markdown({"settings": settings, "machine": {}, "notes": [],
                                           "rows": [r for r in results["rows"] if r["dataset"] == name]})
                         for name, settings in results["settings"].items())
    out = []
    for r in results["runs"]:
        out.append(f"\n{_cell_name(r)}: {r['m']} fake + {r['n']} clean samples, "
                   f"{r['n_triggered_items']} triggered items; prompts per set {r['prompts']}; "
                   f"chance {r['chance']:.3f}")
        out.append(f"  {'model':22s} {'HR@1':>15s} {'ASR seen':>15s} {'ASR unseen':>15s}")
        for name, m in r["models"].items():
            out.append(f"  {name:22s} {_pm(m, 'HR@1'):>15s} {_pm(m, 'ASR', SETS[0]):>15s} {_pm(m, 'ASR', SETS[1]):>15s}")
        for det, d in r["detection"].items():
            san = r["sanitize"].get(det, {})
            out.append(f"  detector {det}: flagged {d.get('flagged')} of {d.get('scored')} items, precision "
                       f"{_f(d.get('precision'))} recall {_f(d.get('recall'))} F1 {_f(d.get('f1'))}; "
                       f"removed {san.get('removed_samples', '-')} of {san.get('train_before', '-')} training samples")
    return "\n".join(out)


def write_detect_report(run_dir: Path, results: dict[str, Any]) -> Path:
    """A detect study's tables (``detect_bench*.csv/json/md``, as ``detect-bench`` writes
    them), ``detection_f1.png`` and ``report.md``: every dataset's tables in one page."""
    from .detect import write_detect_tables

    pages = write_detect_tables(results, run_dir)
    lines = [f"# {results.get('study', 'study')}: detectors on BadRec's poisoned titles", ""]
    if plot_detect_f1(results["rows"], run_dir / "detection_f1.png"):
        lines += ["![detection F1](detection_f1.png)", ""]
    for page in pages:
        lines += ["#" + line if line.startswith("#") else line for line in page.read_text(encoding="utf-8").splitlines()]
        lines.append("")
    lines += ["Tables as CSV: `detect_bench.csv`; raw numbers: `results.json`.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def plot_detect_f1(rows: list[dict[str, Any]], path: Path) -> bool:
    """F1 per detector (bars) for every dataset x policy x level (groups)."""
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(dict.fromkeys(f"{r['dataset']} {r['policy']} {r['level']}" for r in rows))
    dets = list(dict.fromkeys(r["detector"] for r in rows))
    if not groups or not dets:
        return False
    f1 = {(f"{r['dataset']} {r['policy']} {r['level']}", r["detector"]): r.get("f1") or 0.0 for r in rows}
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(groups)), 3.8))
    width = 0.8 / len(dets)
    for i, det in enumerate(dets):
        ax.bar(np.arange(len(groups)) + (i - (len(dets) - 1) / 2) * width,
               [f1.get((g, det), 0.0) for g in groups], width, label=det)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("detection F1 (per distinct title)")
    ax.set_ylim(0, 1.05)
    return _save(fig, ax, path)
