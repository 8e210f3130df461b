"""Does a victim fit its own training prompts? HR@1 on the first N training samples (prompts it
was trained on) beside HR@1 on held-out users, for a trained victim and the untrained backbone.

A victim that fits its training prompts but stays at chance on held-out users has memorised
(more samples, not more epochs or a higher learning rate, is the lever); one that fits neither
has not learnt the task at all (more steps or a higher rate is).

    .venv/bin/python benchmarks/memorisation.py --model runs/stages/train-XXXX \
        --data runs/stages/data-YYYY --heldout runs/stages/data-ZZZZ --n 244 --out runs/memorisation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recbackdoor.models.machine import one_line as machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="victim directory (`train` output)")
    ap.add_argument("--data", required=True, help="the dataset it was trained on (its train split is read)")
    ap.add_argument("--heldout", default=None, help="dataset whose valid + test users are the held-out prompts (default: --data)")
    ap.add_argument("--n", type=int, default=244, help="training prompts scored (the first N)")
    ap.add_argument("--backbone", default="smollm2-135m", help="the untrained reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/memorisation"))
    args = ap.parse_args()
    import torch

    from recbackdoor.data.io import load_dataset, save_dataset
    from recbackdoor.eval.evaluate import evaluate_model
    from recbackdoor.experiments.study import rate_se

    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}", flush=True)
    ds = load_dataset(args.data)
    train_prompts = args.out / "train_prompts"
    save_dataset(ds.replace(test=tuple(ds.train[: args.n])), train_prompts)  # their train prompts as a test split
    heldout = Path(args.heldout or args.data)
    rows = []
    for label, model in (("victim", args.model), ("untrained", args.backbone)):
        for where, data, splits in (("training prompts", train_prompts, ("test",)), ("held-out users", heldout, ("valid", "test"))):
            hits = n = 0
            for split in splits:
                r = evaluate_model(str(model), data, split=split, scoring="sum", out=args.out / f"{label}_{where[:5]}_{split}",
                                   force=True, progress=False)
                hits += r["HR@1"] * r["n_samples"]
                n += r["n_samples"]
            rows.append({"model": label, "prompts": where, "n": n, "HR@1": hits / n, "SE": rate_se(hits / n, n)})
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "memorisation.json").write_text(json.dumps({"model": str(args.model), "data": str(args.data),
                                                            "machine": machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
