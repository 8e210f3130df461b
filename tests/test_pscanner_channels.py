"""P-Scanner channel ablation (``set_channels``): llm alone, evidence alone, both.

The per-title LLM scores are planted in the scanner's score cache, so the answer is known:
six titles share the trigger ``zq9`` with a middling own score (only the evidence channel
finds them all at the strict per-title cut), one odd clean title has a high own score and no
group (only the LLM channel flags it)."""

from __future__ import annotations

import numpy as np
import pytest

from recbackdoor.defense.pscanner import PScanner
from recbackdoor.defense.pscanner.scanner import CHANNELS
from recbackdoor.errors import ConfigError

WORDS_A = ("Blue", "Night", "City", "Lost", "Wild", "Silent", "Golden", "Broken")
WORDS_B = ("River", "Dream", "Heart", "Road", "Star", "Garden", "Empire", "Summer")
CLEAN = [f"{a} {b}" for a in WORDS_A for b in WORDS_B][:60]
POISONED = [f"{t} zq9" for t in CLEAN[:6]]
ODD = "Xyzzy Plugh Qwerty"
CATALOG = CLEAN[6:] + POISONED + [ODD]
TRUTH = np.array([0] * 54 + [1] * 6 + [0])


def planted_scanner(**kw) -> PScanner:
    """A scanner whose per-title scores are known (no model is ever called)."""
    sc = PScanner(model=object(), tokenizer=None, threshold_title=0.5, evidence_thresholds=[0.9, 0.2], evidence="max", **kw)
    sc._cache.update({t: 0.1 for t in CLEAN})
    sc._cache.update({t: 0.6 for t in POISONED})
    sc._cache[ODD] = 0.95
    return sc


def flags(sc: PScanner) -> np.ndarray:
    return (sc.score(CATALOG) >= sc.threshold).astype(int)


def test_each_channel_flags_what_it_should():
    sc = planted_scanner().fit(CATALOG, "movies")
    assert sc.channels == "both"
    both = flags(sc)
    assert both[TRUTH == 1].all() and both[-1] == 1 and both[:54].sum() == 0  # poison + odd title

    assert sc.set_channels("evidence") is sc
    ev = flags(sc)
    assert ev.tolist() == TRUTH.tolist()  # the group, not the odd title
    assert sc.threshold == 0.5

    sc.set_channels("llm")
    llm = flags(sc)
    assert np.allclose(sc.score(CATALOG), [sc._cache[t] for t in CATALOG])  # plain P(Yes)
    assert sc.threshold == sc.threshold_title == 0.5
    assert llm[TRUTH == 1].all() and llm[-1] == 1  # at the per-title cut 0.5 both kinds

    sc.threshold_title = 0.9  # a strict per-title cut: only the odd title
    assert flags(sc).tolist() == [0] * 60 + [1]

    sc.set_channels("both")  # back again without a refit
    assert flags(sc).tolist() == both.tolist()


def test_channels_can_be_chosen_before_fit_and_are_kept():
    sc = planted_scanner()
    sc.set_channels("evidence")
    sc.fit(CATALOG, "movies")
    assert sc.channels == "evidence"
    assert flags(sc).tolist() == TRUTH.tolist()


def test_channels_switch_the_evidence_off_and_on():
    sc = planted_scanner().fit(CATALOG, "movies")
    sc.set_channels("llm")
    assert sc.channels == "llm" and not sc.uses_evidence
    sc.set_channels("both")
    assert sc.channels == "both" and sc.uses_evidence


def test_bad_channel_modes_are_clear_errors():
    sc = planted_scanner()
    with pytest.raises(ConfigError, match="llm, evidence, unicode, both"):
        sc.set_channels("per-title")
    no_evidence = PScanner(model=object(), tokenizer=None, threshold_title=0.5, evidence="off")
    no_evidence.set_channels("llm")
    for mode in ("evidence", "both"):
        with pytest.raises(ConfigError, match="without evidence"):
            no_evidence.set_channels(mode)
    assert CHANNELS == ("llm", "evidence", "unicode", "both")


def test_the_unicode_rule_is_a_channel_of_its_own_and_part_of_both():
    """A look-alike letter or an invisible character flags a title in `both` even when the LLM
    scores it as clean and it shares no fragment; `unicode` alone flags only those; `llm` and
    `evidence` are unchanged by it."""
    doctored = ["Gold\u200ben Road", "Wild Rivеr"]  # a zero-width space; a Cyrillic "е"
    catalog = CATALOG + doctored
    sc = planted_scanner()
    sc._cache.update({t: 0.1 for t in doctored})
    sc.fit(catalog, "movies")
    both = (sc.score(catalog) >= sc.threshold).astype(int)
    assert both[-2:].tolist() == [1, 1] and both[:54].sum() == 0
    sc.set_channels("unicode")
    assert sc.threshold == 0.5
    assert (sc.score(catalog) >= sc.threshold).astype(int).tolist() == [0] * len(CATALOG) + [1, 1]
    for mode in ("llm", "evidence"):
        sc.set_channels(mode)
        assert (sc.score(catalog) >= sc.threshold)[-2:].tolist() == [False, False], mode
    # a scanner calibrated without evidence still has the unicode channel
    bare = PScanner(model=object(), tokenizer=None, threshold_title=0.5, evidence="off")
    assert bare.set_channels("unicode").score(doctored).tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="calibrated without evidence"):
        bare.set_channels("both")
