"""Composing planned samples (the same functions run in Ray actors and in a plain loop): a task becomes a
validated sample row, or a quarantine reason; on Ray Data, an actor pool with one tokenizer each."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from data_gen.quarantine import describe_exception
from data_gen.validate import validate_row
from longctx_core.data.compose import ComposeError, DocPool, PositionSpec, compose_sample
from longctx_core.data.evidence import Evidence, EvidenceError
from longctx_core.data.records import QARecord

logger = logging.getLogger(__name__)


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
