"""The per-row work of an import (the same functions run in Ray actors and in a plain loop): a raw row
becomes a normalised chat row with its token count, or a document's token ids, or a bad row's reason."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pyarrow as pa

from data_gen.chat_import import chat_row, column, parse_raw
from data_gen.tokenizer import chat_tokenizer
from longctx_core.data.sources import RAW_CHARS, BadRow
from longctx_core.data.text import detect_lang
from longctx_core.errors import LongctxError

# A result row: the raw row's place (unit, row, loc), then the record (JSON) and token ids, or the error
# (JSON: reason, detail) with the raw text kept for quarantine.
RESULT_SCHEMA = pa.schema(
    [
        ("unit", pa.int64()),
        ("row", pa.int64()),
        ("loc", pa.string()),
        ("record", pa.string()),
        ("ids", pa.list_(pa.int32())),
        ("n_tokens", pa.int64()),
        ("error", pa.string()),
        ("raw", pa.string()),
    ]
)


@dataclass
class ImportSettings:
    """What the per-row work needs to know about a source (picklable, sent to every actor)."""

    kind: str  # chat | text
    name: str  # the source label (row `source` column, stats, per-source loss)
    fmt: str  # chat: resolved format; text: ""
    field_map: dict = field(default_factory=dict)
    lang: str | None = None
    max_seq_len: int = 2048
    overlong: str = "error"


def _raw_text(raw: bytes) -> str:
    return raw[:RAW_CHARS].decode("utf-8", "backslashreplace")


def process_row(tok, s: ImportSettings, loc: str, raw: bytes, doc: bool) -> dict:
    """One raw row -> {record (JSON) | ids | error (JSON: reason, detail)}, plus n_tokens; never raises for
    a bad row. Chat: the normalised row and its chat-template length. Text: the document's token ids."""
    from longctx_core.data.chat import tokenize_chat

    out = {"record": None, "ids": None, "n_tokens": 0, "error": None}
    try:
        if s.kind == "chat":
            row = chat_row(parse_raw(raw), s.fmt, s.field_map, s.name, s.lang)
            try:
                n = len(tokenize_chat(tok, row["messages"]).input_ids)
            except LongctxError as exc:
                raise BadRow("template", str(exc)) from None
            if n > s.max_seq_len and s.overlong == "error":
                raise BadRow("overlong", f"{n} tokens > train.max_seq_len {s.max_seq_len}")
            out["record"], out["n_tokens"] = json.dumps(row, ensure_ascii=False), n
            return out
        text, rid, lang = _document(raw, doc, s, loc)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out["record"] = json.dumps({"id": rid, "lang": lang}, ensure_ascii=False)
        out["ids"], out["n_tokens"] = ids, len(ids)
    except BadRow as bad:
        out["error"] = json.dumps({"reason": bad.reason, "detail": bad.detail}, ensure_ascii=False)
    return out


def _document(raw: bytes, doc: bool, s: ImportSettings, loc: str) -> tuple[str, str, str]:
    """(text, document id, lang) of a raw-text row; raises BadRow."""
    if doc:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRow("bad_encoding", f"{exc.reason} at byte {exc.start}") from None
        rid, row_lang = loc, None
    else:
        row = parse_raw(raw)
        col = column(s.field_map, "text")
        if col not in row:
            raise BadRow("missing_field", repr(col))
        text = row[col]
        rid, row_lang = row.get(column(s.field_map, "id")), row.get(column(s.field_map, "lang"))
        rid = str(rid) if rid not in (None, "") else f"{s.name}-{hashlib.sha1(raw).hexdigest()[:16]}"
    if not isinstance(text, str):
        raise BadRow("bad_content", f"text is {type(text).__name__}, not a string")
    if not text.strip():
        raise BadRow("bad_content", "empty text")
    lang = s.lang or (row_lang if row_lang in ("en", "zh") else detect_lang(text[:4000]))
    return text, rid, lang


class ImportActor:
    """A Ray Data actor: one tokenizer, the per-row work over blocks of raw rows."""

    def __init__(self, tok_path: str, settings: ImportSettings) -> None:
        self.tok = chat_tokenizer(tok_path)
        self.settings = settings

    def __call__(self, batch: pa.Table) -> pa.Table:
        return process_table(self.tok, self.settings, batch)


def process_table(tok, settings: ImportSettings, batch: pa.Table) -> pa.Table:
    """`process_row` over a block of raw rows; returns the result block (raw text kept for bad rows)."""
    out = []
    for r in batch.to_pylist():
        res = process_row(tok, settings, r["loc"], r["raw"], r["doc"])
        res |= {"unit": r["unit"], "row": r["row"], "loc": r["loc"]}
        res["raw"] = _raw_text(r["raw"]) if res["error"] else None
        out.append(res)
    return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)
