"""Bad rows: `quarantine/rows.jsonl`, counts by reason, and the one `data.max_bad_fraction` rule.

The rule, for synthesized and imported sources alike, is per source: a source fails the stage when its bad
rows / rows read, or its failed samples / samples planned, exceeds `data.max_bad_fraction`. Per source, so
that a small bad source mixed into a big clean one is not hidden by it; two shares, so that a large source
cannot hide a failing composer behind its row count. stats.json reports what was checked:

    "bad": {"max_bad_fraction": 0.05, "fraction": <the worst source's>,
            "sources": {name: {"rows": {"bad", "of"}, "samples": {"bad", "of"}, "fraction",
                               "not_counted": {reason: n}, "by_reason": {reason: n}}}}

Imported sources have no samples that fail apart from their rows (a row that cannot become a sample is a
bad row), so their `samples` are {"bad": 0, "of": samples written}.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

from data_gen.outputs import tally
from longctx_core.data.records import Malformed
from longctx_core.errors import LongctxError

# Quarantine reasons of sound source rows that are simply not usable here: the source itself marks the
# question unanswerable (SQuAD v2 `is_impossible`), the record is longer than the smallest target, or the
# row is longer than train.max_seq_len (properties of the lengths chosen, not defects). Counted in
# stats.json, not against max_bad_fraction.
NOT_BAD = frozenset({"no_answer", "document_too_long", "overlong"})


def write_quarantine(folder: Path, rows: Iterable[Malformed], append: bool = False) -> Path:
    """`quarantine/rows.jsonl`: one JSON object per bad row (reason, detail, source, location, raw);
    `append` adds to the rows an earlier step of the stage wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rows.jsonl"
    with path.open("a" if append else "w", encoding="utf-8") as fh:
        for m in rows:
            fh.write(json.dumps(m.to_row(), ensure_ascii=False) + "\n")
    return path


def count_reasons(rows: Iterable[Malformed]) -> dict[str, int]:
    """{reason: rows}, sorted by reason."""
    return tally(m.reason for m in rows)


def reasons_text(rows: Iterable[Malformed]) -> str:
    """`reason: n, ...` of `rows` (for one-line errors), or `no rows`."""
    return ", ".join(f"{k}: {v}" for k, v in count_reasons(rows).items()) or "no rows"


def describe_exception(exc: BaseException) -> str:
    """`ExcType: message [at file.py:line in function]` (innermost frame): the quarantine detail of an
    unexpected exception, enough to find the bug without a traceback."""
    text = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" [at {Path(last.filename).name}:{last.lineno} in {last.name}]"
    return text


def source_bad(
    quarantined: Sequence[Malformed], read: int, failed: Sequence[Malformed] = (), planned: int = 0
) -> dict:
    """One source's figures for the rule: its quarantined rows (`NOT_BAD` reasons set apart) out of the
    `read` rows, its `failed` samples out of the `planned` ones, and the worse of the two shares."""
    bad = [m for m in quarantined if m.reason not in NOT_BAD]
    shares = [len(bad) / read if read else 0.0, len(failed) / planned if planned else 0.0]
    return {
        "rows": {"bad": len(bad), "of": read},
        "samples": {"bad": len(failed), "of": planned},
        "fraction": max(shares),
        "not_counted": count_reasons(m for m in quarantined if m.reason in NOT_BAD),
        "by_reason": count_reasons([*bad, *failed]),
    }


def bad_section(sources: dict[str, dict], limit: float) -> dict:
    """stats.json's `bad` section: the per-source figures (`source_bad`), the limit and the worst share."""
    worst = max((s["fraction"] for s in sources.values()), default=0.0)
    return {"max_bad_fraction": limit, "fraction": worst, "sources": sources}


def check_bad_fraction(bad: dict, rows_path: Path) -> None:
    """Raise a one-line `LongctxError` naming the worst source when its share exceeds the limit (call it
    after quarantine/ and stats.json are written, so nothing is lost)."""
    limit = bad["max_bad_fraction"]
    over = {name: s for name, s in bad["sources"].items() if s["fraction"] > limit}
    if not over:
        return
    name, s = max(over.items(), key=lambda item: item[1]["fraction"])
    rows, smp = s["rows"], s["samples"]
    reasons = ", ".join(f"{k}: {v}" for k, v in s["by_reason"].items())
    others = f"; {len(over) - 1} more source(s) over the limit" if len(over) > 1 else ""
    raise LongctxError(
        f"data source '{name}': {s['fraction']:.1%} bad > data.max_bad_fraction {limit:.1%} "
        f"(source rows {rows['bad']}/{rows['of']}, samples {smp['bad']}/{smp['of']}; {reasons}{others}); "
        f"rows in {rows_path}"
    )
