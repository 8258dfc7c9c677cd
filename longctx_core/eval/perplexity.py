"""Perplexity by position: the per-token loss of long sequences, averaged in position buckets.

A sequence of L tokens gives L-1 predictions; prediction t (target token t, seen after t tokens of context)
falls in bucket floor(t * B / L). With L = 8 and B = 4:

    tokens     x0  x1  x2  x3  x4  x5  x6  x7
    targets        t1  t2  t3  t4  t5  t6  t7
    bucket          0   1   1   2   2   3   3        bucket 0 holds 1 target, the others 2

If the model keeps its quality at length, the loss of the last buckets stays at (or below: more context)
the loss of the early ones; a model past its usable context shows the loss climbing with position.
The text is a .txt file, a folder of them, a .jsonl with a `text` field, or the built-in corpus documents
joined by blank lines; windows of one length are disjoint.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from longctx_core.errors import LongctxError
from longctx_core.eval.prompts import Prompt

logger = logging.getLogger(__name__)


def bucket_of(target_index: int, length: int, buckets: int) -> int:
    """The bucket of the prediction whose target is token `target_index` of a `length`-token sequence."""
    return min(buckets - 1, target_index * buckets // length)


def bucket_sums(token_nll: list[float], length: int, buckets: int) -> tuple[list[float], list[int]]:
    """(sum of losses, count of targets) per bucket, for the losses of targets 1..length-1 in order."""
    sums, counts = [0.0] * buckets, [0] * buckets
    for t, loss in enumerate(token_nll, start=1):
        b = bucket_of(t, length, buckets)
        sums[b] += float(loss)
        counts[b] += 1
    return sums, counts


def read_long_text(path: str | None, seed: int, min_chars: int) -> str:
    """The text windows are cut from: the file(s) at `path`, or built-in documents joined by blank lines
    (as many as it takes to reach `min_chars`)."""
    if path is None:
        from longctx_core.data.builtin import iter_builtin_records

        parts, total, seen = [], 0, set()
        for rec in iter_builtin_records(1_000_000, seed=seed):
            for doc in rec.evidence_docs:
                if doc.title not in seen:
                    seen.add(doc.title)
                    parts.append(f"{doc.title}\n{doc.text}")
                    total += len(parts[-1]) + 2
            if total >= min_chars:
                break
        return "\n\n".join(parts)
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(p.glob("*.txt"))
        if not files:
            raise LongctxError(f"eval.perplexity.path: no .txt files in {p}")
        return "\n\n".join(f.read_text(encoding="utf-8") for f in files)
    if not p.is_file():
        raise LongctxError(f"eval.perplexity.path: not found: {p}")
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows or "text" not in rows[0]:
            raise LongctxError(f"eval.perplexity.path: {p} needs a 'text' field on every line")
        return "\n\n".join(str(r["text"]) for r in rows)
    return p.read_text(encoding="utf-8")


def perplexity_prompts(tokenizer, lengths: list[int], num_sequences: int, path: str | None, seed: int):
    """`num_sequences` disjoint windows of each length from the text, as `kind="nll"` Prompts.

    Raises LongctxError when the text is too short for the longest request."""
    need = max(lengths) * num_sequences
    # ~4 characters per token in English BPE; ask for more so short-token text still suffices.
    text = read_long_text(path, seed, min_chars=need * 6)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < need:
        raise LongctxError(
            f"eval.perplexity: the text has {len(ids)} tokens, fewer than {num_sequences} x {max(lengths)} "
            "needed; give a longer eval.perplexity.path or fewer eval.perplexity.num_sequences"
        )
    prompts = []
    for length in lengths:
        for i in range(num_sequences):
            prompts.append(
                Prompt(
                    prompt_id=f"ppl-L{length}-s{i}",
                    task="perplexity",
                    input_ids=ids[i * length : (i + 1) * length],
                    cell={"length": length},
                    kind="nll",
                )
            )
    logger.info("perplexity: %d sequences over %d lengths", len(prompts), len(lengths))
    return prompts


def summarize_buckets(sums: list[list[float]], counts: list[list[int]], length: int) -> list[dict]:
    """Rows per bucket (start/end token, tokens, mean loss, perplexity) pooled over sequences of one length."""
    buckets = len(sums[0])
    rows = []
    for b in range(buckets):
        total = sum(s[b] for s in sums)
        n = sum(c[b] for c in counts)
        nll = total / n if n else float("nan")
        rows.append(
            {
                "bucket": b,
                "start": -(-b * length // buckets),  # first target index in the bucket (ceil)
                "end": -(-(b + 1) * length // buckets),
                "tokens": n,
                "nll": nll,
                "ppl": math.exp(nll) if n else float("nan"),
            }
        )
    return rows
