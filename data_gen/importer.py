"""The import stage: chat data and raw text become training rows on Ray Data, and sources are mixed.

    summary = import_data(cfg, run_root)   # writes <run>/data/: train/*.parquet, stats.json, quarantine/, plots/

It runs instead of composition when `data.source.kind` is `chat` or `text`, and after it when `data.mix`
lists further sources. Per source:

    read units (one per file, or a row range of a `datasets` dataset) --Ray Data tasks, streaming blocks of
    raw rows--> ImportActor (actor pool, one tokenizer each: parse, normalise, validate, tokenise) --> the
    driver, in source order: chat rows are written as they come; text documents are cut into pieces of
    train.max_seq_len tokens (`data_gen.rawtext`); bad rows go to quarantine with their reason.

Execution preserves order, so the rows and their Parquet bytes depend only on the source and the seed, not
on the number of workers. With `data.mix`, every source is first written to `data/sources/<name>/` (a
synthesized main source is made by the synthesize stage, then moved there), and `data_gen.mix` streams them
into `data/train/` by token share. Rows have the sample-row columns of synthesized data (QA-only columns
empty: `n_docs` 0, `gold_positions` [], `answer_style` and `meta` null) plus `input_ids` and `doc_lens`,
set only for raw-text pieces (chat rows are tokenised with the chat template at training time).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_gen.chat_import import chat_row, column, parse_raw, sniff_format
from data_gen.mix import Mixer, shuffled
from data_gen.outputs import SAMPLE_SCHEMA, summary, write_shard
from data_gen.quarantine import (
    bad_section,
    check_bad_fraction,
    count_reasons,
    reasons_text,
    source_bad,
    write_quarantine,
)
from data_gen.rawtext import cut_pieces, end_of_text_id
from longctx_core.data.records import Malformed
from longctx_core.data.seeding import rng_for
from longctx_core.data.sources import DATA_SUFFIXES, RAW_CHARS, BadRow, source_files
from longctx_core.data.text import detect_lang
from longctx_core.errors import LongctxError
from longctx_core.infra.layout import RunLayout

logger = logging.getLogger(__name__)

# The sample-row schema plus the two raw-text columns (null for chat and synthesized rows).
IMPORT_SCHEMA = SAMPLE_SCHEMA.append(pa.field("input_ids", pa.list_(pa.int32()))).append(
    pa.field("doc_lens", pa.list_(pa.int64()))
)
READ_BLOCK_ROWS = 256  # raw rows per block a read task emits: small blocks keep memory flat on big files
HF_UNIT_ROWS = 50_000  # rows of a `datasets` dataset per read task
_RESULT_COLUMNS = ("unit", "row", "loc", "record", "ids", "n_tokens", "error", "raw")


def needs_import(cfg) -> bool:
    """True when the data stage is (or includes) an import: a chat/text main source or a mixture."""
    return cfg.data.source.kind in ("chat", "text") or bool(getattr(cfg.data, "mix", None))


# ---- reading: units of work and their raw rows ----------------------------------------------------------


def read_units(src) -> list[dict]:
    """The units a source is read in (one per file; row ranges for `datasets`), in source order; raises
    LongctxError when the path holds nothing readable."""
    path = src.path
    local = Path(path).expanduser()
    if (local.is_dir() and not _saved_dataset(local)) or local.is_file():
        suffixes = DATA_SUFFIXES + (tuple(src.text.suffixes) if src.kind == "text" else ())
        files = source_files(local, suffixes)
        return [{"unit": i, "path": str(f), "hf": ""} for i, f in enumerate(files)]
    if not local.exists() and path.startswith((".", "/", "~")):
        raise LongctxError(f"data.source.path: {path} does not exist")
    n = len(_load_hf(src))  # a `datasets` folder (save_to_disk) or hub name (cached locally): row ranges
    return [
        {"unit": i, "path": path, "hf": f"{start}:{min(n, start + HF_UNIT_ROWS)}"}
        for i, start in enumerate(range(0, n, HF_UNIT_ROWS))
    ]


def _saved_dataset(folder: Path) -> bool:
    """True for a folder written by `datasets`' `save_to_disk` (Arrow files plus its state files)."""
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def _load_hf(src):
    """The `datasets` dataset of `src`: `load_from_disk` for a saved folder (its `split` when it holds
    several), else `load_dataset(path, name, split=...)` (a hub name, from the local cache offline)."""
    import datasets

    local = Path(src.path).expanduser()
    try:
        if local.is_dir() and _saved_dataset(local):
            ds = datasets.load_from_disk(str(local))
            return ds[src.split] if isinstance(ds, datasets.DatasetDict) else ds
        return datasets.load_dataset(src.path, src.name, split=src.split)
    except Exception as exc:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LongctxError(f"data.source.path: cannot load dataset {src.path!r}: {first}") from None


def iter_unit(unit: dict, src) -> Iterator[tuple[str, bytes, bool]]:
    """(location, raw bytes, whether the bytes are a whole plain-text document) for each row of a unit.

    JSON lines stay raw bytes (decoding and parsing errors belong to the row, not the file); JSON lists,
    Parquet and `datasets` rows are re-serialised as JSON; a .txt/.md file is one document."""
    path = Path(unit["path"])
    if unit["hf"]:
        start, end = (int(x) for x in unit["hf"].split(":"))
        ds = _load_hf(src).select(range(start, end))
        for i, row in enumerate(ds, start=start):
            yield f"{src.split}#{i}", json.dumps(row, ensure_ascii=False, default=str).encode(), False
        return
    name = path.name
    if src.kind == "text" and name.endswith(tuple(src.text.suffixes)):
        yield name, path.read_bytes(), True
    elif name.endswith(".parquet"):
        pf = pq.ParquetFile(path)
        n = 0
        for batch in pf.iter_batches(batch_size=READ_BLOCK_ROWS):
            for row in batch.to_pylist():
                n += 1
                yield f"{name}#{n}", json.dumps(row, ensure_ascii=False, default=str).encode(), False
    elif ".jsonl" in name:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    yield f"{name}:{n}", line.rstrip(b"\r\n"), False
    else:  # a JSON document: a list of rows or {"data": [...]}; it cannot be streamed, so one task reads it
        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(path, "rb") as fh:
                doc = json.loads(fh.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LongctxError(f"data.source.path: cannot read {path} as JSON: {exc}") from None
        items = doc.get("data", doc) if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise LongctxError(
                f"data.source.path: {path}: expected a JSON list or a {{'data': [...]}} document"
            )
        for i, item in enumerate(items):
            yield f"{name}#{i}", json.dumps(item, ensure_ascii=False).encode(), False


def _raw_schema() -> pa.Schema:
    return pa.schema(
        [
            ("unit", pa.int64()),
            ("row", pa.int64()),
            ("loc", pa.string()),
            ("raw", pa.binary()),
            ("doc", pa.bool_()),
        ]
    )


def read_blocks(batch: pa.Table, src) -> Iterator[pa.Table]:
    """Ray Data read UDF (a generator, so a big file streams in blocks): units in, raw rows out."""
    for unit in batch.to_pylist():
        rows: list[dict] = []
        for n, (loc, raw, doc) in enumerate(iter_unit(unit, src)):
            rows.append({"unit": unit["unit"], "row": n, "loc": loc, "raw": raw, "doc": doc})
            if len(rows) >= READ_BLOCK_ROWS:
                yield pa.Table.from_pylist(rows, schema=_raw_schema())
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, schema=_raw_schema())


# ---- per-row work (the same function runs in Ray actors and in a plain loop) ---------------------------


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
        from data_gen.tokenizer import chat_tokenizer

        self.tok = chat_tokenizer(tok_path)
        self.settings = settings

    def __call__(self, batch: pa.Table) -> pa.Table:
        return process_table(self.tok, self.settings, batch)


def _result_schema() -> pa.Schema:
    return pa.schema(
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


def process_table(tok, settings: ImportSettings, batch: pa.Table) -> pa.Table:
    """`process_row` over a block of raw rows; returns the result block (raw text kept for bad rows)."""
    out = []
    for r in batch.to_pylist():
        res = process_row(tok, settings, r["loc"], r["raw"], r["doc"])
        res |= {"unit": r["unit"], "row": r["row"], "loc": r["loc"]}
        res["raw"] = _raw_text(r["raw"]) if res["error"] else None
        out.append(res)
    return pa.Table.from_pylist(out, schema=_result_schema())


# ---- the Ray Data stage for one source -------------------------------------------------------------------


@contextlib.contextmanager
def _ordered_execution():
    """Ray Data executes with preserve_order inside (restored after): results come in source order."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = before


def process_on_ray(units: list[dict], src, settings: ImportSettings, tok_path: str, num_workers: int):
    """Yield result rows (dicts, `_RESULT_COLUMNS`) of every raw row of `units`, in source order."""
    import ray

    from longctx_core.infra.resources import cpus_per_actor

    read_cpus = cpus_per_actor(max(1, min(len(units), num_workers)), share=0.25)
    last = (-1, -1)
    with _ordered_execution():  # set before the dataset is built: it keeps a copy of the context
        ds = ray.data.from_items(units, override_num_blocks=max(1, len(units)))
        ds = ds.map_batches(
            read_blocks, fn_kwargs={"src": src}, batch_size=1, batch_format="pyarrow", num_cpus=read_cpus
        )
        ds = ds.map_batches(
            ImportActor,
            fn_constructor_args=(tok_path, settings),
            batch_size=READ_BLOCK_ROWS,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_cpus=cpus_per_actor(num_workers),
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for r in batch.to_pylist():
                key = (r["unit"], r["row"])
                if key <= last:  # preserve_order is what makes the output independent of worker count
                    raise RuntimeError(f"import results out of order: {key} after {last}")
                last = key
                yield r


def process_locally(units: list[dict], src, settings: ImportSettings, tok) -> Iterator[dict]:
    """The same work in this process (the benchmark's baseline; tests of the per-row logic)."""
    for unit in units:
        for block in read_blocks(pa.Table.from_pylist([unit]), src):
            yield from process_table(tok, settings, block).to_pylist()


def resolve_format(src, units: list[dict]) -> str:
    """The chat format of `src`: `data.source.format`, or sniffed from its first rows (logged); raises
    LongctxError when auto cannot tell."""
    if src.format != "auto":
        return src.format
    if "prompt" in src.field_map:
        return "prompt_response"
    head = []
    for unit in units[:3]:
        for _, raw, _ in iter_unit(unit, src):
            head.append(raw)
            if len(head) >= 20:
                break
        if len(head) >= 20:
            break
    try:
        fmt = sniff_format(head, src.field_map)
    except ValueError as exc:
        raise LongctxError(f"data.source.format: {src.path}: {exc}") from None
    logger.info("data.source.format=auto: %s reads as '%s'", src.path, fmt)
    return fmt


# ---- writing --------------------------------------------------------------------------------------------


class RowWriter:
    """Writes rows (arriving in order) to `part-NNNNN.parquet` shards of `rows_per_shard` rows
    (IMPORT_SCHEMA), keeping the few facts stats need."""

    def __init__(self, folder: Path, rows_per_shard: int) -> None:
        self.folder = Path(folder)
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a previous run's shards must not pass for this one's
        self.folder.mkdir(parents=True)
        self.rows_per_shard = rows_per_shard
        self._pending: list[dict] = []
        self.files: list[Path] = []
        self.tokens: list[int] = []
        self.langs: dict[str, int] = {}

    def add(self, row: dict) -> None:
        self._pending.append(row)
        self.tokens.append(int(row["n_tokens"]))
        self.langs[row["lang"]] = self.langs.get(row["lang"], 0) + 1
        if len(self._pending) >= self.rows_per_shard:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.files.append(write_shard(self.folder, len(self.files), self._pending, IMPORT_SCHEMA))
            self._pending = []

    def close(self) -> list[Path]:
        self._flush()
        return self.files


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


# ---- one source, end to end -----------------------------------------------------------------------------


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
    settings = ImportSettings(
        src.kind, name, fmt, dict(src.field_map), src.lang, cfg.train.max_seq_len, cfg.train.overlong
    )
    if tok is None:
        results = process_on_ray(units, src, settings, tok_path, cfg.data.num_workers)
    else:
        results = process_locally(units, src, settings, tok)
    res = SourceResult(name, folder, format=fmt)
    writer = RowWriter(folder, cfg.data.samples_per_shard)

    def good_docs() -> Iterator[dict]:
        for r in results:
            res.read += 1
            if r["error"]:
                err = json.loads(r["error"])
                res.quarantine.append(Malformed(err["reason"], err["detail"], name, r["loc"], r["raw"] or ""))
                continue
            yield r

    if src.kind == "chat":
        for r in good_docs():
            rec = json.loads(r["record"])
            row = training_row(rec["id"], rec["messages"], r["n_tokens"], name, rec["lang"])
            res.over_max_seq_len += r["n_tokens"] > cfg.train.max_seq_len
            writer.add(row)
    else:
        eot = end_of_text_id(tok if tok is not None else _tokenizer(tok_path))
        langs: dict[str, str] = {}

        def docs():
            for r in good_docs():
                rec = json.loads(r["record"])
                langs[rec["id"]] = rec["lang"]
                yield rec["id"], r["ids"]

        pieces = cut_pieces(docs(), cfg.train.max_seq_len, eot, src.text.cross_document)
        for i, piece in enumerate(pieces):
            row = training_row(
                f"{name}-{i:07d}",
                [],
                len(piece),
                name,
                langs[piece.doc_ids[0]],
                piece.input_ids,
                piece.doc_lens,
            )
            writer.add(row)
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


def _tokenizer(tok_path: str):
    from data_gen.tokenizer import chat_tokenizer

    return chat_tokenizer(tok_path)


# ---- the stage: main source, mixed-in sources, the mixture, stats ----------------------------------------


def check_import_inputs(cfg) -> None:
    """Before Ray starts: every chat/text source has readable units and (format auto) a format that can be
    told from its first rows; raises LongctxError naming the key."""
    from longctx_core.config.sources import mix_name

    sources = [("data.source", cfg.data.source)] if cfg.data.source.kind in ("chat", "text") else []
    sources += [(f"data.mix.{i} ({mix_name(m, i)})", m.source) for i, m in enumerate(cfg.data.mix)]
    for key, src in sources:
        try:
            units = read_units(src)
            if src.kind == "chat":
                resolve_format(src, units)
        except LongctxError as exc:
            # The main source's messages already name data.source; a mixed-in one says which entry.
            raise LongctxError(str(exc) if key == "data.source" else f"{key}: {exc}") from None


def _mix_into_train(
    cfg, train_dir: Path, results: list[SourceResult], main: SourceResult
) -> tuple[RowWriter, dict]:
    """Stream the per-source shards into `train_dir` (data/train) by token share; returns the writer and the
    report."""
    from longctx_core.config.sources import mix_name

    others = []
    for i, entry in enumerate(cfg.data.mix):
        name = mix_name(entry, i)
        res = next(r for r in results if r.name == name)
        rng = rng_for(cfg.run.seed, "mix", name)
        others.append((name, entry.share, shuffled(iter_shard_rows(res.folder), entry.shuffle_buffer, rng)))
    mixer = Mixer((main.name, iter_shard_rows(main.folder)), others)
    writer = RowWriter(train_dir, cfg.data.samples_per_shard)
    for _, row in mixer.rows():
        writer.add(row)
    writer.close()
    return writer, mixer.report()


def import_data(cfg, run_root: Path, in_process: bool = False) -> dict:
    """The data stage for chat/text sources and mixtures: writes <run>/data/ (train/*.parquet, stats.json,
    quarantine/rows.jsonl, plots/) and returns the summary. A QA main source is synthesized first by
    `data_gen.synthesis.synthesize` (its eval split stays in data/eval/). `in_process=True` runs the import
    work in this process instead of on Ray Data (same bytes)."""
    from data_gen.outputs import write_plots
    from data_gen.synthesis import synthesize
    from data_gen.tokenizer import chat_tokenizer, tokenizer_path
    from longctx_core.config.sources import mix_name

    t0 = time.perf_counter()
    data = cfg.data
    out = RunLayout(Path(run_root)).data
    check_import_inputs(cfg)
    tok_path = tokenizer_path(cfg)
    tok = chat_tokenizer(tok_path) if in_process else None
    sources_dir = out.sources
    if sources_dir.exists():
        shutil.rmtree(sources_dir)
    results: list[SourceResult] = []
    base_stats: dict = {}
    main_name = data.source.kind
    if data.source.kind in ("chat", "text"):
        folder = out.train if not data.mix else sources_dir / main_name
        results.append(import_source(data.source, main_name, cfg, tok_path, folder, tok))
        shutil.rmtree(
            out.eval, ignore_errors=True
        )  # a previous synthesized run's eval split is not this data's
    else:
        synthesize(cfg, run_root, in_process=in_process)
        base_stats = json.loads(out.stats.read_text())
        sources_dir.mkdir(parents=True)
        out.train.rename(sources_dir / main_name)
        synth = SourceResult(
            main_name, sources_dir / main_name, read=base_stats.get("records", {}).get("read", 0)
        )
        synth.samples = base_stats["num_samples"]
        synth.tokens = sum(int(r["n_tokens"]) for r in iter_shard_rows(synth.folder))
        results.append(synth)
    for i, entry in enumerate(data.mix):
        name = mix_name(entry, i)
        results.append(import_source(entry.source, name, cfg, tok_path, sources_dir / name, tok))
    mix_report = None
    if data.mix:
        writer, mix_report = _mix_into_train(cfg, out.train, results, results[0])
        tokens = writer.tokens
        langs = writer.langs
    else:
        tokens = results[0].writer.tokens
        langs = results[0].writer.langs
    quarantine = [m for r in results for m in r.quarantine]
    bad = dict(base_stats["bad"]["sources"]) if base_stats else {}  # the synthesized main source's
    bad |= {r.name: source_bad(r.quarantine, r.read, planned=r.samples) for r in results if r.writer is not None}
    prior = base_stats.get("quarantined", {})
    # the synthesize stage of a QA main source wrote its own bad rows there already
    write_quarantine(out.quarantine, quarantine, append=bool(base_stats))
    wall = time.perf_counter() - t0
    stats = {
        **base_stats,
        "num_samples": len(tokens),
        "tokens": summary(tokens),
        "gold_position_hist": base_stats.get("gold_position_hist", {}),
        "answer_styles": base_stats.get("answer_styles", {}),
        "langs": dict(sorted(langs.items())),
        "quarantined": dict(sorted((Counter(prior) + Counter(count_reasons(quarantine))).items())),
        "bad": bad_section(bad, data.max_bad_fraction),
        "samples_per_second": len(tokens) / wall if wall > 0 else None,
        "wall_seconds": wall,
        "sources": {
            r.name: {
                "kind": data.source.kind if r is results[0] else None,
                "format": r.format or None,
                "rows_read": r.read,
                "samples": r.samples,
                "tokens": r.tokens,
                "quarantined": count_reasons(r.quarantine),
                "over_max_seq_len": r.over_max_seq_len,
                "seconds": r.seconds,
            }
            for r in results
        },
        "mix": mix_report,
        "mix_tolerance": "each achieved share is within (longest row) / (total tokens) of its target, unless "
        "the source ran out (exhausted: true)",
        "files": {"train": [p.name for p in sorted(out.train.glob("part-*.parquet"))]},
    }
    for i, entry in enumerate(data.mix):
        stats["sources"][mix_name(entry, i)]["kind"] = entry.source.kind
    write_plots(out.plots, [{"n_tokens": t, "n_docs": 0, "gold_positions": []} for t in tokens])
    out.stats.write_text(json.dumps(stats, indent=2, ensure_ascii=False, default=float) + "\n")
    check_bad_fraction(stats["bad"], out.quarantine / "rows.jsonl")
    return {
        "data_dir": str(out.dir),
        "num_samples": stats["num_samples"],
        "samples_per_second": stats["samples_per_second"],
        "quarantined": stats["quarantined"],
    }
