"""``generate`` scored as LLaRA scores it: our post-processing, parsing and early stop against
a transcription of LLaRA's own code (its model interface's ``test_step`` keeps
``generate.strip().split("\\n")[0]``, then ``calculate_hr1`` matches candidates)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from recbackdoor.eval.protocols import (
    _newline_criteria,
    answer_line,
    first_line_complete,
    generate_protocol,
    parse_generation,
    token_text_flags,
)
from recbackdoor.models.backbones import load_backbone

from .test_protocols import _force_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


def llara_decision(raw: str, real: str, cans: list[str]) -> tuple[bool, bool]:
    """(valid, hit) of one generation by LLaRA's rule, transcribed: ``test_step`` keeps
    ``generate.strip().split("\\n")[0]``; ``calculate_hr1`` strips and lower-cases the output,
    the target and the candidates, collects the candidates that are substrings of the output,
    counts the answer valid iff exactly one is, and a hit iff that one equals the target."""
    generate = raw.strip().split("\n")[0]
    generate = generate.strip().lower().strip()
    real = real.strip().lower().strip()
    cans = [item.strip().lower().strip() for item in cans]
    gen_cans_list = []
    for cans_item in cans:
        if cans_item in generate:
            gen_cans_list.append(cans_item)
    valid = len(gen_cans_list) == 1
    return valid, valid and real == gen_cans_list[0]


def our_decision(raw: str, target: int, cans: list[str]) -> tuple[bool, bool]:
    pred = parse_generation(answer_line(raw), cans)
    return pred is not None, pred == target


CANS = ["Fargo", "Heat", "Queen", "Queen + Paul Rodgers", "Muse"]
OUTPUTS = [
    "Fargo", "Fargo\nHeat", "\nFargo", "\n\nHeat\nFargo", "  \n Heat  \n", "\n", "", "   ",
    "fargo (1996)", "The answer is Heat.", "Heat and Fargo", "Queen + Paul Rodgers", "queen\n",
    "\n \nMUSE", "Muse\n\nFargo", "\t Fargo\t\nHeat", "Heat\r\nFargo", "\n\n\n\n",
]


@pytest.mark.parametrize("raw", OUTPUTS)
def test_decisions_agree_with_llara_on_every_output(raw):
    for target, real in enumerate(CANS):
        assert our_decision(raw, target, CANS) == llara_decision(raw, real, CANS), (raw, real)


def test_the_cases_of_the_issue():
    # output that begins with a newline: LLaRA strips first, so the title on the next line counts
    assert llara_decision("\nFargo\nHeat", "Fargo", CANS) == (True, True)
    assert our_decision("\nFargo\nHeat", 0, CANS) == (True, True)
    assert answer_line("\n\n  Heat \nFargo") == "Heat "  # the trailing space goes in calculate_hr1


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_backbone("tiny-random", dtype="fp32")
    model.eval()
    return model, tok


def _texts(tok, ids):
    return tok.decode(ids, skip_special_tokens=True)


def test_stop_rule_on_tokens_matches_the_text_rule(tiny):
    """The stopping criterion fires at the first token after which the decoded text's answer
    line is complete, for every sequence of a set of blank / newline / word tokens."""
    _, tok = tiny
    flags = token_text_flags(tok)
    pieces = ["\n", " ", "Fargo", " Heat", "\n\n", "x\n", "\ny"]
    vocab = sorted({t for p in pieces for t in tok(p, add_special_tokens=False)["input_ids"]})
    vocab += [i for i in range(len(tok)) if flags[i, 1]][:3] + [int(tok.eos_token_id)]
    criteria = _newline_criteria(flags, 0, torch.device("cpu"))
    for seq in itertools.product(vocab, repeat=3):
        seq = list(seq)
        fired = [bool(criteria(torch.tensor([seq[: k + 1]]), None)[0]) for k in range(len(seq))]
        expected = [first_line_complete(_texts(tok, seq[: k + 1])) for k in range(len(seq))]
        assert fired == expected, (seq, [_texts(tok, seq[: k + 1]) for k in range(len(seq))])
        if any(fired):  # stopping there leaves the answer line as the full text's
            k = fired.index(True)
            assert answer_line(_texts(tok, seq[: k + 1])) == answer_line(_texts(tok, seq))


def test_generation_skips_leading_newlines_and_needs_one_token(tiny):
    model, tok = tiny
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    fargo = tok("Fargo", add_special_tokens=False)["input_ids"]
    heat = tok("Heat", add_special_tokens=False)["input_ids"]
    filler = tok("x", add_special_tokens=False)["input_ids"][0]
    prompts = ["the same prompt"] * 2
    # row 0 opens with two blank lines, row 1 answers at once; LLaRA keeps "Fargo" and "Heat"
    plan = [nl + nl + fargo + nl + heat, heat + nl + fargo]
    handle, calls = _force_tokens(model, plan, filler)
    try:
        out = generate_protocol(model, tok, prompts, batch_size=2, max_new_tokens=20)
        assert out == ["Fargo", "Heat"]
        assert calls["n"] == len(nl + nl + fargo + nl)  # stopped at row 0's first newline after text
        calls["n"] = 0
        full = generate_protocol(model, tok, prompts, batch_size=2, max_new_tokens=len(plan[0]) + 2,
                                 stop_at_newline=False)
        assert full == out  # running on to max_new_tokens, as LLaRA does, changes nothing
    finally:
        handle.remove()
    # an immediate EOS is not allowed (min_new_tokens=1): at least one token is generated
    eos = int(tok.eos_token_id)
    handle, calls = _force_tokens(model, [[eos] + fargo + nl], filler)
    try:
        generate_protocol(model, tok, ["a prompt"], batch_size=1, max_new_tokens=8)
        assert calls["n"] >= 2
    finally:
        handle.remove()
    assert np.asarray(token_text_flags(tok)).shape == (len(tok), 3)
