"""LLaRA-style text prompts and THE canonical tokenisation shared by training and evaluation.

A prompt lists the user's history titles (oldest first) and the candidate titles, and asks for
one candidate; the answer is the chosen title followed by a newline. Prompts end with a newline
so the answer starts at the beginning of a line and tokenises as it would in running text.
Titles are joined with "; " (titles such as "Earth, Wind & Fire" contain commas).

:func:`encode_pair` is the single definition of how (prompt, answer) becomes token ids: the
prompt as a normal tokenizer call (with the tokenizer's own special tokens, e.g. a BOS), then
the answer without special tokens. Training masks the loss by ``prompt_len``; the ``score``
protocol reuses the same ids, so scores measure exactly what training optimised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..data.types import DOMAINS, Catalog, Sample
from ..errors import ConfigError

TITLE_SEP = "; "

# Per domain: (past-tense verb phrase, singular noun, plural noun, infinitive verb phrase).
_WORDS: dict[str, tuple[str, str, str, str]] = {
    "movies": ("watched", "movie", "movies", "watch"),
    "music": ("listened to", "music artist", "music artists", "listen to"),
    "games": ("played", "game", "games", "play"),
}

_TEMPLATES: tuple[str, ...] = (
    "This user has {past} these {plural}, oldest first: {history}.\n"
    "Choose the {noun} this user will {inf} next from these {n} candidates: {candidates}.\n"
    "Answer with one title.\n",
    "History of {plural} the user {past}: {history}.\n"
    "Candidates: {candidates}.\n"
    "Which candidate {noun} will the user {inf} next?\n",
    "Recommend the next {noun} for a user who {past} {history}.\n"
    "Pick exactly one of these {n} {plural}: {candidates}.\n"
    "The recommended {noun} is:\n",
)

N_TEMPLATES = len(_TEMPLATES)
_EMPTY_HISTORY = "nothing yet"


def _check(domain: str, template: int) -> None:
    if domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r} for a prompt; expected one of {DOMAINS}")
    if not 0 <= template < N_TEMPLATES:
        raise ConfigError(f"prompt template {template} does not exist; use 0..{N_TEMPLATES - 1}")


def build_prompt(
    history_titles: Sequence[str],
    candidate_titles: Sequence[str],
    domain: str,
    template: int = 0,
) -> str:
    """The prompt text for one sample (history oldest first, candidates in the given order)."""
    _check(domain, template)
    past, noun, plural, inf = _WORDS[domain]
    history = TITLE_SEP.join(history_titles) if history_titles else _EMPTY_HISTORY
    return _TEMPLATES[template].format(
        past=past,
        noun=noun,
        plural=plural,
        inf=inf,
        n=len(candidate_titles),
        history=history,
        candidates=TITLE_SEP.join(candidate_titles),
    )


def answer_text(title: str) -> str:
    """The expected completion for a chosen title."""
    return title + "\n"


def sample_titles(
    sample: Sample, catalog: Catalog, overrides: Mapping[int, str] | None = None
) -> tuple[list[str], list[str]]:
    """(history titles, candidate titles) of a sample, with ``overrides`` (item -> title)."""
    overrides = overrides or {}

    def title(item: int) -> str:
        return overrides.get(item, catalog.titles[item])

    return [title(i) for i in sample.history], [title(i) for i in sample.candidates]


def sample_prompt(
    sample: Sample,
    catalog: Catalog,
    overrides: Mapping[int, str] | None = None,
    template: int = 0,
) -> tuple[str, list[str]]:
    """(prompt, candidate titles in the sample's order) for a stored sample.

    ``overrides`` maps item ids to replacement titles (e.g. triggered titles) and applies to
    the history and the candidates alike.
    """
    history, candidates = sample_titles(sample, catalog, overrides)
    return build_prompt(history, candidates, catalog.domain, template), candidates


def prompt_ids(tokenizer: Any, prompt: str | HybridPrompt) -> list[int]:
    """Prompt token ids, with the tokenizer's special tokens as in a normal call (a
    :class:`HybridPrompt` gets its item tokens, see :func:`hybrid_prompt_ids`)."""
    if isinstance(prompt, HybridPrompt):
        return hybrid_prompt_ids(tokenizer, [prompt])[0]
    return list(tokenizer(prompt)["input_ids"])


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Answer token ids, without special tokens (they continue the prompt)."""
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"])


def encode_pair(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], int]:
    """``(prompt ids + answer ids, len(prompt ids))``: the canonical tokenisation."""
    ids = prompt_ids(tokenizer, prompt)
    return ids + answer_ids(tokenizer, answer), len(ids)


def encode_pairs(
    tokenizer: Any, prompts: Sequence[str], answers: Sequence[str]
) -> list[tuple[list[int], int]]:
    """:func:`encode_pair` for many pairs in two batched tokenizer calls (same ids, faster)."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        return []
    p_ids = tokenizer(list(prompts))["input_ids"]
    a_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    return [(list(p) + list(a), len(p)) for p, a in zip(p_ids, a_ids, strict=True)]


# --------------------------------------------------------------------------- hybrid (LLaRA)

# Token id of item ``i`` inside a hybrid prompt: ``ITEM_TOKEN_BASE + i``. No vocabulary is that
# large, so these ids never collide with text tokens; the ``llara`` victim's input embedding
# (``victims.llara.HybridEmbedding``) maps them to ``projector(E[i])``. Every other part of a
# model (and both evaluation protocols) sees ordinary token ids.
ITEM_TOKEN_BASE = 1 << 40
_MARK = "\x1f"  # unit separator: marks the end of a title while a hybrid prompt is built


class HybridPrompt:
    """A LLaRA hybrid prompt: the text prompt plus one item token right after each history and
    candidate title (``marks`` = character offsets in ``text`` where the titles end, ``items``
    = their item ids, in text order). ``text`` is exactly the text-only prompt, so the
    curriculum's text-only variant is ``text`` itself."""

    __slots__ = ("items", "marks", "text")

    def __init__(self, text: str, marks: Sequence[int], items: Sequence[int]):
        if len(marks) != len(items):
            raise ValueError(f"{len(marks)} item marks but {len(items)} items")
        self.text = text
        self.marks = tuple(int(m) for m in marks)
        self.items = tuple(int(i) for i in items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridPrompt) and (self.text, self.marks, self.items) == (
            other.text, other.marks, other.items)

    def __hash__(self) -> int:
        return hash((self.text, self.marks, self.items))

    def __repr__(self) -> str:
        return f"HybridPrompt({self.text!r}, items={self.items})"


def build_hybrid_prompt(
    history_titles: Sequence[str],
    history_items: Sequence[int],
    candidate_titles: Sequence[str],
    candidate_items: Sequence[int],
    domain: str,
    template: int = 0,
) -> HybridPrompt:
    """:func:`build_prompt` with an item token after every history and candidate title."""
    if len(history_titles) != len(history_items) or len(candidate_titles) != len(candidate_items):
        raise ValueError("one item id per title is needed")
    if any(_MARK in t for t in (*history_titles, *candidate_titles)):
        raise ConfigError("a title contains the control character U+001F; clean the catalog")
    marked = build_prompt(
        [t + _MARK for t in history_titles], [t + _MARK for t in candidate_titles], domain, template
    )
    parts = marked.split(_MARK)
    marks, pos = [], 0
    for part in parts[:-1]:
        pos += len(part)
        marks.append(pos)
    return HybridPrompt("".join(parts), marks, [*history_items, *candidate_items])


def sample_hybrid_prompt(
    sample: Sample,
    catalog: Catalog,
    overrides: Mapping[int, str] | None = None,
    template: int = 0,
) -> HybridPrompt:
    """The hybrid version of :func:`sample_prompt` (same text, plus the item tokens)."""
    history, candidates = sample_titles(sample, catalog, overrides)
    return build_hybrid_prompt(
        history, sample.history, candidates, sample.candidates, catalog.domain, template
    )


def hybrid_prompt_ids(tokenizer: Any, prompts: Sequence[HybridPrompt]) -> list[list[int]]:
    """Token ids of hybrid prompts: the text tokenised exactly as the text-only prompt (one
    batched call with the tokenizer's special tokens), then ``ITEM_TOKEN_BASE + item`` inserted
    after the last token that starts before each title's end. Removing the item tokens gives
    the text-only prompt's ids. Needs a fast tokenizer (character offsets)."""
    if not prompts:
        return []
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("hybrid (llara) prompts need a fast tokenizer (character offsets)")
    enc = tokenizer([p.text for p in prompts], return_offsets_mapping=True)
    out = []
    for prompt, ids, offsets in zip(prompts, enc["input_ids"], enc["offset_mapping"], strict=True):
        spans = [(int(s), int(e)) for s, e in offsets]
        lead = 0  # leading special tokens (BOS): offsets (0, 0)
        while lead < len(spans) and spans[lead] == (0, 0):
            lead += 1
        end = len(spans)  # trailing special tokens (EOS) stay last
        while end > lead and spans[end - 1] == (0, 0):
            end -= 1
        result = list(ids[:lead])
        i = lead
        for mark, item in zip(prompt.marks, prompt.items, strict=True):
            while i < end and spans[i][0] < mark:
                result.append(int(ids[i]))
                i += 1
            result.append(ITEM_TOKEN_BASE + item)
        result += [int(t) for t in ids[i:]]
        out.append(result)
    return out


def is_item_token(token_id: int) -> bool:
    return token_id >= ITEM_TOKEN_BASE
