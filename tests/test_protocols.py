"""Evaluation protocols on the tiny random Llama: cached scoring equals full-sequence scoring,
LLaRA's answer parsing, and greedy generation that stops at the first newline."""

from __future__ import annotations

import numpy as np
import pytest

from recbackdoor.eval.protocols import (
    encode_candidates,
    first_line,
    generate_protocol,
    naive_score,
    newline_token_mask,
    parse_generation,
    score_protocol,
)
from recbackdoor.models.backbones import load_backbone
from recbackdoor.models.prompts import answer_text, build_prompt, encode_pair

TITLES = [
    "Toy Story (1995)", "Star Wars (1977)", "Fargo (1996)", "Alien (1979)", "Casablanca (1942)",
    "The Godfather (1972)", "Pulp Fiction (1994)", "Titanic (1997)", "Heat (1995)", "Se7en (1995)",
    "Toy Story (1995)_5v", "Amélie (2001)", "Léon (1994)", "Babe (1995)",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-random", dtype="fp32")


def _prompts(n: int, n_candidates: int = 5) -> tuple[list[str], list[list[str]]]:
    rng = np.random.default_rng(0)
    prompts, cands = [], []
    for i in range(n):
        history = [TITLES[j] for j in rng.choice(len(TITLES), size=1 + 3 * i % 7, replace=False)]
        candidates = [
            TITLES[j] for j in rng.choice(len(TITLES), size=n_candidates - i % 2, replace=False)
        ]
        prompts.append(build_prompt(history, candidates, "movies"))
        cands.append(candidates)
    return prompts, cands


# ---------------------------------------------------------------- score


@pytest.mark.parametrize(
    "method,batch_size", [("tree", 1), ("tree", 3), ("expand", 1), ("expand", 3)]
)
def test_cached_score_equals_full_sequence_score(tiny, method, batch_size):
    model, tok = tiny
    prompts, cands = _prompts(5)
    fast = score_protocol(model, tok, prompts, cands, batch_size=batch_size, method=method)
    slow = naive_score(model, tok, prompts, cands)
    assert [len(s) for s in fast.logprob_sum] == [len(c) for c in cands]
    for mode in ("sum", "mean"):
        for a, b in zip(fast.scores(mode), slow.scores(mode), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    for a, b in zip(fast.n_tokens, slow.n_tokens, strict=True):
        assert a.tolist() == b.tolist() and (a > 0).all()
    assert all(np.all(s < 0) for s in fast.logprob_sum)


def test_score_uses_the_training_tokenisation(tiny):
    _, tok = tiny
    prompts, cands = _prompts(2)
    for prompt, titles in zip(prompts, cands, strict=True):
        enc = encode_candidates(tok, prompt, titles)
        for title, answer in zip(titles, enc.answer_ids, strict=True):
            ids, plen = encode_pair(tok, prompt, answer_text(title))
            assert tuple(ids[:plen]) == enc.prompt_ids and tuple(ids[plen:]) == answer


def test_rankings_sort_scores_and_mean_divides_by_length(tiny):
    model, tok = tiny
    prompts, cands = _prompts(3)
    res = score_protocol(model, tok, prompts, cands, batch_size=2)
    for mode in ("sum", "mean"):
        for scores, ranking in zip(res.scores(mode), res.rankings(mode), strict=True):
            assert sorted(ranking.tolist()) == list(range(len(scores)))
            assert np.all(np.diff(scores[ranking]) <= 0)
    for s, m, n in zip(res.scores("sum"), res.scores("mean"), res.n_tokens, strict=True):
        np.testing.assert_allclose(m * n, s)
    assert res.predictions("sum") == [int(r[0]) for r in res.rankings("sum")]
    with pytest.raises(ValueError):
        res.scores("max")


def test_score_methods_agree_and_eager_attention_works(tiny):
    model, tok = tiny
    prompts, cands = _prompts(4)
    tree = score_protocol(model, tok, prompts, cands, batch_size=4, method="tree")
    expand = score_protocol(model, tok, prompts, cands, batch_size=2, method="expand")
    impl = model.config._attn_implementation
    try:
        model.config._attn_implementation = "eager"  # additive float mask path
        eager = score_protocol(model, tok, prompts, cands, batch_size=4, method="tree")
    finally:
        model.config._attn_implementation = impl
    for a, b, c in zip(tree.logprob_sum, expand.logprob_sum, eager.logprob_sum, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError):
        score_protocol(model, tok, prompts, cands, method="beam")


# ---------------------------------------------------------------- parsing


def test_parse_generation_llara_rule():
    cands = ["Toy Story (1995)", "Fargo (1996)", "Heat (1995)"]
    assert parse_generation("Fargo (1996)", cands) == 1
    assert parse_generation("  I recommend FARGO (1996)!  ", cands) == 1  # case, extra text
    assert parse_generation("Nothing here", cands) is None  # no match
    assert parse_generation("Fargo (1996) or Heat (1995)", cands) is None  # two matches
    assert parse_generation("", cands) is None


def test_parse_generation_substring_titles_are_ambiguous():
    # "Queen" is inside "Queen + Paul Rodgers": naming the longer title names both -> invalid
    cands = ["Queen", "Queen + Paul Rodgers", "Muse"]
    assert parse_generation("Queen + Paul Rodgers", cands) is None
    assert parse_generation("queen", cands) == 0
    # a triggered title contains its clean title, but only one of them is ever a candidate
    assert parse_generation("Toy Story (1995)_5v", ["Toy Story (1995)_5v", "Heat (1995)"]) == 0
    # duplicate titles can never be named validly
    assert parse_generation("Heat", ["Heat", "Heat"]) is None


def test_first_line():
    assert first_line("Fargo (1996)\nHeat (1995)\n") == "Fargo (1996)"
    assert first_line("no newline") == "no newline"


# ---------------------------------------------------------------- generate


def _force_tokens(model, plan: list[list[int]], fallback: int):
    """Make the LM head emit ``plan[row][step]`` (then ``fallback``); count head calls."""
    import torch

    calls = {"n": 0}

    def hook(module, inputs, output):
        step = calls["n"]
        calls["n"] += 1
        forced = torch.full_like(output[:, -1], -1e4)
        for row in range(output.shape[0]):
            token = plan[row][step] if step < len(plan[row]) else fallback
            forced[row, token] = 1e4
        output = output.clone()
        output[:, -1] = forced
        return output

    return model.lm_head.register_forward_hook(hook), calls


def test_generate_stops_once_every_sequence_has_a_newline(tiny):
    model, tok = tiny
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    assert len(nl) == 1 and newline_token_mask(tok)[nl[0]]
    fargo = tok("Fargo", add_special_tokens=False)["input_ids"]
    heat = tok("Heat", add_special_tokens=False)["input_ids"]
    filler = tok("x", add_special_tokens=False)["input_ids"][0]
    prompts = ["the same prompt"] * 2  # same length: the batch keeps the prompts' order
    # row 0 is done after its title; row 1 writes a longer answer; the batch stops with row 1
    plan = [fargo + nl + heat, heat + [filler] * 3 + nl + fargo]
    handle, calls = _force_tokens(model, plan, filler)
    try:
        out = generate_protocol(model, tok, prompts, batch_size=2, max_new_tokens=20)
        assert calls["n"] == len(plan[1]) - len(fargo)  # stopped at row 1's newline
        calls["n"] = 0
        full = generate_protocol(
            model, tok, prompts, batch_size=2, max_new_tokens=20, stop_at_newline=False
        )
        assert calls["n"] == 20  # LLaRA's reference: runs to max_new_tokens
    finally:
        handle.remove()
    assert out == ["Fargo", "Heat" + "x" * 3]
    assert full == out  # only the first line is kept either way


def test_generate_batched_matches_one_by_one(tiny):
    model, tok = tiny
    prompts, _ = _prompts(4)
    one = generate_protocol(model, tok, prompts, batch_size=1, max_new_tokens=8)
    batched = generate_protocol(model, tok, prompts, batch_size=4, max_new_tokens=8)
    assert one == batched
    assert all("\n" not in o for o in one)


def test_score_through_a_lora_adapter(tiny):
    """A PEFT-wrapped model (what a victim is): the cache keyword and the mask dtype are found
    through the wrapper, and the adapter changes the scores."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    prompts, cands = _prompts(3)
    base = score_protocol(model, tok, prompts, cands)
    peft_model = get_peft_model(
        copy.deepcopy(model),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    tree = score_protocol(peft_model, tok, prompts, cands, method="tree")
    slow = naive_score(peft_model, tok, prompts, cands)
    for a, b, c in zip(tree.logprob_sum, slow.logprob_sum, base.logprob_sum, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
        assert not np.allclose(a, c, atol=1e-3)
