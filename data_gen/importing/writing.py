"""Writing imported rows: the import row schema, the shard writer, and reading shards back in order."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_gen.outputs import SAMPLE_SCHEMA, ShardFiles

# The sample-row schema plus the two raw-text columns (null for chat and synthesized rows).
IMPORT_SCHEMA = SAMPLE_SCHEMA.append(pa.field("input_ids", pa.list_(pa.int32()))).append(
    pa.field("doc_lens", pa.list_(pa.int64()))
)


class RowWriter(ShardFiles):
    """Writes rows (arriving in order) to `part-NNNNN.parquet` shards of `rows_per_shard` rows
    (IMPORT_SCHEMA), keeping the few facts stats need."""

    def __init__(self, folder: Path, rows_per_shard: int) -> None:
        super().__init__(folder, rows_per_shard, IMPORT_SCHEMA)
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a previous run's shards must not pass for this one's
        self.folder.mkdir(parents=True)
        self.tokens: list[int] = []
        self.langs: dict[str, int] = {}

    def add(self, row: dict) -> None:
        self.tokens.append(int(row["n_tokens"]))
        self.langs[row["lang"]] = self.langs.get(row["lang"], 0) + 1
        self._put(row)


def training_row(rid: str, messages: list, n_tokens: int, source: str, lang: str, ids=None, doc_lens=None):
    """A row of IMPORT_SCHEMA with the QA-only columns empty."""
    return {
        "id": rid,
        "messages": messages,
        "n_tokens": n_tokens,
        "n_docs": 0,
        "gold_positions": [],
        "answer_style": None,
        "source": source,
        "lang": lang,
        "seed": None,
        "meta": None,
        "input_ids": ids,
        "doc_lens": doc_lens,
    }


def iter_shard_rows(folder: Path) -> Iterator[dict]:
    """Rows of the Parquet shards in `folder`, in order, a batch at a time (never the whole folder), in
    IMPORT_SCHEMA (synthesized rows get null `input_ids` / `doc_lens`)."""
    for f in sorted(Path(folder).glob("part-*.parquet")):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                row.setdefault("input_ids", None)
                row.setdefault("doc_lens", None)
                yield row
