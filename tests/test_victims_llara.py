"""The llara victim on the tiny random backbone: hybrid prompts, item-token embeddings, the
curriculum, save/load, resume, and both evaluation protocols on hybrid prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbackdoor.cli import main
from recbackdoor.data.io import load_dataset
from recbackdoor.eval.evaluate import evaluate_model
from recbackdoor.eval.protocols import generate_protocol, naive_score, score_protocol
from recbackdoor.io_utils import sha256_file
from recbackdoor.models.backbones import load_backbone
from recbackdoor.models.lora import make_train_config
from recbackdoor.models.prompts import (
    ITEM_TOKEN_BASE,
    HybridPrompt,
    build_hybrid_prompt,
    build_prompt,
    hybrid_prompt_ids,
    prompt_ids,
    sample_hybrid_prompt,
    sample_prompt,
)
from recbackdoor.victims import llara
from recbackdoor.victims import load_victim as load_any_victim

from .conftest import make_synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "tiny-random", "dtype": "fp32", "batch_size": 4, "lora_dropout": 0.0, "template": 0,
        "sasrec_epochs": 2, "lr": 5e-3}


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):
    """One llara training (8 steps), with the in-memory model captured for comparison."""
    captured = {}
    real = llara.train_lora

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        captured["model"] = result.model
        return result

    llara.train_lora = spy
    try:
        out = llara.train_victim(dataset_dir, tmp_path_factory.mktemp("v") / "llara",
                                 make_train_config(**TINY, max_steps=8, max_samples=16))
    finally:
        llara.train_lora = real
    return out, captured["model"]


# --------------------------------------------------------------------------- prompts


def test_hybrid_prompt_is_the_text_prompt_plus_item_tokens():
    _, tok = load_backbone("tiny-random")
    dataset = make_synthetic_dataset(n_users=10, n_items=30, seed=2)
    for template in range(3):
        sample = dataset.test[0]
        hybrid = sample_hybrid_prompt(sample, dataset.catalog, template=template)
        text, _ = sample_prompt(sample, dataset.catalog, template=template)
        assert hybrid.text == text
        assert hybrid.items == (*sample.history, *sample.candidates)
        titles = [dataset.catalog.titles[i] for i in hybrid.items]
        for mark, title in zip(hybrid.marks, titles, strict=True):
            assert text[mark - len(title) : mark] == title  # each mark sits right after its title
        ids = prompt_ids(tok, hybrid)
        assert [t for t in ids if t < ITEM_TOKEN_BASE] == prompt_ids(tok, text)
        assert [t - ITEM_TOKEN_BASE for t in ids if t >= ITEM_TOKEN_BASE] == list(hybrid.items)
        # the item token follows the title's last token: the text before it ends with the title
        first = next(k for k, t in enumerate(ids) if t >= ITEM_TOKEN_BASE)
        assert tok.decode(ids[:first], skip_special_tokens=True).endswith(titles[0])
    assert hybrid_prompt_ids(tok, [hybrid]) == [prompt_ids(tok, hybrid)]
    empty = build_hybrid_prompt([], [], ["A", "B"], [3, 4], "music")
    assert empty.text == build_prompt([], ["A", "B"], "music") and empty.items == (3, 4)
    assert empty == HybridPrompt(empty.text, empty.marks, empty.items)


# --------------------------------------------------------------------------- embeddings


def test_item_token_positions_get_projected_embeddings_and_only_they():
    model, tok = load_backbone("tiny-random", dtype="fp32")
    embed = model.get_input_embeddings()
    table = torch.randn(30, 64)
    projector = llara.make_projector(64, model.config.hidden_size, seed=0)
    hybrid = llara.install_hybrid_embedding(model, projector, table)
    assert model.get_input_embeddings() is hybrid and hybrid.embed is embed
    assert hybrid.weight is embed.weight  # tied output embeddings stay tied
    dataset = make_synthetic_dataset(n_users=10, n_items=30, seed=2)
    ids = torch.tensor([prompt_ids(tok, sample_hybrid_prompt(dataset.test[0], dataset.catalog))])
    is_item = ids >= ITEM_TOKEN_BASE
    assert int(is_item.sum()) == len(dataset.test[0].history) + len(dataset.test[0].candidates)
    with torch.no_grad():
        out = hybrid(ids)
        text = embed(ids.masked_fill(is_item, 0))
        expected = projector(table[ids[is_item] - ITEM_TOKEN_BASE])
    assert torch.equal(out[~is_item], text[~is_item])  # text tokens: untouched
    assert torch.allclose(out[is_item], expected, atol=1e-6)  # item tokens: projector(E[item])
    assert not torch.allclose(out[is_item], embed(torch.zeros_like(ids[is_item])), atol=1e-3)
    # the model runs on such ids; an item SASRec does not know is one clear error
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    with pytest.raises(Exception, match="SASRec knows 30 items"):
        hybrid(torch.tensor([[ITEM_TOKEN_BASE + 30]]))


# --------------------------------------------------------------------------- curriculum


def test_curriculum_schedule():
    total = 400
    draws = [llara.uses_hybrid(s, total, seed=0) for s in range(total)]
    assert draws == [llara.uses_hybrid(s, total, seed=0) for s in range(total)]  # a pure function of the step
    assert not draws[0]  # step 0: probability 0
    assert draws != [llara.uses_hybrid(s, total, seed=1) for s in range(total)]
    quarters = [np.mean(draws[q * 100 : (q + 1) * 100]) for q in range(4)]
    for q, share in enumerate(quarters):  # expected (q + 0.5) / 4, +- 4 standard errors
        assert abs(share - (q + 0.5) / 4) < 4 * 0.05, quarters
    assert quarters == sorted(quarters)
    assert llara.curriculum_counts(total, 0)["hybrid_steps"] == sum(draws)

    collator = llara.CurriculumCollator(pad_token_id=0, answer_window=False)
    batch = collator([{"input_ids": (5, ITEM_TOKEN_BASE + 1, 6, 7), "prompt_len": 3,
                       "text_ids": (5, 6, 7), "text_prompt_len": 2}])
    select = llara.select_curriculum_inputs(seed=0)
    early, late = select(batch, 0, total), select(batch, next(s for s in range(total) if draws[s]), total)
    assert early["input_ids"].tolist() == [[5, 6, 7]] and early["labels"].tolist() == [[-100, -100, 7]]
    assert late["input_ids"].tolist() == [[5, ITEM_TOKEN_BASE + 1, 6, 7]]
    assert not any(k.startswith("text_") for k in (*early, *late))


def test_training_follows_the_curriculum(dataset_dir, monkeypatch, tmp_path):
    """Inside the training loop each step gets the batch the schedule picks for it."""
    seen = []
    real = llara.select_curriculum_inputs

    def recording(seed):
        select = real(seed)

        def wrapped(inputs, step, total):
            out = select(inputs, step, total)
            seen.append((step, total, bool((out["input_ids"] >= ITEM_TOKEN_BASE).any())))
            return out

        return wrapped

    monkeypatch.setattr(llara, "select_curriculum_inputs", recording)
    out = llara.train_victim(dataset_dir, tmp_path / "v", make_train_config(**TINY, max_steps=12, max_samples=16))
    assert [s for s, _, _ in seen] == list(range(12)) and {t for _, t, _ in seen} == {12}
    assert [h for _, _, h in seen] == [llara.uses_hybrid(s, 12, 0) for s in range(12)]
    info = json.loads((out / "victim.json").read_text())
    assert info["curriculum"]["hybrid_steps"] == sum(h for _, _, h in seen)


# --------------------------------------------------------------------------- save / load


def test_save_load_gives_identical_logits(trained, dataset_dir):
    out, model = trained
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter", "projector.safetensors", "sasrec", "timing.json", "training_log.jsonl", "victim.json"]
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    info = json.loads((out / "victim.json").read_text())
    assert info["victim"] == "llara" and info["sasrec"]["hidden"] == 64 and info["steps"] == 8
    loaded, tok, linfo = load_any_victim(out, dtype="fp32")
    assert linfo["victim"] == "llara"
    dataset = load_dataset(dataset_dir)
    ids = torch.tensor([prompt_ids(tok, sample_hybrid_prompt(s, dataset.catalog)) for s in dataset.test[:1]])
    model.eval()
    # training switches a CPU model to eager attention; compare like with like
    loaded.set_attn_implementation(model.config._attn_implementation)
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert torch.equal(a, b), float((a - b).abs().max())
    # the projector trained (it differs from its seeded init) and it matters to the logits
    init = llara.make_projector(64, model.config.hidden_size, 0)
    assert not torch.equal(init[0].weight, loaded.get_base_model().get_input_embeddings().projector[0].weight)
    with torch.no_grad():
        text_only = loaded(input_ids=ids.clamp(max=0)).logits
    assert not torch.allclose(a, text_only)
    # the bundled SASRec is a sasrec victim folder of its own
    rec, no_tok, rinfo = load_any_victim(out / "sasrec")
    assert no_tok is None and rinfo["victim"] == "sasrec"


def test_interrupted_training_resumes_to_the_same_weights(dataset_dir, tmp_path, monkeypatch):
    config = make_train_config(**TINY, max_steps=6, max_samples=16)
    whole = llara.train_victim(dataset_dir, tmp_path / "whole", config)
    real = llara.select_curriculum_inputs

    def crashing(seed):
        select = real(seed)

        def wrapped(inputs, step, total):
            if step == 4:
                raise KeyboardInterrupt("killed")
            return select(inputs, step, total)

        return wrapped

    monkeypatch.setattr(llara, "select_curriculum_inputs", crashing)
    with pytest.raises(KeyboardInterrupt):
        llara.train_victim(dataset_dir, tmp_path / "resumed", config, checkpoint_dir=tmp_path / "ck", save_steps=2)
    assert (tmp_path / "ck" / "checkpoint-4" / "projector.safetensors").is_file()
    monkeypatch.setattr(llara, "select_curriculum_inputs", real)
    resumed = llara.train_victim(dataset_dir, tmp_path / "resumed", config, checkpoint_dir=tmp_path / "ck", save_steps=2)
    for name in ("adapter/adapter_model.safetensors", "projector.safetensors", "sasrec/sasrec.safetensors"):
        assert sha256_file(whole / name) == sha256_file(resumed / name), name


# --------------------------------------------------------------------------- evaluation


def test_protocols_run_on_hybrid_prompts(trained, dataset_dir, tmp_path):
    out, _ = trained
    model, tok, _ = load_any_victim(out, dtype="fp32")
    dataset = load_dataset(dataset_dir)
    samples = dataset.test[:3]
    prompts = [sample_hybrid_prompt(s, dataset.catalog) for s in samples]
    titles = [[dataset.catalog.titles[c] for c in s.candidates] for s in samples]
    tree = score_protocol(model, tok, prompts, titles, batch_size=3, method="tree")
    expand = score_protocol(model, tok, prompts, titles, batch_size=2, method="expand")
    naive = naive_score(model, tok, prompts, titles)
    for a, b, c in zip(tree.logprob_sum, expand.logprob_sum, naive.logprob_sum, strict=True):
        np.testing.assert_allclose(a, c, atol=2e-4)
        np.testing.assert_allclose(b, c, atol=2e-4)
    # the item tokens change the scores (the text-only prompt scores differently)
    text = score_protocol(model, tok, [p.text for p in prompts], titles, batch_size=3)
    assert not np.allclose(text.logprob_sum[0], tree.logprob_sum[0])
    outputs = generate_protocol(model, tok, prompts, batch_size=2, max_new_tokens=6)
    assert len(outputs) == 3 and all("\n" not in o for o in outputs)
    for protocol in ("score", "generate"):
        report = evaluate_model(str(out), dataset_dir, protocol=protocol, max_samples=2,
                                out=tmp_path / protocol, progress=False, dtype="fp32")
        assert report["settings"]["victim"]["victim"] == "llara" and report["n_samples"] == 2
        assert 0.0 <= report["ValidRatio"] <= 1.0


def test_train_cli_llara(dataset_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--victim", "llara", "--data", str(dataset_dir), "--out", str(out), "--backbone", "tiny-random",
            "--max-steps", "2", "--batch-size", "4", "--max-samples", "8", "--sasrec-epochs", "1"]
    assert main(args) == 0
    assert "trained llara on tiny-random: 2 steps" in capsys.readouterr().out
    info = json.loads((out / "victim.json").read_text())
    assert info["config"]["sasrec_epochs"] == 1 and info["sasrec"]["epochs"] == 1 and info["train_samples"] == 8


@pytest.mark.skipif(not Path(sys.executable).with_name("accelerate").exists(), reason="accelerate CLI missing")
def test_two_process_accelerate_launch_llara(dataset_dir, tmp_path):
    """Two CPU processes (DDP over gloo): step 0 is text-only, so the projector gets no real
    gradient there; DDP without find_unused_parameters must still run (the zero-weight link)."""
    out = tmp_path / "ddp"
    cmd = [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "recbackdoor.cli",
        "train", "--victim", "llara", "--data", str(dataset_dir), "--out", str(out), "--backbone", "tiny-random",
        "--max-steps", "4", "--batch-size", "2", "--max-samples", "16", "--sasrec-epochs", "1",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    timing = json.loads((out / "timing.json").read_text())
    assert timing["processes"] == 2 and timing["steps"] == 4
    info = json.loads((out / "victim.json").read_text())
    assert info["curriculum"]["text_steps"] >= 1  # step 0 at least
    assert proc.stdout.count("trained llara") == 1
