"""Shared benchmark plumbing: the command line, interleaved pairs and their spread, a local Ray runtime,
machine facts, a printed table, and `bench/results/<name>.json`.

Every figure is reported next to a baseline measured in the same invocation, as a ratio, so the noise
of a shared machine cancels out. Results carry the command that reproduces them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

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


# A benchmark's option: an integer's (default, help), or `add_argument`'s keywords for any other kind.
Option = tuple[int, str | None] | dict[str, Any]


def parse_args(
    module: str, doc: str, argv: list[str] | None, options: dict[str, Option]
) -> argparse.Namespace:
    """Parse `argv` (None = this process's) for `python -m <module>`, described by `doc`'s first line, with
    `options` (flag -> Option) in their order."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    for flag, option in options.items():
        if isinstance(option, dict):
            parser.add_argument(flag, **option)
        else:
            default, help_text = option
            parser.add_argument(flag, type=int, default=default, help=help_text)
    return parser.parse_args(argv)


def quiet_process() -> None:
    """Warnings-only logging, and no tokenizers thread pool (the benchmarks fork and spawn workers)."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Pair(NamedTuple):
    """One interleaved pair: its index, both sides' results, and whether the baseline ran first."""

    index: int
    baseline: Any
    candidate: Any
    baseline_first: bool

    @property
    def in_order(self) -> tuple[Any, Any]:
        """Both results in the order they ran."""
        return (self.baseline, self.candidate) if self.baseline_first else (self.candidate, self.baseline)


def interleaved_pairs(
    pairs: int, baseline: Callable[[], Any], candidate: Callable[[], Any]
) -> Iterator[Pair]:
    """Run `pairs` pairs of (baseline, candidate), the baseline first in the even pairs (0, 2, ...) and the
    candidate first in the odd ones, so load drifting on a shared machine hits both sides alike; yields each
    Pair once both sides ran."""
    for i in range(pairs):
        if i % 2 == 0:
            base = baseline()
            cand = candidate()
        else:
            cand = candidate()
            base = baseline()
        yield Pair(i, base, cand, i % 2 == 0)


def spread(values: list[float]) -> dict:
    """{median, min, max, each} of per-pair `values`."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "each": values}


@contextlib.contextmanager
def local_ray(num_cpus: int, **init_options) -> Iterator[Any]:
    """A local Ray runtime of `num_cpus` CPUs (no dashboard, Ray's logging untouched, no progress bars; an
    existing runtime is used as it is) for the body; yields the `ray` module and shuts the runtime down
    afterwards only when this call started it."""
    import ray

    from longctx_core.infra.runtime import ensure_ray

    started = not ray.is_initialized()
    ensure_ray(
        local=True, num_cpus=num_cpus, include_dashboard=False, configure_logging=False, **init_options
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
