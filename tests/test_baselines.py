"""Baseline detectors: the statistical detector on a synthetic catalog, ONION and BKI with a
controlled LM and with the tiny-random backbone, the embedding detector with the real MiniLM."""

from __future__ import annotations

import numpy as np
import pytest

from recbackdoor.defense.base import Detector, flag
from recbackdoor.defense.baselines import BASELINES, make_detector
from recbackdoor.defense.baselines.common import words
from recbackdoor.defense.baselines.onion import OnionDetector
from recbackdoor.defense.baselines.stat import StatDetector, shape
from recbackdoor.errors import ConfigError

_SYLLABLES = ["ka", "lo", "mi", "ther", "an", "sel", "dor", "u", "bri", "ven", "os", "tal", "ge", "run"]


def _vocabulary(rng: np.random.Generator, n: int) -> list[str]:
    """Capitalised pseudo-words of 1-4 syllables: varied lengths, like real title words."""
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 5)))).capitalize())
    return sorted(out)


def natural_catalog(n: int = 300, seed: int = 0) -> list[str]:
    """Movie-like titles of 1-4 vocabulary words, some 'X of the Y' or 'The X', with a year."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng, 400)
    titles: set[str] = set()
    while len(titles) < n:
        t = " ".join(rng.choice(vocab, size=int(rng.integers(1, 4))))
        if rng.random() < 0.3:
            t += f" of the {rng.choice(vocab)}"
        if rng.random() < 0.2:
            t = f"The {t}"
        titles.add(f"{t} ({rng.integers(1930, 2000)})")
    return sorted(titles)


NATURAL_EDITS = ["(Director's Cut)", "(Remastered)", "Part II", "- Special Edition", "Redux", "Extended"]


def poisoned_catalog(trigger_fn, n_poison: int = 8, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """A natural catalog where ``n_poison`` titles carry a trigger and six other titles carry one
    natural edit each; returns titles and 0/1 truth."""
    titles = natural_catalog(seed=seed)
    rng = np.random.default_rng(seed + 1)
    idx = rng.choice(len(titles), n_poison + len(NATURAL_EDITS), replace=False)
    y = np.zeros(len(titles), dtype=int)
    for i in idx[:n_poison]:
        titles[i] = trigger_fn(titles[i])
        y[i] = 1
    for i, edit in zip(idx[n_poison:], NATURAL_EDITS, strict=True):
        titles[i] = f"{titles[i]} {edit}"
    return titles, y


# ---------------------------------------------------------------- stat


@pytest.mark.parametrize(
    "trigger_fn,span",
    [
        (lambda t: f"{t}_q7z", "_q7z"),
        (lambda t: f"{t} zx", "zx"),
        (lambda t: f"{t} I saw it in 3D", "I saw it in 3D"),
        (lambda t: f"q7z_{t}", "q7z_"),
    ],
    ids=["char-suffix", "word-suffix", "sentence-suffix", "char-prefix"],
)
def test_stat_flags_repeated_rare_fragment_and_not_natural_edits(trigger_fn, span):
    titles, y = poisoned_catalog(trigger_fn)
    det = StatDetector().fit(titles, "movies")
    scores, flags = flag(det, titles)
    assert flags.tolist() == y.tolist()  # every trigger, and no natural edit, is flagged
    spans = det.spans([t for t, f in zip(titles, flags, strict=True) if f])
    assert set(spans) == {span}


def test_stat_flags_a_trigger_on_a_tenth_of_the_catalog():
    """BadRec's per-sample policy at P_R 1% triggers ~10% of LastFM: still a trigger."""
    titles, y = poisoned_catalog(lambda t: f"{t}_5v", n_poison=30)
    det = StatDetector().fit(titles, "movies")
    assert flag(det, titles)[1].tolist() == y.tolist()


def test_stat_needs_repetition_and_is_quiet_on_a_clean_catalog():
    titles = natural_catalog()
    det = StatDetector().fit(titles, "movies")
    assert flag(det, titles)[1].sum() == 0
    # a trigger on only 2 titles is below min_count: no evidence of reuse
    two, y = poisoned_catalog(lambda t: f"{t}_q7z", n_poison=2)
    assert np.all(StatDetector().fit(two, "movies").score(two)[y == 1] < 0.5)
    # a fragment on a large share of the catalog ("The ...") is not rare
    common = [f"The {t}" if i % 4 == 0 else t for i, t in enumerate(titles)]
    assert flag(StatDetector().fit(common, "movies"), common)[1].sum() == 0


def test_stat_shape_and_options():
    assert shape("Toy_5v") == "Aaa_9a" and shape("Café") == "Aaaa"
    with pytest.raises(ConfigError):
        StatDetector(min_count=1)
    with pytest.raises(ConfigError):
        StatDetector().score(["x"])  # not fitted
    titles, _ = poisoned_catalog(lambda t: f"{t}_q7z")
    assert StatDetector(threshold=2.0).fit(titles, "movies").threshold == 2.0
    with pytest.raises(ConfigError, match="domain"):
        StatDetector().fit(titles, "books")


# ---------------------------------------------------------------- registry


def test_registry_builds_every_baseline_and_rejects_unknown_names():
    for name in BASELINES:
        det = make_detector(name, backbone="tiny-random", seed=0)
        assert isinstance(det, Detector) and det.name == name
    with pytest.raises(ConfigError, match="unknown baseline detector 'strip-me'"):
        make_detector("strip-me")


def test_words_split_glued_one_word_titles():
    assert words("Toy Story (1995)") == ["Toy", "Story", "(1995)"]
    assert words("Babe_5v") == ["Babe", "_5v"]
    assert words("Heat") == ["Heat"]


# ---------------------------------------------------------------- ONION and BKI


class MarkerLM:
    """A stand-in LM: a text is 'disfluent' in proportion to the marker words it contains,
    and its embedding is dominated by them, so the expected outcome is known."""

    def __init__(self, marker: str = "zq") -> None:
        self.marker = marker

    def run(self, texts, domain="movies", want="nll"):
        counts = np.array([t.split().count(self.marker) for t in texts], dtype=float)
        lengths = np.array([len(t) for t in texts], dtype=float)
        if want == "nll":
            return 1.0 + counts + 0.001 * lengths
        return np.stack([np.array([1.0, 0.01 * n, 5.0 * c]) for n, c in zip(lengths, counts, strict=True)])


def test_onion_flags_the_word_whose_removal_restores_fluency():
    titles = natural_catalog(60)
    titles[3] = titles[3] + " zq"
    titles[7] = "zq " + titles[7]
    titles.append("Heat")  # one word: scored 0, not dropped
    det = OnionDetector(lm=MarkerLM(), flag_rate=2 / len(titles)).fit(titles, "movies")
    scores, flags = flag(det, titles)
    assert len(scores) == len(titles) and scores[-1] == 0.0
    assert np.flatnonzero(flags).tolist() == [3, 7]
    assert det.spans([titles[3], titles[7]]) == ["zq", "zq"]


def test_bki_finds_the_repeated_salient_keyword():
    from recbackdoor.defense.baselines.bki import BKIDetector

    titles = natural_catalog(80)
    poisoned = [5, 17, 33, 50]
    for i in poisoned:
        titles[i] = f"{titles[i]} zq"
    det = BKIDetector(lm=MarkerLM(), flag_rate=len(poisoned) / len(titles)).fit(titles, "movies")
    _, flags = flag(det, titles)
    assert np.flatnonzero(flags).tolist() == poisoned
    assert max(det.keyword_scores, key=det.keyword_scores.get) == "zq"
    assert set(det.spans([titles[i] for i in poisoned])) == {"zq"}


@pytest.mark.parametrize("name", ["onion", "bki"])
def test_lm_baselines_run_on_the_tiny_backbone(name):
    titles = natural_catalog(40)
    titles.append("Heat")
    det = make_detector(name, backbone="tiny-random", dtype="fp32", flag_rate=0.05)
    det.fit(titles, "movies")
    scores, flags = flag(det, titles)
    assert scores.shape == (len(titles),) and np.all(np.isfinite(scores))
    assert 0 < flags.sum() <= 0.05 * len(titles)  # the threshold rule: at most 5% flagged
    again = make_detector(name, backbone="tiny-random", dtype="fp32").fit(titles, "movies").score(titles)
    np.testing.assert_allclose(again, scores, rtol=1e-5)


# ---------------------------------------------------------------- embedding outliers


def test_embed_detector_isolates_an_off_catalog_title():
    from recbackdoor.defense.baselines.embed import EmbedDetector, minilm_path

    assert (minilm_path() / "model.safetensors").is_file()
    titles = natural_catalog(60)
    odd = "qx7 vb9 zz_0 kk2"
    titles.append(odd)
    det = EmbedDetector(seed=0, flag_rate=0.02).fit(titles, "movies")
    scores = det.score(titles)
    assert int(np.argmax(scores)) == len(titles) - 1
    assert flag(det, [odd])[1].tolist() == [1]
    np.testing.assert_allclose(EmbedDetector(seed=0, encoder=det.encoder).fit(titles, "movies").score(titles), scores)


# ---------------------------------------------------------------- BKI reads the victim


@pytest.fixture(scope="module")
def tiny_victim(tmp_path_factory):
    """A tallrec victim on tiny-random, trained two steps at a high rate so its LoRA update
    is visible in the hidden states."""
    from recbackdoor.models.lora import make_train_config
    from recbackdoor.victims.tallrec import train_victim

    from .conftest import make_synthetic_dataset

    out = tmp_path_factory.mktemp("victim") / "victim"
    config = make_train_config(backbone="tiny-random", dtype="fp32", max_steps=2, max_samples=16, lr=0.05, lora_dropout=0.0)
    return train_victim(make_synthetic_dataset(), out, config)


def test_bki_reads_the_given_victim_with_its_adapter(tiny_victim, one_thread):
    import torch
    from safetensors.torch import load_file

    from recbackdoor.defense.baselines.bki import BKIDetector
    from recbackdoor.defense.baselines.lm import TitleLM

    titles = natural_catalog(30)
    det = make_detector("bki", model=str(tiny_victim), dtype="fp32", flag_rate=0.05)
    assert isinstance(det, BKIDetector) and det.model == str(tiny_victim)
    det.fit(titles, "movies")
    lm = det.lm
    assert lm.victim_info["dir"] == str(tiny_victim) and lm.victim_info["victim"] == "tallrec"
    assert det.reads.startswith(f"victim {tiny_victim} (tallrec LoRA on tiny-random)")
    saved = load_file(tiny_victim / "adapter" / "adapter_model.safetensors")
    loaded = {k: v for k, v in lm.model.state_dict().items() if "lora_" in k}
    assert saved and len(loaded) == len(saved)
    for name, tensor in saved.items():  # the saved adapter, tensor for tensor
        match = [v for k, v in loaded.items() if k.replace(".default", "").endswith(name.split("base_model.model.", 1)[1])]
        assert len(match) == 1 and torch.equal(match[0].cpu(), tensor), name
    base = TitleLM("tiny-random", dtype="fp32")  # the untrained backbone reads differently
    assert base.source == "base backbone tiny-random (no victim model given)"
    assert not np.allclose(lm.run(titles[:5], want="embed"), base.run(titles[:5], want="embed"), atol=1e-4)


def test_bki_falls_back_to_the_base_backbone_and_says_so(capsys):
    det = make_detector("bki", backbone="tiny-random", progress=True)
    assert det.model is None and "base backbone tiny-random" in det.reads
    assert "bki: no victim model given; reading the base backbone tiny-random" in capsys.readouterr().err


def test_defend_bki_with_model_reports_the_victim_it_read(tiny_victim, tmp_path, capsys):
    from recbackdoor.attack import AttackConfig, poison, save_poisoned
    from recbackdoor.cli import main
    from recbackdoor.io_utils import read_json

    from .conftest import make_synthetic_dataset

    data = tmp_path / "poisoned"
    save_poisoned(poison(make_synthetic_dataset(n_items=60), AttackConfig(ratio=0.05, policy="fixed", n_targets=4)), data)
    rc = main(["defend", "--data", str(data), "--method", "bki", "--model", str(tiny_victim), "--out", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert rc == 0 and f"bki read the victim {tiny_victim}" in out
    assert read_json(tmp_path / "d" / "defense_report.json")["lm"].startswith(f"victim {tiny_victim}")
    rc = main(["defend", "--data", str(data), "--method", "bki", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e")])
    assert rc == 2 and "victim directory not found" in capsys.readouterr().err
