"""Where a number was measured: one description of the machine for studies and benchmarks.

Timings, and (slightly) rates, depend on the CPU class: with native bf16 (AVX512-BF16 / AMX)
the library computes in bf16, without it in fp32 (``models.backbones.default_dtype``). Every
study's ``timing.json`` and every benchmark record this description, so a reader knows which
one a number came from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """CPU, cores, GPU, the compute dtype the library picks here, versions, and the load."""
    import torch

    from .backbones import default_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "compute_dtype": str(default_dtype(device)).replace("torch.", ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def one_line(info: dict[str, Any] | None = None) -> str:
    """``describe()`` as one line for a log or a report."""
    m = info or describe()
    gpu = f"GPU {m['cuda']}" if m.get("cuda") else "no GPU"
    return (f"{m['cpu']}; {m['cpus']} cores, torch {m['torch']} with {m['torch_threads']} threads; {gpu}; "
            f"computes in {m['compute_dtype']}; python {m['python']}; load average {m['load_avg_1min']}")
