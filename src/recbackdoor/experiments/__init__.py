"""experiments layer: a whole study from one TOML config (docs/design.md §6).

- ``config``: the validated config (``load_config``).
- ``stages``: stage folders keyed by their inputs (reuse, resume, atomic).
- ``run``: the study's stages and ``results.json`` (``run_study``).
- ``report``: tables, CSVs and plots of a run (``write_report``).
"""
