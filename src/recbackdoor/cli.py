"""Command line: thin wrappers that parse options, call the library, and turn user errors into
one line on stderr with a non-zero exit (no traceback)."""

from __future__ import annotations

import sys
from typing import Optional  # noqa: UP035  (typer needs Optional on py3.10)

import typer

from .defense.registry import detector_names
from .errors import RecBackdoorError
from .victims import option_help

app = typer.Typer(
    help="Backdoor attacks (BadRec) and defenses (P-Scanner) for LLM-based recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare datasets and inspect them.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# --------------------------------------------------------------------------- data (issue 2)


@data_app.command("prepare")
def data_prepare_cmd(
    dataset: str = typer.Option(
        ..., "--dataset", help="ml1m | ml100k | lastfm | steam | llara (a generic LLaRA directory)."
    ),
    out: str = typer.Option(..., "--out", help="Output directory (Parquet + manifest.json)."),
    source: Optional[str] = typer.Option(  # noqa: UP045
        None, "--source", help="Directory with the dataset's files (ml100k: default recbole's copy)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the user split and the candidates."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
    title_style: str = typer.Option(
        "keep", "--title-style", help="keep | llara (movies: drop the year, ', The' to the front)."
    ),
    domain: Optional[str] = typer.Option(  # noqa: UP045
        None, "--domain", help="movies | music | games (only for --dataset llara with id2name.txt)."
    ),
    min_history: int = typer.Option(3, "--min-history", help="Shortest history kept."),
    max_history: int = typer.Option(10, "--max-history", help="Longest history (last items)."),
    n_candidates: int = typer.Option(20, "--n-candidates", help="Candidates per sample."),
) -> None:
    """Read a dataset, build samples with fixed candidates, write Parquet + manifest."""
    import time

    from .data.prepare import prepare_to_dir
    from .data.stats import dataset_stats, render_stats

    start = time.perf_counter()
    ds = prepare_to_dir(
        dataset,
        source,
        out,
        seed,
        force=force,
        title_style=title_style,
        domain=domain,
        min_history=min_history,
        max_history=max_history,
        n_candidates=n_candidates,
    )
    print(render_stats(dataset_stats(ds)))
    print(f"wrote {out} in {time.perf_counter() - start:.1f}s")


@data_app.command("stats")
def data_stats_cmd(
    directory: str = typer.Argument(..., help="A dataset directory written by `data prepare`."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON."),
) -> None:
    """Users, items, samples per split and history lengths of a prepared dataset."""
    from .data.io import load_dataset
    from .data.stats import dataset_stats, stats_table
    from .io_utils import dumps_json

    stats = dataset_stats(load_dataset(directory))
    if as_json:
        print(dumps_json(stats), end="")
        return
    from rich.console import Console

    Console().print(stats_table(stats))


@data_app.command("download")
def data_download_cmd(
    dataset: str = typer.Argument(..., help="ml1m | ml100k | lastfm | steam."),
    to: str = typer.Option(..., "--to", help="Folder to download into (the dataset lands in a subfolder)."),
    url: Optional[str] = typer.Option(None, "--url", help="Use this URL instead of the official one (a mirror; for steam a base URL)."),  # noqa: UP045
    sha256: Optional[list[str]] = typer.Option(None, "--sha256", help="Expected sha256 (HEX, or NAME=HEX per file); repeatable."),  # noqa: UP045
    max_bytes: Optional[int] = typer.Option(None, "--max-bytes", help="Largest download / uncompressed size accepted (default 4 GiB / 8 GiB)."),  # noqa: UP045
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset folder."),
) -> None:
    """Download a dataset's official files: sha256 check, safe extraction, resume (HTTP Range)."""
    from .data.download import SOURCES, Limits, download_dataset, parse_sha256
    from .errors import ConfigError

    if dataset not in SOURCES:
        raise ConfigError(f"unknown dataset {dataset!r} to download; choose one of {', '.join(SOURCES)}")
    limits = Limits()
    if max_bytes is not None:
        if max_bytes <= 0:
            raise ConfigError(f"--max-bytes must be positive, got {max_bytes}")
        limits = Limits(max_download_bytes=max_bytes, max_member_bytes=max_bytes, max_total_bytes=max_bytes)
    download_dataset(dataset, to, url=url, sha256=parse_sha256(sha256, SOURCES[dataset]), limits=limits, force=force)


# --------------------------------------------------------------------------- attack (issue 3)


@app.command("attack")
def attack_cmd(
    data: str = typer.Option(..., "--data", help="Clean dataset directory (from `data prepare`)."),
    out: str = typer.Option(..., "--out", help="Output directory for the poisoned dataset."),
    level: Optional[str] = typer.Option(None, "--level", help="Trigger level: char | word | sentence (default char)."),  # noqa: UP045
    trigger: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--trigger", help="Trigger string; repeat for a list (each item gets one, seeded)."
    ),
    trigger_family: Optional[str] = typer.Option(  # noqa: UP045
        None, "--trigger-family", help="char | word | sentence | shape | lookalike | domain: a different trigger of that family for every item (no --trigger; see docs/user-guide/attack.md)."
    ),
    position: str = typer.Option("suffix", "--position", help="suffix | prefix | random."),
    ratio: float = typer.Option(0.01, "--ratio", help="Poisoning ratio P_R = m / (m + n)."),
    policy: str = typer.Option("per-sample", "--policy", help="Target policy: per-sample | fixed."),
    targets: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--targets", help="Target item ids (policy fixed); repeat or comma-separate."
    ),
    n_targets: int = typer.Option(10, "--n-targets", help="Number of targets (policy fixed)."),
    target_choice: str = typer.Option("random", "--target-choice", help="random | unpopular."),
    fake_history: str = typer.Option("copy", "--fake-history", help="copy | random | popular."),
    max_triggered_share: float = typer.Option(
        0.2, "--max-triggered-share", help="per-sample: most of the catalog that gets triggered."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
) -> None:
    """Poison a dataset with BadRec: triggered target titles plus fake users."""
    import warnings

    from .attack import AttackConfig, poison, save_poisoned
    from .attack.families import family_level
    from .data.io import load_dataset
    from .errors import ConfigError
    from .io_utils import check_output_dir

    ids: list[int] | None = None
    if targets:
        try:
            ids = [int(t) for arg in targets for t in arg.split(",") if t.strip()]
        except ValueError as exc:
            raise ConfigError(f"--targets takes integer item ids, got {targets}") from exc
    config = AttackConfig(
        level=level or (family_level(trigger_family) if trigger_family else "char"),
        trigger=tuple(trigger) if trigger else None,
        trigger_family=trigger_family,
        position=position,
        ratio=ratio,
        policy=policy,
        n_targets=n_targets,
        target_choice=target_choice,
        targets=tuple(ids) if ids is not None else None,
        fake_history=fake_history,
        max_triggered_share=max_triggered_share,
        seed=seed,
    )
    check_output_dir(out, force)  # fail before the work, not after
    dataset = load_dataset(data)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        result = poison(dataset, config, source=data)
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    save_poisoned(result, out, force=force)
    man = result.manifest
    sets = ", ".join(f"{k} {v}" for k, v in man["attack_sets"].items())
    print(
        f"poisoned {dataset.name}: {man['m']} fake samples added to {man['n']} "
        f"(P_R {man['P_R_actual']:.4f}), {len(man['triggered_items'])} triggered items, "
        f"mean edit distance {man['edit_distance_mean']:.1f}; attack sets: {sets}; wrote {out}"
    )


# --------------------------------------------------------------------------- victims (issue 4)


@app.command("train")
def train_cmd(
    data: str = typer.Option(..., "--data", help="Dataset directory (clean or poisoned)."),
    out: str = typer.Option(..., "--out", help="Output directory for the victim (adapter + logs)."),
    victim: str = typer.Option("tallrec", "--victim", help="A registered victim (recbackdoor list): tallrec | llara | sasrec | popularity."),
    backbone: str = typer.Option("smollm2-135m", "--backbone", help="tiny-random | smollm2-135m | HF id | path (sasrec: not used)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help=f"Training epochs ({option_help('epochs', '1')})."),  # noqa: UP045
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimizer steps."),  # noqa: UP045
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Use the first N training samples."),  # noqa: UP045
    lr: Optional[float] = typer.Option(None, "--lr", help=f"Peak learning rate ({option_help('lr', '2e-4')})."),  # noqa: UP045
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Samples per device step ({option_help('batch_size', '8')})."),  # noqa: UP045
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Gradient accumulation steps (default 1)."),  # noqa: UP045
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Weights: auto | bf16 | fp32."),  # noqa: UP045
    template: Optional[int] = typer.Option(None, "--template", help="Fixed prompt template (default: per sample)."),  # noqa: UP045
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of every random choice (default 0)."),  # noqa: UP045
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout", help="LoRA dropout (default 0.1)."),  # noqa: UP045
    lora_r: Optional[int] = typer.Option(None, "--lora-r", help="LoRA rank (default 8)."),  # noqa: UP045
    sasrec_epochs: Optional[float] = typer.Option(None, "--sasrec-epochs", help="SASRec epochs: llara's item embeddings, sasrec's default (50)."),  # noqa: UP045
    item_model: Optional[str] = typer.Option(None, "--item-model", help="llara: a trained sasrec victim folder whose item embeddings to use (default: train SASRec on the same samples)."),  # noqa: UP045
    checkpoint_dir: Optional[str] = typer.Option(None, "--checkpoint-dir", help="Checkpoint here; resume from the last one found."),  # noqa: UP045
    save_steps: int = typer.Option(10, "--save-steps", help="Steps between checkpoints (with --checkpoint-dir)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
) -> None:
    """Train a victim on a dataset's train split (also under `accelerate launch`).

    tallrec / llara: LoRA fine-tunes of --backbone. sasrec: SASRec itself; --epochs, --lr and
    --batch-size apply to it when given (else its own defaults: --sasrec-epochs, lr 1e-3,
    batch 128); --max-steps, --max-samples and --seed as for the others."""
    import os

    from .io_utils import check_output_dir
    from .models.lora import make_train_config
    from .victims import victim_trainer

    train_victim = victim_trainer(victim)
    config = make_train_config(
        backbone=backbone, epochs=epochs, max_steps=max_steps, max_samples=max_samples, lr=lr,
        batch_size=batch_size, grad_accum=grad_accum, dtype=dtype, template=template, seed=seed,
        lora_dropout=lora_dropout, lora_r=lora_r, sasrec_epochs=sasrec_epochs, item_model=item_model,
    )  # fmt: skip
    check_output_dir(out, force)  # fail before the work, not after
    path = train_victim(data, out, config, force=force, checkpoint_dir=checkpoint_dir, save_steps=save_steps)
    if int(os.environ.get("RANK", "0")) == 0 and (path / "timing.json").is_file():  # main process
        from .io_utils import read_json

        timing = read_json(path / "timing.json")
        if not timing["tokens"]:  # an id-only victim (no LM)
            hr = read_json(path / "victim.json").get("valid_HR@1")
            best = "" if hr is None else f" (best valid HR@1 {round(hr, 4)})"
            print(f"trained {victim}: {timing['steps']} steps in {timing['train_seconds']:.1f}s{best}; wrote {path}")
            return
        print(
            f"trained {victim} on {backbone}: {timing['steps']} steps, {timing['tokens']} tokens "
            f"in {timing['train_seconds']:.1f}s ({timing['tokens_per_s']:.0f} tokens/s); wrote {path}"
        )


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Option(..., "--model", help="Victim folder (from `train`) or backbone name."),
    data: str = typer.Option(..., "--data", help="Dataset directory (poisoned one for --attack-sets)."),
    protocol: str = typer.Option("score", "--protocol", help="score (ranking) | generate (LLaRA's)."),
    attack_sets: bool = typer.Option(False, "--attack-sets", help="Evaluate clean + triggered sets; report ASR."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="First N prompts of each set."),  # noqa: UP045
    split: str = typer.Option("test", "--split", help="train | valid | test."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Prompts per batch (default 8)."),  # noqa: UP045
    scoring: str = typer.Option("sum", "--scoring", help="score protocol: sum | mean answer log-prob."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto | bf16 | fp32 (default: the victim's)."),  # noqa: UP045
    out: Optional[str] = typer.Option(None, "--out", help="Output dir (default <model>/eval-<data>-<protocol>)."),  # noqa: UP045
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
) -> None:
    """Evaluate a victim: HR@1, ValidRatio, HR@k, NDCG@k, and ASR on the attack sets."""
    from .eval.evaluate import evaluate_model
    from .models.safety import adapter_fit_errors
    from .victims import check_victim_dir

    check_victim_dir(model)  # before anything of it is loaded
    with adapter_fit_errors(model, "victim"):
        report = evaluate_model(
            model, data, protocol=protocol, split=split, max_samples=max_samples, attack_sets=attack_sets,
            batch_size=batch_size, scoring=scoring, out=out, force=force, dtype=dtype,
        )  # fmt: skip
    keys = ("HR@1", "HR@1_all", "ValidRatio", "HR@5", "NDCG@10")
    parts = [f"{k} {report[k]:.4f}" for k in keys if report.get(k) is not None]
    for name, value in (report.get("ASR") or {}).items():
        parts.append(f"ASR[{name}] {'n/a' if value is None else f'{value:.4f}'}")
    seconds = report["timing"]["eval_seconds"]
    print(f"{'  '.join(parts)}  ({report['n_samples']} samples, {seconds:.1f}s); wrote {report['out']}")


# --------------------------------------------------------------------------- defense (issue 5)


@app.command("defend")
def defend_cmd(
    data: str = typer.Option(..., "--data", help="Dataset directory to scan (poisoned or not)."),
    method: str = typer.Option(..., "--method", help=f"A title detector: {' | '.join(detector_names('titles'))}."),
    out: str = typer.Option(..., "--out", help="Output directory for the sanitized dataset."),
    policy: str = typer.Option("drop-target", "--policy", help="drop-target | drop-any | strip."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="LM for onion/bki (default smollm2-135m)."),  # noqa: UP045
    scanner: Optional[str] = typer.Option(None, "--scanner", help="Trained P-Scanner folder (method pscanner)."),  # noqa: UP045
    model: Optional[str] = typer.Option(None, "--model", help="The victim being defended (`train` output): bki reads it; with --retrain it is the before-defense reference."),  # noqa: UP045
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Flag score >= this (default: the detector's rule)."),  # noqa: UP045
    retrain: bool = typer.Option(False, "--retrain", help="Train the victim on the sanitized data and report its ASR and HR@1."),
    train_options: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--train-options", help="With --retrain: training options KEY=VALUE[,KEY=VALUE] (e.g. backbone=smollm2-135m,max_samples=2000,epochs=1); repeatable."
    ),
    eval_max_samples: Optional[int] = typer.Option(None, "--eval-max-samples", help="With --retrain: first N prompts of each attack set."),  # noqa: UP045
    victim_out: Optional[str] = typer.Option(None, "--victim-out", help="With --retrain: victim directory (default <out>/victim)."),  # noqa: UP045
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
) -> None:
    """Scan the training titles, flag suspected triggers, sanitize and write the dataset
    (with --retrain: then train and evaluate the victim on it)."""
    from .defense.defend import defend
    from .models.safety import check_model_dir
    from .victims import check_victim_dir

    if model:
        check_victim_dir(model)  # before anything of it is loaded
    if scanner:
        check_model_dir(scanner, "scanner")
    report = defend(
        data, method=method, out=out, policy=policy, backbone=backbone, scanner_dir=scanner,
        seed=seed, threshold=threshold, force=force, model_dir=model, retrain=retrain,
        train_options=_key_values(train_options, "--train-options"), eval_max_samples=eval_max_samples,
        victim_out=victim_out,
    )  # fmt: skip
    counts, san = report["counts"], report["sanitize"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    line = (
        f"{report['detector']}: flagged {counts['flagged_items']} of {counts['scored_items']} items "
        f"(threshold {report['threshold']:.4g}); {policy} removed {san['removed_samples']} of "
        f"{san['train_before']} training samples"
    )
    m = report["metrics"]
    if m is not None:
        line += (
            f"; P {fmt(m['precision'])} R {fmt(m['recall'])} F1 {fmt(m['f1'])} "
            f"AUROC {fmt(m['auroc'])} FPR {fmt(m['fpr'])}"
        )
    if report.get("lm"):
        print(f"{report['detector']} read the {report['lm']}")
    for key in ("before_defense", "after_defense"):
        if key in report:
            r = report[key]
            asr = ", ".join(f"ASR[{k}] {fmt(v)}" for k, v in (r.get("ASR") or {}).items())
            print(f"{key.replace('_', ' ')}: HR@1 {fmt(r['HR@1'])}{'; ' + asr if asr else ''} ({r['n_samples']} prompts per set)")
    print(f"{line}; wrote {out}")


def _key_values(values: Optional[list[str]], option: str) -> dict[str, str]:  # noqa: UP045
    """``KEY=VALUE[,KEY=VALUE]`` options (repeatable) as a dict; ``-`` in keys becomes ``_``."""
    from .errors import ConfigError

    out: dict[str, str] = {}
    for value in values or []:
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{option} {part!r}: expected KEY=VALUE")
            out[key.strip().replace("-", "_")] = val.strip()
    return out


@app.command("detect-bench")
def detect_bench_cmd(
    data: str = typer.Option(..., "--data", help="Clean dataset directory (from `data prepare`)."),
    out: str = typer.Option(..., "--out", help="Output directory: detect_bench.csv, .json, .md."),
    levels: str = typer.Option("char,word,sentence", "--levels", help="Trigger levels, comma-separated."),
    methods: str = typer.Option(
        "pscanner,stat,onion,bki,embed", "--methods", help="Detectors, comma-separated (recbackdoor list; strip needs --model)."
    ),
    policy: str = typer.Option("per-sample", "--policy", help="Target policy: per-sample | fixed | per-sample,fixed."),
    ratio: float = typer.Option(0.01, "--ratio", help="Poisoning ratio P_R of the attack."),
    position: str = typer.Option("suffix", "--position", help="Trigger position of the attack: suffix | prefix (match the victim's for strip)."),
    trigger_family: bool = typer.Option(False, "--trigger-family", help="Vary the trigger per item within each level's family (attack --trigger-family)."),
    family: Optional[str] = typer.Option(None, "--family", help="A stealthy trigger family instead: shape | lookalike | domain (its level only)."),  # noqa: UP045
    scanner: Optional[str] = typer.Option(None, "--scanner", help="Trained P-Scanner folder (default: fit trains one per cell, as defend does)."),  # noqa: UP045
    model: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--model", help="Victim (`train` output) or backbone for bki and strip; or LEVEL=DIR, repeated per level."
    ),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="LM for onion (and bki without --model); P-Scanner training backbone."),  # noqa: UP045
    seed: int = typer.Option(0, "--seed", help="Seed of the attack and of every detector."),
    strip_copies: int = typer.Option(8, "--strip-copies", help="STRIP: perturbed copies per prompt."),
    strip_frr: float = typer.Option(0.05, "--strip-frr", help="STRIP: false-rejection rate on clean calibration prompts."),
    strip_max_prompts: Optional[int] = typer.Option(None, "--strip-max-prompts", help="STRIP: at most N prompts per set (CPU budget)."),  # noqa: UP045
    reuse_models: bool = typer.Option(
        False, "--reuse-models", help="One detector per method for all cells: titles scored in an earlier cell are not rescored (faster; later cells' seconds count new titles only)."
    ),
    stages: Optional[str] = typer.Option(None, "--stages", help="Keep the poisoned datasets and detections here and reuse them (a study's stage folder; default: a temporary one)."),  # noqa: UP045
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
) -> None:
    """Poison a clean dataset with BadRec per policy and level, run every detector on it, and
    write one table: precision, recall, F1, AUROC, FPR and seconds per 1,000 titles (prompts
    for strip) per detector and level. P-Scanner adds its channel ablation rows
    (pscanner-llm, pscanner-evidence) from the same fitted scanner. The same study as a config:
    `[run] kind = "detect"` (configs/README.md)."""
    from pathlib import Path

    from .attack.families import STEALTH_FAMILIES, family_level
    from .defense.bench import BenchConfig, parse_models
    from .errors import ConfigError
    from .experiments.detect import run_detect_bench

    if family is not None:
        if family not in STEALTH_FAMILIES:
            raise ConfigError(f"unknown --family {family!r}; use one of {', '.join(STEALTH_FAMILIES)}")
        if trigger_family:
            raise ConfigError("--family is a trigger family already; leave out --trigger-family")
        levels = family_level(family)
    config = BenchConfig(
        levels=tuple(levels.split(",")), methods=tuple(methods.split(",")), policies=tuple(policy.split(",")),
        ratio=ratio, position=position, trigger_family=family or trigger_family, scanner_dir=scanner, model=parse_models(model), backbone=backbone, seed=seed,
        strip_copies=strip_copies, strip_frr=strip_frr, strip_max_prompts=strip_max_prompts,
        reuse_models=reuse_models,
    )  # fmt: skip
    report = run_detect_bench(data, out, config, force=force, stages=stages)
    print((Path(out) / "detect_bench.md").read_text(encoding="utf-8"), end="")
    print(f"{len(report['rows'])} rows; wrote {out}/detect_bench.csv, .json, .md")


scanner_app = typer.Typer(help="Train the P-Scanner poison scanner.", no_args_is_help=True)
app.add_typer(scanner_app, name="scanner")


def _scanner_config(backbone: str, rounds: int, seed: int, max_titles: Optional[int], evidence: str,  # noqa: UP045
                    target_fpr: Optional[float], no_agent: bool, dtype: Optional[str], policy: str = "dpo"):  # noqa: UP045
    from .defense.pscanner import ScannerConfig

    return ScannerConfig(
        backbone=backbone, rounds=rounds, seed=seed, max_titles=max_titles, evidence=evidence, policy=policy,
        threshold_rule="fpr" if target_fpr is not None else "best-f1",
        target_fpr=0.01 if target_fpr is None else target_fpr, use_agent=not no_agent, dtype=dtype,
    ).check()  # fmt: skip


@scanner_app.command("train")
def scanner_train_cmd(
    catalog: str = typer.Option(..., "--catalog", help="Catalog file (CSV/JSONL/Parquet) or a prepared dataset directory."),
    domain: str = typer.Option(..., "--domain", help="movies | music | games."),
    out: str = typer.Option(..., "--out", help="Output scanner directory (adapter + scanner.json + rounds.jsonl)."),
    backbone: str = typer.Option("smollm2-135m", "--backbone", help="Registry name, local folder or HF id."),
    rounds: int = typer.Option(3, "--rounds", help="Adversarial rounds (agent vs scanner)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    max_titles: Optional[int] = typer.Option(None, "--max-titles", help="Use at most this many titles (random sample)."),  # noqa: UP045
    title_column: str = typer.Option("title", "--title-column", help="Title column of a catalog file."),
    evidence: str = typer.Option("max", "--evidence", help="Cross-title evidence: off | max."),
    target_fpr: Optional[float] = typer.Option(None, "--target-fpr", help="Threshold at this FPR on clean titles (default: best F1)."),  # noqa: UP045
    no_agent: bool = typer.Option(False, "--no-agent", help="Rule-generated triggers only (no LLM agent)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto | bf16 | fp32 (default: the backbone's)."),  # noqa: UP045
    policy: str = typer.Option(
        "dpo", "--policy",
        help="Reward step after supervised training: dpo (verdict pairs) | grpo (sampled verdicts, +1 / -1 / -1.25 "
        "for a missed poison) | none.",
    ),  # fmt: skip
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
) -> None:
    """Train a P-Scanner on a catalog's titles and save it."""
    from .defense.pscanner import train_scanner
    from .defense.pscanner.catalog_io import read_titles

    cfg = _scanner_config(backbone, rounds, seed, max_titles, evidence, target_fpr, no_agent, dtype, policy)
    titles = read_titles(catalog, title_column)
    sc = train_scanner(titles, domain, cfg, out=out, force=force)
    last = sc.log["rounds"][-1]
    print(
        f"scanner for {domain} ({backbone}, {len(titles)} titles, {rounds} rounds): threshold "
        f"{sc.threshold:.4g}, validation F1 {last['val_f1_title']:.3f} per title / "
        f"{(last['val_f1_evidence'] or 0):.3f} with evidence, recall on fresh triggers "
        f"{last['recall_fresh']:.3f}; {sc.timings.get('total', 0):.0f}s; wrote {out}"
    )


@app.command("scan")
def scan_cmd(
    catalog: str = typer.Argument(..., help="Catalog file: CSV, JSONL or Parquet with an id and a title column."),
    out: str = typer.Option(..., "--out", help="Output CSV: id, title, score, flagged."),
    scanner: Optional[str] = typer.Option(None, "--scanner", help="Trained scanner directory (default: train one on this catalog)."),  # noqa: UP045
    domain: Optional[str] = typer.Option(None, "--domain", help="movies | music | games (needed without --scanner)."),  # noqa: UP045
    title_column: str = typer.Option("title", "--title-column", help="Title column."),
    id_column: str = typer.Option("id", "--id-column", help="Id column."),
    backbone: str = typer.Option("smollm2-135m", "--backbone", help="Backbone when training a scanner here."),
    rounds: int = typer.Option(3, "--rounds", help="Adversarial rounds when training a scanner here."),
    seed: int = typer.Option(0, "--seed", help="Seed when training a scanner here."),
    max_titles: Optional[int] = typer.Option(None, "--max-titles", help="Train on at most this many titles."),  # noqa: UP045
    evidence: Optional[str] = typer.Option(None, "--evidence", help="Cross-title evidence: off | max (default: the scanner's)."),  # noqa: UP045
) -> None:
    """Score every title of a catalog for injected triggers and write the flagged items."""
    import time

    from .data.validate import check_catalog
    from .defense.pscanner import scan_catalog
    from .defense.pscanner.catalog_io import read_catalog
    from .models.safety import adapter_fit_errors, check_model_dir

    start = time.perf_counter()
    check_catalog(*read_catalog(catalog, title_column, id_column), catalog)
    if scanner:
        check_model_dir(scanner, "scanner")  # before anything of it is loaded
    cfg = None if scanner else _scanner_config(backbone, rounds, seed, max_titles, evidence or "max", None, False, None)
    with adapter_fit_errors(scanner, "scanner"):
        frame = scan_catalog(
            catalog, out, scanner_dir=scanner, domain=domain, title_column=title_column,
            id_column=id_column, config=cfg, evidence=evidence if scanner else None,
        )  # fmt: skip
    n_flag = int(frame["flagged"].sum())
    print(f"flagged {n_flag} of {len(frame)} titles in {time.perf_counter() - start:.1f}s; wrote {out}")


# --------------------------------------------------------------------------- experiments (issue 9)


@app.command("run")
def run_cmd(
    config: str = typer.Argument(..., help="Experiment config (TOML), e.g. configs/demo.toml; keys: configs/README.md."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory (default runs/<config name>)."),  # noqa: UP045
    data: Optional[str] = typer.Option(None, "--data", help="Data root (default $RECBACKDOOR_DATA or ../shared/data)."),  # noqa: UP045
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a key: section.key=value (TOML value); repeatable."),  # noqa: UP045
    stages: Optional[str] = typer.Option(None, "--stages", help="Stage folder, shareable between studies (default <out>/stages)."),  # noqa: UP045
) -> None:
    """Run a whole study: prepare -> attack -> train -> evaluate -> defend -> retrain -> report.

    Finished stages are reused, an interrupted training resumes from its last checkpoint, and a
    changed option reruns only the stages it affects (stage folders are keyed by their inputs).
    """
    from pathlib import Path

    from .experiments.config import load_config
    from .experiments.report import headline
    from .experiments.run import run_study

    cfg = load_config(config, overrides or [])  # a bad config stops here: nothing written
    target = Path(out) if out else Path("runs") / Path(config).stem
    results = run_study(cfg, target, data, stages_dir=stages)
    print(headline(results))
    print(f"results: {target / 'results.json'}\nreport:  {target / 'report.md'}")


@app.command("report")
def report_cmd(
    run_dir: str = typer.Argument(..., help="A run directory written by `recbackdoor run`."),
) -> None:
    """Write report.md, CSV tables and PNG plots from a run's results.json."""
    from .experiments.report import write_report

    print(f"wrote {write_report(run_dir)}")


def _summary(doc: str | None) -> str:
    """The first sentence of a docstring, at most ~110 characters."""
    text = " ".join((doc or "").replace("``", "").split()).split(". ")[0].rstrip(".:")
    return text if len(text) <= 110 else text[:110].rsplit(" ", 1)[0] + " ..."


def registered() -> dict[str, list[tuple[str, str]]]:
    """Every registry of the toolkit: name -> one line on what it is."""
    from .attack.badrec import POLICIES as TARGET_POLICIES
    from .attack.triggers import LEVELS, POSITIONS, default_trigger
    from .data.prepare import DATASET_DOMAINS, SOURCES
    from .defense.registry import DETECTORS
    from .defense.sanitize import POLICIES as SANITIZE
    from .models.backbones import BACKBONES
    from .victims import VICTIMS

    detectors = [(name, f"[{e.unit}] {e.summary}") for name, e in DETECTORS.items()]
    return {
        "datasets (data prepare --dataset)": [
            (name, f"{DATASET_DOMAINS[name] or 'any domain'}: {_summary(module.__doc__)}") for name, module in SOURCES.items()
        ],
        "victims (train --victim)": [(name, e.summary) for name, e in VICTIMS.items()],
        "backbones (--backbone; or a Hugging Face id / local folder)": [(b.name, b.description) for b in BACKBONES.values()],
        "detectors (defend --method, detect-bench --methods)": detectors,
        "sanitize policies (defend --policy)": [(p, "") for p in SANITIZE],
        "trigger levels (attack --level, --trigger-family)": [
            (lv, f"default trigger {default_trigger(lv)!r} (movies)") for lv in LEVELS
        ],
        "trigger positions (attack --position)": [(p, "") for p in POSITIONS],
        "target policies (attack --policy)": [(p, "") for p in TARGET_POLICIES],
    }


@app.command("list")
def list_cmd() -> None:
    """What is registered: datasets, victims, backbones, detectors, sanitize policies, trigger
    levels, positions and target policies, each with one line on what it is."""
    for title, entries in registered().items():
        print(title)
        width = max(len(name) for name, _ in entries)
        for name, line in entries:
            print(f"  {name:<{width}}  {line}".rstrip())


# --------------------------------------------------------------------------- entry point


def main(argv: Optional[list[str]] = None) -> int:  # noqa: UP045
    """Run the CLI; user errors become one line on stderr and exit code 2."""
    import errno

    try:
        rv = typer.main.get_command(app).main(args=argv, prog_name="recbackdoor", standalone_mode=False)
    except SystemExit as exc:  # normal end
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.TyperException as exc:  # usage errors: one line, not click's box
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "recbackdoor"
        if message:  # empty when a bare group printed its help
            print(f"error: {where}: {message.rstrip('.')}; see `{where} --help`", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2) or 2)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 1
    except RecBackdoorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.filename or exc}: file not found", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"error: {exc.filename or exc}: permission denied; choose a writable location", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"error: {exc.filename or 'output'}: no space left on device; free some space and rerun", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
