"""P-Scanner on catalogs poisoned the way BadRec really poisons them (issue 10): one trigger on
20% of the titles (the per-sample policy), where the answer is known.

- the cross-title evidence still finds a trigger shared by 20% of the titles, while common
  clean fragments ("the", "(1995)", "love") are not flagged;
- the robust first pass leaves the poisoned titles out of the scanner's training negatives,
  so a scanner fitted on a poisoned catalog does not learn its poison as clean."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recbackdoor.attack.triggers import insert_trigger
from recbackdoor.defense.pscanner import CatalogTrainedScanner, ScannerConfig
from recbackdoor.defense.pscanner.evidence import (
    MIN_GROUP_SCORE,
    CatalogEvidence,
    combine,
    fragment_index,
    fragments,
)
from recbackdoor.defense.pscanner.robust import robust_negatives, suspicious_titles

# several words of every length, so no word has a shape of its own (as in a real catalog)
ADJ = (
    "Red", "Hot", "Big", "Old", "Sad", "Mad", "Blue", "Dark", "Lost", "Wild", "Cold", "Last", "Pale", "Free",
    "Night", "Quiet", "Brave", "Happy", "Empty", "Sweet", "Silent", "Golden", "Broken", "Hidden", "Secret", "Frozen",
)  # fmt: skip
NOUN = (
    "Sky", "Sun", "Day", "Man", "War", "Sea", "Road", "Star", "Fire", "Rain", "Moon", "Girl", "Song", "Town",
    "River", "Dream", "Heart", "Light", "Ghost", "Night", "Garden", "Empire", "Summer", "Island", "Winter", "Family",
)  # fmt: skip


def clean_catalog(n: int = 240, seed: int = 0) -> list[str]:
    """Movie-like titles where "The", "Love" and "(1995)" are common (far more than 10%)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        a, b = str(rng.choice(ADJ)), str(rng.choice(NOUN))
        title = f"{'The ' if rng.random() < 0.4 else ''}{a} {b}{' of Love' if rng.random() < 0.15 else ''}"
        year = 1995 if rng.random() < 0.3 else int(rng.integers(1930, 1999))
        title = f"{title} ({year})"
        if title not in out:
            out.append(title)
    return out


def poisoned_catalog(level: str, trigger: str, share: float = 0.2, position: str = "suffix", seed: int = 0):
    clean = clean_catalog(seed=seed)
    rng = np.random.default_rng(seed + 1)
    chosen = set(rng.choice(len(clean), size=int(share * len(clean)), replace=False).tolist())
    titles = [insert_trigger(t, trigger, level, position) if i in chosen else t for i, t in enumerate(clean)]
    y = np.array([int(i in chosen) for i in range(len(clean))])
    return titles, y


def planted_scores(titles: list[str], y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A mediocre scanner: poisoned titles score 0.3-0.8, clean ones 0.02-0.3, and a few odd
    clean titles (every 40th) 0.8-0.95; so no per-title cut separates them."""
    rng = np.random.default_rng(seed)
    own = np.where(y == 1, rng.uniform(0.3, 0.8, len(y)), rng.uniform(0.02, 0.3, len(y)))
    odd = (np.arange(len(y)) % 40 == 0) & (y == 0)
    own[odd] = rng.uniform(0.8, 0.95, odd.sum())
    return own


@pytest.mark.parametrize(
    "level, trigger, position",
    [("char", "5v", "suffix"), ("word", "cf", "suffix"), ("sentence", "I watched this 3D movie", "suffix"), ("char", "5v", "prefix")],
)
def test_evidence_finds_a_trigger_on_20_percent_of_titles(level, trigger, position):
    titles, y = poisoned_catalog(level, trigger, 0.2, position)
    assert y.mean() == pytest.approx(0.2, abs=0.01)
    own = planted_scores(titles, y)
    e = CatalogEvidence(titles, own).evidence(titles)  # defaults: no share cap
    assert e[y == 1].min() > 3 * MIN_GROUP_SCORE  # every poisoned title carries the group's evidence
    assert e[y == 0].max() < MIN_GROUP_SCORE  # no clean title gets near it
    flagged = combine(own, e, "max", t_own=0.99, t_group=MIN_GROUP_SCORE) >= 0.5
    assert flagged.tolist() == y.astype(bool).tolist()
    assert own[y == 0].max() > own[y == 1].min()  # while no per-title cut could do it
    # the old cap (fragments on more than 10% of the titles ignored) loses poison: only
    # chance subsets ("1995 5v", "5v the") are left to carry evidence
    capped = CatalogEvidence(titles, own, max_share=0.1).evidence(titles)
    assert (capped[y == 1] >= MIN_GROUP_SCORE).mean() < 0.7


def test_common_clean_fragments_are_not_flagged():
    titles, y = poisoned_catalog("char", "5v", 0.2)
    own = planted_scores(titles, y)
    ev = CatalogEvidence(titles, own)
    e = ev.evidence(titles)
    common = {"w:the": "the ", "w:1995": "(1995)", "w:love": "love", "w:of love": "of love"}
    for frag, word in common.items():
        holders = [i for i, t in enumerate(titles) if word in t.lower() and y[i] == 0]
        assert len(holders) >= 0.05 * len(titles)  # common, not a handful
        assert e[holders].max() < MIN_GROUP_SCORE, word
        assert ev.group.get(frag, 0.0) < MIN_GROUP_SCORE, frag  # never a suspicious group of its own
    assert ev.span(titles[int(np.flatnonzero(y)[0])]) == "_5v"
    # a clean catalog: nothing stands out at all
    clean = clean_catalog()
    own_clean = planted_scores(clean, np.zeros(len(clean), int))
    assert CatalogEvidence(clean, own_clean).evidence(clean).max() < MIN_GROUP_SCORE


@pytest.mark.parametrize(
    "level, trigger, position",
    [("char", "5v", "suffix"), ("word", "cf", "suffix"), ("sentence", "I watched this 3D movie", "suffix"), ("char", "5v", "prefix")],
)
def test_first_pass_drops_the_poison_from_the_negatives(level, trigger, position):
    titles, y = poisoned_catalog(level, trigger, 0.2, position)
    kept, dropped = robust_negatives(titles)
    poisoned = {t for t, lab in zip(titles, y, strict=True) if lab}
    assert poisoned <= set(dropped)  # every poisoned title leaves the negatives
    assert not poisoned & set(kept)
    assert len(kept) >= 0.9 * (len(titles) - len(poisoned))  # most clean titles stay
    assert any("(1995)" in t for t in kept) and any(t.startswith("The ") for t in kept)


def test_first_pass_on_a_clean_catalog_drops_little_and_never_years_or_articles():
    clean = clean_catalog()
    dropped = suspicious_titles(clean)
    assert len(dropped) <= 0.05 * len(clean)
    assert not {f for f in dropped.values() if f in ("The", "(1995)", "Love")}


def test_scanner_fitted_on_a_poisoned_catalog_never_trains_on_its_poison(monkeypatch):
    """fit() trains a scanner on the catalog under suspicion: no poisoned title may reach the
    training negatives, the trigger pool or the held-out clean validation titles."""
    from recbackdoor.defense.pscanner import calibrate, train

    titles, y = poisoned_catalog("char", "5v", 0.2)
    poisoned = {t for t, lab in zip(titles, y, strict=True) if lab}
    seen: dict[str, set[str]] = {"train": set(), "val": set()}
    real_make, real_val = train.make_examples, calibrate.build_validation

    def spy_make(clean_titles, *a, **kw):
        seen["train"] |= set(clean_titles)
        return real_make(clean_titles, *a, **kw)

    def spy_val(clean, *a, **kw):
        seen["val"] |= set(clean)
        return real_val(clean, *a, **kw)

    monkeypatch.setattr(train, "make_examples", spy_make)
    monkeypatch.setattr(train, "build_validation", spy_val)
    cfg = ScannerConfig(
        backbone="tiny-random", dtype="fp32", rounds=0, n_train=32, n_policy=0, n_rule_triggers=3,
        n_agent_triggers=0, use_agent=False, n_val_clean=24, batch_size=8, score_batch_size=32,
        round_triggers=1,
    )  # fmt: skip
    sc = CatalogTrainedScanner(cfg).fit(titles, "movies")
    assert seen["train"] and seen["val"]
    assert not (seen["train"] | seen["val"]) & poisoned
    assert sc.log["n_dropped_suspicious"] >= len(poisoned)
    assert sc.channels == "both" and sc.uses_evidence  # evidence fitted on the whole catalog
    # without the first pass the poison is trained on as clean (what issue 10 found)
    seen["train"].clear()
    CatalogTrainedScanner(ScannerConfig(**{**cfg.to_dict(), "robust": False, "exclude_triggers": cfg.exclude_triggers})).fit(titles, "movies")
    assert seen["train"] & poisoned


def test_validation_alternates_small_and_large_shares():
    from recbackdoor.defense.pscanner.calibrate import build_validation

    clean = [f"title {i}" for i in range(200)]
    val = build_validation(clean, {"word": ["zebu", "ibex", "okapi", "kudu"]}, [0.01, 0.2], np.random.default_rng(0))
    assert [int(c["y"].sum()) for c in val.catalogs] == [2, 40, 2, 40]
    assert [c["share"] for c in val.catalogs] == [0.01, 0.2, 0.01, 0.2]


def test_thresholds_use_the_mean_f1_of_catalogs_and_a_strict_title_channel():
    from recbackdoor.defense.pscanner.calibrate import two_channel_thresholds
    from recbackdoor.defense.pscanner.evidence import CHANNEL_OFF

    # catalog 0: 2 of 100 poisoned, weak group evidence 6; catalog 1: 40 of 200, group 20,
    # and a clean group of 3 at 8. Pooled F1 sacrifices catalog 0 to keep the 3 clean titles
    # out; the mean of the two F1s keeps catalog 0 (3 false positives in catalog 1)
    y = np.r_[np.zeros(98), np.ones(2), np.zeros(160), np.ones(40)].astype(int)
    group = np.r_[np.zeros(98), [6.0, 6.0], np.r_[np.full(3, 8.0), np.zeros(157)], np.full(40, 20.0)]
    own = np.where(y == 1, 0.5, 0.2)  # below the best clean validation title: group decides
    seg = np.r_[np.zeros(100), np.ones(200)].astype(int)
    clean_own = np.full(50, 0.6)
    t_own, t_grp = two_channel_thresholds(y, own, group, clean_own, np.zeros(50), "best-f1", 0.01, segments=seg)
    assert t_own == CHANNEL_OFF and MIN_GROUP_SCORE <= t_grp <= 6.0
    _, t_pooled = two_channel_thresholds(y, own, group, clean_own, np.zeros(50), "best-f1", 0.01)
    assert t_pooled > 8.0  # pooled F1 drops the small catalog's two titles
    # a group weaker than MIN_GROUP_SCORE is never taken, whatever the validation F1
    weak = np.where(group == 6.0, 1.0, group)
    _, t_weak = two_channel_thresholds(y, own, weak, clean_own, np.zeros(50), "best-f1", 0.01, segments=seg)
    assert t_weak == MIN_GROUP_SCORE
    # per-title channel: own 0.7 is above the best clean validation title (0.6), so usable...
    own = np.where(y == 1, 0.7, 0.2)
    none = np.zeros_like(group)
    t_own, _ = two_channel_thresholds(y, own, none, clean_own, np.zeros(50), "best-f1", 0.01, segments=seg)
    assert t_own < 0.7
    # ...but not 1.5 logits above it (sigmoid(logit(0.6) + 1.5) = 0.87)
    t_own, _ = two_channel_thresholds(y, own, none, clean_own, np.zeros(50), "best-f1", 0.01, segments=seg, own_margin_logit=1.5)
    assert t_own == CHANNEL_OFF


def test_fast_config_is_what_defend_trains_without_a_scanner():
    from recbackdoor.defense.defend import build_detector

    fast = ScannerConfig.fast()
    assert fast.rounds == 0 and not fast.use_agent and fast.robust and fast.n_train < ScannerConfig().n_train
    assert ScannerConfig().robust and ScannerConfig().evidence_max_share == 1.0
    det = build_detector("pscanner", backbone="tiny-random", seed=3)
    assert isinstance(det, CatalogTrainedScanner) and det.model is None
    cfg = det.train_config
    assert (cfg.rounds, cfg.use_agent, cfg.seed, cfg.backbone, cfg.robust) == (0, False, 3, "tiny-random", True)


@pytest.mark.parametrize("share", [0.2, 10 / 240])  # BadRec per-sample (20%) and fixed (10 targets)
def test_a_word_family_forms_one_group_by_the_shape_of_its_word(share):
    """``attack --trigger-family word``: every poisoned title ends in its own two-letter token,
    so no fragment repeats; the shape of the short lower-case last word (``sw$aa``) does."""
    from recbackdoor.attack.families import family_members

    clean = clean_catalog()
    rng = np.random.default_rng(3)
    members = family_members("word")
    chosen = rng.choice(len(clean), size=int(round(share * len(clean))), replace=False)
    titles = list(clean)
    for k, i in enumerate(sorted(chosen.tolist())):
        titles[i] = insert_trigger(clean[i], members[(7 * k) % len(members)], "word", "suffix")
    y = np.zeros(len(titles), int)
    y[chosen] = 1
    assert max(Counter(t.split()[-1] for t in np.array(titles)[y == 1]).values()) <= 2  # varied
    own = planted_scores(titles, y)
    ev = CatalogEvidence(titles, own)
    e = ev.evidence(titles)
    assert e[y == 1].min() >= MIN_GROUP_SCORE and e[y == 0].max() < MIN_GROUP_SCORE
    first = titles[int(np.flatnonzero(y)[0])]
    assert ev.top_fragment(first)[0] == "sw$aa" and ev.span(first) == first.split()[-1]
    # capitalised words and numbers are not shape fragments: clean titles share those shapes
    assert not [f for f in fragments("Sum 41") | fragments("The Last Road") | fragments("Blue") if f.startswith("sw")]


def test_a_group_claims_only_members_the_scanner_does_not_find_clearly_clean():
    """A sentence family (``attack --trigger-family sentence``) shares only "this" with a few
    clean titles; those the scanner scores as clean as most of the catalog keep their own
    verdict (``claim_share``), instead of joining the group's flags."""
    from recbackdoor.attack.families import family_members

    clean = clean_catalog()
    members = family_members("sentence", "movies")
    chosen = sorted(np.random.default_rng(4).choice(len(clean), size=10, replace=False).tolist())
    titles = list(clean)
    for k, i in enumerate(chosen):
        titles[i] = insert_trigger(clean[i], members[(13 * k) % len(members)], "sentence", "suffix")
    bystanders = ["This Heat (1979)", "This Mortal Coil (1984)", "In This Moment (1990)"]
    titles += bystanders
    y = np.zeros(len(titles), int)
    y[chosen] = 1
    own = planted_scores(titles, y)
    own[y == 1] = np.linspace(0.96, 0.99, 10)  # ten titles: ranked at the top, or no group is significant
    own[-3:] = 0.02  # the scanner finds them clean (bottom of the catalog)
    ev = CatalogEvidence(titles, own)
    claimed = ev.evidence(titles)
    assert claimed[y == 1].min() >= MIN_GROUP_SCORE and claimed[-3:].max() == 0.0
    assert ev.top_fragment(titles[chosen[0]])[0] == "w:this"
    everyone = CatalogEvidence(titles, own, claim_share=None).evidence(titles)
    assert everyone[-3:].min() >= MIN_GROUP_SCORE  # claiming every member flags them too


def test_numbers_are_no_fragments_so_sequels_do_not_form_a_group():
    """Steam: the scanner's suspicion follows digits, and 150 sequels ("Arma 2") formed a group
    more significant than the trigger. Numbers and the ends of titles ending in one are no
    fragments; the trigger's group still is."""
    titles, y = poisoned_catalog("char", "5v", 10 / 240)
    sequel = np.array([i % 6 == 1 and y[i] == 0 for i in range(len(titles))])
    titles = [f"{t[:-7]} {2 + i % 3} {t[-6:]}" if sequel[i] else t for i, t in enumerate(titles)]
    own = planted_scores(titles, y)
    own[y == 1] = np.linspace(0.975, 0.995, int(y.sum()))  # the targets still at the very top
    own[sequel] = np.linspace(0.85, 0.95, int(sequel.sum()))  # as suspicious as the poison
    e = CatalogEvidence(titles, own).evidence(titles)
    assert e[y == 1].min() >= MIN_GROUP_SCORE and e[y == 0].max() < MIN_GROUP_SCORE
    assert "w:2" not in fragments("Arma 2") and not any(f.endswith("$") for f in fragments("Arma 2"))
    assert "w:5v" in fragments("Arma 2_5v") and "w:1995" not in fragments("Heat (1995)")


def test_a_shape_family_scored_weakly_is_found_where_a_text_group_is_not():
    """Steam's case: a weak per-title channel puts the 10 titles of a char family
    (``_5h``, ``_4b`` ...) only somewhere in the catalog's top 15%, among thousands of text
    fragments. The shape ``s$_9a`` shares half the error budget with a few other shapes, so it
    is significant, where the same scores on a text fragment (10 clean titles with "/") are not
    and the plain Bonferroni over every fragment would miss the family too."""
    from recbackdoor.attack.families import family_members
    from recbackdoor.defense.pscanner.evidence import TAIL_SHARES

    rng = np.random.default_rng(5)
    syllables = ("bel", "dor", "fin", "gar", "hal", "jin", "mar", "nor", "pel", "rud", "sal", "tor")
    vocab = [f"{a}{b}".capitalize() for a in ("ka", "lo", "mi", "ra", "su", "te", "vo", "zu") for b in syllables]
    titles = sorted({" ".join(rng.choice(vocab, size=int(rng.integers(2, 5)))) for _ in range(4000)})[:3000]
    family, slash = np.arange(0, 200, 20), np.arange(1000, 1200, 20)  # 10 poisoned, 10 clean
    members = family_members("char")
    for k, i in enumerate(family):
        titles[i] = titles[i] + "_" + members[37 * k % len(members)]
    for i in slash:
        titles[i] = titles[i].replace(" ", " / ", 1)
    assert len({t[-3:] for t in np.array(titles)[family]}) == 10  # every trigger differs
    own = rng.uniform(0.0, 0.85, len(titles))  # the rest of the catalog; the top 15% above 0.72
    own[family] = np.linspace(0.73, 0.84, 10)  # ranks ~2-15%: in no very high cut
    own[slash] = own[family]
    ev = CatalogEvidence(titles, own)
    e = ev.evidence(titles)
    frag, value = ev.top_fragment(titles[family[0]])
    assert frag.startswith("s$") and frag.endswith("_9a") and e[family].min() == value >= MIN_GROUP_SCORE
    assert e[slash].max() < MIN_GROUP_SCORE
    n_tested = sum(1 for m in fragment_index(titles).values() if len(m) >= 3)
    plain = value + ev.correction[True] - np.log10(n_tested * len(TAIL_SHARES))
    assert plain < MIN_GROUP_SCORE  # one budget for all fragments: the family would be missed


def test_a_clean_reference_keeps_the_scanners_bias_from_being_evidence():
    """After adversarial rounds a scanner scored most titles with "The" high: on ML-100K the
    "the" group (353 titles) outranked the 10 real targets and flagged them all. The held-out
    clean titles it scored the same way are the reference: "the" is no evidence there and the
    targets' group alone is flagged; a scanner with no such bias gets the same flags either
    way."""
    titles, y = poisoned_catalog("char", "5v", share=0.04)
    reference = clean_catalog(n=200, seed=9)
    rng = np.random.default_rng(2)

    def biased(ts: list[str]) -> np.ndarray:  # "The ..." titles look suspicious to this scanner
        base = rng.uniform(0.02, 0.4, len(ts))
        return np.where([t.startswith("The ") for t in ts], rng.uniform(0.85, 0.97, len(ts)), base)

    own, ref_own = biased(titles), biased(reference)
    own[y == 1] = np.linspace(0.975, 0.995, int(y.sum()))  # the targets still at the very top
    plain = CatalogEvidence(titles, own)
    assert "the" in plain.picks[0][0] and plain.picks[0][2] > 40  # the bias wins
    assert (plain.evidence(titles)[y == 0] >= MIN_GROUP_SCORE).sum() > 40
    with_ref = CatalogEvidence(titles, own, reference=(reference, ref_own))
    e = with_ref.evidence(titles)
    assert e[y == 1].min() >= MIN_GROUP_SCORE and e[y == 0].max() < MIN_GROUP_SCORE
    assert with_ref.span(titles[int(np.flatnonzero(y)[0])]) in ("_5v", "5v")
    # no bias: the reference changes nothing that matters
    fair = np.where(y == 1, own, rng.uniform(0.02, 0.4, len(y)))
    ref_fair = rng.uniform(0.02, 0.4, len(reference))
    a = CatalogEvidence(titles, fair).evidence(titles)
    b = CatalogEvidence(titles, fair, reference=(reference, ref_fair)).evidence(titles)
    assert ((a >= MIN_GROUP_SCORE) == (b >= MIN_GROUP_SCORE)).all() and (b[y == 1] >= MIN_GROUP_SCORE).all()


def test_a_repeated_text_explains_its_titles_before_a_shape():
    """BadRec's fixed ``cf`` on 10 artists, and two clean artists whose last word is short and
    lower-case too ("Rie fu", "The xx", scored high): the shape ``sw$aa`` holds all 12 and, with
    its smaller correction, is the more significant group, but the text "cf" is significant
    enough to flag on its own, so it claims the 10 first and the clean two keep their verdict."""
    titles, y = poisoned_catalog("word", "cf", share=10 / 240)
    titles, y = titles + ["Rie fu", "The xx"], np.append(y, [0, 0])
    own = planted_scores(titles, y)
    own[y == 1] = np.linspace(0.9, 0.99, int(y.sum()))
    own[-2:] = [0.95, 0.93]
    ev = CatalogEvidence(titles, own)
    e = ev.evidence(titles)
    assert e[y == 1].min() >= MIN_GROUP_SCORE and e[-2:].max() == 0.0
    assert "cf" in ev.top_fragment(titles[int(np.flatnonzero(y)[0])])[0]
    assert "sw$aa" not in ev.group and "sw$aa" in ev.members  # tested, significant, not picked


def test_a_clean_reference_never_adds_evidence():
    """The reference may only raise a fragment's chance rate. The word "i" of a reused
    sentence "I watched this 3D movie" is also in clean "I.Q." titles that the scanner scores
    above most of this catalog, though below the poison; clean reference titles with "I" that
    it scores low would, if they could lower the rate of "i", make the "i" group outrank the
    sentence's own group and flag the clean "I.Q." titles with it (ML-100K: 4 clean movies)."""
    titles, y = poisoned_catalog("sentence", "I watched this 3D movie", share=0.2)
    extra = ["I.Q. (1994)", "G.I. Jane (1997)", "I, Claudius (1976)", "I.D. (1995)"]
    titles, y = titles + extra, np.append(y, [0] * len(extra))
    own = planted_scores(titles, y)
    own[y == 1] = np.random.default_rng(6).uniform(0.7, 0.99, int(y.sum()))
    own[-4:] = 0.35  # top ~23%: within the group's claim (top 40%), not in its best cut (20%)
    reference = [f"I {w} (19{60 + k})" for k, w in enumerate(("Shot Andy Warhol", "Like It Hot", "Love You", "Remember Mama", "Was a Spy", "Married a Witch"))]
    reference += clean_catalog(n=100, seed=11)
    ref_own = np.full(len(reference), 0.05)
    e = CatalogEvidence(titles, own, reference=(reference, ref_own)).evidence(titles)
    assert e[y == 1].min() >= MIN_GROUP_SCORE and e[-4:].max() == 0.0
