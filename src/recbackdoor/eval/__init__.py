"""eval layer: how well a victim recommends and how often the backdoor fires.

- ``protocols``: the ``generate`` (LLaRA's) and ``score`` (candidate log-likelihood, KV cache
  reused) protocols over any Hugging Face causal LM, plus LLaRA's answer parsing;
- ``metrics``: HR@k, NDCG@k, ValidRatio, HR@1 (hits / valid) and HR@1_all, ASR;
- ``evaluate``: a victim on a dataset split or the attack sets -> ``metrics.json`` +
  ``predictions.jsonl`` (the ``recbackdoor evaluate`` command);
- ``detection``: per-item detection metrics for the defenses.

Import-light: torch and transformers load inside the functions that need them.
"""
