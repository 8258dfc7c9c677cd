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

The modules, each importing only the ones above it:

    reading   units of work and their raw rows; the chat format of a source
    rows      the per-row work (parse, normalise, validate, tokenise), in Ray actors or a plain loop
    on_ray    the Ray Data pipeline for one source (or the same work in this process)
    writing   the import row schema, the shard writer, reading shards back
    source    one source, end to end
    stage     the stage: main source, mixed-in sources, the mixture, stats
"""

from data_gen.importing.on_ray import process_locally, process_on_ray
from data_gen.importing.reading import iter_unit, read_units, resolve_format
from data_gen.importing.rows import ImportActor, ImportSettings, process_row, process_table
from data_gen.importing.source import SourceResult, import_source
from data_gen.importing.stage import check_import_inputs, import_data, needs_import
from data_gen.importing.writing import IMPORT_SCHEMA, RowWriter, iter_shard_rows, training_row

__all__ = [
    "IMPORT_SCHEMA",
    "ImportActor",
    "ImportSettings",
    "RowWriter",
    "SourceResult",
    "check_import_inputs",
    "import_data",
    "import_source",
    "iter_shard_rows",
    "iter_unit",
    "needs_import",
    "process_locally",
    "process_on_ray",
    "process_row",
    "process_table",
    "read_units",
    "resolve_format",
    "training_row",
]
