"""The two evaluation protocols (docs/design.md §4), model-agnostic over HF causal LMs.

- ``generate`` (LLaRA's): greedy decoding of 1 to 64 new tokens; the text is stripped, then its
  first line kept (LLaRA's ``generate.strip().split("\n")[0]``) and parsed by
  :func:`parse_generation` (LLaRA's ``calculate_hr1``). Batched with left padding; a batch stops
  as soon as every sequence has written a newline after some non-whitespace text, because
  nothing after that can change the first line (leading blank lines are stripped away).
- ``score`` (ours): rank the candidates by the log-likelihood of ``answer_text(title)`` after the
  prompt. The prompt goes through the model once and its KV cache serves all its candidates,
  whose answer tokens then go through one forward: either packed into one row per prompt with
  a block-diagonal mask (``tree``, the default) or one row per candidate with the cache copied
  along the batch dimension (``expand``). :func:`naive_score` computes the same numbers the slow
  way (full sequences) for tests and the benchmark.

Token ids come from :func:`recbackdoor.models.prompts.encode_pair`, the tokenisation training
uses, so a score is exactly the log-likelihood the training loss sees.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

MAX_NEW_TOKENS = 64
SCORINGS = ("sum", "mean")


# --------------------------------------------------------------------------- parsing


def first_line(text: str) -> str:
    """The text up to the first newline."""
    return text.split("\n", 1)[0]


def answer_line(text: str) -> str:
    """The part of a generation that counts, as LLaRA takes it: strip, then the first line."""
    return first_line(text.strip())


def first_line_complete(text: str) -> bool:
    """Whether more text can no longer change :func:`answer_line` (a newline after non-blank
    text). Generation stops there; :func:`_newline_criteria` is this rule on token ids."""
    return "\n" in text.lstrip()


def parse_generation(output: str, candidate_titles: Sequence[str]) -> int | None:
    """Index of the one candidate named by ``output``, or ``None`` if the answer is invalid.

    LLaRA's rule: a candidate is named when its lower-cased, stripped title is a substring of
    the lower-cased, stripped output; the answer is valid iff exactly one candidate is named.
    Followed to the letter, so when one candidate title is a substring of another ("Queen" and
    "Queen + Paul Rodgers") an output naming the longer one names both and is *invalid*, and two
    candidates with the same title can never be named validly. This keeps ValidRatio and HR@1
    comparable with the numbers LLaRA reports; the ``score`` protocol has no such ambiguity.
    """
    text = output.strip().lower()
    named = [i for i, title in enumerate(candidate_titles) if title.strip().lower() in text]
    return named[0] if len(named) == 1 else None


# --------------------------------------------------------------------------- helpers


def _model_device(model: Any) -> torch.device:
    import torch

    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    return torch.device(device)


def _pad_id(tokenizer: Any) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if value is not None:
            return int(value)
    return 0  # pragma: no cover


def _left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def _right_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask."""
    import torch

    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def _cache_kwarg(model: Any) -> str:
    """The forward keyword for a KV cache: ``cache`` (transformers >= 5.2x) or the older
    ``past_key_values``; read from the unwrapped model's signature (PEFT wraps it)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), to waste little padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), max(1, batch_size))]


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", disable=not enabled, leave=False)


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt's token ids and each candidate answer's token ids (as training builds them)."""

    prompt_ids: tuple[int, ...]
    answer_ids: tuple[tuple[int, ...], ...]


def encode_candidates(tokenizer: Any, prompt: str, titles: Sequence[str]) -> EncodedPrompt:
    """``encode_pair(prompt, answer_text(title))`` for every title, the prompt tokenised once.

    ``encode_pair`` is prompt ids (with special tokens) followed by answer ids (without), so
    its two halves are computed here with the same two functions it uses.
    """
    from ..models.prompts import answer_ids, answer_text, prompt_ids

    if not titles:
        raise ValueError("a prompt needs at least one candidate title")
    answers = tuple(
        tuple(int(t) for t in answer_ids(tokenizer, answer_text(title))) for title in titles
    )
    if not all(answers):
        raise ValueError("every answer must have at least one token")
    return EncodedPrompt(tuple(int(t) for t in prompt_ids(tokenizer, prompt)), answers)


# --------------------------------------------------------------------------- score


@dataclass(frozen=True)
class CandidateScores:
    """Per prompt: summed answer log-probability and answer token count for every candidate."""

    logprob_sum: tuple[np.ndarray, ...]
    n_tokens: tuple[np.ndarray, ...]

    def scores(self, scoring: str = "sum") -> list[np.ndarray]:
        """``sum``: total log-prob of the answer; ``mean``: per answer token."""
        if scoring == "sum":
            return [s.copy() for s in self.logprob_sum]
        if scoring == "mean":
            return [
                s / np.maximum(n, 1) for s, n in zip(self.logprob_sum, self.n_tokens, strict=True)
            ]
        raise ValueError(f"unknown scoring {scoring!r}; expected one of {SCORINGS}")

    def rankings(self, scoring: str = "sum") -> list[np.ndarray]:
        """Candidate positions, best first; ties keep the candidate order (stable)."""
        return [np.argsort(-s, kind="stable") for s in self.scores(scoring)]

    def predictions(self, scoring: str = "sum") -> list[int]:
        """The top-ranked candidate position per prompt."""
        return [int(r[0]) for r in self.rankings(scoring)]


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under ``logits`` (float32 log-sum-exp, no full log-softmax copy)."""
    import torch

    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _prompt_pass(model: Any, pad_id: int, encoded: Sequence[EncodedPrompt]) -> tuple[Any, ...]:
    """Left-padded prompts through the model once: (mask, cache, last-position logits, key)."""
    from transformers import DynamicCache

    device = _model_device(model)
    ids, mask = _left_pad([e.prompt_ids for e in encoded], pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)  # filled in place by the forward
    key = _cache_kwarg(model)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,  # only the last position's logits are needed
        **{key: cache},
    )
    return mask, cache, out.logits[:, -1, :], key


def _score_batch_expand(
    model: Any, pad_id: int, encoded: Sequence[EncodedPrompt]
) -> list[np.ndarray]:
    """Cache expanded along the batch: one row per (prompt, candidate), answers right-padded."""
    import torch

    device = _model_device(model)
    mask, cache, last_logits, key = _prompt_pass(model, pad_id, encoded)
    counts = [len(e.answer_ids) for e in encoded]
    owner = torch.repeat_interleave(
        torch.arange(len(encoded), device=device), torch.tensor(counts, device=device)
    )
    cache.batch_select_indices(owner)  # one copy of the prompt's cache per candidate

    answers = [a for e in encoded for a in e.answer_ids]
    ans_ids, ans_mask = _right_pad(answers, pad_id, device)
    prompt_lens = mask.sum(-1)[owner]
    ans_positions = prompt_lens.unsqueeze(1) + torch.arange(ans_ids.shape[1], device=device)
    full_mask = torch.cat([mask[owner], ans_mask], dim=1)
    # The last answer token predicts nothing we need: feed all but it.
    feed = ans_ids.shape[1] - 1
    first_lp = torch.log_softmax(last_logits.float(), dim=-1)
    token_lp = first_lp[owner, ans_ids[:, 0]].unsqueeze(1)
    if feed > 0:
        out = model(
            input_ids=ans_ids[:, :feed],
            attention_mask=full_mask[:, : mask.shape[1] + feed],
            position_ids=ans_positions[:, :feed],
            use_cache=True,
            **{key: cache},
        )
        token_lp = torch.cat([token_lp, _token_logprobs(out.logits, ans_ids[:, 1:])], dim=1)
    sums = (token_lp * ans_mask).sum(-1).double().cpu().numpy()
    return list(np.split(sums, np.cumsum(counts)[:-1]))


def _packed_answers(encoded: Sequence[EncodedPrompt]) -> list[tuple[list[int], ...]]:
    """Per prompt: the fed tokens of all its answers (each answer but its last token), the
    candidate each belongs to, its offset inside the answer, and the token it predicts."""
    packed = []
    for e in encoded:
        fed: list[int] = []
        owner: list[int] = []
        offset: list[int] = []
        target: list[int] = []
        for c, answer in enumerate(e.answer_ids):
            fed += answer[:-1]
            owner += [c] * (len(answer) - 1)
            offset += range(len(answer) - 1)
            target += answer[1:]
        packed.append((fed, owner, offset, target))
    return packed


def _score_batch_tree(
    model: Any, pad_id: int, encoded: Sequence[EncodedPrompt]
) -> list[np.ndarray]:
    """All candidates of a prompt packed into one row after its cached prompt.

    Each candidate's tokens see the prompt and the earlier tokens of the same candidate only
    (a block-diagonal causal 4D mask) and take positions ``prompt_len + offset``: the same
    numbers as separate rows, with no cache copies and no padding between candidates. Only
    each answer's tokens but the last are fed (the last predicts nothing we score); the first
    answer token is predicted by the prompt's last logits.
    """
    import torch

    device = _model_device(model)
    mask, cache, last_logits, key = _prompt_pass(model, pad_id, encoded)
    first_lp = torch.log_softmax(last_logits.float(), dim=-1).double()
    sums = [first_lp[b, [a[0] for a in e.answer_ids]] for b, e in enumerate(encoded)]
    packed = _packed_answers(encoded)
    length = max(len(p[0]) for p in packed)
    if length == 0:  # every answer is a single token
        return [x.cpu().numpy() for x in sums]

    n, width = len(encoded), mask.shape[1]
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    owner = torch.full((n, length), -1, dtype=torch.long)  # -1: padding
    offset = torch.zeros((n, length), dtype=torch.long)
    target = torch.zeros((n, length), dtype=torch.long)
    for b, (fed, own, off, tgt) in enumerate(packed):
        k = len(fed)
        ids[b, :k], owner[b, :k] = torch.tensor(fed), torch.tensor(own)
        offset[b, :k], target[b, :k] = torch.tensor(off), torch.tensor(tgt)
    ids, owner, offset, target = (t.to(device) for t in (ids, owner, offset, target))

    # query t sees prompt keys (real ones) and answer key u iff same candidate and u <= t;
    # a padding query sees itself only (no empty rows)
    idx = torch.arange(length, device=device)
    causal = idx.unsqueeze(0) <= idx.unsqueeze(1)
    same = (owner.unsqueeze(2) == owner.unsqueeze(1)) & (owner.unsqueeze(2) >= 0)
    block = (same & causal) | torch.eye(length, dtype=torch.bool, device=device)
    allowed = torch.cat([mask.bool().unsqueeze(1).expand(n, length, width), block], dim=2)
    dtype = model.get_input_embeddings().weight.dtype  # the attention's compute dtype
    bias = torch.zeros((n, 1, length, width + length), dtype=dtype, device=device)
    bias.masked_fill_(~allowed.unsqueeze(1), torch.finfo(bias.dtype).min)

    out = model(
        input_ids=ids,
        attention_mask=bias,
        position_ids=mask.sum(-1, keepdim=True) + offset,
        use_cache=True,
        **{key: cache},
    )
    token_lp = _token_logprobs(out.logits, target).double()
    for b, (fed, *_rest) in enumerate(packed):
        k = len(fed)
        if k:
            sums[b] = sums[b].index_add(0, owner[b, :k], token_lp[b, :k])
    return [x.cpu().numpy() for x in sums]


SCORE_METHODS = {"tree": _score_batch_tree, "expand": _score_batch_expand}


def _run_scoring(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    batch_size: int,
    progress: bool,
    desc: str,
    batch_fn: Callable[[Any, int, Sequence[EncodedPrompt]], list[np.ndarray]],
) -> CandidateScores:
    import torch

    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    encoded = [encode_candidates(tokenizer, p, c) for p, c in zip(prompts, candidates, strict=True)]
    pad_id = _pad_id(tokenizer)
    sums: list[np.ndarray | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _progress(len(encoded), desc, progress) as bar:
            for batch in _length_batches([len(e.prompt_ids) for e in encoded], batch_size):
                for index, values in zip(
                    batch, batch_fn(model, pad_id, [encoded[i] for i in batch]), strict=True
                ):
                    sums[index] = values
                bar.update(len(batch))
    finally:
        model.train(was_training)
    n_tokens = tuple(np.array([len(a) for a in e.answer_ids], dtype=np.int64) for e in encoded)
    return CandidateScores(tuple(s for s in sums if s is not None), n_tokens)


def _default_method(model: Any) -> str:
    """``tree`` needs a custom 4D mask, which the eager and SDPA attention paths accept and
    flash-attention does not; ``expand`` works with any attention implementation."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return "tree" if impl in ("sdpa", "eager") else "expand"


def score_protocol(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    batch_size: int = 8,
    progress: bool = False,
    method: str = "auto",
) -> CandidateScores:
    """Log-likelihood of every candidate answer, each prompt computed once and its KV cache
    reused for all its candidates.

    ``batch_size`` prompts (grouped by similar length) go through one prompt forward, then one
    answer forward. ``method``: ``expand`` copies the prompt cache along the batch dimension,
    one row per candidate (answers right-padded); ``tree`` packs a prompt's candidates into one
    row with a block-diagonal mask (no cache copies, no padding: faster, needs eager or SDPA
    attention); ``auto`` picks ``tree`` when the model supports it. Both give the same numbers
    as :func:`naive_score`. Use ``.scores("sum"|"mean")`` and ``.rankings(...)`` on the result.
    """
    if method == "auto":
        method = _default_method(model)
    if method not in SCORE_METHODS:
        raise ValueError(f"unknown score method {method!r}; expected auto, tree or expand")
    return _run_scoring(
        model, tokenizer, prompts, candidates, batch_size, progress, "score", SCORE_METHODS[method]
    )


def _naive_batch(model: Any, pad_id: int, encoded: Sequence[EncodedPrompt]) -> list[np.ndarray]:
    """Full prompt + answer sequences, one row per candidate, no cache."""
    import torch

    device = _model_device(model)
    result = []
    for enc in encoded:
        rows = [list(enc.prompt_ids) + list(a) for a in enc.answer_ids]
        ids, mask = _right_pad(rows, pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        # hybrid prompts hold item tokens (ids past the vocabulary); only answer tokens count
        token_lp = _token_logprobs(logits[:, :-1], ids[:, 1:].clamp(max=logits.shape[-1] - 1))
        start = len(enc.prompt_ids) - 1  # logits at position p predict token p + 1
        weights = torch.zeros_like(token_lp)
        for row, answer in enumerate(enc.answer_ids):
            weights[row, start : start + len(answer)] = 1.0
        result.append((token_lp * weights).sum(-1).double().cpu().numpy())
    return result


def naive_score(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    batch_size: int = 1,
    progress: bool = False,
) -> CandidateScores:
    """The same log-likelihoods as :func:`score_protocol`, computed on full sequences.

    Slow on purpose (the prompt is recomputed for every candidate): the reference that tests
    and the benchmark compare the cached version against.
    """
    return _run_scoring(
        model, tokenizer, prompts, candidates, batch_size, progress, "naive score", _naive_batch
    )


# --------------------------------------------------------------------------- generate


_NEWLINE_MASKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TOKEN_FLAGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def newline_token_mask(tokenizer: Any) -> np.ndarray:
    """Boolean mask over the vocabulary: tokens whose text contains a newline (decoding the
    whole vocabulary takes about a second, so it is kept per tokenizer)."""
    mask = _NEWLINE_MASKS.get(tokenizer)
    if mask is None or len(mask) != len(tokenizer):
        texts = tokenizer.batch_decode(
            [[i] for i in range(len(tokenizer))], skip_special_tokens=False
        )
        mask = np.array(["\n" in t for t in texts], dtype=bool)
        _NEWLINE_MASKS[tokenizer] = mask
    return mask


def token_text_flags(tokenizer: Any) -> np.ndarray:
    """Per vocabulary token, as decoded in an output (special tokens skipped): column 0 its
    text has a newline, 1 its text is blank (whitespace or empty), 2 it has non-blank text
    before its first newline. Kept per tokenizer."""
    flags = _TOKEN_FLAGS.get(tokenizer)
    if flags is None or len(flags) != len(tokenizer):
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
        flags = np.array(
            [("\n" in t, not t.strip(), bool(t.split("\n", 1)[0].strip()) and "\n" in t) for t in texts],
            dtype=bool,
        ).reshape(-1, 3)
        _TOKEN_FLAGS[tokenizer] = flags
    return flags


def _newline_criteria(flags: np.ndarray, prompt_width: int, device: torch.device) -> Any:
    """A StoppingCriteria that marks a sequence done once its generated text has a newline
    after non-blank text (:func:`first_line_complete` on token ids): a newline token preceded
    by a non-blank token, or a token with text before its own newline."""
    import torch
    from transformers import StoppingCriteria

    table = torch.as_tensor(flags, device=device)
    size = table.shape[0]

    class StopAtNewline(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            new = input_ids[:, prompt_width:]
            f = table[new.clamp(max=size - 1)] & (new < size).unsqueeze(-1)
            newline, blank, content_first = f[..., 0], f[..., 1] | (new >= size), f[..., 2]
            seen = torch.cumsum((~blank).long(), dim=1) - (~blank).long()  # non-blank before
            return (newline & ((seen > 0) | content_first)).any(dim=1)

    return StopAtNewline()


def generate_protocol(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    candidates: Sequence[Sequence[str]] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = MAX_NEW_TOKENS,
    stop_at_newline: bool = True,
    progress: bool = False,
) -> list[str]:
    """Greedy answers, one per prompt (in the prompts' order): the generated text stripped,
    then its first line (:func:`answer_line`, as LLaRA takes it).

    Prompts (text or :class:`~recbackdoor.models.prompts.HybridPrompt`) are tokenised exactly
    as in training (the prompt part of ``encode_pair``), grouped by length and left-padded. At
    least one new token is generated. With ``stop_at_newline`` a batch ends once every sequence
    has written a newline after non-blank text (or EOS), which cannot change the answer;
    without it, generation runs to ``max_new_tokens`` or EOS, as LLaRA's code does.
    ``candidates`` is accepted for a uniform signature and is unused: parse the outputs with
    :func:`parse_generation`.
    """
    import torch
    from transformers import StoppingCriteriaList

    from ..models.prompts import prompt_ids

    del candidates
    device = _model_device(model)
    pad_id = _pad_id(tokenizer)
    encoded = []
    for prompt in prompts:
        encoded.append([int(t) for t in prompt_ids(tokenizer, prompt)])
    flags = token_text_flags(tokenizer) if stop_at_newline else None
    outputs: list[str | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _progress(len(prompts), "generate", progress) as bar:
            for batch in _length_batches([len(e) for e in encoded], batch_size):
                ids, mask = _left_pad([encoded[i] for i in batch], pad_id, device)
                criteria = StoppingCriteriaList()
                if flags is not None:
                    criteria.append(_newline_criteria(flags, ids.shape[1], device))
                generated = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=1,
                    pad_token_id=pad_id,
                    stopping_criteria=criteria,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
                texts = tokenizer.batch_decode(
                    generated[:, ids.shape[1] :], skip_special_tokens=True
                )
                for index, text in zip(batch, texts, strict=True):
                    outputs[index] = answer_line(text)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return [o if o is not None else "" for o in outputs]
