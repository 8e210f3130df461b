"""experiments layer: a whole study from one TOML config (docs/design.md §6).

- ``config``: the validated config (``load_config``).
- ``stages``: stage folders keyed by their inputs (reuse, resume, atomic).
- ``study``: the stages of a backdoor study (attack x defense cells) and their ``results.json``.
- ``utility``: the stages of a utility study (a clean learning curve with reference rows).
- ``run``: runs a study of either kind (``run_study``).
- ``report``: tables, CSVs and plots of a run (``write_report``).
"""
