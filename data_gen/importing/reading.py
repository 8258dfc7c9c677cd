"""Reading a chat/text source: the units of work it is read in, their raw rows, and its chat format."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pyarrow as pa

from data_gen.chat_import import SNIFF_ROWS, sniff_format
from longctx_core.data.sources import (
    DATA_SUFFIXES,
    iter_json_objects,
    iter_parquet_rows,
    open_bytes,
    source_files,
)
from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)

READ_BLOCK_ROWS = 256  # raw rows per block a read task emits: small blocks keep memory flat on big files
HF_UNIT_ROWS = 50_000  # rows of a `datasets` dataset per read task
RAW_SCHEMA = pa.schema(
    [
        ("unit", pa.int64()),
        ("row", pa.int64()),
        ("loc", pa.string()),
        ("raw", pa.binary()),
        ("doc", pa.bool_()),
    ]
)


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
    name = path.name
    if unit["hf"]:
        start, end = (int(x) for x in unit["hf"].split(":"))
        ds = _load_hf(src).select(range(start, end))
        rows = ((f"{src.split}#{i}", row) for i, row in enumerate(ds, start=start))
    elif src.kind == "text" and name.endswith(tuple(src.text.suffixes)):
        yield name, path.read_bytes(), True
        return
    elif name.endswith(".parquet"):
        rows = ((loc, row) for loc, row, _ in iter_parquet_rows(path))
    elif ".jsonl" in name:
        with open_bytes(path) as fh:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    yield f"{name}:{n}", line.rstrip(b"\r\n"), False
        return
    else:  # a JSON document: a list of rows or {"data": [...]}; it cannot be streamed, so one task reads it
        rows = ((loc, row) for loc, row, _ in iter_json_objects(path))
    for loc, row in rows:
        yield loc, json.dumps(row, ensure_ascii=False, default=str).encode(), False


def read_blocks(batch: pa.Table, src) -> Iterator[pa.Table]:
    """Ray Data read UDF (a generator, so a big file streams in blocks): units in, raw rows out."""
    for unit in batch.to_pylist():
        rows: list[dict] = []
        for n, (loc, raw, doc) in enumerate(iter_unit(unit, src)):
            rows.append({"unit": unit["unit"], "row": n, "loc": loc, "raw": raw, "doc": doc})
            if len(rows) >= READ_BLOCK_ROWS:
                yield pa.Table.from_pylist(rows, schema=RAW_SCHEMA)
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


def resolve_format(src, units: list[dict]) -> str:
    """The chat format of `src`: `data.source.format`, or sniffed from its first rows (logged); raises
    LongctxError when auto cannot tell."""
    if src.format != "auto":
        return src.format
    if "prompt" in src.field_map:
        return "prompt_response"
    raws = (raw for unit in units[:3] for _, raw, _ in iter_unit(unit, src))
    try:
        fmt = sniff_format(list(islice(raws, SNIFF_ROWS)), src.field_map)
    except ValueError as exc:
        raise LongctxError(f"data.source.format: {src.path}: {exc}") from None
    logger.info("data.source.format=auto: %s reads as '%s'", src.path, fmt)
    return fmt
