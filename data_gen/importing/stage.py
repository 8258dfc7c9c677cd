"""The import stage: the main source (imported, or synthesized first), the mixed-in sources, the mixture
into data/train/, quarantine/, stats.json and plots/."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

from data_gen.importing.reading import read_units, resolve_format
from data_gen.importing.source import SourceResult, import_source
from data_gen.importing.writing import RowWriter, iter_shard_rows
from data_gen.mix import Mixer, shuffled
from data_gen.outputs import summary, write_plots
from data_gen.quarantine import bad_section, check_bad_fraction, count_reasons, source_bad, write_quarantine
from data_gen.tokenizer import chat_tokenizer, tokenizer_path
from longctx_core.config.sources import mix_name
from longctx_core.data.seeding import rng_for
from longctx_core.errors import LongctxError
from longctx_core.infra.layout import RunLayout

MIX_TOLERANCE = (
    "each achieved share is within (longest row) / (total tokens) of its target, unless the source ran out "
    "(exhausted: true)"
)


def needs_import(cfg) -> bool:
    """True when the data stage is (or includes) an import: a chat/text main source or a mixture."""
    return cfg.data.source.kind in ("chat", "text") or bool(getattr(cfg.data, "mix", None))


def check_import_inputs(cfg) -> None:
    """Before Ray starts: every chat/text source has readable units and (format auto) a format that can be
    told from its first rows; raises LongctxError naming the key."""
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


def import_data(cfg, run_root: Path, in_process: bool = False) -> dict:
    """The data stage for chat/text sources and mixtures: writes <run>/data/ (train/*.parquet, stats.json,
    quarantine/rows.jsonl, plots/) and returns the summary. A QA main source is synthesized first by
    `data_gen.synthesis.synthesize` (its eval split stays in data/eval/). `in_process=True` runs the import
    work in this process instead of on Ray Data (same bytes)."""
    t0 = time.perf_counter()
    out = RunLayout(Path(run_root)).data
    check_import_inputs(cfg)
    tok_path = tokenizer_path(cfg)
    tok = chat_tokenizer(tok_path) if in_process else None
    if out.sources.exists():
        shutil.rmtree(out.sources)
    main, base_stats = _main_source(cfg, run_root, out, tok_path, tok, in_process)
    results = [main]
    for i, entry in enumerate(cfg.data.mix):
        name = mix_name(entry, i)
        results.append(import_source(entry.source, name, cfg, tok_path, out.sources / name, tok))
    train, mix_report = _mix_into_train(cfg, out.train, results) if cfg.data.mix else (main.writer, None)
    # the synthesize stage of a QA main source wrote its own bad rows there already
    write_quarantine(out.quarantine, [m for r in results for m in r.quarantine], append=bool(base_stats))
    stats = _stats(cfg, out, results, train, mix_report, base_stats, time.perf_counter() - t0)
    write_plots(out.plots, [{"n_tokens": t, "n_docs": 0, "gold_positions": []} for t in train.tokens])
    out.stats.write_text(json.dumps(stats, indent=2, ensure_ascii=False, default=float) + "\n")
    check_bad_fraction(stats["bad"], out.quarantine / "rows.jsonl")
    return {
        "data_dir": str(out.dir),
        "num_samples": stats["num_samples"],
        "samples_per_second": stats["samples_per_second"],
        "quarantined": stats["quarantined"],
    }


def _main_source(cfg, run_root: Path, out, tok_path: str, tok, in_process: bool) -> tuple[SourceResult, dict]:
    """The main source's result, and the synthesize stage's stats when it is a QA source (synthesized
    first, its training shards then moved to data/sources/<kind>/); {} for an imported one."""
    from data_gen.synthesis import synthesize

    src, name = cfg.data.source, cfg.data.source.kind
    if src.kind in ("chat", "text"):
        folder = out.train if not cfg.data.mix else out.sources / name
        res = import_source(src, name, cfg, tok_path, folder, tok)
        shutil.rmtree(
            out.eval, ignore_errors=True
        )  # a previous synthesized run's eval split is not this data's
        return res, {}
    synthesize(cfg, run_root, in_process=in_process)
    base_stats = json.loads(out.stats.read_text())
    out.sources.mkdir(parents=True)
    out.train.rename(out.sources / name)
    synth = SourceResult(name, out.sources / name, read=base_stats.get("records", {}).get("read", 0))
    synth.samples = base_stats["num_samples"]
    synth.tokens = sum(int(r["n_tokens"]) for r in iter_shard_rows(synth.folder))
    return synth, base_stats


def _mix_into_train(cfg, train_dir: Path, results: list[SourceResult]) -> tuple[RowWriter, dict]:
    """Stream the per-source shards (the main source first in `results`) into `train_dir` (data/train) by
    token share; returns the writer and the report."""
    main, others = results[0], []
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


def _stats(
    cfg, out, results: list[SourceResult], train: RowWriter, mix_report, base_stats: dict, wall: float
):
    """stats.json of the stage: the synthesize stage's figures (a QA main source) updated with the training
    rows', the bad rows' (`data_gen.quarantine`), each source's and the mixture's."""
    quarantined = Counter(base_stats.get("quarantined", {})) + Counter(
        count_reasons(m for r in results for m in r.quarantine)
    )
    bad = dict(base_stats["bad"]["sources"]) if base_stats else {}  # the synthesized main source's
    bad |= {
        r.name: source_bad(r.quarantine, r.read, planned=r.samples) for r in results if r.writer is not None
    }
    kinds = [cfg.data.source.kind] + [entry.source.kind for entry in cfg.data.mix]
    return {
        **base_stats,
        "num_samples": len(train.tokens),
        "tokens": summary(train.tokens),
        "gold_position_hist": base_stats.get("gold_position_hist", {}),
        "answer_styles": base_stats.get("answer_styles", {}),
        "langs": dict(sorted(train.langs.items())),
        "quarantined": dict(sorted(quarantined.items())),
        "bad": bad_section(bad, cfg.data.max_bad_fraction),
        "samples_per_second": len(train.tokens) / wall if wall > 0 else None,
        "wall_seconds": wall,
        "sources": {r.name: _source_stats(r, kind) for r, kind in zip(results, kinds, strict=True)},
        "mix": mix_report,
        "mix_tolerance": MIX_TOLERANCE,
        "files": {"train": [p.name for p in sorted(out.train.glob("part-*.parquet"))]},
    }


def _source_stats(r: SourceResult, kind: str) -> dict:
    return {
        "kind": kind,
        "format": r.format or None,
        "rows_read": r.read,
        "samples": r.samples,
        "tokens": r.tokens,
        "quarantined": count_reasons(r.quarantine),
        "over_max_seq_len": r.over_max_seq_len,
        "seconds": r.seconds,
    }
