"""`make demo`: the whole BadRec / defense story on LastFM in a few minutes on a laptop CPU.

Stages (each writes its own directory under ``--out`` and is reused when it already exists):
prepare LastFM -> BadRec char-level attack -> train a clean and a poisoned victim on a small
budget -> evaluate both on the same clean / triggered test prompts -> scan the poisoned
training titles with the statistical detector and sanitize -> print a summary.

The training budget here is far too small for a backdoor to take hold (see
``benchmarks/backdoor_cpu.py`` for a real run); the demo shows the pipeline end to end.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import RecBackdoorError
from .io_utils import read_json


def _stage(name: str, out: Path, run: Callable[[], Any]) -> Path:
    """Run ``run`` unless ``out`` already exists (a finished stage is reused)."""
    if out.exists():
        print(f"[{name}] reusing {out}")
        return out
    start = time.perf_counter()
    print(f"[{name}] ...", flush=True)
    run()
    print(f"[{name}] done in {time.perf_counter() - start:.1f}s -> {out}", flush=True)
    return out


def run_demo(
    data_root: Path,
    out: Path,
    backbone: str = "smollm2-135m",
    train_samples: int = 32,
    eval_samples: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    from .attack import AttackConfig, poison, save_poisoned
    from .data.io import load_dataset
    from .data.prepare import prepare_to_dir
    from .defense.defend import defend
    from .eval.evaluate import evaluate_model
    from .models.lora import make_train_config
    from .victims.tallrec import train_victim

    source = data_root / "lastfm" / "llara"
    if not source.is_dir():
        raise RecBackdoorError(f"{source}: LastFM (LLaRA) files not found; pass --data DIR")
    out.mkdir(parents=True, exist_ok=True)
    clean = _stage("prepare", out / "data-lastfm", lambda: prepare_to_dir("lastfm", source, out / "data-lastfm", seed))
    config = AttackConfig(level="char", ratio=0.01, seed=seed)
    poisoned = _stage(
        "attack",
        out / "poisoned-char",
        lambda: save_poisoned(poison(load_dataset(clean), config, source=clean), out / "poisoned-char"),
    )
    train_cfg = dict(backbone=backbone, max_samples=train_samples, epochs=1, lr=5e-4, seed=seed)
    models = {}
    for name, data in (("clean", clean), ("poisoned", poisoned)):
        target = out / f"victim-{name}"
        models[name] = _stage(
            f"train {name}",
            target,
            lambda data=data, target=target: train_victim(data, target, make_train_config(**train_cfg)),
        )
    metrics = {}
    for name, model in models.items():
        target = out / f"eval-{name}"
        _stage(
            f"evaluate {name}",
            target,
            lambda model=model, target=target: evaluate_model(
                str(model), poisoned, attack_sets=True, max_samples=eval_samples, out=target
            ),
        )
        metrics[name] = read_json(target / "metrics.json")
    defended = _stage(
        "defend (stat)",
        out / "defended-stat",
        lambda: defend(poisoned, method="stat", out=out / "defended-stat", seed=seed),
    )
    defense = read_json(defended / "defense_report.json")
    summary = {"victims": metrics, "defense": defense}
    _print_summary(metrics, defense)
    return summary


def _fmt(value: Any) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def _print_summary(metrics: dict[str, Any], defense: dict[str, Any]) -> None:
    print("\nvictim     HR@1   ValidRatio  ASR-seen  ASR-unseen   (score protocol, same prompts)")
    for name, m in metrics.items():
        asr = m.get("ASR") or {}
        print(
            f"{name:9s} {_fmt(m.get('HR@1'))}  {_fmt(m.get('ValidRatio'))}      "
            f"{_fmt(asr.get('triggered-seen'))}    {_fmt(asr.get('triggered-unseen'))}"
        )
    det = defense.get("metrics") or {}
    print(
        f"\ndefense {defense.get('detector')}: flagged {defense['counts']['flagged_items']} items; "
        f"precision {_fmt(det.get('precision'))} recall {_fmt(det.get('recall'))} "
        f"F1 {_fmt(det.get('f1'))}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbackdoor.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="folder with lastfm/llara/")
    parser.add_argument("--out", default="runs/demo", help="where each stage writes")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--train-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        run_demo(Path(args.data), Path(args.out), args.backbone, args.train_samples, args.eval_samples, args.seed)
    except RecBackdoorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
