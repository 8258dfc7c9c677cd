"""One chat/text source, end to end: read, process (on Ray Data or in this process), write its shards."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data_gen.importing.on_ray import process_locally, process_on_ray
from data_gen.importing.reading import read_units, resolve_format
from data_gen.importing.rows import ImportSettings
from data_gen.importing.writing import RowWriter, training_row
from data_gen.quarantine import reasons_text
from data_gen.rawtext import cut_pieces, end_of_text_id
from data_gen.tokenizer import chat_tokenizer
from longctx_core.data.records import Malformed
from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)


@dataclass
class SourceResult:
    name: str
    folder: Path
    read: int = 0
    samples: int = 0
    tokens: int = 0
    format: str = ""
    quarantine: list[Malformed] = field(default_factory=list)
    over_max_seq_len: int = 0
    seconds: float = 0.0
    writer: RowWriter | None = None  # its per-row facts feed stats (imported sources only)


def import_source(src, name: str, cfg, tok_path: str, folder: Path, tok=None) -> SourceResult:
    """Import one chat/text source into Parquet shards in `folder`; returns what it read, wrote and set
    aside. `tok` given: runs in this process instead of on Ray Data (same functions, same bytes)."""
    t0 = time.perf_counter()
    units = read_units(src)
    fmt = resolve_format(src, units) if src.kind == "chat" else ""
    max_len = cfg.train.max_seq_len
    settings = ImportSettings(src.kind, name, fmt, dict(src.field_map), src.lang, max_len, cfg.train.overlong)
    if tok is None:
        results = process_on_ray(units, src, settings, tok_path, cfg.data.num_workers)
    else:
        results = process_locally(units, src, settings, tok)
    res = SourceResult(name, folder, format=fmt)
    writer = RowWriter(folder, cfg.data.samples_per_shard)
    if src.kind == "chat":
        _write_chat(_good_rows(results, res), res, writer, max_len)
    else:
        eot = end_of_text_id(tok if tok is not None else chat_tokenizer(tok_path))
        _write_text(_good_rows(results, res), name, writer, max_len, eot, src.text.cross_document)
    writer.close()
    res.samples, res.tokens = len(writer.tokens), sum(writer.tokens)
    res.seconds = time.perf_counter() - t0
    res.writer = writer
    if res.samples == 0:
        raise LongctxError(
            f"data source '{name}' ({src.path}): no usable row among {res.read} ({reasons_text(res.quarantine)})"
        )
    logger.info(
        "imported %s: %d rows read, %d samples, %d tokens, %d quarantined in %.1f s",
        name,
        res.read,
        res.samples,
        res.tokens,
        len(res.quarantine),
        res.seconds,
    )
    return res


def _good_rows(results: Iterable[dict], res: SourceResult) -> Iterator[dict]:
    """The result rows without an error; counts every row read into `res` and quarantines the bad ones."""
    for r in results:
        res.read += 1
        if r["error"]:
            err = json.loads(r["error"])
            res.quarantine.append(Malformed(err["reason"], err["detail"], res.name, r["loc"], r["raw"] or ""))
            continue
        yield r


def _write_chat(rows: Iterable[dict], res: SourceResult, writer: RowWriter, max_seq_len: int) -> None:
    """One training row per chat row (counting those longer than train.max_seq_len)."""
    for r in rows:
        rec = json.loads(r["record"])
        row = training_row(rec["id"], rec["messages"], r["n_tokens"], res.name, rec["lang"])
        res.over_max_seq_len += r["n_tokens"] > max_seq_len
        writer.add(row)


def _write_text(
    rows: Iterable[dict], name: str, writer: RowWriter, max_seq_len: int, eot: int, cross_document: bool
) -> None:
    """Raw-text documents cut into pieces of `max_seq_len` tokens (`rawtext.cut_pieces`), one row each."""
    langs: dict[str, str] = {}

    def docs():
        for r in rows:
            rec = json.loads(r["record"])
            langs[rec["id"]] = rec["lang"]
            yield rec["id"], r["ids"]

    for i, piece in enumerate(cut_pieces(docs(), max_seq_len, eot, cross_document)):
        lang = langs[piece.doc_ids[0]]
        writer.add(
            training_row(f"{name}-{i:07d}", [], len(piece), name, lang, piece.input_ids, piece.doc_lens)
        )
