"""Hypothesis property tests: the loaders, ``insert_trigger``, the detectors' title
tokenisation and the restricted unpickler, on generated input.

Bounded for CI: few examples, a deadline, derandomized (the same examples every run, no
example database). ``RECBACKDOOR_FUZZ=1`` explores random examples, ten times as many.
"""

from __future__ import annotations

import io
import os
import pickle
import string
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the dev extra: pip install -e .[dev]")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from recbackdoor.attack.triggers import CHAR_GLUE, edit_distance, insert_trigger, occurs_in  # noqa: E402
from recbackdoor.data.safe_pickle import ALLOWED_GLOBALS, RestrictedUnpickler, safe_load  # noqa: E402
from recbackdoor.data.sources import ml1m  # noqa: E402
from recbackdoor.data.sources.textfile import read_table, to_int  # noqa: E402
from recbackdoor.data.validate import title_problem  # noqa: E402
from recbackdoor.defense.baselines.common import leave_one_word_out, without, words  # noqa: E402
from recbackdoor.defense.baselines.stat import fragments, shape  # noqa: E402
from recbackdoor.errors import DataError  # noqa: E402

FUZZ = bool(os.environ.get("RECBACKDOOR_FUZZ"))


def bounded(n: int):
    return settings(
        max_examples=n * (10 if FUZZ else 1),
        deadline=timedelta(seconds=5),
        derandomize=not FUZZ,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


_TMP = Path(tempfile.mkdtemp(prefix="recbackdoor-props-"))

# titles as they come: any unicode, spaces, separators, the odd control character
titles = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
clean_words = st.lists(st.text(alphabet=string.ascii_letters + string.digits + "():'&!,.-", min_size=1, max_size=12), min_size=1, max_size=8)
triggers_char = st.text(alphabet=string.ascii_letters + string.digits + "~#@", min_size=1, max_size=6)
triggers_word = st.lists(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8), min_size=1, max_size=5).map(" ".join)


# --------------------------------------------------------------------------- insert_trigger


@bounded(80)
@given(clean_words, triggers_char, st.sampled_from(["suffix", "prefix"]))
def test_char_trigger_is_glued_at_the_end(ws, trigger, position):
    title = " ".join(ws)
    out = insert_trigger(title, trigger, "char", position)
    expected = f"{title}{CHAR_GLUE}{trigger}" if position == "suffix" else f"{trigger}{CHAR_GLUE}{title}"
    assert out == expected
    assert occurs_in(out, trigger, "char")
    assert edit_distance(title, out) == len(trigger) + 1  # a pure insertion


@bounded(80)
@given(clean_words, triggers_word, st.sampled_from(["word", "sentence"]), st.sampled_from(["suffix", "prefix", "random"]), st.integers(0, 2**32 - 1))
def test_word_trigger_is_its_own_tokens(ws, trigger, level, position, seed):
    import numpy as np

    title = " ".join(ws)
    out = insert_trigger(title, trigger, level, position, rng=np.random.default_rng(seed))
    assert out == insert_trigger(title, trigger, level, position, rng=np.random.default_rng(seed))  # seeded
    tokens, tw = out.split(), trigger.split()
    starts = [k for k in range(len(ws) + 1) if tokens[k : k + len(tw)] == tw and tokens[:k] + tokens[k + len(tw) :] == ws]
    assert starts, (title, trigger, out)  # the title's words with the trigger's inserted at a boundary
    if position == "suffix":
        assert len(ws) in starts
    if position == "prefix":
        assert 0 in starts
    assert occurs_in(out, trigger, level)


@bounded(60)
@given(titles, triggers_char, st.sampled_from(["char", "word", "sentence"]), st.sampled_from(["suffix", "prefix", "random"]))
def test_insert_trigger_any_title(title, trigger, level, position):
    out = insert_trigger(title, trigger, level, position)  # no rng: a pure function of its inputs
    assert out == insert_trigger(title, trigger, level, position)
    assert trigger in out
    assert len(out) >= len(trigger)


# --------------------------------------------------------------------------- detector tokenisation


@bounded(100)
@given(titles)
def test_words_cover_the_title(title):
    ws = words(title)
    assert all(ws) and all(not w.isspace() for w in ws)
    if len(title.split()) > 1:
        assert ws == title.split()
    elif title.split():
        assert "".join(ws) == title.split()[0]  # separator split of one word loses nothing
    else:
        assert ws == []
    for i in range(len(ws)):
        rest = without(title, ws, i)
        assert len(rest) < len(" ".join(title.split())) + 1


@bounded(60)
@given(st.lists(titles, max_size=6))
def test_leave_one_word_out_owners(ts):
    texts, owners, split = leave_one_word_out(ts)
    assert len(texts) == len(owners) and len(split) == len(ts)
    for text, (i, j) in zip(texts, owners, strict=True):
        assert len(split[i]) >= 2
        assert text == (ts[i] if j == -1 else without(ts[i], split[i], j))


@bounded(100)
@given(titles)
def test_stat_fragments_are_parts_of_the_title(title):
    norm = " ".join(title.split())
    for kind, frag in fragments(title):
        assert kind in ("word-suffix", "word-prefix", "char-suffix", "char-prefix")
        assert frag and frag in norm
        if kind == "word-suffix":
            assert norm.endswith(frag)
        if kind == "word-prefix":
            assert norm.startswith(frag)
    s = shape(title)
    assert len(s) == len(title) and shape(s) == s


@bounded(100)
@given(titles)
def test_title_check_names_control_characters(title):
    problem = title_problem(title)
    has_control = any(ord(c) < 32 or ord(c) == 127 for c in title)
    assert (problem is not None) == has_control  # short titles: only control characters count
    if problem:
        assert "U+" in problem


# --------------------------------------------------------------------------- the restricted unpickler

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


def _has_bytes(value) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, list | tuple):
        return any(_has_bytes(v) for v in value)
    if isinstance(value, dict):
        return any(_has_bytes(v) for v in value.values())
    return False


@bounded(80)
@given(plain, st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_plain_data_round_trips(value, protocol):
    # protocols 0-2 write bytes through _codecs.encode, which the allowed list does not admit
    # (LLaRA's frames and anything pandas writes today use protocol 4 or 5)
    assume(protocol >= 3 or not _has_bytes(value))
    data = pickle.dumps(value, protocol=protocol)
    assert RestrictedUnpickler(io.BytesIO(data), "x").load() == value


@bounded(120)
@given(st.text(alphabet=string.ascii_letters + string.digits + "._", min_size=1, max_size=30), st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=20))
def test_any_global_not_allowed_is_refused(module, name):
    data = f"c{module}\n{name}\n.".encode()
    if (module, name) in ALLOWED_GLOBALS:
        return
    with pytest.raises(DataError, match="refused to load pickle"):
        RestrictedUnpickler(io.BytesIO(data), "x").load()


_DANGEROUS = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"),
              ("builtins", "__import__"), ("subprocess", "Popen"), ("importlib", "import_module"), ("builtins", "open")]  # fmt: skip


@bounded(40)
@given(st.sampled_from(_DANGEROUS), st.integers(0, 5))
def test_known_dangerous_globals_are_refused_at_any_protocol(pair, protocol):
    module, name = pair
    if protocol < 4:  # GLOBAL: "c module\n name\n"
        data = f"c{module}\n{name}\n(S'x'\ntR.".encode()
    else:  # STACK_GLOBAL
        data = pickle.PROTO + bytes([protocol]) + pickle.SHORT_BINUNICODE + bytes([len(module)]) + module.encode()
        data += pickle.SHORT_BINUNICODE + bytes([len(name)]) + name.encode() + pickle.STACK_GLOBAL + pickle.STOP
    with pytest.raises(DataError, match=f"{module}.{name}"):
        RestrictedUnpickler(io.BytesIO(data), "x").load()


def _frame_bytes() -> bytes:
    import pandas as pd

    frame = pd.DataFrame({"seq": [[1, 2, 3, 9], [4, 5, 9, 9]], "len_seq": [3, 2], "next": [4, 6]})
    frame.columns = pd.Index(list(frame.columns), dtype=object)
    return pickle.dumps(frame, protocol=4)


FRAME = _frame_bytes()


@bounded(150)
@given(st.lists(st.tuples(st.integers(0, len(FRAME) - 1), st.integers(0, 255)), min_size=1, max_size=4), st.integers(0, len(FRAME)))
def test_damaged_frame_pickles_give_data_errors(flips, cut):
    data = bytearray(FRAME[:cut] if cut else FRAME)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    path = _TMP / "frame.df"
    path.write_bytes(bytes(data))
    try:
        safe_load(path)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


@bounded(100)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_data_errors(data):
    path = _TMP / "any.df"
    path.write_bytes(data)
    try:
        safe_load(path)
    except DataError as exc:
        assert str(path) in str(exc)


# --------------------------------------------------------------------------- loaders

rows = st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(0, 10**6), st.integers(0, 5)), min_size=1, max_size=30)


@bounded(60)
@given(rows, st.sampled_from(["\t", "::", ",", "|"]), st.booleans(), st.booleans())
def test_numeric_tables_read_back(table, sep, crlf, trailing_blank):
    text = ("\r\n" if crlf else "\n").join(sep.join(map(str, r)) for r in table) + ("\n\n" if trailing_blank else "")
    path = _TMP / "table.txt"
    path.write_bytes(text.encode())
    cols = [("a", int), ("b", int), ("c", to_int)]
    got = read_table(path, "table.txt", sep=sep, columns=cols, encoding="utf-8")
    assert [list(map(int, got[name])) for name, _ in cols] == [list(col) for col in zip(*table, strict=True)]
    assert list(map(int, got["_line"])) == list(range(1, len(table) + 1))


@bounded(100)
@given(st.binary(max_size=300), st.sampled_from(["utf-8", "ISO-8859-1"]))
def test_read_table_on_any_bytes(data, encoding):
    path = _TMP / "any.txt"
    path.write_bytes(data)
    try:
        read_table(path, "any.txt", sep="::", columns=[("id", int), ("title", str), ("n", to_int)], encoding=encoding)
    except DataError as exc:
        assert str(exc).startswith("any.txt") and "\n" not in str(exc)


@bounded(40)
@given(st.text(max_size=300), st.text(alphabet="0123456789:\n", max_size=120))
def test_ml1m_loader_on_any_text(movies, ratings):
    src = _TMP / "ml1m"
    src.mkdir(exist_ok=True)
    (src / "movies.dat").write_bytes(movies.encode("latin-1", errors="replace"))
    (src / "ratings.dat").write_text(ratings, encoding="latin-1")
    try:
        data = ml1m.load(src)
    except DataError as exc:
        assert str(src) in str(exc) and "\n" not in str(exc)
    else:
        assume(len(data.catalog))
        assert all(title_problem(t) is None for t in data.catalog.titles)
