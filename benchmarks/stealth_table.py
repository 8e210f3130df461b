"""The stealth-detection page's table from a detect study's results.json (configs/detect_stealth.toml),
with P-Scanner rows of a second run (e.g. a newer P-Scanner version on some families) put in
their place where given.

    python benchmarks/stealth_table.py runs/detect_stealth/results.json [runs/detect_lookalike_v2/results.json]
"""

from __future__ import annotations

import json
import sys

DETECTORS = ("pscanner", "pscanner-llm", "pscanner-evidence", "stat", "onion", "bki", "embed", "hidden-chars")


def family(row: dict) -> str:
    return row["trigger"].split(" family")[0]


def main() -> None:
    rows = json.load(open(sys.argv[1]))["rows"]
    newer = json.load(open(sys.argv[2]))["rows"] if len(sys.argv) > 2 else []
    key = lambda r: (r["dataset"], family(r), r["policy"], r["detector"])  # noqa: E731
    replaced = {key(r): r for r in newer if r["detector"].startswith("pscanner")}
    cells = list(dict.fromkeys((r["dataset"], family(r), r["policy"]) for r in rows))
    by = {key(r): replaced.get(key(r), r) for r in rows}
    print("| dataset | family | policy | poisoned / titles | " + " | ".join(DETECTORS) + " | P-Scanner FPR |")
    print("|---|---|---|---|" + "---|" * len(DETECTORS) + "---|")
    for ds, fam, pol in cells:
        first = by[(ds, fam, pol, "stat")]
        cols = []
        for det in DETECTORS:
            r = by.get((ds, fam, pol, det))
            mark = "*" if (ds, fam, pol, det) in replaced else ""
            cols.append("-" if r is None else f"{r['f1']:.2f}{mark}")
        ps = by.get((ds, fam, pol, "pscanner"))
        print(f"| {ds} | {fam} | {pol} | {first['n_poisoned']} / {first['n']} | " + " | ".join(cols)
              + f" | {ps['fpr']:.4f} |")


if __name__ == "__main__":
    main()
