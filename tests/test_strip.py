"""STRIP for recommendation prompts: a stub victim that always picks the triggered candidate is
caught at the calibrated false-rejection rate; a victim that ignores the history gives STRIP
nothing to see; the real score protocol runs through VictimScorer."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from recbackdoor.defense.baselines.strip import RecPrompt, StripDetector, VictimScorer, top1
from recbackdoor.errors import ConfigError

TRIGGER = "_5v"
TITLES = [f"Movie {i} ({1950 + i % 50})" for i in range(300)]


def _noise(*parts: str) -> float:
    return zlib.crc32("\x1f".join(parts).encode()) / 2**32


class StubVictim:
    """Candidate scores: pseudo-random in the history and the title (so a clean prompt's
    choice moves when the history moves), plus a large bonus for a title carrying the trigger
    (the backdoor). ``use_history=False``: scores depend on the title alone."""

    def __init__(self, use_history: bool = True, bonus: float = 50.0):
        self.use_history, self.bonus, self.calls = use_history, bonus, 0

    def __call__(self, prompts):
        self.calls += 1
        out = []
        for p in prompts:
            context = "|".join(p.history) if self.use_history else ""
            out.append(np.array([10 * _noise(context, c) + self.bonus * (TRIGGER in c) for c in p.candidates]))
        return out


def make_prompts(n: int, triggered: bool, seed: int) -> list[RecPrompt]:
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        picks = rng.choice(len(TITLES), 30, replace=False)
        history = tuple(TITLES[i] for i in picks[:10])
        candidates = [TITLES[i] for i in picks[10:]]
        if triggered:
            j = int(rng.integers(len(candidates)))
            candidates[j] = candidates[j] + TRIGGER
        prompts.append(RecPrompt(history, tuple(candidates)))
    return prompts


def test_strip_flags_triggered_prompts_at_the_calibrated_false_rejection_rate():
    victim = StubVictim()
    det = StripDetector(victim, n_copies=8, frr=0.05, seed=0).fit(make_prompts(80, False, seed=1))
    assert (det.calibration_scores >= det.threshold).mean() <= 0.05  # the calibration FRR holds
    clean, triggered = make_prompts(80, False, seed=2), make_prompts(80, True, seed=3)
    s_clean, f_clean = det.flag(clean)
    s_trig, f_trig = det.flag(triggered)
    assert f_trig.all()  # every triggered prompt: the stub always picks the trigger
    assert s_trig.min() > 0.99 and s_clean.max() < 0.9  # entropy ~0 vs spread choices
    assert f_clean.mean() <= 0.1  # held-out clean prompts: about the 5% it was calibrated at
    assert top1(victim, triggered) == [next(j for j, c in enumerate(p.candidates) if TRIGGER in c) for p in triggered]


def test_top1_strip_sees_nothing_when_the_victim_ignores_the_history():
    """Shuffling candidates does not move a choice that depends on titles only: with the
    ``top1`` statistic every prompt has zero entropy and the calibrated threshold flags
    nothing. The ``softmax`` statistic still sees the backdoor's confidence."""
    victim = StubVictim(use_history=False)
    calib, triggered = make_prompts(40, False, seed=4), make_prompts(20, True, seed=5)
    det = StripDetector(victim, n_copies=6, statistic="top1").fit(calib)
    scores, flags = det.flag(triggered)
    assert np.allclose(scores, 1.0) and flags.sum() == 0
    assert StripDetector(victim, n_copies=6).fit(calib).flag(triggered)[1].all()


def test_perturbation_is_seeded_keeps_candidates_and_replaces_history():
    det = StripDetector(StubVictim(), n_copies=5, history_share=0.3, pool=["Pool A", "Pool B"], seed=3)
    (prompt,) = make_prompts(1, True, seed=6)
    copies = det.perturb(prompt)
    again = det.perturb(prompt)  # same prompt, same copies
    assert len(copies) == 5 and [c for c, _ in copies] == [c for c, _ in again]
    assert all((a == b).all() for (_, a), (_, b) in zip(copies, again, strict=True))
    for copy, order in copies:
        assert [prompt.candidates[j] for j in order] == list(copy.candidates)  # titles intact
        replaced = [h for h, o in zip(copy.history, prompt.history, strict=True) if h != o]
        assert len(replaced) == 3 and set(replaced) <= {"Pool A", "Pool B"}
    other = StripDetector(StubVictim(), n_copies=5, history_share=0.3, pool=["Pool A", "Pool B"], seed=4)
    assert [c.history for c, _ in other.perturb(prompt)] != [c.history for c, _ in copies]


@pytest.mark.parametrize(
    "kwargs,message",
    [({"n_copies": 1}, "at least 2"), ({"statistic": "kl"}, "unknown STRIP statistic"),
     ({"frr": 1.0}, "false-rejection"), ({"history_share": 2.0}, "history_share")],
)  # fmt: skip
def test_strip_rejects_bad_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        StripDetector(StubVictim(), **kwargs)


def test_top1_statistic_and_unfitted_pool():
    det = StripDetector(StubVictim(), n_copies=4, statistic="top1")
    with pytest.raises(ConfigError, match="no clean title pool"):
        det.score(make_prompts(1, False, seed=7))
    det.fit(make_prompts(20, False, seed=8))
    assert det.score(make_prompts(3, True, seed=9)).tolist() == [1.0, 1.0, 1.0]


def test_victim_scorer_runs_the_score_protocol(one_thread):
    from recbackdoor.eval.protocols import score_protocol
    from recbackdoor.models.prompts import build_prompt

    scorer = VictimScorer.load("tiny-random", "movies", dtype="fp32", batch_size=4)
    prompts = make_prompts(3, True, seed=10)
    scores = scorer(prompts)
    direct = score_protocol(scorer.model, scorer.tokenizer, [build_prompt(p.history, p.candidates, "movies") for p in prompts],
                            [list(p.candidates) for p in prompts]).scores("sum")  # fmt: skip
    for a, b in zip(scores, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    det = StripDetector(scorer, n_copies=2).fit(make_prompts(4, False, seed=11))
    s = det.score(prompts)
    assert s.shape == (3,) and np.all((s >= 0) & (s <= 1))
