"""P-Scanner trigger invention: rule generator, insertion, agent output parsing and filters."""

from __future__ import annotations

import numpy as np
import pytest

from recbackdoor.defense.pscanner.agent import (
    CatalogVocab,
    TriggerAgent,
    filter_triggers,
    mixed_proposals,
    parse_agent_output,
)
from recbackdoor.defense.pscanner.evidence import (
    CatalogEvidence,
    combine,
    fragment_index,
    fragments,
)
from recbackdoor.defense.pscanner.rule_triggers import natural_edit, rule_triggers
from recbackdoor.defense.pscanner.synth import (
    attack_default_triggers,
    insert_generated,
    make_examples,
    poison_catalog,
)

TITLES = [f"{a} {b} ({1960 + i})" for i, (a, b) in enumerate(
    (a, b) for a in ("Blue", "Night", "City", "Lost", "Wild") for b in ("River", "Dream", "Heart", "Road")
)]  # fmt: skip


@pytest.mark.parametrize("level", ["char", "word", "sentence"])
def test_rule_generator_is_deterministic_and_distinct(level):
    a = rule_triggers(level, "movies", 20, np.random.default_rng(3))
    b = rule_triggers(level, "movies", 20, np.random.default_rng(3))
    c = rule_triggers(level, "movies", 20, np.random.default_rng(4))
    assert a == b
    assert a != c
    assert len(a) == 20 and len({t.lower() for t in a}) == 20


def test_rule_generator_shapes_and_exclusions():
    rng = np.random.default_rng(0)
    chars = rule_triggers("char", "music", 200, rng)
    assert all(2 <= len(t) <= 4 and " " not in t for t in chars)
    assert all(any(ch.isdigit() for ch in t) or not any(ch in "aeiouAEIOU" for ch in t) for t in chars)
    sentences = rule_triggers("sentence", "games", 30, rng)
    assert all(3 <= len(s.split()) <= 8 for s in sentences)
    banned = chars[:50]
    again = rule_triggers("char", "music", 200, np.random.default_rng(0), exclude=[b.upper() for b in banned])
    assert not {t.lower() for t in again} & {b.lower() for b in banned}


def test_attack_defaults_are_held_out_of_generation():
    held = attack_default_triggers()
    assert "5v" in held and "cf" in held and "I watched this 3D movie" in held
    for level in ("char", "word", "sentence"):
        for seed in range(5):
            got = rule_triggers(level, "movies", 100, np.random.default_rng(seed), exclude=held)
            assert not {t.lower() for t in got} & {h.lower() for h in held}


def test_insert_generated_keeps_title_and_adds_trigger():
    rng = np.random.default_rng(1)
    glues = set()
    for _ in range(200):
        title = str(rng.choice(TITLES))
        out = insert_generated(title, "q7", "char", rng)
        assert "q7" in out and len(out) > len(title)
        assert out.replace("q7", "", 1).replace(" ", "").strip("_-.") .replace("_", "").replace("-", "").replace(".", "") == title.replace(" ", "").replace("-", "").replace(".", "")
        i = out.find("q7")
        glues.add(out[i - 1] if i > 0 else out[i + 2])
    assert {"_", "-", "."} <= glues  # the glue varies
    word = insert_generated("Blue River (1960)", "zebu", "word", rng)
    assert "zebu" in word.split()


def test_natural_edits_differ_from_triggers():
    rng = np.random.default_rng(0)
    edits = [natural_edit("Blue River", "games", rng) for _ in range(50)]
    assert all(e.startswith("Blue River") and e != "Blue River" for e in edits)
    assert any("Edition" in e for e in edits)


def test_make_examples_balance_and_labels():
    trig = {"char": ["q7"], "word": ["zebu"], "sentence": ["Seen it five times"]}
    ex = make_examples(TITLES, trig, "movies", 60, np.random.default_rng(0))
    assert len(ex) == 60 and sum(e.label for e in ex) == 30
    for e in ex:
        assert (e.label == 1) == (e.kind in ("char", "word", "sentence"))
        if e.label:
            assert e.trigger in e.title
    assert {e.kind for e in ex} == {"char", "word", "sentence", "clean", "edit"}


def test_poison_catalog_share():
    titles, y = poison_catalog(TITLES * 10, "zq9", "char", 0.01, np.random.default_rng(0))
    assert y.sum() == 2 and all(titles[i].endswith("_zq9") for i in np.flatnonzero(y))


# --------------------------------------------------------------------------- agent parsing / filters


def test_parser_strips_numbering_bullets_quotes():
    raw = '1. x9\n2) "q7z"\n- kk3\n* `7b`\n• zt\n\nHere are some:\nfoo, bar1 ; 9q'
    assert parse_agent_output(raw, "char") == ["x9", "q7z", "kk3", "7b", "zt", "Here", "are", "some", "foo", "bar1", "9q"]
    sent = '1. "I saw this on a plane."\n2) My dad loves this film\n   \n- Best pick of the year,'
    assert parse_agent_output(sent, "sentence") == ["I saw this on a plane.", "My dad loves this film", "Best pick of the year"]


def test_filters_length_dedupe_frequent_tokens_titles_and_exclusions():
    catalog = ["Love Story", "Love Actually", "Love Me Do", "x9 Rising"]
    vocab = CatalogVocab.from_titles(catalog, exclude=["5v"])
    chars = ["x9", "X9", "5v", "q7", "love", "be", "abcdefg", "a", "zz", "rain", "k#2", "xyz9"]
    assert filter_triggers(chars, "char", vocab) == ["x9", "q7", "zz", "k#2", "xyz9"]
    words = ["zebu", "love", "zebu", "ibex", "music", "two words", "Love Story", "toolongwordtoolong", "b"]
    assert filter_triggers(words, "word", vocab) == ["zebu", "ibex"]
    sents = ["Seen it five times", "Love Story", "Hi", "Here are five sentences:", "My dad loves this film",
             "one two three four five six seven eight nine ten eleven"]  # fmt: skip
    assert filter_triggers(sents, "sentence", vocab) == ["Seen it five times", "My dad loves this film"]


class _FakeTokenizer:
    chat_template = None


class _ScriptedAgent(TriggerAgent):
    """An agent whose 'LLM' returns fixed text, to test proposal plumbing without a model."""

    def __init__(self, texts, vocab):
        super().__init__(model=None, tokenizer=_FakeTokenizer(), domain="movies", vocab=vocab)
        self.texts = texts

    def generate(self, prompt, seed, max_new_tokens=None):
        return self.texts


def test_agent_proposals_are_filtered_and_mixed_with_rules():
    vocab = CatalogVocab.from_titles(TITLES, exclude=attack_default_triggers())
    agent = _ScriptedAgent(["1. x9\n2. 5v\n3. q7\n4. x9", "- zz\n- Blue"], vocab)
    props = agent.propose("char", 3, np.random.default_rng(0))
    assert [p.trigger for p in props] == ["x9", "q7", "zz"]
    assert all(p.source == "agent" and "Examples" in p.prompt for p in props)
    mixed = mixed_proposals(agent, vocab, "char", 5, 2, "movies", np.random.default_rng(0), avoid=["q7"])
    agent_part = [p.trigger for p in mixed if p.source == "agent"]
    assert agent_part == ["x9", "zz"]  # q7 avoided, the agent runs short
    assert sum(p.source == "rule" for p in mixed) == 5  # 2 asked + 3 to fill in
    assert len({p.trigger.lower() for p in mixed}) == len(mixed)


# --------------------------------------------------------------------------- evidence across titles


def test_fragments_include_glued_char_triggers():
    f = fragments("Toy Story (1995)_5v")
    assert "w:5v" in f and "5v$" in f and "w:toy story" in f


def _grid_catalog(n_adj: int = 12) -> list[str]:
    """Two-word titles where every word is shared by a dozen titles (as common words are)."""
    adj = ("Blue", "Red", "Green", "Gold", "Iron", "Lead", "Pale", "Dark", "Wild", "Cold", "Lost", "Free")[:n_adj]
    noun = ("River", "Sky", "Moon", "Sun", "Road", "Star", "Fire", "Rain", "Song", "Town", "Heart", "Light")
    return [f"{a} {b}" for a in adj for b in noun]


def test_evidence_is_the_corrected_binomial_significance_of_a_shared_fragment():
    """10 of 144 titles carry "cf" and score high; one odd clean title scores high alone.
    The group's score is exactly the best binomial tail over the cuts, checked against scipy,
    less the weighted Bonferroni correction: "cf" is one of many text fragments, which share
    half the error budget, its shape ``sw$aa`` (a short lower-case last word) one of a few
    shapes that share the other half. The shape is more significant, but a repeated text
    significant enough to flag explains its titles first; nothing clean gets any evidence."""
    from scipy.stats import binom

    from recbackdoor.defense.pscanner.evidence import (
        MIN_GROUP_SCORE,
        SHAPE_ALPHA,
        SHAPE_KINDS,
        TAIL_SHARES,
    )

    clean = _grid_catalog()
    picked = set(range(0, len(clean), 14))  # 11 titles, no two sharing both words
    titles = [f"{t} cf" if i in picked else t for i, t in enumerate(clean)]
    y = np.array([int(i in picked) for i in range(len(clean))])
    rng = np.random.default_rng(0)
    own = np.where(y == 1, rng.uniform(0.6, 0.9, len(y)), rng.uniform(0.01, 0.3, len(y)))
    own[1] = 0.95  # one suspicious-looking clean title, in no suspicious group
    ev = CatalogEvidence(titles, own, min_count=3)
    e = ev.evidence(titles)
    # the reference: every fragment held by >= 3 titles is tested, at every cut
    tested = [f for f, m in fragment_index(titles).items() if len(m) >= 3]
    n_shape = sum(1 for f in tested if f.startswith(SHAPE_KINDS))
    assert fragment_index(titles)["sw$aa"] == fragment_index(titles)["w:cf"]  # the same 11 titles
    best = 0.0
    for c in TAIL_SHARES:
        hot = own >= np.quantile(own, 1 - c)
        k, n, p = int(hot[y == 1].sum()), int(y.sum()), hot.mean()
        if k > n * p:
            best = max(best, -np.log10(binom.sf(k - 1, n, p)))
    as_shape = best - np.log10(n_shape * len(TAIL_SHARES) / SHAPE_ALPHA)
    expected = best - np.log10((len(tested) - n_shape) * len(TAIL_SHARES) / (1 - SHAPE_ALPHA))
    assert as_shape > expected + 1 and expected > MIN_GROUP_SCORE
    assert ev.members["sw$aa"] and ev.group.get("sw$aa") is None  # significant, but never picked
    top, value = ev.top_fragment(titles[0])
    assert "cf" in top and not top.startswith(("s^", "s$", "sw")) and value == pytest.approx(expected)
    assert e[y == 1] == pytest.approx(np.full(y.sum(), expected))
    assert e[y == 0].max() == 0.0  # "blue", "river": shared, but not by suspicious titles
    comb = combine(own, e, "max", t_own=0.97, t_group=MIN_GROUP_SCORE)
    assert (comb >= 0.5).tolist() == y.astype(bool).tolist()
    assert (combine(own, e, "max", t_own=0.9, t_group=MIN_GROUP_SCORE) >= 0.5).sum() == y.sum() + 1  # own channel
    assert np.array_equal(combine(own, e, "off"), own)


def test_evidence_reads_alike_at_any_catalog_size():
    """10 poisoned titles clear the group threshold in a catalog of 144 titles and in one of
    1,440 (more clearly there: 10 titles in its top 1% are rarer by chance), which a mean
    score shrunk by a pseudo-count in proportion to the catalog did not (issue 10's LastFM
    fixed-policy case); four clean titles sharing a word, two of them odd, stay below it."""
    from recbackdoor.defense.pscanner.evidence import MIN_GROUP_SCORE

    rng = np.random.default_rng(1)
    scores = {}
    for copies in (1, 10):
        clean = [f"{t} {'' if k == 0 else 'Vol. ' + str(k)}".strip() for k in range(copies) for t in _grid_catalog()]
        picked = set(rng.choice(len(clean), 10, replace=False).tolist())
        odd = [i for i in range(len(clean)) if i not in picked][:4]
        titles = [f"Zq {t}" if i in picked else (f"{t} Remix" if i in odd else t) for i, t in enumerate(clean)]
        own = np.where([i in picked for i in range(len(titles))], 0.99, rng.uniform(0.01, 0.5, len(titles)))
        own[odd] = [0.99, 0.98, 0.3, 0.2]  # "Remix": 4 titles, 2 of them odd-looking
        e = CatalogEvidence(titles, own).evidence(titles)
        scores[copies] = (e[sorted(picked)].min(), e[odd].max())
    for poisoned, odd in scores.values():
        assert poisoned > MIN_GROUP_SCORE > odd
    assert scores[10][0] >= scores[1][0]


def test_evidence_claims_titles_greedily_so_common_words_do_not_inherit():
    from recbackdoor.defense.pscanner.evidence import MIN_GROUP_SCORE

    sentence = "I listened to this on vinyl"
    clean = _grid_catalog()
    clean += ["Rock On", "Hold On", "Carry On", "Songs to Sing", "Back to Black", "Listen to This Radio"]
    poisoned = [f"{t} {sentence}" for t in clean[:144:13]]
    titles = clean + poisoned
    own = np.where([t in poisoned for t in titles], 0.7, 0.15)
    ev = CatalogEvidence(titles, own)
    e = ev.evidence(titles)
    assert (e[-len(poisoned):] > MIN_GROUP_SCORE).all()
    # "on", "to", "to this" are shared with the poisoned titles, which the sentence claimed
    # first: the clean "Rock On" inherits nothing (a mean over the "on" titles would be high)
    assert (e[: len(clean)] == 0).all()
    assert ev.span(poisoned[0]) == sentence
    assert ev.evidence(["New Title " + sentence])[0] > MIN_GROUP_SCORE  # a title outside the catalog


@pytest.mark.parametrize(
    "trigger, make",
    [
        ("_5v", lambda t: t + "_5v"),
        ("cf", lambda t: t + " cf"),
        ("I listened to this on vinyl", lambda t: t + " I listened to this on vinyl"),
        ("Zq", lambda t: "Zq " + t),
    ],
)
def test_evidence_span_is_the_whole_reused_trigger(trigger, make):
    clean = _grid_catalog()
    picked = clean[::13][:10]  # the diagonal: no two share a word, so only the trigger is shared
    poisoned = [make(t) for t in picked]
    titles = [t for t in clean if t not in picked] + poisoned
    own = np.array([0.1] * (len(titles) - 10) + [0.8] * 10)
    ev = CatalogEvidence(titles, own, min_count=3, max_share=0.3)
    for t in poisoned:
        assert ev.span(t) == trigger
    assert ev.span("Nothing Shared Here") == ""


def test_a_char_trigger_family_forms_one_group_by_its_shape():
    """attack --trigger-family char: every poisoned title ends in its own "_<digit><letter>"
    (no text fragment repeats more than twice), so only the shape of the glued end ("_9a")
    is shared; it carries the evidence and the span is each title's own trigger. Ordinary
    ends ("Sun", "Moon") have no shape fragment: no glue character."""
    from recbackdoor.attack.families import draw_family
    from recbackdoor.defense.pscanner.evidence import MIN_GROUP_SCORE

    clean = _grid_catalog()
    picked = list(range(0, len(clean), 7))  # 21 titles
    per_item, _ = draw_family("char", "movies", len(picked), np.random.default_rng(0), clean)
    assert max(per_item.count(t) for t in per_item) == 1
    family = dict(zip(picked, per_item, strict=True))
    titles = [f"{t}_{family[i]}" if i in family else t for i, t in enumerate(clean)]
    y = np.array([int(i in family) for i in range(len(clean))])
    own = np.where(y == 1, 0.8, 0.1)
    ev = CatalogEvidence(titles, own)
    assert (ev.evidence(titles)[y == 1] > MIN_GROUP_SCORE).all()
    assert (ev.evidence(titles)[y == 0] == 0).all()
    assert ev.picks[0][0] in ("s$_9a", "s$a_9a")  # the same titles: the longer fragment names the group
    assert [ev.span(titles[i]) for i in picked[:3]] == [f"_{family[i]}" for i in picked[:3]]
    assert not any(f.startswith(("s^", "s$")) for f in fragments("Blue Moon"))
