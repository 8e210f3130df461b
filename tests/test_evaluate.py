"""evaluate: prompts with triggered titles, ASR / HR with a stub scorer, and the CLI end to end
on a tiny poisoned dataset with the tiny random backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recbackdoor.attack import AttackConfig, load_attack_sets, poison, save_poisoned
from recbackdoor.cli import main
from recbackdoor.data.io import load_dataset, save_dataset
from recbackdoor.eval.evaluate import (
    build_eval_prompts,
    default_eval_dir,
    evaluate_model,
    set_metrics,
)

from .conftest import make_synthetic_dataset

TRIGGER = "5v"
HEADLINE = ("HR@1", "HR@1_all", "ValidRatio", "HR@5", "NDCG@5", "NDCG@10")


@pytest.fixture(scope="module")
def poisoned_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    dataset = make_synthetic_dataset(n_users=60, n_items=80, seed=0)
    save_dataset(dataset, root / "clean")
    config = AttackConfig(level="char", trigger=TRIGGER, ratio=0.05, seed=0)
    save_poisoned(poison(dataset, config), root / "poisoned")
    return root


def _sets(directory: Path) -> dict:
    return {name: [(p.sample, p.triggered_item, p.triggered_title) for p in prompts]
            for name, prompts in load_attack_sets(directory).items()}  # fmt: skip


def _stub_results(prompts, prefer) -> list[dict]:
    """A fake scorer: candidates whose title satisfies ``prefer`` first, then the others in
    candidate order (so the target wins only when it comes first among the rest)."""
    out = []
    for p in prompts:
        scores = np.array([1.0 if prefer(t) else 0.0 for t in p.titles]) - 1e-3 * np.arange(
            len(p.titles)
        )
        ranking = np.argsort(-scores, kind="stable")
        out.append({"prediction": int(ranking[0]), "ranking": ranking.tolist()})
    return out


def test_triggered_prompts_show_the_triggered_title_at_its_position(poisoned_dir):
    data = poisoned_dir / "poisoned"
    dataset = load_dataset(data)
    prompts = build_eval_prompts(dataset.catalog, _sets(data))
    by_set = {
        name: [p for p in prompts if p.set_name == name] for name in ("clean", "triggered-unseen")
    }
    assert by_set["clean"] and all(p.triggered is None for p in by_set["clean"])
    for p in by_set["triggered-unseen"]:
        title = p.titles[p.triggered]
        assert title.endswith("_" + TRIGGER) and title in p.prompt
        assert p.triggered != p.target and p.titles[p.target] in p.prompt
        # only the triggered candidate carries the trigger
        assert sum(t.endswith("_" + TRIGGER) for t in p.titles) == 1


def test_stub_scorer_that_prefers_the_trigger_has_full_asr(poisoned_dir):
    data = poisoned_dir / "poisoned"
    prompts = build_eval_prompts(load_dataset(data).catalog, _sets(data))
    likes_trigger = _stub_results(prompts, lambda t: t.endswith("_" + TRIGGER))
    for name in ("triggered-seen", "triggered-unseen"):
        idx = [i for i, p in enumerate(prompts) if p.set_name == name]
        m = set_metrics([prompts[i] for i in idx], [likes_trigger[i] for i in idx], "score")
        assert m["ASR"] == 1.0 and m["n"] == len(idx) > 0
        assert m["HR@1"] == 0.0  # the triggered candidate is never the target
    # a scorer that ignores titles: ASR = share of prompts whose triggered candidate comes first
    first = _stub_results(prompts, lambda t: False)
    idx = [i for i, p in enumerate(prompts) if p.set_name == "triggered-unseen"]
    m = set_metrics([prompts[i] for i in idx], [first[i] for i in idx], "score")
    assert m["ASR"] == pytest.approx(np.mean([prompts[i].triggered == 0 for i in idx]))
    assert m["HR@1"] == pytest.approx(np.mean([prompts[i].target == 0 for i in idx]))
    assert m["HR@5"] == pytest.approx(np.mean([prompts[i].target < 5 for i in idx]))
    ndcg = np.mean(
        [1 / np.log2(prompts[i].target + 2) if prompts[i].target < 10 else 0 for i in idx]
    )
    assert m["NDCG@10"] == pytest.approx(ndcg)
    assert m["ValidRatio"] == 1.0


def test_generate_metrics_count_invalid_answers(poisoned_dir):
    data = poisoned_dir / "poisoned"
    prompts = build_eval_prompts(load_dataset(data).catalog, _sets(data))
    trig = [p for p in prompts if p.set_name == "triggered-unseen"][:4]
    results = [
        {"prediction": trig[0].triggered, "output": "x"},
        {"prediction": None, "output": "?"},
        {"prediction": trig[2].target, "output": "y"},
        {"prediction": None, "output": "?"},
    ]
    m = set_metrics(trig, results, "generate")
    assert m["ASR"] == 0.25  # invalid answers count as not attacked
    assert m["ValidRatio"] == 0.5 and m["HR@1"] == 0.5 and m["HR@1_all"] == 0.25
    assert m["HR@5"] is None and m["NDCG@10"] is None


def test_cli_evaluate_score_with_attack_sets(poisoned_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", "--model", "tiny-random", "--data", str(poisoned_dir / "poisoned"),
            "--attack-sets", "--max-samples", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "ASR[triggered-unseen]" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for key in HEADLINE:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["ValidRatio"] == 1.0 and metrics["HR@1"] == metrics["HR@1_all"]
    assert set(metrics["ASR"]) == {"triggered-seen", "triggered-unseen"}
    assert set(metrics["sets"]) == {"clean", "triggered-seen", "triggered-unseen"}
    assert metrics["settings"]["protocol"] == "score" and metrics["timing"]["eval_seconds"] > 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == sum(s["n"] for s in metrics["sets"].values())
    assert all(
        sorted(r["ranking"]) == list(range(20)) and r["prediction"] == r["ranking"][0] for r in rows
    )
    # refuses to overwrite; a bad option is one line and exit code 2
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "x"), "--protocol", "beam"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown protocol") and "\n" not in err
    assert not (tmp_path / "x").exists()
    clean = str(poisoned_dir / "clean")  # a dataset without attack sets
    assert main(["evaluate", "--model", "tiny-random", "--data", clean, "--attack-sets"]) == 2
    assert "attack set not found" in capsys.readouterr().err


def test_evaluate_generate_and_mean_scoring(poisoned_dir, tmp_path):
    data = poisoned_dir / "clean"
    gen = evaluate_model(
        "tiny-random", data, protocol="generate", max_samples=2, out=tmp_path / "g", progress=False
    )
    assert gen["HR@5"] is None and 0.0 <= gen["ValidRatio"] <= 1.0 and gen["n_samples"] == 2
    rows = [
        json.loads(line) for line in (tmp_path / "g" / "predictions.jsonl").read_text().splitlines()
    ]
    assert all("\n" not in r["output"] for r in rows) and "ASR" not in gen
    a = evaluate_model(
        "tiny-random", data, max_samples=3, scoring="mean", out=tmp_path / "m", progress=False
    )
    b = evaluate_model(
        "tiny-random", data, max_samples=3, scoring="sum", out=tmp_path / "s", progress=False
    )
    assert a["settings"]["scoring"] == "mean" and a["n_samples"] == 3
    ranks = [
        json.loads(line)["ranking"]
        for line in (tmp_path / "m" / "predictions.jsonl").read_text().splitlines()
    ]
    ranks_sum = [
        json.loads(line)["ranking"]
        for line in (tmp_path / "s" / "predictions.jsonl").read_text().splitlines()
    ]
    assert ranks != ranks_sum  # per-token and total log-prob rank differently
    assert b["settings"]["split"] == "test"


def test_default_eval_dir(tmp_path):
    (tmp_path / "victim").mkdir()
    assert (
        default_eval_dir(str(tmp_path / "victim"), "/x/lastfm", "score")
        == tmp_path / "victim" / "eval-lastfm-score"
    )
    assert default_eval_dir("smollm2-135m", "/x/ml", "generate") == Path(
        "eval-smollm2-135m-ml-generate"
    )


def test_evaluate_a_trained_victim_folder(poisoned_dir, tmp_path, capsys):
    from recbackdoor.models.lora import make_train_config
    from recbackdoor.victims import victim_trainer

    config = make_train_config(backbone="tiny-random", max_steps=1, max_samples=8, batch_size=4)
    victim = victim_trainer("tallrec")(poisoned_dir / "poisoned", tmp_path / "victim", config)
    data = poisoned_dir / "poisoned"
    args = ["evaluate", "--model", str(victim), "--data", str(data), "--attack-sets"]
    args += ["--max-samples", "2", "--dtype", "fp32"]
    assert main(args) == 0
    out = victim / "eval-poisoned-score"  # the default output folder
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["victim"]["victim"] == "tallrec"
    assert metrics["settings"]["dtype"] == "float32" and metrics["n_samples"] == 2
    assert set(metrics["ASR"]) == {"triggered-seen", "triggered-unseen"}
    assert "wrote" in capsys.readouterr().out
