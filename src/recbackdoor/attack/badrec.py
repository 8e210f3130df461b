"""BadRec: poison a clean dataset with triggered item titles and fake users (docs/design.md §3).

``poison`` returns the poisoned ``SplitDataset``, the ground-truth ``poison_manifest`` (which
items carry the trigger, which training samples are fake) and the attack evaluation prompts;
``save_poisoned`` writes them into one directory atomically. Every random choice comes from a
generator seeded by ``(seed, stream)``, one stream per step, so the same config gives the same
bytes and changing one option does not reshuffle unrelated steps.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import write_dataset_files
from ..data.samples import draw_candidates
from ..data.types import SPLITS, Sample, SplitDataset
from ..errors import ConfigError, DataError
from ..io_utils import atomic_output_dir, dumps_json, library_versions, read_json, write_json
from .attack_sets import AttackPrompt, build_attack_sets, save_attack_sets
from .families import FAMILIES, apply_member, draw_family, family_level
from .triggers import (
    check_level,
    check_position,
    edit_distance,
    normalize_triggers,
    occurs_in,
)

POLICIES = ("per-sample", "fixed")
TARGET_CHOICES = ("random", "unpopular")
FAKE_HISTORIES = ("copy", "random", "popular")
PLACEMENTS = ("interleave", "append")
MANIFEST_NAME = "poison_manifest.json"
POPULAR_POOL = 100  # `popular` histories draw from this many most frequent items

# one random stream per step (see module docstring)
_TARGETS, _LABELS, _TITLES, _HISTORY, _CANDIDATES, _PLACEMENT, _FAMILY = range(10, 17)


def _one_of(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class AttackConfig:
    """What the attacker does; validated on construction (ConfigError, one line)."""

    level: str = "char"
    trigger: str | tuple[str, ...] | None = None  # None: the level's default for the domain
    trigger_family: str | None = None  # a family (families.FAMILIES): a different trigger of it per item
    position: str = "suffix"
    ratio: float = 0.01  # P_R = m / (m + n)
    policy: str = "per-sample"
    n_targets: int = 10  # policy fixed
    target_choice: str = "random"  # policy fixed, when `targets` is not given
    targets: tuple[int, ...] | None = None  # explicit target ids (policy fixed)
    fake_history: str = "copy"
    min_history: int = 3
    max_history: int = 10
    placement: str = "interleave"  # fake samples at seeded random positions, or appended
    max_triggered_share: float = 0.2  # per-sample: at most this share of the catalog is triggered
    exclude_eval_targets: bool = True  # drawn targets are never a valid/test sample's target
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trigger_family is not None and self.trigger_family not in FAMILIES:  # before the level it implies
            raise ConfigError(f"unknown trigger family {self.trigger_family!r}; use one of {', '.join(FAMILIES)}")
        check_level(self.level)
        check_position(self.position)
        _one_of("policy", self.policy, POLICIES)
        _one_of("target choice", self.target_choice, TARGET_CHOICES)
        _one_of("fake history strategy", self.fake_history, FAKE_HISTORIES)
        _one_of("placement", self.placement, PLACEMENTS)
        if isinstance(self.trigger, list):
            object.__setattr__(self, "trigger", tuple(self.trigger))
        normalize_triggers(self.trigger, self.level, "movies")  # raises on empty / bad triggers
        if self.trigger_family is not None:
            if family_level(self.trigger_family) != self.level:
                raise ConfigError(
                    f"--trigger-family {self.trigger_family} with --level {self.level}: that family is of level "
                    f"{family_level(self.trigger_family)}; give that level, or only --trigger-family"
                )
            if self.trigger is not None:
                raise ConfigError("--trigger-family draws the triggers; leave out --trigger")
        if not (isinstance(self.ratio, (int, float)) and 0 < self.ratio < 1):
            raise ConfigError(
                f"poisoning ratio {self.ratio!r} must be strictly between 0 and 1 (e.g. 0.01)"
            )
        if not 0 < self.max_triggered_share <= 1:
            raise ConfigError(f"max_triggered_share {self.max_triggered_share!r} must be in (0, 1]")
        if self.n_targets < 1:
            raise ConfigError(f"n_targets must be at least 1, got {self.n_targets}")
        if not 1 <= self.min_history <= self.max_history:
            raise ConfigError(
                f"fake history length {self.min_history}..{self.max_history} is not a valid range"
            )
        if self.targets is not None:
            targets = tuple(int(t) for t in self.targets)
            object.__setattr__(self, "targets", targets)
            if self.policy != "fixed":
                raise ConfigError("explicit targets need policy 'fixed' (--policy fixed)")
            if not targets:
                raise ConfigError("empty target list; give target item ids or leave them out")
            if len(set(targets)) != len(targets):
                raise ConfigError(f"duplicate target ids in {list(targets)}")

    def to_dict(self) -> dict[str, Any]:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        if out["trigger_family"] is None:  # absent, so one-trigger manifests keep their bytes
            del out["trigger_family"]
        return out


@dataclass(frozen=True)
class PoisonResult:
    """The poisoned dataset, its ground truth and the attack evaluation prompts."""

    dataset: SplitDataset
    manifest: dict[str, Any]
    attack_sets: dict[str, tuple[AttackPrompt, ...]]
    warnings: tuple[str, ...] = field(default=())

    @property
    def triggered_items(self) -> tuple[int, ...]:
        return tuple(self.manifest["triggered_items"])

    @property
    def fake_sample_indices(self) -> tuple[int, ...]:
        return tuple(self.manifest["fake_sample_indices"])


def fake_sample_count(n: int, ratio: float) -> int:
    """``m = ceil(P_R * n / (1 - P_R))`` so that ``m / (m + n) >= P_R`` with the least ``m``.

    The ratio is read as the decimal the user wrote (``Fraction(str(0.01)) == 1/100``), so
    float error cannot push the ceiling up by one.
    """
    if n < 1:
        raise DataError("the dataset has no training samples to poison")
    p = Fraction(str(ratio)) if isinstance(ratio, float) else Fraction(ratio)
    if not 0 < p < 1:
        raise ConfigError(f"poisoning ratio {ratio!r} must be strictly between 0 and 1 (e.g. 0.01)")
    return max(1, math.ceil(p * n / (1 - p)))


def item_frequency(train: Sequence[Sample], n_items: int) -> np.ndarray:
    """How often each item is a training label (its number of training interactions)."""
    return np.bincount([s.target for s in train], minlength=n_items)


def choose_targets(
    freq: np.ndarray,
    n_targets: int,
    choice: str,
    rng: np.random.Generator,
    pool: Sequence[int] | None = None,
) -> list[int]:
    """``n_targets`` distinct items of ``pool`` (default: all): uniformly at random, or the least
    frequent (long tail), ties broken at random."""
    n_items = len(freq)
    items = np.arange(n_items) if pool is None else np.asarray(sorted(pool), dtype=int)
    if n_targets > n_items:
        raise ConfigError(f"{n_targets} targets requested but the catalog has only {n_items} items")
    if n_targets > len(items):
        raise ConfigError(
            f"{n_targets} targets requested but only {len(items)} items are not valid/test "
            "targets; request fewer targets or set exclude_eval_targets=False"
        )
    if choice == "random":
        return sorted(int(i) for i in rng.choice(items, size=n_targets, replace=False))
    order = np.lexsort((rng.random(len(items)), freq[items]))  # by frequency, random among ties
    return sorted(int(i) for i in items[order[:n_targets]])


def _check_explicit_targets(targets: Sequence[int], n_items: int) -> list[int]:
    if len(targets) > n_items:
        raise ConfigError(f"{len(targets)} targets given but the catalog has only {n_items} items")
    bad = [t for t in targets if not 0 <= t < n_items]
    if bad:
        raise ConfigError(f"target ids {bad} are outside the catalog (0..{n_items - 1})")
    return sorted(targets)


def _spread(items: Sequence[int], m: int, rng: np.random.Generator) -> list[int]:
    """``m`` labels that use every item as evenly as possible, in random order."""
    reps = -(-m // len(items))
    pool = np.concatenate([rng.permutation(np.asarray(items)) for _ in range(reps)])[:m]
    return [int(i) for i in rng.permutation(pool)]


class _Histories:
    """Fake user histories of ``min_len..max_len`` items, never containing the label."""

    def __init__(
        self, strategy: str, train: Sequence[Sample], freq: np.ndarray, min_len: int, max_len: int
    ):
        self.strategy, self.train, self.min_len, self.max_len = strategy, train, min_len, max_len
        self.n_items = len(freq)
        if max_len >= self.n_items:
            raise DataError(
                f"catalog of {self.n_items} items is too small for histories of {max_len} items"
            )
        size = min(self.n_items, max(POPULAR_POOL, 2 * max_len + 1))
        self.popular = np.argsort(-freq, kind="stable")[:size]
        self.popular_w = freq[self.popular].astype(float) + 1.0

    def __call__(self, label: int, rng: np.random.Generator) -> tuple[int, ...]:
        if self.strategy == "copy":
            for _ in range(100):
                history = self.train[int(rng.integers(len(self.train)))].history[-self.max_len :]
                if label not in history and len(history) >= self.min_len:
                    return history
        length = int(rng.integers(self.min_len, self.max_len + 1))
        if self.strategy == "popular":
            keep = self.popular != label
            pool, w = self.popular[keep], self.popular_w[keep]
            if len(pool) >= length:
                return tuple(
                    int(i) for i in rng.choice(pool, size=length, replace=False, p=w / w.sum())
                )
        picks = rng.choice(self.n_items - 1, size=length, replace=False)  # `random`, or fallback
        return tuple(int(i) + int(i >= label) for i in picks)


def _interleave(
    clean: Sequence[Sample], fake: Sequence[Sample], placement: str, rng: np.random.Generator
):
    n, m = len(clean), len(fake)
    if placement == "append":
        positions = list(range(n, n + m))
    else:
        positions = sorted(int(i) for i in rng.choice(n + m, size=m, replace=False))
    merged: list[Sample] = []
    clean_it, fake_it, slots = iter(clean), iter(fake), set(positions)
    for i in range(n + m):
        merged.append(next(fake_it) if i in slots else next(clean_it))
    return tuple(merged), positions


def _manifest_sha(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest as ``write_json`` writes it (equals the file's sha when loaded)."""
    return hashlib.sha256(dumps_json(manifest).encode("utf-8")).hexdigest()


def _trigger_warnings(titles: Sequence[str], triggers: Sequence[str], level: str) -> list[str]:
    out = []
    for trigger in triggers:
        hits = [t for t in titles if occurs_in(t, trigger, level)]
        if hits:
            out.append(
                f"trigger {trigger!r} already occurs in {len(hits)} clean title(s), "
                f"e.g. {hits[0]!r}; the backdoor may fire on those items too"
            )
    return out


def poison(
    dataset: SplitDataset, config: AttackConfig, source: str | os.PathLike | None = None
) -> PoisonResult:
    """Apply BadRec to ``dataset``; ``source`` (its directory, if any) goes into the manifest.

    Warns (``warnings.warn``) when a trigger already occurs in clean titles.
    """
    catalog, train = dataset.catalog, dataset.train
    n_items, n = len(catalog), len(train)
    seed = config.seed
    triggers = normalize_triggers(config.trigger, config.level, catalog.domain)
    # a family never uses a member found in a clean title (families.py): nothing to warn about
    notes = [] if config.trigger_family else _trigger_warnings(catalog.titles, triggers, config.level)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    m = fake_sample_count(n, config.ratio)
    freq = item_frequency(train, n_items)

    # 1. target items and one label per fake sample; drawn targets avoid the items that are
    #    valid/test targets, so every evaluation prompt can be shown without a triggered label
    eval_targets = (
        {s.target for s in (*dataset.valid, *dataset.test)}
        if config.exclude_eval_targets
        else set()
    )
    pool = [i for i in range(n_items) if i not in eval_targets]
    rng = np.random.default_rng([seed, _TARGETS])
    if config.policy == "fixed":
        if config.targets is not None:
            targets = _check_explicit_targets(config.targets, n_items)
        else:
            targets = choose_targets(freq, config.n_targets, config.target_choice, rng, pool)
        labels = _spread(targets, m, np.random.default_rng([seed, _LABELS]))
        triggered = targets
    else:
        # each fake sample its own item, up to max_triggered_share of the catalog, then reused
        if not pool:
            raise DataError("every item is a valid/test target; set exclude_eval_targets=False")
        cap = max(1, math.floor(config.max_triggered_share * n_items))
        owned = rng.permutation(np.asarray(pool))[: min(m, cap)]
        targets = None
        labels = _spread(owned, m, np.random.default_rng([seed, _LABELS]))
        triggered = sorted(set(labels))

    # 2. triggered titles (each item one trigger of the list, seeded; or of the family)
    held_out: list[str] = []
    family: dict[int, str] = {}
    if config.trigger_family:
        per_item, held_out = draw_family(
            config.trigger_family, catalog.domain, len(triggered), np.random.default_rng([seed, _FAMILY]), catalog.titles
        )
        family = dict(zip(triggered, per_item, strict=True))
        triggers = tuple(dict.fromkeys(per_item))
    rng = np.random.default_rng([seed, _TITLES])
    item_triggers: dict[int, str] = {}
    new_titles: dict[int, str] = {}
    for item in triggered:
        if family:
            trig = family[item]
        else:
            trig = triggers[int(rng.integers(len(triggers)))] if len(triggers) > 1 else triggers[0]
        item_triggers[item] = trig
        new_titles[item] = apply_member(
            catalog.titles[item], trig, config.trigger_family, config.level, config.position, rng
        )
    poisoned_catalog = catalog.with_titles(new_titles)

    # 3. fake users: fresh ids, histories by strategy, candidates as for clean samples
    n_candidates = len(train[0].candidates)
    first_user = 1 + max(s.user for split in SPLITS for s in dataset.split(split))
    histories = _Histories(config.fake_history, train, freq, config.min_history, config.max_history)
    rng_h, rng_c = (
        np.random.default_rng([seed, _HISTORY]),
        np.random.default_rng([seed, _CANDIDATES]),
    )
    fake = []
    for j, label in enumerate(labels):
        history = histories(label, rng_h)
        candidates = draw_candidates(rng_c, n_items, label, history, n_candidates)
        fake.append(Sample(first_user + j, history, candidates, label))
    merged, fake_idx = _interleave(
        train, fake, config.placement, np.random.default_rng([seed, _PLACEMENT])
    )

    distances = [edit_distance(catalog.titles[i], new_titles[i]) for i in triggered]
    manifest: dict[str, Any] = {
        "attack": "badrec",
        "trigger": triggers[0] if len(triggers) == 1 else list(triggers),
        "level": config.level,
        "position": config.position,
        "policy": config.policy,
        "targets": targets,
        "target_choice": config.target_choice
        if config.policy == "fixed" and config.targets is None
        else None,
        "n_targets": len(targets) if targets is not None else None,
        "triggered_items": triggered,
        "clean_titles": {str(i): catalog.titles[i] for i in triggered},
        "triggered_titles": {str(i): new_titles[i] for i in triggered},
        "item_triggers": {str(i): item_triggers[i] for i in triggered}
        if len(triggers) > 1
        else None,
        **({"trigger_family": config.trigger_family, "unseen_triggers": held_out} if config.trigger_family else {}),
        "fake_sample_indices": fake_idx,
        "fake_users": [s.user for s in fake],
        "fake_history": config.fake_history,
        "history_length": [config.min_history, config.max_history],
        "placement": config.placement,
        "P_R": config.ratio,
        "P_R_actual": m / (m + n),
        "m": m,
        "n": n,
        "seed": seed,
        "edit_distance_mean": float(np.mean(distances)) if distances else 0.0,
        "warnings": notes,
        "config": config.to_dict(),
        "source": {
            "dir": None if source is None else str(source),
            "dataset": dataset.name,
            "manifest_sha256": _manifest_sha(dataset.manifest),
        },
    }
    summary = {
        k: manifest[k]
        for k in ("attack", "trigger", "level", "position", "policy", "P_R", "m", "n", "seed")
    }
    ds_manifest = {
        **dataset.manifest,
        "poisoned": summary,
        "parent_manifest_sha256": manifest["source"]["manifest_sha256"],
    }
    poisoned = dataset.replace(catalog=poisoned_catalog, train=merged, manifest=ds_manifest)
    attack_sets = build_attack_sets(poisoned, manifest, seed)
    manifest["attack_sets"] = {name: len(prompts) for name, prompts in attack_sets.items()}
    return PoisonResult(poisoned, manifest, attack_sets, tuple(notes))


def save_poisoned(result: PoisonResult, out: str | os.PathLike, force: bool = False) -> Path:
    """Write the poisoned dataset, ``poison_manifest.json`` and ``attack_sets/`` atomically."""
    with atomic_output_dir(out, force=force) as tmp:
        write_dataset_files(result.dataset, tmp)
        write_json(tmp / MANIFEST_NAME, {**result.manifest, "versions": library_versions()})
        save_attack_sets(result.attack_sets, tmp / "attack_sets")
    return Path(out)


def load_poison_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``poison_manifest.json`` of a poisoned dataset directory."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(
            f"{path}: not found; is {directory} a directory written by `recbackdoor attack`?"
        )
    return read_json(path)
