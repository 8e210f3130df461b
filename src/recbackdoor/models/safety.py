"""Checks on a victim or scanner directory before any of it is loaded.

A trained victim (``victim.json`` + ``adapter/``) or P-Scanner (``scanner.json`` +
``adapter/``) folder may come from someone else. Before peft reads it:

- nothing in it may point outside it (a symlinked ``adapter/`` or weights file is refused);
- the weights must be ``adapter_model.safetensors``: a ``.bin``/``.pt`` file is a pickle that
  can run code when loaded, so it is refused, never opened;
- the safetensors header must be well formed, its tensors must fit in the file (a truncated
  download is caught here) and each LoRA pair must have the rank of ``adapter_config.json``
  (otherwise peft fails later with a size-mismatch traceback).

Remote code is never run either: backbones load with ``trust_remote_code=False`` and
``use_safetensors=True`` (:mod:`.backbones`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RecBackdoorError

WEIGHTS = "adapter_model.safetensors"
PICKLED_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "adapter_model.pkl")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
_MAX_HEADER = 100 << 20


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base + os.sep)


def check_model_dir(directory: str | os.PathLike, kind: str, weight_files: tuple[str, ...] = (),
                    adapter: bool = True) -> None:
    """``kind`` is ``victim`` or ``scanner``; a directory without its JSON file (a backbone
    folder or name) is left to the loader. ``weight_files``: safetensors files the folder must
    hold; ``adapter``: whether it holds a peft adapter (what the victim's module declares, see
    ``victims.check_victim_dir``). Raises :class:`RecBackdoorError` (one line)."""
    root = Path(directory)
    meta = root / f"{kind}.json"
    if not root.is_dir() or not (meta.is_file() or meta.is_symlink()):
        return
    retrain = "retrain it with `recbackdoor train`" if kind == "victim" else "retrain it with `recbackdoor scanner train`"
    for path in [meta, *root.rglob("*")]:
        if path.is_symlink() and not _inside(path, root):
            raise RecBackdoorError(
                f"{path}: a link to {os.path.realpath(path)}, outside the {kind} directory {root}; "
                f"refusing to load it: copy the file in or {retrain}"
            )
    for name in weight_files:
        if not (root / name).is_file():
            raise RecBackdoorError(f"{root / name}: weights file missing; {retrain}")
        _check_safetensors(root / name, {}, retrain)
    if not adapter:
        return
    adapter_dir = root / "adapter"
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise RecBackdoorError(f"{adapter_dir}: adapter files missing (no adapter_config.json); {retrain}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecBackdoorError(f"{config_path}: not valid JSON ({exc}); the file is damaged: {retrain}") from None
    if not isinstance(config, dict):
        raise RecBackdoorError(f"{config_path}: expected a JSON object; the file is damaged: {retrain}")
    weights = adapter_dir / WEIGHTS
    if not weights.is_file():
        pickled = [name for name in PICKLED_WEIGHTS if (adapter_dir / name).exists()]
        if pickled:
            raise RecBackdoorError(
                f"{adapter_dir / pickled[0]}: pickled weights are not loaded (a pickle can run code); "
                f"only {WEIGHTS} is read: convert the adapter or {retrain}"
            )
        raise RecBackdoorError(f"{weights}: weights file missing; {retrain}")
    _check_safetensors(weights, config, retrain)


def _check_safetensors(path: Path, config: dict[str, Any], retrain: str) -> None:
    size = path.stat().st_size
    damaged = f"{path}: damaged safetensors file"
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise RecBackdoorError(f"{damaged} ({size} bytes, no header); {retrain}")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise RecBackdoorError(f"{damaged} (header of {n} bytes in a {size}-byte file: truncated?); {retrain}")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RecBackdoorError(f"{damaged} (unreadable header); {retrain}") from None
    if not isinstance(header, dict):
        raise RecBackdoorError(f"{damaged} (header is not a JSON object); {retrain}")
    rank = config.get("r")
    patterns = config.get("rank_pattern") or {}
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise RecBackdoorError(f"{damaged} (entry {name!r} lacks dtype/shape/offsets); {retrain}") from None
        count = 1
        for d in shape:
            count *= d
        if dtype not in _DTYPE_BYTES or stop - start != count * _DTYPE_BYTES[dtype] or start < 0:
            raise RecBackdoorError(f"{damaged} (tensor {name!r}: {dtype} {shape} does not match its offsets); {retrain}")
        end = max(end, stop)
        if isinstance(rank, int) and not patterns and len(shape) == 2:
            if (name.endswith("lora_A.weight") and shape[0] != rank) or (name.endswith("lora_B.weight") and shape[1] != rank):
                raise RecBackdoorError(
                    f"{path}: tensor {name!r} has shape {shape}, not rank r={rank} of adapter_config.json "
                    f"(wrong-shaped weights); {retrain}"
                )
    if 8 + n + end != size:
        raise RecBackdoorError(f"{damaged} ({size} bytes, the header describes {8 + n + end}: truncated?); {retrain}")


@contextlib.contextmanager
def adapter_fit_errors(directory: str | os.PathLike | None, kind: str) -> Iterator[None]:
    """Weights whose shapes do not fit the backbone (an adapter trained on another model) make
    torch raise a multi-line ``RuntimeError`` from ``load_state_dict``: turn exactly that into
    one line naming the directory. Anything else passes through unchanged."""
    try:
        yield
    except RuntimeError as exc:
        text = str(exc)
        if directory is None or not text.startswith("Error(s) in loading state_dict"):
            raise
        match = re.search(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)", text)
        detail = f"{match[1]}: {match[2]} in the file, {match[3]} in the model" if match else text.splitlines()[0][:200]
        retrain = "recbackdoor train" if kind == "victim" else "recbackdoor scanner train"
        raise RecBackdoorError(
            f"{Path(directory) / 'adapter' / WEIGHTS}: wrong-shaped weights for this backbone ({detail}); "
            f"the adapter was trained on another model: retrain it with `{retrain}`"
        ) from None
