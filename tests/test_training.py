"""LoRA training of the tallrec victim on the tiny random backbone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbackdoor.cli import main
from recbackdoor.errors import ConfigError
from recbackdoor.io_utils import sha256_file
from recbackdoor.models.backbones import load_backbone
from recbackdoor.models.lora import (
    IGNORE_INDEX,
    AnswerOnlyCollator,
    make_train_config,
    padding_share,
)
from recbackdoor.victims import victim_trainer
from recbackdoor.victims.tallrec import load_victim, train_victim, training_examples

TINY = {"backbone": "tiny-random", "dtype": "fp32", "batch_size": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


def _answer_loss(model, examples) -> float:
    """Mean answer-token loss over ``examples`` (one batch, no dropout)."""
    batch = AnswerOnlyCollator(pad_token_id=0)([{"input_ids": e.input_ids, "prompt_len": e.prompt_len} for e in examples])
    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)


def test_collator_masks_exactly_the_prompt():
    feats = [{"input_ids": (5, 6, 7, 8, 9), "prompt_len": 3}, {"input_ids": (1, 2, 3), "prompt_len": 2}]
    batch = AnswerOnlyCollator(pad_token_id=0)(feats)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    m = IGNORE_INDEX
    assert batch["labels"].tolist() == [[m, m, m, 8, 9], [m, m, 3, m, m]]


def test_answer_window_gives_the_same_loss(dataset_dir):
    """Left padding + LM head on the last K positions == right padding + full logits."""
    from recbackdoor.data.io import load_dataset

    model, tok = load_backbone("tiny-random", dtype="fp32")
    examples = training_examples(load_dataset(dataset_dir), tok, make_train_config(**TINY, max_samples=5))
    feats = [{"input_ids": e.input_ids, "prompt_len": e.prompt_len} for e in examples]
    full = AnswerOnlyCollator(tok.pad_token_id)(feats)
    window = AnswerOnlyCollator(tok.pad_token_id, answer_window=True)(feats)
    keep = window["logits_to_keep"]
    assert keep == max(len(e.input_ids) - e.prompt_len for e in examples) + 1
    assert (window["labels"][:, 0] == IGNORE_INDEX).all()
    assert int((window["labels"] != IGNORE_INDEX).sum()) == int((full["labels"] != IGNORE_INDEX).sum())
    with torch.no_grad():
        a, b = model(**full), model(**window)
    assert b.logits.shape[1] == keep
    assert float(a.loss) == pytest.approx(float(b.loss), abs=1e-5)


def test_training_examples_mask_prompt_positions(dataset_dir):
    from recbackdoor.data.io import load_dataset

    dataset = load_dataset(dataset_dir)
    _, tok = load_backbone("tiny-random")
    config = make_train_config(**TINY, max_samples=6, template=1)
    examples = training_examples(dataset, tok, config)
    assert len(examples) == 6
    batch = AnswerOnlyCollator(tok.pad_token_id)([{"input_ids": e.input_ids, "prompt_len": e.prompt_len} for e in examples])
    for row, (ex, sample) in enumerate(zip(examples, dataset.train, strict=False)):
        labels = batch["labels"][row]
        assert (labels[: ex.prompt_len] == IGNORE_INDEX).all()
        answer = labels[ex.prompt_len : len(ex.input_ids)]
        assert (answer != IGNORE_INDEX).all()
        assert tok.decode(answer) == dataset.catalog.titles[sample.target] + "\n"
        assert (labels[len(ex.input_ids) :] == IGNORE_INDEX).all()


def test_training_lowers_the_loss_and_is_deterministic(dataset_dir, tmp_path):
    from recbackdoor.data.io import load_dataset

    dataset = load_dataset(dataset_dir)
    config = make_train_config(**TINY, max_samples=8, max_steps=12, lr=5e-3, template=0, lora_dropout=0.0)
    base, tok = load_backbone("tiny-random", dtype="fp32")
    examples = training_examples(dataset, tok, config)
    before = _answer_loss(base, examples)
    out = train_victim(dataset_dir, tmp_path / "v1", config)
    model, _, info = load_victim(out)
    after = _answer_loss(model, examples)
    assert after < before - 0.5, (before, after)
    assert info["victim"] == "tallrec" and info["backbone"] == "tiny-random"
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    assert log[-1]["loss"] < log[0]["loss"]
    again = train_victim(dataset_dir, tmp_path / "v2", config)
    weights = "adapter/adapter_model.safetensors"
    assert sha256_file(out / weights) == sha256_file(again / weights)
    assert (out / "victim.json").read_bytes() == (again / "victim.json").read_bytes()


def test_train_cli_writes_documented_files(dataset_dir, tmp_path):
    out = tmp_path / "victim"
    args = ["train", "--data", str(dataset_dir), "--out", str(out), "--backbone", "tiny-random", "--max-steps", "2", "--batch-size", "4"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "timing.json", "training_log.jsonl", "victim.json"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    from safetensors import safe_open

    with safe_open(out / "adapter" / "adapter_model.safetensors", framework="pt") as fh:
        keys = list(fh.keys())
    assert keys and all("lora_" in k for k in keys)
    assert not list((out / "adapter").glob("*.bin"))
    info = json.loads((out / "victim.json").read_text())
    assert info["dataset"]["manifest_sha256"] == sha256_file(dataset_dir / "manifest.json")
    assert info["config"]["max_steps"] == 2 and info["template"] == "per-sample"
    timing = json.loads((out / "timing.json").read_text())
    assert timing["steps"] == 2 and timing["tokens"] > 0
    # an existing output is refused without --force, and nothing is touched
    before = sha256_file(out / "victim.json")
    assert main(args) == 2
    assert sha256_file(out / "victim.json") == before


def test_untrained_backbone_loads_as_victim():
    model, tok, info = load_victim("tiny-random")
    assert info["victim"] is None and info["backbone"] == "tiny-random"
    assert tok.pad_token is not None and not model.training


def test_user_errors(capsys, dataset_dir, tmp_path):
    args = ["train", "--data", str(dataset_dir), "--out", str(tmp_path / "x"), "--backbone", "tiny-random"]
    assert main([*args, "--victim", "bert4rec"]) == 2
    assert "unknown victim 'bert4rec'" in capsys.readouterr().err
    assert main([*args, "--lr", "-1"]) == 2
    assert "lr" in capsys.readouterr().err
    assert main([*args[:2], str(tmp_path / "missing"), *args[3:]]) == 2
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError):
        victim_trainer("bert4rec")
    with pytest.raises(ConfigError):
        make_train_config(dtype="int8")


def test_padding_share_and_grouping():
    lengths = [10, 10, 20, 20]
    assert padding_share(lengths, [[0, 1], [2, 3]]) == 0.0
    assert padding_share(lengths, [[0, 2], [1, 3]]) == pytest.approx(1 / 4)


@pytest.mark.skipif(not Path(sys.executable).with_name("accelerate").exists(), reason="accelerate CLI missing")
def test_two_process_accelerate_launch(dataset_dir, tmp_path):
    """Two CPU processes (DDP over gloo) through `accelerate launch`; the main one writes."""
    out = tmp_path / "ddp"
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    # `--cpu --num_processes 2` starts ONE process in accelerate (multi-CPU needs mpirun);
    # the torchrun launcher (--multi_gpu) with no visible GPU gives two CPU processes.
    cmd = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "recbackdoor.cli", "train",
        "--data", str(dataset_dir), "--out", str(out), "--backbone", "tiny-random",
        "--max-steps", "2", "--batch-size", "2", "--max-samples", "16",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    timing = json.loads((out / "timing.json").read_text())
    assert timing["processes"] == 2 and timing["steps"] == 2
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert proc.stdout.count("trained tallrec") == 1


def test_victims_train_through_the_answer_window(dataset_dir, tmp_path, monkeypatch):
    """The LM head runs on the answer positions only (``answer_logits_only``). peft's wrapper
    hides ``logits_to_keep`` from its forward signature, so the check must ask the base model:
    after the train_lora split it asked the wrapper and the victims silently lost the window."""
    import recbackdoor.models.lora as lora

    seen: list[bool] = []
    real = lora.AnswerOnlyCollator.__init__

    def spy(self, pad_token_id, answer_window=False):
        seen.append(answer_window)
        real(self, pad_token_id, answer_window)

    monkeypatch.setattr(lora.AnswerOnlyCollator, "__init__", spy)
    config = make_train_config(**TINY, max_samples=4, max_steps=1, template=0)
    train_victim(dataset_dir, tmp_path / "v", config)
    assert seen == [True]
