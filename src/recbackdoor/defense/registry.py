"""The detector table: every detector's name, factory, unit and needs, in one place.

``defend``, ``detect-bench``, the study config's validation, the CLI's choices and
``recbackdoor list`` all read :data:`DETECTORS`; no code outside a detector's own module tests
its name. Adding a detector is one module (a class with ``fit``/``score``/``threshold``, see
``base.Detector``) plus one :func:`register` call, here or in the new module (see
``docs/developer-guide.md``).

Title detectors (unit ``titles``) are built with the keyword options of :class:`BuildOptions`
and fitted on a catalog's training titles; prompt detectors (unit ``prompts``, STRIP) are built
around a victim's scorer and run by ``detect-bench`` on the attack sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..errors import ConfigError

Unit = Literal["titles", "prompts"]
VictimUse = Literal["no", "optional", "required"]


@dataclass(frozen=True)
class BuildOptions:
    """What a title detector's factory may use; each factory takes the options it needs."""

    backbone: str | None = None  # the LM a detector reads (None: its own default)
    seed: int = 0
    threshold: float | None = None  # overrides the detector's calibrated threshold
    scanner_dir: str | None = None  # P-Scanner: a trained scanner to load instead of training one
    model_dir: str | None = None  # the victim being defended (bki reads it when given)
    progress: bool = True


@dataclass(frozen=True)
class DetectorEntry:
    """One detector: ``factory(options)`` builds it unfitted (title detectors take
    :class:`BuildOptions`; prompt detectors their own keyword arguments)."""

    name: str
    summary: str
    unit: Unit
    factory: Callable[..., Any]
    victim: VictimUse = "no"  # whether it reads the victim being defended
    loads: bool = False  # it can load a trained detector folder (--scanner); else fit trains it on the catalog
    channels: tuple[str, ...] = ()  # ablation modes of ``set_channels`` besides "both" (detect-bench rows NAME-MODE)
    # bumped when the detector's output on the same input changes: stages that ran it are keyed by it
    version: int = 1

    def stage_options(self) -> dict[str, int]:
        """What keys a stage that ran this detector besides its inputs: its version, when it has
        changed (none at version 1, so older stages keep their keys)."""
        return {"version": self.version} if self.version != 1 else {}

    def build(self, options: BuildOptions | None = None, **kwargs: Any) -> Any:
        if self.unit == "titles":
            options = options or BuildOptions()
            if self.victim == "no":  # the victim is read only by the detectors that say so
                options = replace(options, model_dir=None)
            if options.scanner_dir is not None and not self.loads:
                raise ConfigError(f"--scanner is only used by method {', '.join(n for n, e in DETECTORS.items() if e.loads)}, "
                                  f"not {self.name!r}")
            return self.factory(options)
        return self.factory(**kwargs)


DETECTORS: dict[str, DetectorEntry] = {}


def register(entry: DetectorEntry) -> DetectorEntry:
    """Add a detector to the table (a name is registered once)."""
    if entry.name in DETECTORS and DETECTORS[entry.name] != entry:
        raise ConfigError(f"detector {entry.name!r} is already registered")
    DETECTORS[entry.name] = entry
    return entry


def detector_entry(name: str, unit: Unit | None = None) -> DetectorEntry:
    """The entry of ``name`` (of ``unit`` when given); one ConfigError line otherwise."""
    names = detector_names(unit)
    if name not in names:
        what = {"titles": "title detector", "prompts": "prompt detector", None: "detector"}[unit]
        raise ConfigError(f"unknown {what} {name!r}; use one of {', '.join(names)}")
    return DETECTORS[name]


def detector_names(unit: Unit | None = None) -> tuple[str, ...]:
    """Registered names (of one unit), in registration order."""
    return tuple(n for n, e in DETECTORS.items() if unit is None or e.unit == unit)


# --------------------------------------------------------------------------- the built-ins


def _pscanner(o: BuildOptions) -> Any:
    """A trained scanner from ``scanner_dir``; else a fresh ``CatalogTrainedScanner`` that
    ``fit`` trains on the training titles themselves with ``ScannerConfig.fast()``, after the
    robust first pass has left every title sharing a repeated fragment of an unusual shape out
    of its negatives (``pscanner/robust.py``), so the catalog's own poison is not learnt as
    clean."""
    if o.scanner_dir is not None:
        from .pscanner.scanner import load_scanner

        detector: Any = load_scanner(o.scanner_dir, progress=o.progress)
    else:
        from .pscanner.train import CatalogTrainedScanner, ScannerConfig

        name = o.backbone or ScannerConfig.backbone
        detector = CatalogTrainedScanner(ScannerConfig.fast(backbone=name, seed=o.seed), progress=o.progress)
    if o.threshold is not None:
        detector.threshold = float(o.threshold)
    return detector


def _baseline(name: str) -> Callable[[BuildOptions], Any]:
    def factory(o: BuildOptions) -> Any:
        from .baselines import make_detector

        return make_detector(name, backbone=o.backbone, seed=o.seed, threshold=o.threshold,
                             progress=o.progress, model=o.model_dir)

    return factory


def _strip(**kwargs: Any) -> Any:
    from .baselines.strip import StripDetector

    return StripDetector(**kwargs)


for _entry in (
    DetectorEntry("pscanner", "P-Scanner: an LLM + LoRA answers Yes/No to 'was something injected into "
                  "this title?', plus cross-title evidence and the invisible / look-alike character rule",
                  "titles", _pscanner, loads=True, channels=("llm", "evidence"), version=2),
    DetectorEntry("stat", "a fragment repeated on several titles, in the same place, with a shape the "
                  "rest of the catalog does not have", "titles", _baseline("stat")),
    DetectorEntry("onion", "ONION (Qi et al., 2021): a word whose removal makes the title much more "
                  "fluent", "titles", _baseline("onion")),
    DetectorEntry("bki", "BKI (Chen & Dai, 2021): words whose removal moves the LM's (or the victim's) "
                  "title representation most, shared by many titles", "titles", _baseline("bki"), victim="optional"),
    DetectorEntry("embed", "titles whose MiniLM sentence embedding is isolated from the catalog's "
                  "(isolation forest)", "titles", _baseline("embed")),
    DetectorEntry("hidden-chars", "an invisible character between letters, or a look-alike letter of another "
                  "script inside a word (Unicode TR39 confusables)", "titles", _baseline("hidden-chars")),
    DetectorEntry("strip", "STRIP (Gao et al., 2019) on prompts: a triggered prompt keeps its "
                  "recommendation under perturbation (detect-bench --methods strip --model VICTIM)",
                  "prompts", _strip, victim="required"),
):
    register(_entry)
