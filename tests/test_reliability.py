"""Determinism, kill -9 faults and model safety.

- Determinism: two `data prepare` / `attack` runs with the same inputs give byte-identical
  folders; every manifest records the seed and the library versions.
- Faults: `data prepare`, `attack`, `defend` and `scanner train` killed with SIGKILL at seeded
  random moments leave either no output folder or a complete one, and a rerun gives the same
  bytes as an uninterrupted run (for a scanner: the same adapter weights and round log; its
  JSON files hold timings). Training a victim is covered in test_experiments.py (kill -9 of
  the study runner mid-training).
- Model safety: remote code is never run, pickled weights are never loaded, and victim/scanner
  folders are checked before loading (the bad-input corpus has the damaged-folder cases).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recbackdoor.cli import main
from recbackdoor.errors import RecBackdoorError
from recbackdoor.io_utils import VERSIONED

ROOT = Path(__file__).resolve().parents[1]


def _ml1m_source(root: Path, n_users: int = 150, n_items: int = 120) -> Path:
    """A synthetic ML-1M folder big enough that `data prepare` takes a moment."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "movies.dat").write_text("".join(f"{i}::Movie {i} ({1950 + i % 50})::Drama\n" for i in range(1, n_items + 1)), encoding="latin-1")
    rows = []
    for u in range(1, n_users + 1):
        for k, item in enumerate(rng.sample(range(1, n_items + 1), rng.randint(5, 25))):
            rows.append(f"{u}::{item}::{rng.randint(1, 5)}::{978300000 + k * 60 + rng.randint(0, 59)}\n")
    (root / "ratings.dat").write_text("".join(rows), encoding="latin-1")
    return root


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return _ml1m_source(tmp_path_factory.mktemp("src") / "ml-1m")


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs: the bytes every other run must reproduce."""
    root = tmp_path_factory.mktemp("ref")
    assert main(["data", "prepare", "--dataset", "ml1m", "--source", str(source), "--out", str(root / "data"), "--seed", "3"]) == 0
    assert main(["attack", "--data", str(root / "data"), "--out", str(root / "poisoned"), "--ratio", "0.05", "--seed", "4"]) == 0
    return {"data": root / "data", "poisoned": root / "poisoned"}


# --------------------------------------------------------------------------- determinism


def test_same_inputs_give_identical_bytes(source, reference, tmp_path, capsys):
    assert main(["data", "prepare", "--dataset", "ml1m", "--source", str(source), "--out", str(tmp_path / "data"), "--seed", "3"]) == 0
    # the same --data path: poison_manifest.json records it (source.dir)
    assert main(["attack", "--data", str(reference["data"]), "--out", str(tmp_path / "poisoned"), "--ratio", "0.05", "--seed", "4"]) == 0
    assert _tree(tmp_path / "data") == _tree(reference["data"])
    poisoned = _tree(tmp_path / "poisoned")
    assert poisoned == _tree(reference["poisoned"])
    assert {"poison_manifest.json", "manifest.json", "train.parquet"} <= set(poisoned)
    assert any(name.startswith("attack_sets/") for name in poisoned)
    capsys.readouterr()


def test_manifests_record_seeds_and_versions(reference):
    data = json.loads((reference["data"] / "manifest.json").read_text())
    poisoned = json.loads((reference["poisoned"] / "manifest.json").read_text())
    poison = json.loads((reference["poisoned"] / "poison_manifest.json").read_text())
    assert data["seed"] == 3 and poison["seed"] == 4 and poisoned["poisoned"]["seed"] == 4
    for manifest in (data, poisoned, poison):
        assert set(manifest["versions"]) == set(VERSIONED)
        assert manifest["versions"]["recbackdoor"] not in ("", "not installed")
    assert all(len(s["sha256"]) == 64 for s in data["sources"])


# --------------------------------------------------------------------------- kill -9


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "recbackdoor", *args]


_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=_ENV, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


@pytest.mark.parametrize("command", ["prepare", "attack", "defend"])
def test_kill_9_then_rerun_gives_the_same_bytes(command, source, reference, tmp_path):
    if command == "prepare":
        args = ["data", "prepare", "--dataset", "ml1m", "--source", str(source), "--seed", "3", "--out"]
        expected = _tree(reference["data"])
    elif command == "attack":
        args = ["attack", "--data", str(reference["data"]), "--ratio", "0.05", "--seed", "4", "--out"]
        expected = _tree(reference["poisoned"])
    else:
        args = ["defend", "--data", str(reference["poisoned"]), "--method", "stat", "--out"]
    duration = _timed(_cli(*args, str(tmp_path / "timing")))
    if command == "defend":  # an uninterrupted run is the reference
        expected = _tree(tmp_path / "timing")
        assert "detections.json" in expected and "train.parquet" in expected
    killed = []
    for seed in (1, 2):
        out = tmp_path / f"out{seed}"
        proc = subprocess.Popen(_cli(*args, str(out)), env=_ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.Random(seed).uniform(0.2, 0.8) * duration)
        proc.send_signal(signal.SIGKILL)
        killed.append(proc.wait() == -signal.SIGKILL)
        # killed at any moment: the output folder is absent or complete, never half-written
        assert not out.exists() or _tree(out) == expected, f"seed {seed}: half-written {out}"
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".out{seed}.tmp-")]
        assert all(p.startswith(f".out{seed}.tmp-") for p in leftovers)  # only hidden temp folders
        rerun = subprocess.run(_cli(*args, str(out), "--force"), env=_ENV, cwd=ROOT, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert _tree(out) == expected, f"seed {seed}: the rerun differs"
    assert any(killed), "no run was killed before it finished"


def test_kill_9_during_scanner_training_then_rerun_gives_the_same_scanner(reference, tmp_path):
    args = ["scanner", "train", "--catalog", str(reference["data"]), "--domain", "movies", "--backbone", "tiny-random",
            "--rounds", "1", "--no-agent", "--max-titles", "100", "--out"]  # fmt: skip
    duration = _timed(_cli(*args, str(tmp_path / "timing")))
    same = ("adapter/adapter_model.safetensors", "rounds.jsonl")  # the JSON files hold timings
    expected = {k: v for k, v in _tree(tmp_path / "timing").items() if k in same}
    assert set(expected) == set(same)
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli(*args, str(out)), env=_ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(3).uniform(0.4, 0.8) * duration)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it was killed"
    assert not out.exists()  # saved atomically at the end: nothing half-written
    rerun = subprocess.run(_cli(*args, str(out)), env=_ENV, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert {k: v for k, v in _tree(out).items() if k in same} == expected


# --------------------------------------------------------------------------- model safety


def test_no_remote_code_and_safetensors_only_in_the_source():
    src = (ROOT / "src" / "recbackdoor").rglob("*.py")
    text = {p: p.read_text(encoding="utf-8") for p in src}
    assert not [p for p, t in text.items() if "trust_remote_code=True" in t or '"trust_remote_code": True' in t]
    assert not [p for p, t in text.items() if "torch.load(" in t and "weights_only=True" not in t]
    backbones = text[ROOT / "src" / "recbackdoor" / "models" / "backbones.py"]
    assert '"trust_remote_code": False' in backbones and "use_safetensors=True" in backbones


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """tiny-random's config and tokenizer in a local folder (weights added per test)."""
    from recbackdoor.models.backbones import load_backbone

    model, tokenizer = load_backbone("tiny-random")
    folder = tmp_path_factory.mktemp("tiny") / "model"
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_weights_are_not_loaded(tiny_folder, tmp_path):
    import shutil

    from recbackdoor.models.backbones import load_backbone

    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    marker = tmp_path / "MARKER"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(RecBackdoorError, match="cannot load it"):
        load_backbone(str(folder))
    assert not marker.exists()


def test_remote_code_is_not_run(tiny_folder, tmp_path):
    import shutil

    from recbackdoor.models.backbones import load_backbone

    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder)
    marker = tmp_path / "MARKER"
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil-remote"  # unknown: only its own code could load it
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel\n")
    with pytest.raises(RecBackdoorError):
        load_backbone(str(folder))
    assert not marker.exists()


# --------------------------------------------------------------------------- full disk, read-only output


@pytest.mark.parametrize(
    "error, words",
    [
        (OSError(28, "No space left on device"), "no space left on device; free some space and rerun"),
        (PermissionError(13, "Permission denied"), "permission denied; choose a writable location"),
    ],
    ids=["disk-full", "read-only"],
)
def test_write_errors_are_one_line_and_leave_nothing(source, tmp_path, capsys, monkeypatch, error, words):
    """The disk fills up (or the folder turns read-only) while `data prepare` writes its Parquet
    files: one error line naming the file, exit 2, no output folder and no temp folder left.
    (Simulated: the tests run as root, which a read-only folder does not stop.)"""
    import recbackdoor.data.io as data_io

    def failing_write(table, path):
        error.filename = str(path)
        raise error

    monkeypatch.setattr(data_io, "_write_table", failing_write)
    parent = tmp_path / "parent"
    parent.mkdir()
    code = main(["data", "prepare", "--dataset", "ml1m", "--source", str(source), "--out", str(parent / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert ".parquet" in err  # names the file
    assert list(parent.iterdir()) == []  # no output, no temp folder
