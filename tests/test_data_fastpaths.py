"""The vectorised data paths give exactly what the line-by-line / sample-by-sample code gives:
the pyarrow reader of numeric tables, the batched candidate draws, column-built samples."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from recbackdoor.data.io import load_dataset, save_dataset
from recbackdoor.data.samples import (
    SampleOptions,
    build_samples,
    draw_candidates,
    draw_candidates_batch,
    split_users,
    with_fixed_candidates,
)
from recbackdoor.data.sources import textfile
from recbackdoor.data.stats import dataset_stats
from recbackdoor.data.types import Catalog, Sample, SampleBlock, SplitDataset
from recbackdoor.errors import DataError

COLUMNS = [("a", int), ("b", textfile.to_int)]
TABLES = [
    b"1::2\n3::4\n",
    b"\n\n1::2\n\n3::4\n\n",
    b"1::2\r\n3::4\r\n",
    b"-5::007\n",
    b"1::2\n3::4",
    b"\xef\xbb\xbf1::2\n",
    # the Python parser decides these (odd but valid, or an error with its line number)
    b"1::2\r\r\n",
    b"1::2\r3::4\n",
    b"1:::2\n",
    b"1::2::3\n",
    b"1\n",
    b" 1::2\n",
    b"1::-\n",
    b"1::1-2\n",
    b"1::0x10\n",  # pyarrow would read 16
    b"99999999999999999999::1\n",
    b"1::\n",
    b"::1\n",
    b"1::2\n   \n3::4\n",
    b"1\t2\n",
    b"1::3.0\n",
    b"1::3.5\n",
    b"1::+3\n",
    b"1::2\n3::4::5\n3::4\n",
    b"1::2\n3::x\n",
    b"\n \n",
]


def _parsed(path: Path, encoding: str, **kw) -> object:
    try:
        table = textfile.read_table(path, "f", sep="::", columns=COLUMNS, encoding=encoding, **kw)
    except DataError as exc:
        return f"error: {exc}"
    return {k: [int(v) for v in col] for k, col in table.items()}


def _reference(path: Path, encoding: str, **kw) -> object:
    """The reader before the fast path: the whole file decoded, then parsed line by line."""
    try:
        table = textfile._parse_lines(
            textfile.read_text(path, "f", encoding),
            "f",
            sep="::",
            columns=COLUMNS,
            header=kw.get("header"),
            rest_in_last=False,
        )
    except DataError as exc:
        return f"error: {exc}"
    return table


@pytest.mark.parametrize("encoding", ["utf-8", "ISO-8859-1"])
@pytest.mark.parametrize("data", TABLES, ids=range(len(TABLES)))
def test_numeric_fast_path_reads_what_the_line_parser_reads(tmp_path, data, encoding):
    path = tmp_path / "t.dat"
    path.write_bytes(data)
    assert _parsed(path, encoding) == _reference(path, encoding)


def test_fast_path_is_taken_on_clean_files_and_keeps_line_numbers(tmp_path):
    data = b"\n1::2\n\n3::4\n"
    path = tmp_path / "t.dat"
    path.write_bytes(data)
    fast = textfile._read_numeric_fast(
        data, sep="::", columns=COLUMNS, encoding="ISO-8859-1", header=None
    )
    assert fast is not None and list(fast["_line"]) == [2, 4]
    header = ["a", "b"]
    path.write_bytes(b"a::b\r\n1::2\r\n")
    assert _parsed(path, "utf-8", header=header) == {"a": [1], "b": [2], "_line": [2]}
    path.write_bytes(b"x::b\n1::2\n")  # wrong header: the line parser's message
    assert _parsed(path, "utf-8", header=header).startswith("error: f line 1: expected the header")


def _sequential(rng, n_items, targets, histories, n_candidates):
    pairs = zip(targets, histories, strict=True)
    return [draw_candidates(rng, n_items, t, h, n_candidates) for t, h in pairs]


@pytest.mark.parametrize(
    "n_items,n_candidates,max_history,bitgen",
    [
        (3883, 20, 10, None),
        (40, 20, 10, None),  # many repeats: blocks run short
        (31, 20, 10, None),  # some samples barely fit
        (25, 10, 3, None),
        (3 * 2**29 + 7, 20, 10, None),  # Lemire rejects ~25% of the words
        (1000, 2, 10, None),
        (1000, 50, 20, None),  # a block too wide for the vectorised path
        (3883, 20, 10, "MT19937"),
        (3883, 20, 10, "Philox"),
    ],
)
def test_batched_draws_equal_one_by_one(n_items, n_candidates, max_history, bitgen):
    data = np.random.default_rng(5)
    targets = data.integers(0, n_items, 3000).tolist()
    histories = [
        tuple(data.integers(0, n_items, data.integers(0, max_history + 1)).tolist())
        for _ in targets
    ]

    def rng():
        if bitgen is None:
            return np.random.default_rng([7, 1])
        return np.random.Generator(getattr(np.random, bitgen)(7))

    one, many = rng(), rng()
    assert draw_candidates_batch(many, n_items, targets, histories, n_candidates) == _sequential(
        one, n_items, targets, histories, n_candidates
    )
    assert one.integers(0, 2**40, size=4).tolist() == many.integers(0, 2**40, size=4).tolist()


def test_batched_draws_raise_like_one_by_one():
    with pytest.raises(DataError, match="cannot draw 19 negative candidates from 15 items"):
        draw_candidates_batch(np.random.default_rng(0), 15, [0], [()])


def _build_samples_loop(sequences, n_items, seed, options=SampleOptions()):
    """The sample-by-sample construction the vectorised build_samples replaced."""
    rng = np.random.default_rng([seed, 1])
    out = {}
    for split, users in split_users(list(sequences), seed, options.split_ratio).items():
        samples = []
        for user in users:
            seq = list(sequences[user])
            positions = range(options.min_history, len(seq)) if split == "train" else [len(seq) - 1]
            for i in positions:
                history = tuple(seq[max(0, i - options.max_history) : i])
                if len(history) < options.min_history:
                    continue
                candidates = draw_candidates(rng, n_items, seq[i], history, options.n_candidates)
                samples.append(Sample(user, history, candidates, seq[i]))
        out[split] = tuple(samples)
    return out


@pytest.mark.parametrize(
    "options", [SampleOptions(), SampleOptions(max_history=5, min_history=1, n_candidates=8)]
)
def test_build_samples_equals_the_loop(options):
    rng = np.random.default_rng(3)
    sequences = {
        int(u): rng.integers(0, 300, rng.integers(0, 40)).tolist()
        for u in rng.choice(10_000, 120, replace=False)
    }
    built = build_samples(sequences, 300, seed=4, options=options)
    expected = _build_samples_loop(sequences, 300, 4, options)
    for split in expected:
        assert isinstance(built[split], SampleBlock)
        assert built[split] == expected[split] and expected[split] == built[split]
        assert tuple(built[split]) == expected[split]


def test_sample_block_behaves_like_its_tuple(tmp_path):
    rows = [(0, (1, 2, 3), 4), (1, (5, 6, 7, 8), 9), (2, (3, 4, 5), 6)]
    block = with_fixed_candidates(rows, 40, seed=0, n_candidates=5)
    plain = tuple(block)
    assert len(block) == 3 and block[1] == plain[1] and block[-1] == plain[-1]
    assert block[:2] == plain[:2] and isinstance(block[:2], tuple)
    assert block + plain[:1] == plain + plain[:1] and plain[:1] + block == plain[:1] + plain
    assert pickle.loads(pickle.dumps(block)) == plain and hash(block) == hash(plain)
    assert plain[0] in block and [s.user for s in block] == [0, 1, 2]
    catalog = Catalog(titles=tuple(f"t{i}" for i in range(40)))
    with_block = SplitDataset(catalog, block, block, block, {"dataset": "x", "seed": 0})
    with_tuple = SplitDataset(catalog, plain, plain, plain, {"dataset": "x", "seed": 0})
    assert with_block == with_tuple and with_block.counts() == with_tuple.counts()
    assert dataset_stats(with_block) == dataset_stats(with_tuple)
    save_dataset(with_block, tmp_path / "a")
    save_dataset(with_tuple, tmp_path / "b")
    for name in ("train.parquet", "valid.parquet", "test.parquet", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert load_dataset(tmp_path / "a").train == plain
