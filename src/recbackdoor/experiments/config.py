"""The experiment config (docs/design.md §6): one TOML file decides a whole study, validated by pydantic.

Unknown keys are refused (a typo must not silently fall back to a default), every key has a
default and a one-line description (``recbackdoor run --help`` points here), and ``--set
section.key=value`` overrides any key from the command line (the value is parsed as TOML, so
``--set attack.ratios=[0.05,0.2]`` and ``--set train.lr=1e-3`` work).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

# dataset name -> (loader of `data prepare`, source folder under the data root)
DATASET_SOURCES: dict[str, tuple[str, str]] = {
    "lastfm": ("lastfm", "lastfm/llara"),
    "ml100k": ("ml100k", "movielens/ml-100k"),
    "ml1m": ("ml1m", "movielens/ml-1m"),
    "steam": ("steam", "steam/llara"),
}


def _one_of(names: list[str] | dict, allowed: tuple[str, ...] | dict, what: str):
    """``names`` (a list, or a dict's keys) all in ``allowed``, else one readable ValueError."""
    for name in names:
        if name not in allowed:
            raise ValueError(f"unknown {what} {name!r}; use one of {', '.join(allowed)}")
    return names


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(_Section):
    kind: Literal["backdoor", "utility", "detect"] = Field("backdoor", description="backdoor: attack x defense cells; utility: a clean learning curve ([utility]); detect: every detector on the poisoned titles, no victim trained ([detect], `recbackdoor detect-bench`).")
    name: str = Field("study", description="Label of the study in the report.")
    seed: int = Field(0, ge=0, description="Seed of every random choice (split, subset, attack, training).")
    backbone: str = Field("smollm2-135m", description="Backbone of every victim (registry name, HF id or path).")
    threads: int | None = Field(None, gt=0, description="torch threads (None: torch's default).")


class DataSection(_Section):
    datasets: list[str] = Field(["lastfm"], min_length=1, description="Datasets: lastfm, ml100k, ml1m, steam.")
    train_samples: int | None = Field(None, gt=0, description="Seeded random subset of clean training samples (None: all).")
    candidates: int = Field(20, ge=2, description="Candidates per prompt (target + negatives).")
    history: int = Field(10, ge=1, description="Longest history in a prompt.")
    min_history: int = Field(3, ge=1, description="Shortest history a sample keeps.")

    @field_validator("datasets")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return _one_of(value, DATASET_SOURCES, "dataset")


class AttackSection(_Section):
    levels: list[Literal["char", "word", "sentence"]] = Field(["char"], min_length=1, description="Trigger levels.")
    positions: list[Literal["suffix", "prefix", "random"]] = Field(["suffix"], min_length=1, description="Trigger positions.")
    ratios: list[float] = Field([0.01], min_length=1, description="Poisoning ratios P_R = m / (m + n) of the (subset) training set.")
    policy: Literal["per-sample", "fixed"] | list[Literal["per-sample", "fixed"]] = Field("per-sample", description="Target policy (a detect study may list both).")
    n_targets: int = Field(10, ge=1, description="Targets of the fixed policy.")
    fake_history: Literal["copy", "random", "popular"] = Field("copy", description="How fake users' histories are made.")
    triggers: dict[str, str] = Field({}, description="Trigger per level, e.g. {char = \"5v\"} (default: the level's default).")
    trigger_family: bool | str | list[str] = Field(False, description="A different trigger per item: true = each level's family; or stealthy families shape | lookalike | domain, one name or a list (one attack per family; `levels` = the families' levels); not with `triggers`.")
    ratios_by_position: dict[str, list[float]] = Field({}, description="Ratios for one position instead of `ratios`, e.g. {suffix = [0.2]}.")

    @field_validator("ratios")
    @classmethod
    def _ratio(cls, value: list[float]) -> list[float]:
        for r in value:
            if not 0 < r < 1:
                raise ValueError(f"poisoning ratio {r} must be strictly between 0 and 1")
        return value

    @field_validator("ratios_by_position")
    @classmethod
    def _by_position(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        _one_of(value, ("suffix", "prefix", "random"), "position")
        for ratios in value.values():
            cls._ratio(ratios)
        return value

    @model_validator(mode="after")
    def _family_or_triggers(self) -> AttackSection:
        if self.trigger_family and self.triggers:
            raise ValueError("trigger_family draws the triggers; leave out attack.triggers")
        if isinstance(self.trigger_family, (str, list)):
            from ..attack.families import STEALTH_FAMILIES, family_level

            names = [self.trigger_family] if isinstance(self.trigger_family, str) else self.trigger_family
            if not names or len(set(names)) != len(names):
                raise ValueError("trigger_family: give distinct family names")
            _one_of(names, STEALTH_FAMILIES, "trigger family")
            levels = list(dict.fromkeys(family_level(f) for f in names))
            if sorted(self.levels) != sorted(levels):
                raise ValueError(f"trigger families {', '.join(names)} are of level(s) {', '.join(levels)}: "
                                 f"set levels = {levels!r}")
        return self

    def attacks(self) -> list[tuple[str, str | None]]:
        """(level, family) of every attack of a cell row: one per level, or one per stealthy
        family at its own level; family None = the level's one trigger, = level: its family."""
        from ..attack.families import family_level

        if isinstance(self.trigger_family, str):
            return [(family_level(self.trigger_family), self.trigger_family)]
        if isinstance(self.trigger_family, list):
            return [(family_level(f), f) for f in self.trigger_family]
        return [(level, level if self.trigger_family else None) for level in self.levels]

    def policies(self) -> list[str]:
        return [self.policy] if isinstance(self.policy, str) else list(dict.fromkeys(self.policy))

    def ratios_for(self, position: str) -> list[float]:
        return self.ratios_by_position.get(position, self.ratios)


class TrainSection(_Section):
    victims: list[str] = Field(["tallrec"], min_length=1, description="Victims (recbackdoor list): tallrec (text prompt), llara (hybrid item tokens), sasrec (no LM), popularity (target counts).")
    epochs: float = Field(1.0, gt=0, description="Epochs over the training set.")
    max_steps: int | None = Field(None, gt=0, description="Overrides epochs when set.")
    lr: float = Field(2e-4, gt=0, description="LoRA learning rate.")
    batch_size: int = Field(8, gt=0, description="Prompts per step (per process).")
    lora_r: int = Field(8, gt=0, description="LoRA rank.")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="LoRA dropout.")
    template: int | None = Field(None, ge=0, description="Prompt template (None: one per sample, seeded).")
    save_steps: int = Field(10, gt=0, description="Checkpoint every N steps (an interrupted training resumes there).")
    launcher: Literal["inline", "accelerate"] = Field("inline", description="inline: in this process; accelerate: `accelerate launch` with num_processes.")
    num_processes: int = Field(1, gt=0, description="Processes for launcher = accelerate.")
    sasrec_epochs: float = Field(50, gt=0, description="SASRec epochs (the sasrec victim; llara's item embeddings); best validation epoch kept.")
    llara_item_data: Literal["same", "full"] = Field("same", description="A hybrid victim's (llara's) SASRec: trained on the LoRA's own samples, or on the full training split (plus the fake samples, less what a defense removed).")


    @field_validator("victims")
    @classmethod
    def _registered(cls, value: list[str]) -> list[str]:
        from ..victims import VICTIMS

        return _one_of(value, VICTIMS, "victim")


class EvalSection(_Section):
    prompts: int | None = Field(None, gt=0, description="Prompts per attack set (None: the whole test split).")
    scoring: Literal["sum", "mean"] = Field("sum", description="Score protocol ranking: summed or per-token log-likelihood.")
    batch_size: int = Field(8, gt=0, description="Prompts per scoring batch.")


class DefenseSection(_Section):
    detectors: list[str] = Field(["pscanner"], description="Detectors run on the poisoned training titles (empty: no defense).")
    sanitize: Literal["drop-target", "drop-any", "strip"] = Field("drop-target", description="What is removed once items are flagged.")
    retrain: bool = Field(True, description="Train the victim again on the sanitized data and evaluate it.")
    scanner: str | None = Field(None, description="A trained P-Scanner directory (None: defend trains one).")
    only_ratios: list[float] = Field([], description="Defend only the cells at these P_R (empty: every cell), e.g. [0.01] in a P_R sweep.")

    @field_validator("detectors")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from ..defense.registry import detector_names

        return _one_of(value, detector_names("titles"), "detector")


class UtilitySection(_Section):
    train_samples: list[int] = Field([160, 480, 960, 1920], min_length=1, description="Learning-curve budgets: clean training samples (seeded subsets, as data.train_samples).")
    references: list[Literal["untrained", "popularity", "sasrec"]] = Field(["untrained", "popularity", "sasrec"], description="Reference rows on the same prompts (popularity and sasrec trained on the full training split).")
    splits: list[Literal["valid", "test"]] = Field(["valid", "test"], min_length=1, description="Held-out users evaluated, pooled (valid + test: twice the prompts, smaller SE).")

    @field_validator("train_samples")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(n <= 0 for n in value) or len(set(value)) != len(value):
            raise ValueError("training budgets must be positive and distinct")
        return sorted(value)


class DetectSection(_Section):
    methods: list[str] = Field([], description="Detectors (recbackdoor list; strip needs `model`); empty: every title detector.")
    scanner: str | None = Field(None, description="A trained P-Scanner directory (None: fit trains one on each poisoned catalog, as defend does).")
    model: str | dict[str, str] | None = Field(None, description="The victim bki and strip read (a `train` output or a backbone), or one per level {char = DIR, ...}.")
    reuse_models: bool = Field(False, description="One detector per method across cells in a process (titles scored once; later cells' seconds count new titles only).")
    strip_copies: int = Field(8, ge=2, description="STRIP: perturbed copies per prompt.")
    strip_frr: float = Field(0.05, ge=0, lt=1, description="STRIP: false-rejection rate on the clean calibration prompts.")
    strip_history_share: float = Field(0.5, gt=0, le=1, description="STRIP: share of the history replaced in a perturbed copy.")
    strip_max_prompts: int | None = Field(None, ge=2, description="STRIP: at most N prompts per set (and calibration prompts).")
    strip_batch_size: int = Field(8, gt=0, description="STRIP: prompts per scoring batch.")

    @field_validator("methods")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from ..defense.registry import detector_names

        return _one_of(value, detector_names(), "detector")


class ExperimentConfig(_Section):
    """A whole study: every dataset x victim x level x position x P_R, each defended by every
    detector."""

    run: RunSection = RunSection()
    data: DataSection = DataSection()
    attack: AttackSection = AttackSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    defense: DefenseSection = DefenseSection()
    utility: UtilitySection = UtilitySection()
    detect: DetectSection = DetectSection()

    @model_validator(mode="after")
    def _kind_fits(self) -> ExperimentConfig:
        if self.run.kind == "utility" and self.data.train_samples is not None:
            raise ValueError("a utility study takes its budgets from utility.train_samples; leave out data.train_samples")
        if self.run.kind != "detect" and len(self.attack.policies()) > 1:
            raise ValueError("one attack.policy per backdoor study (a detect study may list several)")
        return self


def _parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (numbers, lists, booleans, quoted strings); else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` pairs on top of the file's dict (a new dict)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: use section.key=value, e.g. --set train.lr=1e-3")
        section = out.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"--set {item!r}: {parts[0]} is not a section")
        section[parts[1]] = _parse_value(value.strip())
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate a config; any problem is one ``ConfigError`` line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return validate_config(apply_overrides(raw, overrides or []), str(path))


def validate_config(raw: dict[str, Any], source: str) -> ExperimentConfig:
    """``raw`` as a config; any problem is one ``ConfigError`` line naming ``source`` and the key."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "config"
        msg = "unknown key (see configs/README.md for the keys)" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{source}: {where}: {msg}") from None


def describe_keys() -> str:
    """Every section and key with its default and description (for docs and --help)."""
    lines = []
    for section, field in ExperimentConfig.model_fields.items():
        lines.append(f"[{section}]")
        model = field.annotation
        for key, f in model.model_fields.items():
            lines.append(f"  {f'{key} = {f.default!r}':<34} # {f.description}")
    return "\n".join(lines)
