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


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt token ids, with the tokenizer's special tokens as in a normal call."""
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
