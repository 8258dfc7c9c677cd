"""One metrics interface with sinks: log lines, a JSONL file in the run folder, Ray dashboard gauges.

    metrics = Metrics(stage="train", jsonl_path=layout.train.metrics, tags={"run": cfg.run.name})
    metrics.log({"loss": 2.3, "tokens_per_s": 812.0}, step=10)

    metrics = Metrics(stage="evaluate", tags={"run": cfg.run.name})
    metrics.log({"accuracy": 0.62}, tags={"model": "tuned", "task": "qa"})   # per-row labels on top

Gauges are `ray.util.metrics.Gauge` named `longctx_<stage>_<key>` (Prometheus: `ray_longctx_<stage>_<key>`,
→ Ray dashboard / Grafana `cluster/grafana/longctx.json`); they are created lazily and only when a Ray
worker/driver is connected, with the label keys of their first row (Ray rejects a later row whose label
keys differ). A gauge reaches Prometheus when its process next exports (every `metrics_report_interval_ms`,
10 s, and once more as the process exits) and is dropped about two intervals after its process stopped
exporting. Only rank 0 should log (callers decide; `Metrics(enabled=False)` makes every call a no-op).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _gauge_name(stage: str, key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", f"longctx_{stage}_{key}")


class Metrics:
    def __init__(
        self,
        stage: str,
        jsonl_path: str | Path | None = None,
        tags: dict[str, str] | None = None,
        enabled: bool = True,
        gauges: bool = True,
        log_every: int = 1,
    ) -> None:
        self.stage = stage
        self.enabled = enabled
        self.tags = dict(tags or {})
        self.log_every = max(1, log_every)
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        self._gauges_on = gauges
        self._gauges: dict[str, Any] = {}
        if self.enabled and self.jsonl_path:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)

    def _gauge(self, key: str, tag_keys: tuple[str, ...]):
        if key not in self._gauges:
            from ray.util.metrics import Gauge

            self._gauges[key] = Gauge(
                _gauge_name(self.stage, key),
                description=f"longctx {self.stage} {key}",
                tag_keys=tag_keys,
            )
        return self._gauges[key]

    def _to_gauges(self, values: dict[str, float], tags: dict[str, str]) -> None:
        if not self._gauges_on:
            return
        import ray

        if not ray.is_initialized():
            return
        for key, value in values.items():
            self._gauge(key, tuple(sorted(tags))).set(value, tags=tags)

    def log(
        self, values: dict[str, Any], step: int | None = None, tags: dict[str, str] | None = None
    ) -> None:
        """Record one row: every sink gets it (log lines every `log_every` steps). `tags` label this row
        (JSONL fields and gauge labels) on top of the instance's tags."""
        if not self.enabled:
            return
        tags = {k: str(v) for k, v in (tags or {}).items()}
        numeric = {
            k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(float(v))
        }
        row = {
            "stage": self.stage,
            "time": time.time(),
            **({"step": step} if step is not None else {}),
            **tags,
            **values,
        }
        if self.jsonl_path:
            with self.jsonl_path.open("a") as fh:
                fh.write(json.dumps(row, default=float) + "\n")
        if step is None or step % self.log_every == 0:
            shown = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in {**tags, **values}.items()
            )
            logger.info("[%s]%s %s", self.stage, f" step {step}" if step is not None else "", shown)
        self._to_gauges(numeric, {**self.tags, **tags})


def read_jsonl(path: str | Path) -> list[dict]:
    """All rows of a metrics JSONL file (empty list if it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
