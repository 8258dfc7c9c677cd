"""QA sources: one loader per `data.source.kind`, all normalising to `QARecord` (or `Malformed` rows).

    for item in iter_records(cfg.data.source, seed=cfg.run.seed):
        if isinstance(item, Malformed): quarantine(item)
        else: use(item)

Formats read:
- builtin   the procedural world (`longctx_core.data.builtin`), sized by `source.builtin`.
- litm      Lost-in-the-Middle / NQ-open: `{question, answers[], ctxs[{title, text, isgold|hasanswer}]}`,
            jsonl or jsonl.gz (a file or a folder of them). Gold = ctxs with `isgold`, else with `hasanswer`.
- squad     SQuAD v1/v2 and CMRC2018: the nested `{data[{title, paragraphs[{context, qas[...]}]}]}` JSON,
            or flattened rows `{id, title, context, question, answers{text[], answer_start[]}}` (jsonl/parquet,
            as Hugging Face exports them). The answer span's sentence is the evidence.
- hotpotqa  HotpotQA: `{_id, question, answer, supporting_facts[[title, i]], context[[title, [sents]]]}`
            (the original JSON list or jsonl), or HF's `{context{title[], sentences[[]]},
            supporting_facts{title[], sent_id[]}}`. Two gold documents; supporting facts are the evidence.
- jsonl / parquet / hf   generic rows mapped by `source.field_map` (record field -> column; unmapped fields
            use their own name): question, answers (list or string or {text: [...]}), text, title, id, lang,
            evidence (sentence or list). `hf` reads with `datasets.load_dataset(path, name, split=...)`,
            a hub name or a local folder/file.

A source that cannot be read at all (missing path, unreadable file, no usable row) raises `LongctxError`
naming the path; individual bad rows become `Malformed` with a reason and the row.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from longctx_core.data.records import Document, Malformed, QARecord, Rejected
from longctx_core.data.text import detect_lang, sentence_spans
from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)

RAW_CHARS = 2000  # how much of a bad row quarantine keeps
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


class BadRow(Rejected):
    """A row-level problem; `reason` is the quarantine key."""


# ---- files ------------------------------------------------------------------------------------------------


def source_files(path: str | Path, suffixes: tuple[str, ...] = DATA_SUFFIXES) -> list[Path]:
    """The data files at `path` (a file, or a folder searched recursively), sorted; raises LongctxError."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes))
        if not files:
            raise LongctxError(f"data.source.path: no {'/'.join(suffixes)} files under {p}")
        return files
    raise LongctxError(f"data.source.path: {p} does not exist")


def open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def iter_json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, parsed object or BadRow, raw line) per non-empty line of a (gzipped) JSONL file."""
    try:
        with open_bytes(path) as fh:
            for n, raw in enumerate(fh, start=1):
                loc = f"{path.name}:{n}"
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield loc, BadRow("bad_encoding", f"{exc.reason} at byte {exc.start}"), raw[:RAW_CHARS]
                    continue
                try:
                    yield loc, json.loads(text), text
                except json.JSONDecodeError as exc:
                    yield loc, BadRow("bad_json", exc.msg), text[:RAW_CHARS]
    except (OSError, EOFError) as exc:
        raise LongctxError(f"data.source.path: cannot read {path}: {exc}") from None


def iter_json_objects(path: Path) -> Iterator[tuple[str, Any, str]]:
    """(location, row, raw) for .jsonl(.gz) lines, or for the items of a .json(.gz) list/`data` document."""
    if ".jsonl" in path.name:
        yield from iter_json_lines(path)
        return
    try:
        with open_bytes(path) as fh:
            doc = json.loads(fh.read().decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LongctxError(f"data.source.path: cannot read {path} as JSON: {exc}") from None
    items = doc.get("data", doc) if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise LongctxError(f"data.source.path: {path}: expected a JSON list or a {{'data': [...]}} document")
    for i, item in enumerate(items):
        yield f"{path.name}#{i}", item, ""


def iter_parquet_rows(path: Path) -> Iterator[tuple[str, Any, str]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise LongctxError(f"data.source.path: cannot read {path} as Parquet: {exc}") from None
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            yield f"{path.name}#{n}", row, ""


def iter_rows(path: str | Path) -> Iterator[tuple[str, Any, str]]:
    """Rows of every data file at `path`, whatever its format (jsonl[.gz], json[.gz], parquet)."""
    for f in source_files(path):
        yield from (iter_parquet_rows(f) if f.name.endswith(".parquet") else iter_json_objects(f))


# ---- field helpers ----------------------------------------------------------------------------------------


def _text(row: dict, key: str, *, required: bool = True) -> str:
    value = row.get(key) if isinstance(row, dict) else None
    if value is None:
        if required:
            raise BadRow("missing_field", key)
        return ""
    if not isinstance(value, str):
        raise BadRow("bad_type", f"{key} is {type(value).__name__}, expected a string")
    if required and not value.strip():
        raise BadRow("empty_text", key)
    return value


def _answers(value: Any) -> tuple[str, ...]:
    """A tuple of non-empty answer strings from a string, a list, or a SQuAD-style {text: [...]} dict."""
    if isinstance(value, dict):
        value = value.get("text", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise BadRow("bad_type", "answers must be a string or a list of strings")
    out = tuple(dict.fromkeys(a.strip() for a in value if isinstance(a, str) and a.strip()))
    if not out:
        raise BadRow("empty_answer", "no non-empty answer")
    return out


def _stable_id(prefix: str, question: str) -> str:
    """An id for sources without one: a hash of the question, so duplicate questions share a split."""
    return f"{prefix}-{hashlib.sha1(question.strip().encode('utf-8')).hexdigest()[:16]}"


def _lang(forced: str | None, *texts: str) -> str:
    return forced or detect_lang(" ".join(texts)[:4000])


def _record(kind: str, rid: str, question: str, answers, docs, lang, evidence=()) -> QARecord:
    # Surrounding whitespace is dropped (it would blur the blank line between numbered documents).
    docs = tuple(Document(d.title.strip(), d.text.strip()) for d in docs)
    if not docs or any(not d.text.strip() for d in docs):
        raise BadRow("empty_text", "evidence document text is empty")
    if not question.strip():
        raise BadRow("empty_text", "question")
    return QARecord(rid, lang, question.strip(), answers, docs, tuple(evidence), source=kind)


# ---- per-kind row parsers -----------------------------------------------------------------------------------


def parse_litm(row: dict, lang: str | None) -> QARecord:
    question = _text(row, "question")
    answers = _answers(row.get("answers", row.get("answer")))
    ctxs = row.get("ctxs")
    if not isinstance(ctxs, list) or not ctxs:
        raise BadRow("missing_field", "ctxs")
    gold = [c for c in ctxs if isinstance(c, dict) and c.get("isgold")]
    gold = gold or [c for c in ctxs if isinstance(c, dict) and c.get("hasanswer")]
    if not gold:
        raise BadRow("missing_field", "no ctx marked isgold or hasanswer")
    docs = [Document(str(c.get("title") or ""), _text(c, "text")) for c in gold[:1]]
    return _record(
        "litm", _stable_id("litm", question), question, answers, docs, _lang(lang, question, docs[0].text)
    )


def _span_sentence(context: str, start: int, answer: str) -> str:
    """The sentence(s) of `context` covering the answer span at `start` (SQuAD offsets), or ''."""
    if start is None or start < 0 or context[start : start + len(answer)] != answer:
        return ""
    end = start + len(answer)
    covering = [(a, b) for a, b in sentence_spans(context) if b > start and a < end]
    return context[covering[0][0] : covering[-1][1]] if covering else ""


def parse_squad_flat(row: dict, lang: str | None, title: str = "", kind: str = "squad") -> QARecord:
    context = _text(row, "context")
    question = _text(row, "question")
    raw_answers = row.get("answers")
    if row.get("is_impossible") or (isinstance(raw_answers, (list, dict)) and not raw_answers):
        raise BadRow("no_answer", "unanswerable in the source (SQuAD v2 is_impossible)")
    if isinstance(raw_answers, list):  # nested form: [{text, answer_start}]
        texts = [a.get("text", "") for a in raw_answers if isinstance(a, dict)]
        starts = [a.get("answer_start", -1) for a in raw_answers if isinstance(a, dict)]
    elif isinstance(raw_answers, dict):  # HF flattened form: {text: [...], answer_start: [...]}
        texts, starts = list(raw_answers.get("text", [])), list(raw_answers.get("answer_start", []))
    else:
        raise BadRow("missing_field", "answers")
    answers = _answers(texts)
    evidence = next(
        (s for t, st in zip(texts, starts, strict=False) if (s := _span_sentence(context, st, t))), ""
    )
    rid = str(row.get("id") or _stable_id(kind, question))
    doc = Document(str(row.get("title") or title), context)
    evid = (evidence,) if evidence else ()
    return _record(kind, rid, question, answers, [doc], _lang(lang, question, context), evid)


def iter_squad(path: str, lang: str | None) -> Iterator[tuple[str, Any, str]]:
    """Flatten the nested SQuAD layout into (location, row-or-BadRow, raw) per question."""
    for loc, item, raw in iter_rows(path):
        if isinstance(item, dict) and "paragraphs" in item:
            for p_i, para in enumerate(item.get("paragraphs") or []):
                for q_i, qa in enumerate(para.get("qas") or [] if isinstance(para, dict) else []):
                    if not isinstance(qa, dict):
                        yield f"{loc}/p{p_i}/q{q_i}", BadRow("bad_type", "qas item is not an object"), ""
                        continue
                    row = dict(qa, context=para.get("context"), title=item.get("title", ""))
                    yield f"{loc}/p{p_i}/q{q_i}", row, ""
        else:
            yield loc, item, raw


def _columns(d: dict, a: str, b: str) -> list[tuple]:
    """Pairs from two parallel lists of a dict (HF's column-wise layout); unequal lengths are a bad row."""
    left, right = list(d.get(a) or []), list(d.get(b) or [])
    if len(left) != len(right):
        raise BadRow("bad_type", f"{a} and {b} have different lengths")
    return list(zip(left, right, strict=True))


def parse_hotpot(row: dict, lang: str | None) -> QARecord:
    question = _text(row, "question")
    answers = _answers(row.get("answer", row.get("answers")))
    ctx, sup = row.get("context"), row.get("supporting_facts")
    if isinstance(ctx, dict):  # HF layout: {title: [...], sentences: [[...]]}
        ctx = _columns(ctx, "title", "sentences")
    if isinstance(sup, dict):
        sup = _columns(sup, "title", "sent_id")
    if not ctx or not sup:
        raise BadRow("missing_field", "context" if not ctx else "supporting_facts")
    paras = {str(t): list(s) for t, s in ctx}
    gold_titles = list(dict.fromkeys(str(t) for t, _ in sup))
    docs, evidence = [], []
    for title in gold_titles:
        if title not in paras:
            raise BadRow("evidence_not_in_document", f"supporting title {title!r} not in context")
        docs.append(Document(title, "".join(paras[title]).strip()))
    for title, i in sup:
        sents = paras[str(title)]
        if not 0 <= int(i) < len(sents):
            raise BadRow("evidence_not_in_document", f"supporting fact {title!r}#{i} out of range")
        if sents[int(i)].strip():
            evidence.append(sents[int(i)].strip())
    rid = str(row.get("_id") or row.get("id") or _stable_id("hotpotqa", question))
    text = " ".join(d.text for d in docs)
    return _record("hotpotqa", rid, question, answers, docs, _lang(lang, question, text), evidence)


def parse_mapped(row: dict, field_map: dict[str, str], lang: str | None, kind: str) -> QARecord:
    """A generic row through `field_map` (record field -> column name)."""
    col = {f: field_map.get(f, f) for f in ("id", "question", "answers", "text", "title", "lang", "evidence")}
    question = _text(row, col["question"])
    if col["answers"] not in row:
        raise BadRow("missing_field", col["answers"])
    answers = _answers(row[col["answers"]])
    text = _text(row, col["text"])
    title = str(row.get(col["title"]) or "")
    evidence = row.get(col["evidence"]) or ()
    evidence = (evidence,) if isinstance(evidence, str) else tuple(e for e in evidence if isinstance(e, str))
    row_lang = row.get(col["lang"]) if row.get(col["lang"]) in ("en", "zh") else None
    rid = str(row.get(col["id"]) or _stable_id(kind, question))
    return _record(
        kind,
        rid,
        question,
        answers,
        [Document(title, text)],
        lang or row_lang or _lang(None, question, text),
        evidence,
    )


# ---- dispatch ---------------------------------------------------------------------------------------------


def _hf_rows(source_cfg) -> Iterator[tuple[str, Any, str]]:
    """Rows of a Hugging Face dataset (a hub name, or a local folder/file of parquet/json/csv)."""
    import datasets

    path = source_cfg.path
    local = Path(path).expanduser()
    try:
        if local.is_file():
            builder = "parquet" if local.suffix == ".parquet" else "json"
            ds = datasets.load_dataset(builder, data_files=str(local), split=source_cfg.split)
        else:
            ds = datasets.load_dataset(
                str(local) if local.exists() else path, source_cfg.name, split=source_cfg.split
            )
    except Exception as exc:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        raise LongctxError(f"data.source.path: cannot load Hugging Face dataset {path!r}: {exc}") from None
    for i, row in enumerate(ds):
        yield f"{source_cfg.split}#{i}", row, ""


def _raw_rows(source_cfg) -> Iterator[tuple[str, Any, str]]:
    kind = source_cfg.kind
    if kind == "hf":
        return _hf_rows(source_cfg)
    if kind == "squad":
        return iter_squad(source_cfg.path, source_cfg.lang)
    return iter_rows(source_cfg.path)


def _parser(source_cfg):
    kind, lang = source_cfg.kind, source_cfg.lang
    if kind == "litm":
        return lambda row: parse_litm(row, lang)
    if kind == "squad":
        return lambda row: parse_squad_flat(row, lang)
    if kind == "hotpotqa":
        return lambda row: parse_hotpot(row, lang)
    return lambda row: parse_mapped(row, source_cfg.field_map, lang, kind)


def _raw_text(raw: Any, row: Any) -> str:
    if raw:
        return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
    return json.dumps(row, ensure_ascii=False, default=str)[:RAW_CHARS]


def iter_records(source_cfg, seed: int) -> Iterator[QARecord | Malformed]:
    """Every record of the source, in a deterministic order: `QARecord`s and, for bad rows, `Malformed`.

    Stops after `source_cfg.limit` records (valid or not). Raises `LongctxError` when the source cannot be
    read at all.
    """
    if source_cfg.kind == "builtin":
        yield from _builtin(source_cfg, seed)
        return
    parse = _parser(source_cfg)
    count = 0
    for loc, row, raw in _raw_rows(source_cfg):
        if source_cfg.limit and count >= source_cfg.limit:
            return
        count += 1
        try:
            if isinstance(row, BadRow):
                raise row
            if not isinstance(row, dict):
                raise BadRow("bad_type", f"row is {type(row).__name__}, expected an object")
            record = parse(row)
        except BadRow as bad:
            yield Malformed(bad.reason, bad.detail, source_cfg.kind, loc, _raw_text(raw, row))
            continue
        except MemoryError:
            raise
        except Exception as exc:  # a row shape no parser check foresaw: quarantine it, visibly, and go on
            detail = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
            logger.warning("%s: unexpected %s", loc, detail)
            yield Malformed("source_exception", detail, source_cfg.kind, loc, _raw_text(raw, row))
            continue
        yield record


def _builtin(source_cfg, seed: int) -> Iterable[QARecord]:
    from longctx_core.data.builtin import WorldSpec, iter_builtin_records

    b = source_cfg.builtin
    n = min(b.num_records, source_cfg.limit or b.num_records)
    return iter_builtin_records(n, seed, WorldSpec.from_config(b, source_cfg.lang))


def check_source(source_cfg) -> None:
    """Fail fast (before Ray starts) when the source path is missing or holds no readable data file.

    kind=hf may name a hub dataset, so only paths that look local (an existing parent folder, or a
    leading '.', '/' or '~') must exist; a hub name that fails to load is reported when reading."""
    if source_cfg.kind == "builtin":
        return
    if source_cfg.kind == "hf":
        local = Path(source_cfg.path).expanduser()
        if source_cfg.path.startswith((".", "/", "~")) and not local.exists():
            raise LongctxError(f"data.source.path: {source_cfg.path} does not exist")
        return
    for f in source_files(source_cfg.path):
        try:
            with open_bytes(f) as fh:
                fh.read(1)
        except (OSError, EOFError) as exc:
            raise LongctxError(f"data.source.path: cannot read {f}: {exc}") from None
