"""The driver side of synthesis (cheap, deterministic): read the source, locate evidence, quarantine bad
rows, hash-split the questions, count each pool document's tokens once, and plan every sample (its
records, target length, answer style, seed) from (run.seed, split, sample index)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from data_gen.quarantine import describe_exception, reasons_text
from longctx_core.data import styles
from longctx_core.data.compose import chat_tokens, count_doc_tokens, token_tolerance
from longctx_core.data.evidence import Evidence, EvidenceError, locate_evidence
from longctx_core.data.records import Document, Malformed, QARecord
from longctx_core.data.seeding import derive_seed, rng_for
from longctx_core.data.sources import RAW_CHARS, iter_records
from longctx_core.data.split import split_of
from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)


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
    prep = Prepared(records={"train": [], "eval": []}, pools={})
    valid = _with_evidence(iter_records(data.source, seed), prep)
    docs = list(dict.fromkeys(d for rec, _ in valid for d in rec.evidence_docs))
    doc_lang = {}
    for rec, _ in valid:
        for d in rec.evidence_docs:
            doc_lang.setdefault(d, rec.lang)
    counts = dict(zip(docs, count_doc_tokens(tok, docs, [doc_lang[d] for d in docs]), strict=True))
    _split_fitting(tok, valid, counts, data, seed, prep)
    eval_golds = {d for rec, _, _ in prep.records["eval"] for d in rec.evidence_docs}
    train_docs = [d for d in docs if d not in eval_golds]
    for name, pool_docs in (("train", train_docs), ("eval", docs)):
        prep.pools[name] = (pool_docs, [doc_lang[d] for d in pool_docs], [counts[d] for d in pool_docs])
    return prep


def _with_evidence(items: Iterable[QARecord | Malformed], prep: Prepared) -> list[tuple[QARecord, Evidence]]:
    """The source's records with their evidence; every item read counts in `prep.read`, bad rows and
    records without evidence go to `prep.quarantine`. Raises LongctxError when no record is usable."""
    valid: list[tuple[QARecord, Evidence]] = []
    for item in items:
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
    return valid


def _split_fitting(tok, valid, counts: dict[Document, int], data, seed: int, prep: Prepared) -> None:
    """Each record's token cost; records too long for the smallest target are quarantined, the others go
    to their split in `prep.records`."""
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
            raw = rec.evidence_docs[0].text[:RAW_CHARS]
            prep.quarantine.append(Malformed("document_too_long", detail, rec.source, rec.id, raw))
            continue
        prep.records[split_of(rec.id, data.eval_fraction, seed)].append((rec, ev, cost))


def _bad_record(reason: str, detail: str, rec: QARecord) -> Malformed:
    """A quarantine row for a parsed record that cannot be used (the record itself is the raw text)."""
    return Malformed(
        reason, detail, rec.source, rec.id, json.dumps(rec.to_dict(), ensure_ascii=False)[:RAW_CHARS]
    )


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
