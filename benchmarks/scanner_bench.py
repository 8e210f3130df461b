"""P-Scanner detection benchmark on real BadRec output: ``detect_bench.py`` with method
``pscanner`` only, so each cell gives the three rows of the channel ablation (``pscanner``:
both channels, ``pscanner-llm``: per-title LLM score only, ``pscanner-evidence``: cross-title
evidence only) from one fitted scanner.

Without ``--scanner-dir`` one scanner per dataset is trained on the clean training titles and
reused in every cell (``--scanner-from clean``, the default), or one per cell on that cell's
poisoned training titles (``--scanner-from cell``, as ``recbackdoor defend --method pscanner``
does without ``--scanner``; minutes per cell on CPU); with ``--scanner-dir DIR`` the scanner
``DIR/<dataset>`` (from ``recbackdoor scanner train``) is loaded for every cell. Prints the machine and settings.
(Before issue 10 this script trained scanners itself and poisoned 1% of a catalog with its own
helper; those results stay in ``benchmarks/results/scanner_bench.json``.)

    nice -n 10 .venv/bin/python benchmarks/scanner_bench.py --datasets ml100k --levels char
    .venv/bin/python benchmarks/scanner_bench.py --scanner-dir runs/scanners --results benchmarks/results
"""

from __future__ import annotations

from detect_bench import main  # sibling module: benchmarks run as scripts from this folder

if __name__ == "__main__":
    main(__doc__, default_methods="pscanner", tag="scanner_bench")
