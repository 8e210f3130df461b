"""The sasrec victim: SASRec trained on the training samples, ranking the stored candidates."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from recbackdoor.cli import main
from recbackdoor.errors import ConfigError
from recbackdoor.eval.evaluate import evaluate_model
from recbackdoor.models.lora import make_train_config
from recbackdoor.victims import load_victim, victim_trainer
from recbackdoor.victims.sasrec import (
    SASRecConfig,
    build_model,
    history_tensor,
    hit_rate_at_1,
    rank_candidates,
    sasrec_config,
    train_sasrec,
)

from .conftest import make_synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sasrec_learns_lastfm_and_beats_popularity(shared_data):
    """On a slice of LLaRA's LastFM (6,000 training samples, 3 epochs) the loss falls and
    SASRec ranks held-out users' candidates better than item popularity does."""
    from recbackdoor.data.prepare import prepare_dataset

    dataset = prepare_dataset("lastfm", shared_data / "lastfm" / "llara", 0)
    n = 6000
    model, summary, log = train_sasrec(
        dataset, SASRecConfig(epochs=3, max_samples=n, select_on_valid=False), progress=False
    )
    losses = [row["loss"] for row in log]
    assert losses[-1] < losses[0] - 0.5, losses
    held = list(dataset.train[-2000:])  # other users than the first 6,000 samples'
    assert not {s.user for s in held} & {s.user for s in dataset.train[:n]}
    popularity = Counter(s.target for s in dataset.train[:n])
    pop_hr = float(np.mean([max(s.candidates, key=lambda c: popularity.get(c, 0)) == s.target for s in held]))
    hr = hit_rate_at_1(model, held)
    assert hr > pop_hr + 0.03, (hr, pop_hr)  # measured 0.236 vs 0.164 (SE ~0.009 each)
    assert summary["train_samples"] == n and summary["n_items"] == len(dataset.catalog)


def test_padding_does_not_change_a_users_state():
    """A short history scores the same alone as in a batch (left padding is masked)."""
    model = build_model(30, SASRecConfig(max_len=6)).eval()
    dataset = make_synthetic_dataset(n_users=10, n_items=30, seed=3)
    samples = [s for s in dataset.train if len(s.history) < 6][:1] + [s for s in dataset.train if len(s.history) >= 6][:3]
    together = rank_candidates(model, samples)
    alone = rank_candidates(model, samples[:1])
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-5, atol=1e-6)
    seqs = history_tensor(samples[:1], 30, 6)
    assert (seqs[0, : 6 - len(samples[0].history)] == 30).all()  # padding item on the left
    assert torch.isfinite(model(seqs)).all()


def test_explicit_options_apply_to_sasrec_and_lora_defaults_do_not():
    assert sasrec_config(make_train_config()).epochs == 50  # sasrec_epochs, not the LoRA default 1
    assert sasrec_config(make_train_config()).lr == 1e-3
    c = sasrec_config(make_train_config(epochs=3, lr=0.01, batch_size=16, max_steps=7, max_samples=9, seed=4))
    assert (c.epochs, c.lr, c.batch_size, c.max_steps, c.max_samples, c.seed) == (3, 0.01, 16, 7, 9, 4)
    assert sasrec_config(make_train_config(sasrec_epochs=5)).epochs == 5


def test_train_cli_save_load_evaluate(dataset_dir, tmp_path, capsys):
    out = tmp_path / "sasrec"
    args = ["train", "--victim", "sasrec", "--data", str(dataset_dir), "--out", str(out), "--epochs", "3"]
    assert main(args) == 0
    assert "trained sasrec" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["sasrec.safetensors", "timing.json", "training_log.jsonl", "victim.json"]
    info = json.loads((out / "victim.json").read_text())
    assert info["victim"] == "sasrec" and info["backbone"] is None and info["sasrec"]["epochs"] == 3
    assert info["sasrec"]["hidden"] == 64 and info["sasrec"]["blocks"] == 2 and info["sasrec"]["max_len"] == 10
    # the same config trains the same weights (deterministic), and loading gives them back
    again = victim_trainer("sasrec")(dataset_dir, tmp_path / "again", make_train_config(epochs=3))
    assert (out / "sasrec.safetensors").read_bytes() == (again / "sasrec.safetensors").read_bytes()
    model, tokenizer, loaded = load_victim(out)
    assert tokenizer is None and loaded["victim"] == "sasrec" and not model.training
    report = evaluate_model(str(out), dataset_dir, out=tmp_path / "eval", progress=False)
    assert report["settings"]["victim"]["victim"] == "sasrec"
    for key in ("HR@1", "HR@5", "NDCG@10"):
        assert 0.0 <= report[key] <= 1.0
    assert report["ValidRatio"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows[0]["ranking"]) == len(rows[0]["candidates"]) == len(rows[0]["scores"])
    with pytest.raises(ConfigError, match="use --protocol score"):
        evaluate_model(str(out), dataset_dir, protocol="generate", out=tmp_path / "gen", progress=False)
    assert not (tmp_path / "gen").exists()


def test_evaluate_cli_checks_the_sasrec_weights_before_loading(dataset_dir, tmp_path, capsys):
    out = tmp_path / "sasrec"
    assert main(["train", "--victim", "sasrec", "--data", str(dataset_dir), "--out", str(out), "--max-steps", "2"]) == 0
    evaluate = ["evaluate", "--model", str(out), "--data", str(dataset_dir)]
    assert main([*evaluate, "--out", str(tmp_path / "e1")]) == 0
    assert "HR@1" in capsys.readouterr().out
    weights = out / "sasrec.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # a truncated copy
    assert main([*evaluate, "--out", str(tmp_path / "e2")]) == 2
    err = capsys.readouterr().err
    assert "sasrec.safetensors: damaged safetensors file" in err and "\n" not in err.strip()
    assert not (tmp_path / "e2").exists()
