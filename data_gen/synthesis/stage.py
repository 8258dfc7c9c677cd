"""The synthesize stage: prepare and plan on the driver, compose on Ray Data (or in this process), write
the ordered shards, quarantine/, stats.json and plots/, then apply `data.max_bad_fraction`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from data_gen.outputs import ShardWriter, sample_stats, write_plots
from data_gen.quarantine import (
    bad_section,
    check_bad_fraction,
    count_reasons,
    reasons_text,
    source_bad,
    write_quarantine,
)
from data_gen.synthesis.composing import ComposeSettings, compose_locally, compose_on_ray
from data_gen.synthesis.planning import Prepared, base_overheads, plan_samples, prepare_records
from data_gen.tokenizer import chat_tokenizer, tokenizer_path
from longctx_core.data.compose import PositionSpec
from longctx_core.data.records import Malformed
from longctx_core.data.sources import check_source
from longctx_core.errors import LongctxError
from longctx_core.infra.layout import RunLayout

logger = logging.getLogger(__name__)


def check_synthesis_inputs(cfg) -> None:
    """Problems found without Ray: a QA source that cannot be read (the config schema checked the rest;
    chat and text sources are the importer's)."""
    if cfg.data.source.kind not in ("chat", "text"):
        check_source(cfg.data.source)


def _compose_all(
    cfg, tasks, tok, prep, out: Path, in_process: bool
) -> tuple[dict[str, ShardWriter], list[Malformed]]:
    """Run the tasks on Ray (or `in_process`) with the driver's tokenizer `tok` and stream the results into
    one ordered shard writer per split."""
    data = cfg.data
    settings = ComposeSettings(
        PositionSpec.from_config(data.gold_position), cfg.train.max_seq_len, cfg.run.seed, data.source.kind
    )
    splits = sorted({t["split"] for t in tasks})
    writers = {s: ShardWriter(out / s, data.samples_per_shard) for s in splits}
    for stale in {"train", "eval"} - set(splits):  # a previous run's shards must not pass for this one's
        for old in (out / stale).glob("part-*.parquet"):
            old.unlink()
    failed: list[Malformed] = []
    if in_process:
        results = compose_locally(tasks, tok, prep.pools, settings)
    else:
        results = compose_on_ray(tasks, tok, prep.pools, settings, data.num_workers, data.batch_size)
    for res in results:
        if res["error"]:
            err = json.loads(res["error"])
            failed.append(
                Malformed(
                    err["reason"],
                    err["detail"],
                    data.source.kind,
                    err["location"],
                    json.dumps(err["records"]),
                )
            )
        writers[res["split"]].add(res["index"], json.loads(res["row"]) if res["row"] else None)
    for w in writers.values():
        w.close()
    return writers, failed


def synthesize(cfg, run_root: Path, in_process: bool = False) -> dict:
    """The synthesize stage: writes `<run_root>/data/` (`RunLayout.data`) and returns the summary dict.

    `in_process=True` composes in this process instead of on Ray Data (same functions, same bytes; for
    small jobs and tests that need no actor start-up)."""
    from longctx_core.infra.metrics import Metrics

    out = RunLayout(Path(run_root)).data
    t0 = time.perf_counter()
    check_synthesis_inputs(cfg)
    tok_path = tokenizer_path(cfg)
    tok = chat_tokenizer(tok_path)
    prep = prepare_records(cfg, tok)
    tasks = _plan(cfg, tok, prep)
    t1 = time.perf_counter()
    writers, failed = _compose_all(cfg, tasks, tok, prep, out.dir, in_process)
    compose_s = time.perf_counter() - t1
    quarantine = prep.quarantine + failed
    write_quarantine(out.quarantine, quarantine)  # first: a failing stage still leaves the evidence
    if not writers["train"].rows:
        raise LongctxError(f"data: no training sample could be composed ({reasons_text(failed)})")
    write_plots(out.plots, writers["train"].rows)
    stats = _stats(cfg, out, prep, len(tasks), writers, failed, tok_path, compose_s, t0)
    metrics = Metrics("synthesize", jsonl_path=out.metrics, tags={"run": cfg.run.name})
    metrics.log(
        {k: stats[k] for k in ("num_samples", "samples_per_second", "wall_seconds")}
        | {"quarantined": len(quarantine)}
    )
    out.stats.write_text(json.dumps(stats, indent=2, ensure_ascii=False, default=float) + "\n")
    check_bad_fraction(stats["bad"], out.quarantine / "rows.jsonl")
    return {
        "data_dir": str(out.dir),
        **{k: stats[k] for k in ("num_samples", "samples_per_second", "quarantined")},
    }


def _plan(cfg, tok, prep: Prepared) -> list[dict]:
    """The tasks of every training sample, then of every held-out one (when the eval split has questions)."""
    data = cfg.data
    if not prep.records["train"]:
        raise LongctxError("data: every usable question fell in the eval split; lower data.eval_fraction")
    overhead = base_overheads(tok)
    tasks = plan_samples(prep, data, cfg.run.seed, "train", data.num_samples, overhead)
    if data.eval_samples and prep.records["eval"]:
        tasks += plan_samples(prep, data, cfg.run.seed, "eval", data.eval_samples, overhead)
    logger.info(
        "planned %d samples from %d records (%d quarantined)", len(tasks), prep.read, len(prep.quarantine)
    )
    return tasks


def _stats(
    cfg, out, prep: Prepared, planned: int, writers, failed, tok_path: str, compose_s: float, t0: float
):
    """stats.json of the stage: the written samples' figures (train, eval), the bad rows' and the run's."""
    data = cfg.data
    n_total = sum(len(w.rows) for w in writers.values())
    return {
        **sample_stats(writers["train"].rows),
        "eval": sample_stats(writers["eval"].rows) if "eval" in writers else None,
        "quarantined": count_reasons(prep.quarantine + failed),
        "bad": bad_section(
            {data.source.kind: source_bad(prep.quarantine, prep.read, failed, planned)}, data.max_bad_fraction
        ),
        "records": {
            "read": prep.read,
            "train": len(prep.records["train"]),
            "eval": len(prep.records["eval"]),
        },
        "token_tolerance": "n_tokens in [target - max(64, 3% of target), target]; plain and quote answers "
        "are shorter than their paraphrase twin (by the quote lines / the document numbers)",
        "wall_seconds": time.perf_counter() - t0,
        "compose_seconds": compose_s,
        "samples_per_second": n_total / compose_s if compose_s > 0 else None,
        "num_workers": data.num_workers,
        "tokenizer": tok_path,
        "files": {s: [str(p.relative_to(out.dir)) for p in w.files] for s, w in writers.items()},
    }
