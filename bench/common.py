"""Shared benchmark plumbing: machine facts, a printed table, and `bench/results/<name>.json`.

Every figure is reported next to a baseline measured in the same invocation, as a ratio, so the noise
of a shared machine cancels out. Results carry the command that reproduces them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def write_result(name: str, value: float, unit: str, baseline: float, command: str, **extra) -> dict:
    """Write bench/results/<name>.json with value, baseline and their ratio; return the record."""
    record = {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": (value / baseline) if baseline else None,
        "command": command,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        **extra,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    return record


def print_table(title: str, rows: list[tuple], header: tuple) -> None:
    """Print rows under a header, floats to 4 significant digits, columns aligned."""
    cells = [[f"{x:.4g}" if isinstance(x, float) else str(x) for x in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n== {title} ==")
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces a run: `python -m <module> <args>` (argv None = this process's args)."""
    args = argv if argv is not None else sys.argv[1:]
    return " ".join(["python -m", module, *args])
