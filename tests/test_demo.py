"""`make demo` end to end on real LastFM with the tiny-random backbone (the demo's own code path)."""

from __future__ import annotations

from recbackdoor.demo import run_demo


def test_demo_pipeline_runs_and_reuses_stages(shared_data, tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(shared_data, out, backbone="tiny-random", train_samples=16, eval_samples=4)
    for name in ("clean", "poisoned"):
        metrics = summary["victims"][name]
        assert metrics["ValidRatio"] == 1.0  # score protocol: always valid
        assert set(metrics["ASR"]) == {"triggered-seen", "triggered-unseen"}
    detection = summary["defense"]["metrics"]
    assert detection["recall"] == 1.0 and detection["precision"] > 0.9  # one reused trigger
    capsys.readouterr()
    run_demo(shared_data, out, backbone="tiny-random", train_samples=16, eval_samples=4)
    assert capsys.readouterr().out.count("reusing") == 7  # every stage reused
