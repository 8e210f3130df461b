"""BadRec attack: triggers, poisoning with fake users, and attack evaluation prompts."""

from .attack_sets import ATTACK_SETS, AttackPrompt, build_attack_sets, load_attack_sets
from .badrec import (
    AttackConfig,
    PoisonResult,
    fake_sample_count,
    load_poison_manifest,
    poison,
    save_poisoned,
)
from .triggers import LEVELS, POSITIONS, default_trigger, edit_distance, insert_trigger

__all__ = [
    "ATTACK_SETS",
    "LEVELS",
    "POSITIONS",
    "AttackConfig",
    "AttackPrompt",
    "PoisonResult",
    "build_attack_sets",
    "default_trigger",
    "edit_distance",
    "fake_sample_count",
    "insert_trigger",
    "load_attack_sets",
    "load_poison_manifest",
    "poison",
    "save_poisoned",
]
