"""Evaluation contexts for "accuracy by gold position x context length": held-out questions only, the gold
document at exactly the requested position, the length on target, and a loud failure on any leak.

For each held-out question q, length L and position p, `longctx_core.data.compose.compose_sample` builds the same
kind of sample training saw (system, user = numbered documents + question, assistant = reference answer)
with the gold document at round(p * (n_docs - 1)); the prompt is the sample without its assistant turn.
The composer's seed depends on (q, L) only, so across positions of one (q, L) the distractors are the same
documents and only the gold document moves. L counts the whole composed sample (the reference answer
included), as in training: the prompt itself is shorter by the answer's few dozen tokens.

Held-out means `longctx_core.data.split.split_of(record.id, data.eval_fraction, run.seed) == "eval"`, the split
synthesis uses; on top of that, every question of `<run>/data/train/*.parquet` (from `meta.questions` and
from the user turns) is collected and an overlap raises `LongctxError` before any model runs.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from longctx_core.data.records import QARecord
from longctx_core.data.seeding import derive_seed
from longctx_core.errors import LongctxError
from longctx_core.eval.prompts import Prompt, chat_ids
from longctx_core.infra.layout import RunLayout

logger = logging.getLogger(__name__)

_QUESTION_LINE = re.compile(r"^(?:Question: |问题：)(.+)$", re.MULTILINE)


def question_key(question: str) -> str:
    """Case- and space-insensitive form of a question, for the leak check."""
    return " ".join(question.casefold().split())


def _questions_of_row(row: dict) -> set[str]:
    found = set()
    meta = row.get("meta")
    if isinstance(meta, str):  # a writer may store the free-form meta as JSON text
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = None
    if isinstance(meta, dict):
        found.update(question_key(q) for q in meta.get("questions") or [])
    for msg in row.get("messages") or []:
        if msg.get("role") == "user":
            found.update(question_key(q) for q in _QUESTION_LINE.findall(msg.get("content", "")))
    return found


def training_questions(run_root: Path) -> set[str] | None:
    """Normalised questions of every training sample in `<run>/data/train/*.parquet`; None if none exist."""
    import pyarrow.parquet as pq

    files = sorted(RunLayout(run_root).data.train.glob("*.parquet"))
    if not files:
        return None
    questions: set[str] = set()
    for f in files:
        table = pq.read_table(f)
        cols = [c for c in ("messages", "meta") if c in table.column_names]
        for row in table.select(cols).to_pylist():
            questions |= _questions_of_row(row)
    logger.info("leak check: %d distinct training questions in %d file(s)", len(questions), len(files))
    return questions


def check_no_leak(records: list[QARecord], train_questions: set[str] | None, where: str) -> None:
    """Raise LongctxError when any evaluation question also appears in the training data."""
    if train_questions is None:
        logger.warning("leak check: no training data under %s (nothing to leak from)", where)
        return
    leaked = [r for r in records if question_key(r.question) in train_questions]
    if leaked:
        raise LongctxError(
            f"eval.qa: {len(leaked)} of {len(records)} evaluation questions also appear in the training data "
            f"under {where} (e.g. {leaked[0].question!r}, record {leaked[0].id}); the train/eval split is broken"
        )


def held_out_records(source_cfg, seed: int, eval_fraction: float, n: int, pool_records: int):
    """(every held-out QA record, distractor documents with their languages) among the first `pool_records`
    records of the source. Raises LongctxError when fewer than `n` are held out."""
    from longctx_core.data.records import Malformed
    from longctx_core.data.sources import iter_records
    from longctx_core.data.split import split_of

    if eval_fraction <= 0:
        raise LongctxError("data.eval_fraction: is 0, so no question is held out for eval.qa")
    held, docs, langs, seen = [], [], [], set()
    for i, rec in enumerate(iter_records(source_cfg, seed)):
        if i >= pool_records:
            break
        if isinstance(rec, Malformed):
            continue
        for doc in rec.evidence_docs:
            if (doc.title, doc.text) not in seen:
                seen.add((doc.title, doc.text))
                docs.append(doc)
                langs.append(rec.lang)
        if split_of(rec.id, eval_fraction, seed) == "eval":
            held.append(rec)
    if len(held) < n:
        raise LongctxError(
            f"eval.qa.num_questions: asked for {n} held-out questions, the first {pool_records} records of the "
            f"source hold {len(held)}; lower it or raise eval.qa.pool_records / data.eval_fraction"
        )
    return held, docs, langs


def split_documents(user_text: str, n_docs: int, lang: str) -> list[tuple[str, str]]:
    """(title, text) of the numbered documents in a first user turn rendered by `longctx_core.data.styles`,
    found header by header in order (1..n_docs), so a document's own text cannot fake a boundary."""
    head = (lambda k: f"Document [{k}] (Title: ") if lang == "en" else (lambda k: f"文档[{k}]（标题：")
    close = ") " if lang == "en" else "）"
    end_mark = "\n\nQuestion: " if lang == "en" else "\n\n问题："
    starts, pos = [], 0
    for k in range(1, n_docs + 1):
        pos = user_text.find(head(k), pos)
        if pos < 0:
            raise ValueError(f"document {k} header not found")
        starts.append(pos)
        pos += 1
    bounds = starts[1:] + [user_text.rfind(end_mark)]
    docs = []
    for k, (s, e) in enumerate(zip(starts, bounds, strict=True), start=1):
        block = user_text[s + len(head(k)) : e].removesuffix("\n\n")
        title, _, text = block.partition(close)
        docs.append((title, text))
    return docs


def _compose_grid(tokenizer, pool, rec, lengths, positions, seed: int) -> list:
    """The record's samples at every length x position (same seed per length: only the gold moves)."""
    from longctx_core.data.compose import compose_sample

    samples = []
    for length in lengths:
        sample_seed = derive_seed(seed, "eval-qa", rec.id, length)
        for pos in positions:
            sample = compose_sample(
                [rec],
                pool,
                tokenizer,
                target_tokens=length,
                answer_style="paraphrase",
                gold_position=pos,
                seed=sample_seed,
                sample_id=f"qa-{rec.id}-L{length}-p{pos:g}",
            )
            samples.append((length, pos, sample))
    return samples


def qa_prompts(tokenizer, records, docs, langs, lengths, positions, seed: int, n: int) -> list[Prompt]:
    """Prompts for the first `n` held-out records that fit every length x position (a record whose gold
    document is too long for the shortest length is skipped); raises LongctxError when fewer than `n` fit."""
    from longctx_core.data.compose import ComposeError, DocPool
    from longctx_core.data.evidence import EvidenceError

    pool = DocPool.build(docs, langs, tokenizer)
    prompts, used, skipped = [], 0, {}
    for rec in records:
        if used == n:
            break
        try:
            grid = _compose_grid(tokenizer, pool, rec, lengths, positions, seed)
        except (ComposeError, EvidenceError) as exc:
            skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
            continue
        used += 1
        for length, pos, sample in grid:
            messages = sample.messages[:-1]  # drop the reference answer: the model writes its own
            user = messages[1]["content"]
            parsed = split_documents(user, sample.n_docs, rec.lang)
            prompts.append(
                Prompt(
                    prompt_id=sample.id,
                    task="qa",
                    input_ids=chat_ids(tokenizer, messages),
                    cell={"length": length, "position": pos},
                    answers=list(rec.answers),
                    lang=rec.lang,
                    extra={
                        "record_id": rec.id,
                        "question": rec.question,
                        "gold": list(sample.gold_positions),
                        "n_docs": sample.n_docs,
                        "sample_tokens": sample.n_tokens,
                        "docs": [text for _, text in parsed],
                        "reference": sample.messages[-1]["content"],
                    },
                )
            )
    if used < n:
        raise LongctxError(
            f"eval.qa.lengths: only {used} of {len(records)} held-out questions fit a {min(lengths)}-token context "
            f"(skipped: {skipped}); use longer eval.qa.lengths or shorter documents"
        )
    if skipped:
        logger.info("qa: skipped held-out questions that do not fit: %s", skipped)
    logger.info(
        "qa: %d prompts (%d questions x %d lengths x %d positions)",
        len(prompts),
        n,
        len(lengths),
        len(positions),
    )
    return prompts
