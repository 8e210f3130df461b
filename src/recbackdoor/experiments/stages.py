"""Stage folders keyed by their inputs (docs/design.md §6): reuse what is finished, resume what is not.

A stage is a named piece of work with JSON ``options`` that include the keys of the stages it
reads. Its folder is ``<root>/<kind>-<sha256(options)[:12]>``: the same options find the same
folder, a changed option (here or upstream) a new one, so a rerun does exactly the stages a
change affects. A stage is built in ``<root>/.work-<name>/out`` and renamed into place with its
``stage.json`` once complete, so a folder that exists is finished. The work folder survives an
interruption: a training stage keeps its checkpoints there and resumes from the last one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io_utils import read_json, write_json

STAGE_JSON = "stage.json"


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock`` (POSIX ``flock``; released when the process
    dies, so a killed build never blocks a later run)."""
    import fcntl

    with open(lock, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def stage_key(options: dict[str, Any]) -> str:
    """Short content hash of a stage's options (canonical JSON)."""
    text = json.dumps(options, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass
class Stage:
    """One unit of work: ``build(out, work)`` must create ``out``; ``work`` persists until the
    stage is finished (checkpoints)."""

    kind: str
    label: str
    options: dict[str, Any]
    build: Callable[[Path, Path], None]

    @property
    def key(self) -> str:
        return stage_key(self.options)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.key}"


@dataclass
class StageStore:
    """Where stage folders live, and what happened to each stage in this process."""

    root: Path
    events: list[tuple[str, str]] = field(default_factory=list)  # (stage name, "ran" | "reused")

    def path(self, stage: Stage) -> Path:
        return self.root / stage.name

    def done(self, stage: Stage) -> bool:
        return (self.path(stage) / STAGE_JSON).is_file()

    def run(self, stage: Stage) -> tuple[Path, bool]:
        """Build the stage unless finished; returns (its folder, whether it ran now).

        Several studies may share one store and start at once: the build holds an exclusive
        lock on ``.lock-<name>``, so a stage another process is building is waited for and then
        reused, never built twice or broken half-way."""
        final = self.path(stage)
        if self.done(stage):
            self.events.append((stage.name, "reused"))
            return final, False
        self.root.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.root / f".lock-{stage.name}"):
            if self.done(stage):  # finished by another process while this one waited
                self.events.append((stage.name, "reused"))
                return final, False
            return self._build(stage, final)

    def _build(self, stage: Stage, final: Path) -> tuple[Path, bool]:
        work = self.root / f".work-{stage.name}"
        work.mkdir(parents=True, exist_ok=True)
        out = work / "out"
        if out.exists():  # built but not moved into place before an interruption: rebuild
            shutil.rmtree(out)
        start = time.perf_counter()
        stage.build(out, work)
        write_json(out / STAGE_JSON, {"kind": stage.kind, "label": stage.label, "key": stage.key,
                                      "options": stage.options,
                                      "seconds": round(time.perf_counter() - start, 1)})
        if final.exists():  # a folder without stage.json: left by something else, replace it
            shutil.rmtree(final)
        os.replace(out, final)
        shutil.rmtree(work, ignore_errors=True)
        self.events.append((stage.name, "ran"))
        return final, True

    def seconds(self, stage: Stage) -> float:
        return float(read_json(self.path(stage) / STAGE_JSON).get("seconds", 0.0))
