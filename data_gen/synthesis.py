"""The synthesis pipeline: read -> normalise -> split -> plan -> compose on Ray Data -> Parquet + stats.

    summary = synthesize(cfg)          # writes <run>/data/{train,eval}/*.parquet, stats.json, plots/, quarantine/

Driver side (cheap, deterministic): read the source, locate evidence, quarantine bad rows, hash-split the
questions, count each pool document's tokens once, and plan every sample (its records, target length,
answer style, seed) from (run.seed, split, sample index). Ray Data side (the heavy part): `map_batches`
over an actor pool, one tokenizer per actor, composes and tokenises the samples. The driver then writes
rows in sample-index order into fixed-size shards (`part-00000.parquet`, ...), so the output bytes do not
depend on the number of workers or on block boundaries.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data_gen.outputs import ShardWriter, sample_stats, write_plots
from data_gen.quarantine import (
    bad_section,
    check_bad_fraction,
    count_reasons,
    describe_exception,
    reasons_text,
    source_bad,
    write_quarantine,
)
from data_gen.tokenizer import chat_tokenizer, tokenizer_path
from data_gen.validate import validate_row
from longctx_core.data import styles
from longctx_core.data.compose import (
    ComposeError,
    DocPool,
    PositionSpec,
    chat_tokens,
    compose_sample,
    count_doc_tokens,
    token_tolerance,
)
from longctx_core.data.evidence import Evidence, EvidenceError, locate_evidence
from longctx_core.data.records import Document, Malformed, QARecord
from longctx_core.data.seeding import derive_seed, rng_for
from longctx_core.data.sources import RAW_CHARS, check_source, iter_records
from longctx_core.data.split import split_of
from longctx_core.errors import LongctxError
from longctx_core.infra.layout import RunLayout

logger = logging.getLogger(__name__)


# ---- reading and planning ----------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything the driver knows before composing."""

    records: dict[str, list[tuple[QARecord, Evidence, int]]]  # split -> (record, evidence, token cost)
    pools: dict[str, tuple[list[Document], list[str], list[int]]]  # split -> DocPool arguments
    quarantine: list[Malformed] = field(default_factory=list)
    read: int = 0


def _record_cost(tok, rec: QARecord, ev: Evidence, doc_tokens: dict[Document, int]) -> int:
    """Tokens one record adds to a sample: its gold documents plus its question/answer turn."""
    turn = styles.render_followup_user(rec.question, rec.lang) + styles.render_answer(
        "paraphrase", rec.lang, ev.answer or rec.answers[0], [(999, s) for _, s in ev.quotes]
    )
    return sum(doc_tokens[d] + 3 for d in rec.evidence_docs) + len(tok(turn)["input_ids"]) + 12


def base_overheads(tok) -> dict[str, int]:
    """lang -> tokens of a sample with no documents and no turns (system prompt, instruction, chat
    template): what every sample costs before its documents."""
    return {
        lang: chat_tokens(
            tok,
            [
                {"role": "system", "content": styles.SYSTEM_PROMPT[lang]},
                {"role": "user", "content": styles.render_first_user([], "", lang)},
            ],
        )
        for lang in ("en", "zh")
    }


def prepare_records(cfg, tok) -> Prepared:
    """Read the source, quarantine bad rows and records without evidence or too long for the smallest
    target, split the questions, and build the distractor pools (train pool: train records' documents
    minus any eval gold document; eval pool: all documents)."""
    data, seed = cfg.data, cfg.run.seed
    valid: list[tuple[QARecord, Evidence]] = []
    prep = Prepared(records={"train": [], "eval": []}, pools={})
    for item in iter_records(data.source, seed):
        prep.read += 1
        if isinstance(item, Malformed):
            prep.quarantine.append(item)
            continue
        try:
            valid.append((item, locate_evidence(item)))
        except EvidenceError as exc:
            prep.quarantine.append(_bad_record(exc.reason, exc.detail, item))
        except MemoryError:
            raise
        except Exception as exc:  # a bug on one record must not stop the stage: quarantine it, visibly
            logger.warning("record %s: unexpected %s", item.id, describe_exception(exc))
            prep.quarantine.append(_bad_record("evidence_exception", describe_exception(exc), item))
    if not valid:
        raise LongctxError(
            f"data.source: no usable record among {prep.read} read ({reasons_text(prep.quarantine)})"
        )
    docs = list(dict.fromkeys(d for rec, _ in valid for d in rec.evidence_docs))
    doc_lang = {}
    for rec, _ in valid:
        for d in rec.evidence_docs:
            doc_lang.setdefault(d, rec.lang)
    counts = dict(zip(docs, count_doc_tokens(tok, docs, [doc_lang[d] for d in docs]), strict=True))
    lo = data.target_bounds()[0]
    overhead = base_overheads(tok)
    for rec, ev in valid:
        try:
            cost = _record_cost(tok, rec, ev, counts)
        except MemoryError:
            raise
        except Exception as exc:  # e.g. a tokenizer failing on one record's text
            logger.warning("record %s: unexpected %s", rec.id, describe_exception(exc))
            prep.quarantine.append(_bad_record("tokenize_exception", describe_exception(exc), rec))
            continue
        if cost + overhead[rec.lang] > lo - token_tolerance(lo):
            detail = f"{cost} tokens of gold documents and turn > smallest target {lo} minus tolerance"
            prep.quarantine.append(
                Malformed(
                    "document_too_long", detail, rec.source, rec.id, rec.evidence_docs[0].text[:RAW_CHARS]
                )
            )
            continue
        prep.records[split_of(rec.id, data.eval_fraction, seed)].append((rec, ev, cost))
    eval_golds = {d for rec, _, _ in prep.records["eval"] for d in rec.evidence_docs}
    train_docs = [d for d in docs if d not in eval_golds]
    for name, pool_docs in (("train", train_docs), ("eval", docs)):
        prep.pools[name] = (pool_docs, [doc_lang[d] for d in pool_docs], [counts[d] for d in pool_docs])
    return prep


def _bad_record(reason: str, detail: str, rec: QARecord) -> Malformed:
    """A quarantine row for a parsed record that cannot be used (the record itself is the raw text)."""
    return Malformed(
        reason, detail, rec.source, rec.id, json.dumps(rec.to_dict(), ensure_ascii=False)[:RAW_CHARS]
    )


def heldout_records(cfg, tok) -> tuple[list[tuple[QARecord, Evidence]], DocPool]:
    """The held-out (eval-split) questions with their evidence, and the eval distractor pool: what the
    evaluate stage needs to compose its own samples (e.g. one question at fixed gold positions)."""
    prep = prepare_records(cfg, tok)
    return [(rec, ev) for rec, ev, _ in prep.records["eval"]], DocPool(*prep.pools["eval"])


def _draw_target(data, rng) -> int:
    t = data.target_tokens
    return rng.choice(t) if isinstance(t, list) else rng.randint(t.min, t.max)


def _draw_style(data, rng) -> str:
    styles_, weights = zip(*sorted(data.answer_styles.items()), strict=True)
    return rng.choices(styles_, weights=weights)[0]


def plan_samples(prep: Prepared, data, seed: int, split: str, n: int, overhead: dict[str, int]) -> list[dict]:
    """`n` task rows for `split`: records (cycled through a seeded permutation per language, so each
    question is used once before any repeats), target, answer style and compose seed per sample.

    Targets, languages and records come from one stream and the style from another, so changing the
    style mix (the plain ablation twin) keeps every context and question.
    """
    rows = prep.records[split]
    by_lang: dict[str, list[int]] = {}
    for i, (rec, _, _) in enumerate(rows):
        by_lang.setdefault(rec.lang, []).append(i)
    for lang, idx in by_lang.items():
        rng_for(seed, split, "order", lang).shuffle(idx)
    langs = sorted(by_lang)
    weights = [len(by_lang[lang]) for lang in langs]
    cursor = dict.fromkeys(langs, 0)
    tasks = []
    for i in range(n):
        rng = rng_for(seed, split, "sample", i)
        target = _draw_target(data, rng)
        lang = rng.choices(langs, weights=weights)[0]
        budget = target - token_tolerance(target) - overhead[lang]
        chosen = []
        for _ in range(rng.randint(*data.turns_per_sample)):
            j = by_lang[lang][cursor[lang] % len(by_lang[lang])]
            if chosen and (budget < rows[j][2] or j in chosen):
                break
            chosen.append(j)
            budget -= rows[j][2]
            cursor[lang] += 1
        style = _draw_style(data, rng_for(seed, split, "style", i))
        tasks.append(
            {
                "index": i,
                "split": split,
                "target": target,
                "style": style,
                "seed": derive_seed(seed, split, "compose", i),
                "records": [rows[j][0].to_dict() for j in chosen],
                "evidence": [rows[j][1].to_json() for j in chosen],
            }
        )
    return tasks


# ---- composing (the same function runs in Ray actors and in a plain loop) ----------------------------------


@dataclass
class ComposeSettings:
    positions: PositionSpec
    max_tokens: int | None
    run_seed: int
    source: str


def _sample_problem(task: dict, tok, pools, settings: ComposeSettings, sid: str) -> tuple[dict | None, dict]:
    """(row, {}) for a sound sample, or (None, {reason, detail}) for one that cannot or must not be written."""
    records = [QARecord.from_dict(r) for r in task["records"]]
    evidences = [Evidence.from_json(e) for e in task["evidence"]]
    sample = compose_sample(
        records,
        pools[task["split"]],
        tok,
        target_tokens=task["target"],
        answer_style=task["style"],
        positions=settings.positions,
        seed=task["seed"],
        sample_id=sid,
        max_tokens=settings.max_tokens,
        evidences=evidences,
        run_seed=settings.run_seed,
    )
    row = sample.to_row()
    row["meta"]["split"] = task["split"]
    # The composer's promises (verbatim quotes, positions in range...) are checked before a row is written,
    # so a composer bug shows up as quarantined samples instead of silently wrong training data.
    problems = validate_row(row)
    if problems:
        return None, {"reason": "invalid_sample", "detail": "; ".join(problems)[:1000]}
    return row, {}


def compose_task(task: dict, tok, pools: dict[str, DocPool], settings: ComposeSettings) -> dict:
    """Compose one planned sample; returns {index, split, row (JSON) | None, error (reason/detail JSON),
    started, finished (wall-clock seconds, for throughput measurements)}.

    Never raises for one bad sample (only MemoryError, KeyboardInterrupt and SystemExit pass): a
    ComposeError/EvidenceError keeps its reason, a row failing `validate_row` is `invalid_sample`, and any
    other exception is `compose_exception` with `describe_exception` as detail, so one sample's bug is
    quarantined and counted instead of killing the Ray job."""
    started = time.time()
    sid = f"{task['split']}-{settings.run_seed}-{task['index']:06d}"
    try:
        row, err = _sample_problem(task, tok, pools, settings, sid)
    except (ComposeError, EvidenceError) as exc:
        row, err = None, {"reason": exc.reason, "detail": exc.detail}
    except MemoryError:
        raise
    except Exception as exc:  # any other bug in one sample must not kill the whole job: quarantine it
        logger.warning("sample %s: unexpected %s", sid, describe_exception(exc))
        row, err = None, {"reason": "compose_exception", "detail": describe_exception(exc)}
    out = {"index": task["index"], "split": task["split"], "started": started}
    if row is None:
        ids = [r.get("id") if isinstance(r, dict) else None for r in task.get("records", [])]
        err |= {"location": sid, "records": ids}
        return out | {"row": None, "error": json.dumps(err, ensure_ascii=False), "finished": time.time()}
    return out | {"row": json.dumps(row, ensure_ascii=False), "error": None, "finished": time.time()}


def build_pools(raw: dict[str, tuple]) -> dict[str, DocPool]:
    return {name: DocPool(*args) for name, args in raw.items()}


class ComposeActor:
    """A Ray Data actor: one tokenizer and one copy of the pools, composing batches of planned tasks."""

    def __init__(self, tok_ref, pools_ref, settings: ComposeSettings) -> None:
        import ray

        from data_gen.light_tokenizer import LightTokenizer

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one tokenizer per actor, no thread pool
        spec = ray.get(tok_ref) if isinstance(tok_ref, ray.ObjectRef) else tok_ref
        self.tok = LightTokenizer.from_spec(spec)  # the driver's tokenizer, ~3.5 s sooner than loading it
        raw = ray.get(pools_ref) if isinstance(pools_ref, ray.ObjectRef) else pools_ref
        self.pools = build_pools(raw)
        self.settings = settings

    def __call__(self, batch: dict) -> dict:
        out = [compose_task(json.loads(p), self.tok, self.pools, self.settings) for p in batch["task"]]
        return {
            key: [o[key] for o in out] for key in ("index", "split", "row", "error", "started", "finished")
        }


def compose_on_ray(
    tasks: list[dict],
    tok,
    raw_pools: dict,
    settings: ComposeSettings,
    num_workers: int,
    batch_size: int,
) -> Iterator[dict]:
    """Compose `tasks` with `map_batches` on an actor pool of `num_workers` (CPU share sized from the
    cluster), each actor with a copy of the driver's tokenizer `tok` (`light_tokenizer.spec_of`); yields
    result rows in completion order (the writer reorders)."""
    import ray

    from data_gen.light_tokenizer import spec_of
    from longctx_core.infra.resources import cpus_per_actor

    pools_ref, tok_ref = ray.put(raw_pools), ray.put(spec_of(tok))
    items = [{"task": json.dumps(t, ensure_ascii=False)} for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * num_workers)))
    ds = ds.map_batches(
        ComposeActor,
        fn_constructor_args=(tok_ref, pools_ref, settings),
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=cpus_per_actor(num_workers),
        batch_format="numpy",
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield from batch.to_pylist()


def compose_locally(tasks: Iterable[dict], tok, raw_pools: dict, settings: ComposeSettings) -> Iterator[dict]:
    """The same composition in this process (the benchmark's baseline; small jobs)."""
    pools = build_pools(raw_pools)
    for t in tasks:
        yield compose_task(t, tok, pools, settings)


# ---- the stage ---------------------------------------------------------------------------------------------


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

    data, out = cfg.data, RunLayout(Path(run_root)).data
    t0 = time.perf_counter()
    check_synthesis_inputs(cfg)
    tok_path = tokenizer_path(cfg)
    tok = chat_tokenizer(tok_path)
    prep = prepare_records(cfg, tok)
    if not prep.records["train"]:
        raise LongctxError("data: every usable question fell in the eval split; lower data.eval_fraction")
    overhead = base_overheads(tok)
    tasks = plan_samples(prep, data, cfg.run.seed, "train", data.num_samples, overhead)
    if data.eval_samples and prep.records["eval"]:
        tasks += plan_samples(prep, data, cfg.run.seed, "eval", data.eval_samples, overhead)
    logger.info(
        "planned %d samples from %d records (%d quarantined)", len(tasks), prep.read, len(prep.quarantine)
    )
    t1 = time.perf_counter()
    writers, failed = _compose_all(cfg, tasks, tok, prep, out.dir, in_process)
    compose_s = time.perf_counter() - t1
    quarantine = prep.quarantine + failed
    write_quarantine(out.quarantine, quarantine)  # first: a failing stage still leaves the evidence
    if not writers["train"].rows:
        raise LongctxError(f"data: no training sample could be composed ({reasons_text(failed)})")
    train_rows = writers["train"].rows
    write_plots(out.plots, train_rows)
    n_total = sum(len(w.rows) for w in writers.values())
    stats = {
        **sample_stats(train_rows),
        "eval": sample_stats(writers["eval"].rows) if "eval" in writers else None,
        "quarantined": count_reasons(quarantine),
        "bad": bad_section(
            {data.source.kind: source_bad(prep.quarantine, prep.read, failed, len(tasks))},
            data.max_bad_fraction,
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
