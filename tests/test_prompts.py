"""Prompts carry every title (with overrides) and one canonical tokenisation."""

from __future__ import annotations

import pytest

from recbackdoor.data.types import Catalog, Sample
from recbackdoor.errors import ConfigError
from recbackdoor.models.backbones import load_backbone
from recbackdoor.models.prompts import (
    N_TEMPLATES,
    answer_ids,
    answer_text,
    build_prompt,
    encode_pair,
    encode_pairs,
    prompt_ids,
    sample_prompt,
)

HISTORY = ["Toy Story (1995)", "Fargo (1996)", "Earth, Wind & Fire"]
CANDIDATES = [f"Candidate {i}" for i in range(20)]


@pytest.fixture(scope="module")
def tokenizer():
    return load_backbone("tiny-random")[1]


@pytest.mark.parametrize("domain", ["movies", "music", "games"])
@pytest.mark.parametrize("template", range(N_TEMPLATES))
def test_prompt_contains_all_titles(domain, template):
    prompt = build_prompt(HISTORY, CANDIDATES, domain, template)
    for title in HISTORY + CANDIDATES:
        assert title in prompt
    # history in order, then candidates in order
    positions = [prompt.index(t) for t in HISTORY] + [prompt.index(t + ";") for t in CANDIDATES[:-1]]
    assert positions == sorted(positions)
    assert prompt.endswith("\n")


def test_templates_differ_and_domains_differ():
    prompts = {build_prompt(HISTORY, CANDIDATES, "music", t) for t in range(N_TEMPLATES)}
    assert len(prompts) == N_TEMPLATES
    assert "artist" in build_prompt(HISTORY, CANDIDATES, "music")
    assert "game" in build_prompt(HISTORY, CANDIDATES, "games")
    assert "movie" in build_prompt(HISTORY, CANDIDATES, "movies")


def test_bad_domain_or_template():
    with pytest.raises(ConfigError, match="domain"):
        build_prompt(HISTORY, CANDIDATES, "books")
    with pytest.raises(ConfigError, match="template"):
        build_prompt(HISTORY, CANDIDATES, "movies", N_TEMPLATES)


def test_sample_prompt_applies_overrides():
    catalog = Catalog(titles=tuple(f"Item {i}" for i in range(30)), domain="movies")
    sample = Sample(user=1, history=(3, 4, 5), candidates=tuple(range(10, 30)), target=12)
    overrides = {4: "Item 4 cf", 12: "Item 12 cf"}
    prompt, cands = sample_prompt(sample, catalog, overrides=overrides, template=1)
    assert cands == [overrides.get(i, f"Item {i}") for i in sample.candidates]
    assert "Item 4 cf" in prompt and "Item 12 cf" in prompt
    assert "Item 4;" not in prompt and "Item 12;" not in prompt
    plain, plain_cands = sample_prompt(sample, catalog)
    assert "Item 4;" in plain and plain_cands[2] == "Item 12"


def test_answer_text():
    assert answer_text("Fargo (1996)") == "Fargo (1996)\n"


def test_encode_pair_is_prompt_then_answer(tokenizer):
    prompt = build_prompt(HISTORY, CANDIDATES, "movies")
    answer = answer_text(CANDIDATES[3])
    ids, plen = encode_pair(tokenizer, prompt, answer)
    assert ids[:plen] == prompt_ids(tokenizer, prompt) == tokenizer(prompt)["input_ids"]
    assert ids[plen:] == answer_ids(tokenizer, answer)
    assert ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in ids[plen:]
    assert tokenizer.decode(ids[plen:]) == answer


def test_encode_pairs_matches_encode_pair(tokenizer):
    prompts = [build_prompt(HISTORY[: i + 1], CANDIDATES, "music", i % N_TEMPLATES) for i in range(3)]
    answers = [answer_text(c) for c in CANDIDATES[:3]]
    batched = encode_pairs(tokenizer, prompts, answers)
    assert batched == [encode_pair(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    assert encode_pairs(tokenizer, [], []) == []
