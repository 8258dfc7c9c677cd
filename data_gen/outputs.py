"""Synthesis outputs: ordered Parquet shards with a fixed schema, `stats.json` figures, PNG plots.

Rows arrive from Ray in any order; `ShardWriter` puts them back in sample-index order and writes shard k
with rows [k * samples_per_shard, (k + 1) * samples_per_shard) of the successful samples, so the same
plan always gives the same files, byte for byte.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from longctx_core.infra.plotting import pyplot

logger = logging.getLogger(__name__)

_I64 = pa.int64()
_STR = pa.string()
META_TYPE = pa.struct(
    [
        ("questions", pa.list_(_STR)),
        ("answers", pa.list_(pa.list_(_STR))),
        ("evidence", pa.list_(pa.list_(_STR))),
        ("evidence_docs", pa.list_(pa.list_(_I64))),
        ("evidence_fallback", pa.list_(pa.bool_())),
        ("record_ids", pa.list_(_STR)),
        ("turn_gold_positions", pa.list_(pa.list_(_I64))),
        ("target_tokens", _I64),
        ("truncated_docs", _I64),
        ("sample_seed", _I64),
        ("titles", pa.list_(_STR)),
        ("split", _STR),
    ]
)
# The Parquet schema of a sample row (column names are a contract other tools read).
SAMPLE_SCHEMA = pa.schema(
    [
        ("id", _STR),
        ("messages", pa.list_(pa.struct([("role", _STR), ("content", _STR)]))),
        ("n_tokens", _I64),
        ("n_docs", _I64),
        ("gold_positions", pa.list_(_I64)),
        ("answer_style", _STR),
        ("source", _STR),
        ("lang", _STR),
        ("seed", _I64),
        ("meta", META_TYPE),
    ]
)


def write_shard(folder: Path, index: int, rows: list[dict], schema) -> Path:
    """Write `rows` as `<folder>/part-<index:05d>.parquet` (one row group, zstd); returns the path. The one
    shard layout of every writer of sample rows (synthesized or imported)."""
    path = folder / f"part-{index:05d}.parquet"
    pq.write_table(
        pa.Table.from_pylist(rows, schema=schema), path, row_group_size=len(rows), compression="zstd"
    )
    return path


class ShardFiles:
    """Rows given in order -> `part-NNNNN.parquet` shards of `rows_per_shard` rows each (`schema`): the
    buffering both writers share (the caller prepares `folder`)."""

    def __init__(self, folder: Path, rows_per_shard: int, schema: pa.Schema) -> None:
        self.folder = Path(folder)
        self.rows_per_shard = rows_per_shard
        self.schema = schema
        self._pending: list[dict] = []
        self.files: list[Path] = []

    def _put(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.rows_per_shard:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.files.append(write_shard(self.folder, len(self.files), self._pending, self.schema))
            self._pending = []

    def close(self) -> list[Path]:
        """Flush the last shard; returns the shard paths."""
        self._flush()
        return self.files


class ShardWriter(ShardFiles):
    """Collects (index, row | None) in any order; writes `part-NNNNN.parquet` shards in index order."""

    def __init__(self, folder: Path, rows_per_shard: int) -> None:
        super().__init__(folder, rows_per_shard, SAMPLE_SCHEMA)
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("part-*.parquet"):  # a re-run must not leave stale shards behind
            old.unlink()
        self._waiting: dict[int, dict | None] = {}
        self._next = 0
        self.rows: list[dict] = []  # light per-sample facts for stats (no messages)

    def add(self, index: int, row: dict | None) -> None:
        self._waiting[int(index)] = row
        while self._next in self._waiting:
            ready = self._waiting.pop(self._next)
            self._next += 1
            if ready is not None:
                self.rows.append(sample_facts(ready))
                self._put(ready)

    def close(self) -> list[Path]:
        """Flush the last shard; returns the shard paths. Raises if some index never arrived."""
        if self._waiting:
            raise RuntimeError(f"samples missing before index(es) {sorted(self._waiting)[:5]}")
        return super().close()


def sample_facts(row: dict) -> dict:
    """The few fields of a sample row that stats and plots need (rows themselves can be large)."""
    meta = row["meta"]
    return {
        "n_tokens": row["n_tokens"],
        "n_docs": row["n_docs"],
        "gold_positions": row["gold_positions"],
        "answer_style": row["answer_style"],
        "lang": row["lang"],
        "turns": len(meta["questions"]),
        "fallbacks": sum(meta["evidence_fallback"]),
        "truncated": meta["truncated_docs"],
    }


def _relative_positions(rows: list[dict]) -> list[float]:
    return [p / (r["n_docs"] - 1) if r["n_docs"] > 1 else 0.0 for r in rows for p in r["gold_positions"]]


def position_histogram(rows: list[dict], bins: int = 10) -> dict[str, int]:
    """Gold documents per relative-position bin ("0.0-0.1": count, ...); relative = index / (n_docs - 1)."""
    hist = [0] * bins
    for rel in _relative_positions(rows):
        hist[min(bins - 1, int(rel * bins))] += 1
    return {f"{i / bins:.1f}-{(i + 1) / bins:.1f}": c for i, c in enumerate(hist)}


def summary(values: list[int]) -> dict:
    """min, median, max and mean of `values` (all None when there are none)."""
    if not values:
        return {"min": None, "median": None, "max": None, "mean": None}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def tally(values: Iterable) -> dict[str, int]:
    """{str(value): occurrences}, sorted by key."""
    return dict(sorted(Counter(str(v) for v in values).items()))


def sample_stats(rows: list[dict]) -> dict:
    """Token/document/position/style/language figures over `sample_facts` of the written samples."""
    return {
        "num_samples": len(rows),
        "tokens": summary([r["n_tokens"] for r in rows]),
        "n_docs": summary([r["n_docs"] for r in rows]),
        "gold_position_hist": position_histogram(rows),
        "answer_styles": tally(r["answer_style"] for r in rows),
        "langs": tally(r["lang"] for r in rows),
        "turns": tally(r["turns"] for r in rows),
        "evidence_fallback_turns": sum(r["fallbacks"] for r in rows),
        "truncated_distractors": sum(r["truncated"] for r in rows),
    }


def write_plots(folder: Path, rows: list[dict]) -> list[Path]:
    """plots/token_lengths.png and plots/gold_positions.png (matplotlib, Agg backend)."""
    plt = pyplot()

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([r["n_tokens"] for r in rows], bins=30, color="#4477aa")
    ax.set(xlabel="tokens per sample", ylabel="samples", title="Sample length (train)")
    fig.tight_layout()
    out.append(folder / "token_lengths.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(_relative_positions(rows), bins=10, range=(0, 1), color="#cc6677")
    ax.set(
        xlabel="gold position (0 = first document, 1 = last)",
        ylabel="gold documents",
        title="Gold positions (train)",
    )
    fig.tight_layout()
    out.append(folder / "gold_positions.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)
    return out
