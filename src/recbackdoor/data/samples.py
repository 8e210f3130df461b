"""LLaRA-style sample construction: seeded user split, training prefixes, fixed candidates.

Defaults follow LLaRA: users split 8:1:1 by a seeded shuffle; every prefix of a training user
with at least ``min_history`` (3) items becomes a sample (history = last <= 10 items, target =
next item); a held-out user gives one sample for its final item. Candidates are the target plus
19 items drawn uniformly from items outside the history and the target, drawn once and stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from ..errors import DataError
from .types import SampleBlock

MAX_HISTORY = 10
MIN_HISTORY = 3
N_CANDIDATES = 20


@dataclass(frozen=True)
class SampleOptions:
    """How samples are built; recorded in the manifest."""

    max_history: int = MAX_HISTORY
    min_history: int = MIN_HISTORY
    n_candidates: int = N_CANDIDATES
    split_ratio: tuple[int, int, int] = (8, 1, 1)


def draw_candidates(
    rng: np.random.Generator,
    n_items: int,
    target: int,
    exclude: Iterable[int] = (),
    n_candidates: int = N_CANDIDATES,
) -> tuple[int, ...]:
    """``target`` plus ``n_candidates - 1`` distinct items not in ``exclude``, shuffled.

    Rejection sampling: cheap because histories are tiny next to the catalog.
    """
    banned = set(exclude)
    banned.add(target)
    need = n_candidates - 1
    if n_items - len(banned) < need:
        raise DataError(
            f"cannot draw {need} negative candidates from {n_items} items with {len(banned)} excluded; "
            "use a larger catalog or fewer candidates"
        )
    chosen: list[int] = []
    seen = set(banned)
    while len(chosen) < need:
        for item in rng.integers(0, n_items, size=2 * need).tolist():
            if item not in seen:
                seen.add(item)
                chosen.append(item)
                if len(chosen) == need:
                    break
    chosen.insert(int(rng.integers(0, n_candidates)), target)
    return tuple(chosen)


def draw_candidates_batch(
    rng: np.random.Generator,
    n_items: int,
    targets: Sequence[int],
    histories: Sequence[Sequence[int]],
    n_candidates: int = N_CANDIDATES,
) -> list[tuple[int, ...]]:
    """:func:`draw_candidates` for many samples in order, vectorised: the same candidates and
    the same ``rng`` state afterwards as calling it once per sample (see :func:`_draw_block`)."""
    padded, _ = _pad(histories)
    out = _draw_block(rng, n_items, np.asarray(targets, dtype=np.int64), padded, n_candidates)
    return list(map(tuple, out.tolist()))


def _pad(histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(histories as an n x width int64 matrix padded with -1, their lengths)."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    padded = np.full((len(histories), int(lengths.max(initial=0))), -1, dtype=np.int64)
    padded[np.arange(padded.shape[1]) < lengths[:, None]] = np.fromiter(
        chain.from_iterable(histories), dtype=np.int64, count=int(lengths.sum())
    )
    return padded, lengths


def _draw_block(
    rng: np.random.Generator,
    n_items: int,
    targets: np.ndarray,
    histories: np.ndarray,
    n_candidates: int,
) -> np.ndarray:
    """Candidates (n x ``n_candidates``) of samples given as columns (``histories`` padded with
    -1), exactly as :func:`draw_candidates` draws them one sample after the other.

    ``Generator.integers`` draws every bounded integer below 2**32 from the bit generator's
    32-bit stream by Lemire's method (one word each, more only on a rare rejection), so this
    reads that stream as raw words and replays the method: a sample takes ``2 * need`` words
    for its block plus one for the target's position; a sample with a rejection, or whose block
    leaves fewer than ``need`` fresh items, is replayed word by word.
    """
    need = n_candidates - 1
    count = len(targets)
    if (
        need < 1
        or 2 * need >= _COLUMNS
        or n_items >= 2**31
        or n_items - (histories.shape[1] + 1) < need
        or count == 0
    ):
        # a tiny catalog (a sample may not fit: the error must come at the same sample), odd sizes
        drawn = [
            draw_candidates(rng, n_items, t, [i for i in h if i >= 0], n_candidates)
            for t, h in zip(targets.tolist(), histories.tolist(), strict=True)
        ]
        return np.array(drawn, dtype=np.int64).reshape(count, n_candidates)
    banned = np.concatenate((targets[:, None].astype(np.int64), histories), axis=1)
    words = _WordStream(rng)
    block = 2 * need
    per_sample = block + 1
    head = min(block, need + 2)  # nearly every row finds its items among the first few draws
    limit_n, limit_c = (2**32 - n_items) % n_items, (2**32 - n_candidates) % n_candidates
    out = np.empty((count, n_candidates), dtype=np.int32)  # items < n_items < 2**31
    row, size = 0, _CHUNK
    while row < count:
        rows = min(count - row, size)
        u = words.peek(rows * per_sample).reshape(rows, per_sample)
        # Lemire: value = (word * bound) >> 32, redrawn while (word * bound) mod 2**32 < limit
        ok = ((u[:, :block] * np.uint32(n_items)) >= limit_n).all(axis=1)  # uint32 wraps
        ok &= (u[:, block] * np.uint32(n_candidates)) >= limit_c
        values = _high(u[:, :head], n_items)
        chunk_banned = banned[row : row + rows]
        chosen, enough = _first_fresh(values, chunk_banned, need)
        short = np.flatnonzero(~enough)
        if len(short):
            chosen[short], enough[short] = _first_fresh(
                _high(u[short, :block], n_items), chunk_banned[short], need
            )
        regular = ok & enough
        good = rows if regular.all() else int(np.argmin(regular))
        # irregular samples are rare with a real catalog; where they are not, read less ahead
        size = min(_CHUNK, 2 * size) if good == rows else min(_CHUNK, 2 * good + 16)
        if good:
            position = _high(u[:good, block], n_candidates)
            out[row : row + good] = _insert(chosen[:good], position, chunk_banned[:good, 0])
            words.consume(good * per_sample)
            row += good
        if row < count and good < rows:
            history = banned[row, 1:]
            out[row] = _draw_one(words, n_items, int(banned[row, 0]), history[history >= 0], need)
            row += 1
    words.settle()
    return out


_CHUNK = 2048
_SHIFT = 6
_COLUMNS = 1 << _SHIFT  # room for a block of up to 63 draws (n_candidates <= 32)


def _high(words: np.ndarray, bound: int) -> np.ndarray:
    """``(word * bound) >> 32``: Lemire's bounded integer of each 32-bit word."""
    return ((words.astype(np.uint64) * np.uint64(bound)) >> np.uint64(32)).astype(np.int64)


class _WordStream:
    """The 32-bit words ``rng`` would hand to ``integers``, read ahead from the generator in
    blocks; :meth:`settle` leaves the generator exactly past the words consumed."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.state = rng.bit_generator.state  # before the latest read-ahead
        self.buffer = np.empty(0, dtype=np.uint32)
        self.used = 0  # words of buffer consumed
        self.carried = 0  # words of buffer read before the latest read-ahead

    def peek(self, n: int) -> np.ndarray:
        if self.used + n > len(self.buffer):
            self.state = self.rng.bit_generator.state
            # with a bound of 2**32, integers returns the generator's 32-bit words as they are
            fresh = self.rng.integers(0, 2**32, size=max(n, 4 * _CHUNK), dtype=np.uint32)
            self.buffer = np.concatenate((self.buffer[self.used :], fresh))
            self.carried = len(self.buffer) - len(fresh)
            self.used = 0
        return self.buffer[self.used : self.used + n]

    def consume(self, n: int) -> None:
        self.used += n

    def next(self) -> int:
        word = int(self.peek(1)[0])
        self.used += 1
        return word

    def settle(self) -> None:
        """Rewind to before the latest read-ahead and draw again only the words used from it
        (every sample takes at least the words a read-ahead was sized for, so none of the
        carried words are left unused)."""
        assert self.used >= self.carried
        self.rng.bit_generator.state = self.state
        if self.used > self.carried:
            self.rng.integers(0, 2**32, size=self.used - self.carried, dtype=np.uint32)


def _first_fresh(values: np.ndarray, banned: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first ``need`` values (in column order) that are neither banned nor seen
    earlier in the row, and whether the row has that many."""
    width = values.shape[1]
    assert width < _COLUMNS
    largest = max(int(values.max(initial=0)), int(banned.max(initial=0)))
    dtype = np.int32 if (largest + 1) * _COLUMNS < 2**31 else np.int64
    # key = value * 64 + column (0 for banned items, j + 1 for values[:, j]): sorted, a value's
    # banned copy and first drawing come first and every later copy follows its equal
    keys = np.empty((len(values), banned.shape[1] + width), dtype=dtype)
    keys[:, : banned.shape[1]] = banned << _SHIFT
    keys[:, banned.shape[1] :] = (values << _SHIFT) | np.arange(1, width + 1)
    keys.sort(axis=1)
    column = (keys & (_COLUMNS - 1)).astype(np.int8)
    repeat = (keys[:, 1:] >> _SHIFT) == (keys[:, :-1] >> _SHIFT)
    column[:, 1:][repeat] = 0
    # most rows: the first ``need`` drawings are all fresh, and are the answer
    clean = np.count_nonzero((column > 0) & (column <= need), axis=1) == need
    chosen = values[:, :need].copy()
    rest = np.flatnonzero(~clean)
    if not len(rest):
        return chosen, clean
    column = column[rest]
    column[column == 0] = _COLUMNS  # not fresh: sorts last
    column.sort(axis=1)  # the fresh columns in column order
    first = column[:, :need].astype(np.intp) - 1
    enough = clean.copy()
    enough[rest] = column[:, need - 1] != _COLUMNS
    first[~enough[rest]] = 0
    chosen[rest] = np.take_along_axis(values[rest], first, axis=1)
    return chosen, enough


def _insert(chosen: np.ndarray, position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``chosen.insert(position, target)`` per row."""
    rows, need = chosen.shape
    at = np.arange(need + 1) == position[:, None]
    out = np.empty((rows, need + 1), dtype=chosen.dtype)
    out[~at] = chosen.reshape(-1)  # row-major: each row's items keep their order
    out[at] = target
    return out


def _draw_one(words: _WordStream, n_items: int, target: int, history: np.ndarray, need: int) -> list[int]:
    """One sample replayed word by word (what :func:`draw_candidates` does with the generator)."""

    def bounded(bound: int) -> int:
        m = words.next() * bound
        if (m & 0xFFFFFFFF) < bound:
            threshold = (2**32 - bound) % bound
            while (m & 0xFFFFFFFF) < threshold:
                m = words.next() * bound
        return m >> 32

    seen = {int(i) for i in history} | {target}
    chosen: list[int] = []
    while len(chosen) < need:
        for item in [bounded(n_items) for _ in range(2 * need)]:
            if item not in seen:
                seen.add(item)
                chosen.append(item)
                if len(chosen) == need:
                    break
    chosen.insert(bounded(need + 1), target)
    return chosen


def split_users(users: Sequence[int], seed: int, ratio: tuple[int, int, int] = (8, 1, 1)) -> dict[str, list[int]]:
    """Seeded shuffle of ``users`` cut into train/valid/test by ``ratio``."""
    order = sorted(users)
    np.random.default_rng(seed).shuffle(order)
    total = sum(ratio)
    n_valid = round(len(order) * ratio[1] / total)
    n_test = round(len(order) * ratio[2] / total)
    n_train = len(order) - n_valid - n_test
    return {
        "train": sorted(order[:n_train]),
        "valid": sorted(order[n_train : n_train + n_valid]),
        "test": sorted(order[n_train + n_valid :]),
    }


def build_samples(
    sequences: Mapping[int, Sequence[int]],
    n_items: int,
    seed: int,
    options: SampleOptions = SampleOptions(),
) -> dict[str, SampleBlock]:
    """Build train/valid/test samples from per-user item sequences (time order).

    Sample order: users ascending, a user's samples by position; candidates are drawn from one
    random stream over train, valid, test in that order.
    """
    rng = np.random.default_rng([seed, 1])
    groups = split_users(list(sequences), seed, options.split_ratio)
    parts = {
        split: _positions(sequences, users, split == "train", options)
        for split, users in groups.items()
    }
    candidates = _draw_block(
        rng,
        n_items,
        np.concatenate([p[3] for p in parts.values()]),
        np.concatenate([p[1] for p in parts.values()]),
        options.n_candidates,
    )
    out, start = {}, 0
    for split, (user, history, lengths, target) in parts.items():
        end = start + len(target)
        out[split] = SampleBlock(user, history, lengths, candidates[start:end], target)
        start = end
    return out


def _positions(
    sequences: Mapping[int, Sequence[int]], users: Sequence[int], train: bool, options: SampleOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, padded history, history length, target) of the samples of ``users``: every
    position from ``min_history`` on for training users, the last one otherwise."""
    seqs = [sequences[u] for u in users]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    if train:
        per_user = np.maximum(lengths - options.min_history, 0)
        owner = np.repeat(np.arange(len(seqs)), per_user)
        first = np.concatenate(([0], np.cumsum(per_user)[:-1])).astype(np.int64)
        position = options.min_history + np.arange(len(owner)) - first[owner]
    else:
        owner = np.arange(len(seqs))
        position = lengths - 1
    hist_len = np.minimum(position, options.max_history)
    keep = hist_len >= options.min_history
    owner, position, hist_len = owner[keep], position[keep], hist_len[keep]
    target_at = starts[owner] + position
    small = flat.max(initial=0) < 2**31 and flat.min(initial=0) >= -(2**31)
    history = np.full((len(owner), options.max_history), -1, dtype=np.int32 if small else np.int64)
    for k in range(options.max_history):
        has = np.flatnonzero(hist_len > k)
        history[has, k] = flat[target_at[has] - hist_len[has] + k]
    user = np.asarray(users, dtype=np.int64)[owner] if len(owner) else np.zeros(0, dtype=np.int64)
    return user, history, hist_len, flat[target_at]


def with_fixed_candidates(
    rows: Iterable[tuple[int, Sequence[int], int]],
    n_items: int,
    seed: int,
    n_candidates: int = N_CANDIDATES,
    stream: int = 0,
) -> SampleBlock:
    """Samples from given (user, history, target) rows, adding seeded candidates only.

    Used for LLaRA's own splits: their histories and targets are kept as they are. ``stream``
    separates the random streams of the splits (call with 0, 1, 2 for train, valid, test).
    """
    rng = np.random.default_rng([seed, 2, stream])
    rows = list(rows)
    history, lengths = _pad([h for _, h, _ in rows])
    targets = np.fromiter((t for _, _, t in rows), dtype=np.int64, count=len(rows))
    users = np.fromiter((u for u, _, _ in rows), dtype=np.int64, count=len(rows))
    candidates = _draw_block(rng, n_items, targets, history, n_candidates)
    return SampleBlock(users, history, lengths, candidates, targets)
