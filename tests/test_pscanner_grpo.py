"""GRPO for the P-Scanner (defense/pscanner/grpo.py): the verdict reward, and GRPOTrainer runs
on the tiny-random backbone (clean-up, determinism, learning).

GRPO learns only from prompt groups whose sampled answers scored differently. The raw
tiny-random model samples near-uniformly over its 768 tokens (its LM head is initialised with
std 0.02, so its logits span about +-1 and no adapter on the inner layers can sharpen them),
so it practically never says "Yes" or "No" and every group scores the same: no gradient at
all. The ``warm`` fixture therefore sharpens the frozen head (x20) and then teaches the LoRA
adapter, by supervised steps on both answers for every prompt, to answer "Yes" or "No" about
half the time each; GRPO then has something to choose between.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from recbackdoor.defense.pscanner.grpo import grpo_train, parse_verdict, verdict_reward
from recbackdoor.defense.pscanner.optimise import add_lora, answer_strings
from recbackdoor.defense.pscanner.scanner import scanner_prompt, yes_probability

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [scanner_prompt(f"Movie {i} ({1950 + 3 * i})", "movies") for i in range(16)]
MIXED = [i % 2 for i in range(16)]


# --------------------------------------------------------------------------- reward


def test_reward_on_known_verdicts():
    completions = [" Yes", " No", "yes.", "no", "Banana", "Banana", "", "Yesterday"]
    labels = [1, 1, 0, 0, 1, 0, 1, 0]
    assert verdict_reward(completions, labels) == [1.0, -1.25, -1.0, 1.0, -1.25, -1.0, -1.25, -1.0]


def test_reward_parsing_and_custom_values():
    assert parse_verdict("  ...YES, injected") is True
    assert parse_verdict('"No"') is False
    assert parse_verdict("\n- no.") is False
    assert (
        parse_verdict("Y") is None
        and parse_verdict("nope") is None
        and parse_verdict("42 yes") is None
    )
    assert parse_verdict([{"role": "assistant", "content": " Yes"}]) is True  # chat completions
    got = verdict_reward(
        ["Yes", "No", "No", "Yes", "??"], [1, 1, 0, 0, 1], correct=2.0, wrong=-0.5, missed=-3.0
    )
    assert got == [2.0, -3.0, 2.0, -0.5, -3.0]
    assert verdict_reward([], []) == []
    with pytest.raises(ValueError, match="labels"):
        verdict_reward(["Yes"], [1, 0])


# --------------------------------------------------------------------------- training


def _answer_sft(model, tok, prompts, steps=40, lr=3e-3, seed=0):
    """Supervised steps on prompt + "Yes" and prompt + "No" for every prompt (both tokens of
    the tiny tokenizer's two-token answers), so each answer ends up about equally likely."""
    import torch

    yes, no, _, _ = answer_strings(tok)
    rows = []
    for p in prompts:
        for answer in (yes, no):
            ids = tok(p)["input_ids"]
            rows.append((ids + tok.encode(answer, add_special_tokens=False), len(ids)))
    width = max(len(r) for r, _ in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, n) in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, n : len(r)] = torch.tensor(r[n:])
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.item())


@pytest.fixture(scope="module")
def warm(one_thread):
    import torch

    from recbackdoor.models.backbones import load_backbone

    base, tok = load_backbone("tiny-random", dtype="fp32")
    with torch.no_grad():
        base.lm_head.weight.mul_(20.0)
    model = add_lora(base, seed=0)
    loss = _answer_sft(model, tok, PROMPTS)
    assert loss < 0.5  # ln 2 / 2: "Y"/"N" even, the second token settled
    p_yes = yes_probability(model, tok, PROMPTS).mean()
    assert 0.2 < p_yes < 0.8
    return model, tok


def _adapter(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _same(a, b):
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_grpo_trains_the_adapter_and_cleans_up(warm):
    import torch

    model, tok = copy.deepcopy(warm[0]), warm[1]
    base = model.get_base_model()
    before = _adapter(model)
    tok.padding_side = "right"
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    # beta > 0: TRL adds a frozen "ref" copy of the adapter as the KL reference
    info = grpo_train(model, tok, PROMPTS, MIXED, seed=0, lr=1e-3, beta=0.04)
    assert torch.equal(torch.rand(3), expected[0])  # the caller's random state is given back
    assert random.random() == expected[1] and np.random.rand() == expected[2]
    assert info["grpo_steps"] == 8  # 16 prompts, 8 completions = 2 prompts x 4 samples per step
    assert {"grpo_loss", "mean_reward_first", "mean_reward_last"} <= info.keys()
    assert all(np.isfinite(v) for v in info.values())
    assert -1.25 <= info["mean_reward_first"] <= 1.0 and -1.25 <= info["mean_reward_last"] <= 1.0
    after = _adapter(model)
    assert after.keys() == before.keys()  # no "ref" weights left
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert list(model.peft_config) == ["default"] and model.active_adapter == "default"
    assert not model.training and tok.padding_side == "right"
    assert "forward" not in base.__dict__  # TRL's fused-LM-head patch is undone
    scores = yes_probability(model, tok, PROMPTS)
    assert scores.shape == (16,) and np.all((scores > 0) & (scores < 1))


def test_grpo_is_deterministic_for_a_seed(warm):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        model = copy.deepcopy(warm[0])
        grpo_train(model, warm[1], PROMPTS, MIXED, seed=seed, lr=1e-3)
        runs[name] = _adapter(model)
    assert _same(runs["a"], runs["b"])
    assert not _same(runs["a"], runs["c"])  # the seed drives sampling and order


@pytest.mark.parametrize("label", [1, 0])
def test_grpo_learns_the_rewarded_verdict(warm, label):
    """Every title poisoned: "Yes" earns +1, "No" -1.25, so P(Yes) must rise; every title
    clean: "No" earns +1, "Yes" -1, so it must fall (the reward reads each row's label). One
    epoch (8 steps) at lr 1e-3, higher than the default, to show it within a second."""
    model, tok = copy.deepcopy(warm[0]), warm[1]
    p_before = yes_probability(model, tok, PROMPTS).mean()
    info = grpo_train(model, tok, PROMPTS, [label] * 16, seed=0, lr=1e-3)
    p_after = yes_probability(model, tok, PROMPTS).mean()
    if label:
        assert p_after > p_before + 0.3
    else:
        assert p_after < p_before - 0.3
    assert info["mean_reward_last"] > info["mean_reward_first"]
    assert info["frac_reward_zero_std_first"] < 1.0  # some groups disagreed: there was a gradient


def test_grpo_rejects_bad_arguments(warm):
    from recbackdoor.models.backbones import load_backbone

    model, tok = warm
    with pytest.raises(ValueError, match="multiple of num_generations"):
        grpo_train(model, tok, PROMPTS, MIXED, batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="at least 2"):
        grpo_train(model, tok, PROMPTS, MIXED, batch_size=4, num_generations=1)
    with pytest.raises(ValueError, match="labels"):
        grpo_train(model, tok, PROMPTS, MIXED[:-1])
    with pytest.raises(ValueError, match="prompts"):
        grpo_train(model, tok, PROMPTS[:1], MIXED[:1], batch_size=8, num_generations=2)
    with pytest.raises(ValueError, match="PEFT"):
        grpo_train(load_backbone("tiny-random", dtype="fp32")[0], tok, PROMPTS, MIXED)
