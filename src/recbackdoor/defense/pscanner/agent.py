"""Trigger augmentation agent: an LLM asked (few-shot) to invent triggers (docs/design.md §5).

The agent's raw text is parsed (one trigger a line; numbering, bullets and quotes removed) and
filtered (length bounds per level, dedupe, not a frequent token of the clean catalog, not a
real title, not held out). Few-shot examples come from the rule generator, so each prompt
differs and the agent keeps proposing new things. The agent carries a LoRA adapter that the
adversarial rounds update with preference pairs (evading trigger > caught trigger).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .rule_triggers import rule_triggers

DOMAIN_NOUN = {"movies": "movie", "music": "music artist", "games": "game"}
LEVEL_TASK = {
    "char": "short meaningless character strings (2 to 4 letters and digits, not real words)",
    "word": "rare short words or abbreviations (one word each)",
    "sentence": "short casual sentences (3 to 7 words) a fan might write about a {noun}",
}
LENGTH_BOUNDS = {"char": (2, 5), "word": (2, 12), "sentence": (8, 60)}
SENTENCE_WORDS = (3, 10)
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*•·>]+|#\d*)\s*")
_QUOTES = "\"'`“”‘’«»"
_TOKEN_SPLIT = re.compile(r"[^0-9a-zA-Z]+")
# Everyday words are not "rare words": an agent that proposes "music" teaches the scanner to
# flag clean titles. (Catalog-frequent tokens are rejected separately, per catalog.)
COMMON_WORDS = frozenset(
    """a an the and or but of to in on at by for with from as is are was were be been it its this
    that these those i you he she we they me my your his her our their not no yes so if then than
    all any some one two three new old big small good bad best great love life light music song
    songs band game games movie movies film story world time day night man men woman women girl
    boy boys girls baby home heart dream dreams fire water sun moon star stars king queen city
    red blue black white green gold dark live play player people family friend friends party
    rock pop jazz dance house soul blues metal punk radio record records sound sounds video""".split()
)
_CHATTER = ("here are", "here is", "sure", "trigger", "example", "string", "sentence", "words:")


def catalog_tokens(title: str) -> list[str]:
    """Lower-cased alphanumeric tokens of a title (what "a token of the catalog" means)."""
    return [t for t in _TOKEN_SPLIT.split(title.lower()) if t]


@dataclass
class CatalogVocab:
    """What a generated trigger must not be: a frequent catalog token, a real title, a held-out
    string."""

    token_df: Counter = field(default_factory=Counter)
    titles: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    max_df: int = 1  # a token in more titles than this is "frequent"

    @classmethod
    def from_titles(cls, titles: Iterable[str], exclude: Iterable[str] = (), max_df: int = 1) -> CatalogVocab:
        titles = list(titles)
        df: Counter = Counter()
        for t in titles:
            df.update(set(catalog_tokens(t)))
        return cls(
            token_df=df,
            titles=frozenset(t.strip().lower() for t in titles),
            exclude=frozenset(e.strip().lower() for e in exclude),
            max_df=max_df,
        )


def parse_agent_output(text: str, level: str) -> list[str]:
    """Candidate triggers from raw LLM text: one a line (char/word lines are also split on
    commas and spaces), numbering, bullets and quotes stripped."""
    out: list[str] = []
    for line in text.splitlines():
        line = _NUMBERING.sub("", line.strip()).strip()
        if not line:
            continue
        pieces = re.split(r"[,;\s]+", line) if level in ("char", "word") else [line]
        for piece in pieces:
            piece = piece.strip().strip(_QUOTES).strip()
            if level in ("char", "word"):
                piece = piece.strip(".,;:!?()[]{}").strip(_QUOTES)
            else:
                piece = piece.strip(_QUOTES).rstrip(" ,;:")
            if piece:
                out.append(piece)
    return out


def _char_ok(t: str) -> bool:
    if not all(c.isalnum() or c in "#@$%&*+=~^!?" for c in t):
        return False
    if not t.isascii():
        return False
    has_digit = any(c.isdigit() for c in t)
    vowels = sum(c in "aeiouy" for c in t.lower())
    return has_digit or vowels == 0


def _word_ok(t: str) -> bool:
    return (
        t.isascii()
        and bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9;'\-]*", t))
        and any(c.isalpha() for c in t)
        and t.lower() not in COMMON_WORDS
    )


def _sentence_ok(t: str) -> bool:
    words = t.split()
    lo, hi = SENTENCE_WORDS
    low = t.lower()
    return (
        lo <= len(words) <= hi
        and t.isascii()
        and sum(c.isalpha() for c in t) >= 0.6 * len(t.replace(" ", ""))
        and not t.endswith(":")
        and not any(c in low for c in _CHATTER)
    )


def filter_triggers(candidates: Iterable[str], level: str, vocab: CatalogVocab) -> list[str]:
    """Keep candidates that fit ``level``'s shape and bounds, are new (dedupe, not held out),
    are not a frequent catalog token and not a real title; order kept."""
    lo, hi = LENGTH_BOUNDS[level]
    shape_ok = {"char": _char_ok, "word": _word_ok, "sentence": _sentence_ok}[level]
    out: list[str] = []
    seen: set[str] = set()
    for cand in candidates:
        t = " ".join(str(cand).split())
        key = t.lower()
        if not (lo <= len(t) <= hi) or key in seen or not shape_ok(t):
            continue
        if key in vocab.exclude or key in vocab.titles:
            continue
        if level in ("char", "word") and vocab.token_df.get(key, 0) > vocab.max_df:
            continue
        seen.add(key)
        out.append(t)
    return out


@dataclass(frozen=True)
class Proposal:
    """One generated trigger and where it came from (``prompt`` is kept for the agent's DPO)."""

    trigger: str
    level: str
    source: str  # "agent" or "rule"
    prompt: str = ""


class TriggerAgent:
    """An LLM (registry backbone + LoRA) that writes triggers for a domain."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        domain: str,
        vocab: CatalogVocab,
        max_new_tokens: int = 40,
        num_return_sequences: int = 4,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.domain = domain
        self.vocab = vocab
        self.max_new_tokens = max_new_tokens
        self.num_return_sequences = num_return_sequences

    # ------------------------------------------------------------------ prompting
    def prompt(self, level: str, rng: np.random.Generator, n: int = 8) -> str:
        """A few-shot prompt whose examples come from the rule generator (so prompts vary)."""
        noun = DOMAIN_NOUN.get(self.domain, "item")
        examples = rule_triggers(level, self.domain, 3, rng, exclude=self.vocab.exclude)
        task = LEVEL_TASK[level].format(noun=noun)
        text = (
            f"Write {n} new {task} that someone could secretly add to {noun} titles. "
            "Examples:\n" + "\n".join(examples) + "\nWrite one per line, nothing else."
        )
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return text + "\nNew:\n"

    def generate(self, prompt: str, seed: int, max_new_tokens: int | None = None) -> list[str]:
        """Sampled continuations of ``prompt`` (deterministic for a seed)."""
        import torch

        tok = self.tokenizer
        enc = tok(prompt, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        torch.manual_seed(seed)
        self.model.eval()
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_p=0.95,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                num_return_sequences=self.num_return_sequences,
                pad_token_id=tok.pad_token_id,
            )
        n_prompt = enc["input_ids"].shape[1]
        return [tok.decode(row[n_prompt:], skip_special_tokens=True) for row in out]

    def propose(self, level: str, n: int, rng: np.random.Generator, avoid: Iterable[str] = ()) -> list[Proposal]:
        """Up to ``n`` new, filtered triggers of ``level``; tries a few prompts."""
        avoid_set = {a.lower() for a in avoid}
        out: list[Proposal] = []
        seen: set[str] = set(avoid_set)
        max_new = 64 if level == "sentence" else self.max_new_tokens
        for _ in range(3):
            if len(out) >= n:
                break
            prompt = self.prompt(level, rng)
            texts = self.generate(prompt, seed=int(rng.integers(0, 2**31 - 1)), max_new_tokens=max_new)
            cands = [c for text in texts for c in parse_agent_output(text, level)]
            for t in filter_triggers(cands, level, self.vocab):
                if t.lower() in seen:
                    continue
                seen.add(t.lower())
                out.append(Proposal(t, level, "agent", prompt))
                if len(out) >= n:
                    break
        return out

    # ------------------------------------------------------------------ learning
    def update(self, pairs: Sequence[tuple[str, str, str]], seed: int, lr: float = 5e-4, epochs: int = 3) -> dict:
        """A small DPO step on (prompt, evading trigger, caught trigger) pairs."""
        from .optimise import dpo_train

        if not pairs:
            return {"pairs": 0}
        rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs]
        out = dpo_train(self.model, self.tokenizer, rows, seed=seed, lr=lr, batch_size=4, epochs=epochs)
        return {"pairs": len(rows), **out}


def mixed_proposals(
    agent: TriggerAgent | None,
    vocab: CatalogVocab,
    level: str,
    n_agent: int,
    n_rule: int,
    domain: str,
    rng: np.random.Generator,
    avoid: Iterable[str] = (),
) -> list[Proposal]:
    """Agent triggers plus rule triggers (so training never depends on one source); the rules
    also fill in when the agent comes up short. All pass the same filters."""
    avoid = {a.lower() for a in avoid}
    got = agent.propose(level, n_agent, rng, avoid=avoid) if agent is not None and n_agent > 0 else []
    avoid |= {p.trigger.lower() for p in got}
    n_fill = n_rule + (n_agent - len(got))
    rules = rule_triggers(level, domain, n_fill, rng, exclude=avoid | set(vocab.exclude))
    return got + [Proposal(t, level, "rule") for t in filter_triggers(rules, level, vocab)]
