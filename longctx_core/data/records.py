"""The record types every source normalises to, and the sample type the composer produces.

QARecord  — one question over one or more evidence documents (a normalised source row)
Document  — a titled passage (gold evidence or a distractor)
LongSample — one long multi-document chat sample (a row of the Parquet output)
Malformed — a row, record or sample set aside for quarantine; Rejected — the error that says why
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

AnswerStyle = Literal["paraphrase", "quote", "plain", "unanswerable"]
Lang = Literal["en", "zh"]


@dataclass(frozen=True)
class Document:
    title: str
    text: str


@dataclass(frozen=True)
class QARecord:
    id: str
    lang: Lang
    question: str
    answers: tuple[str, ...]
    evidence_docs: tuple[Document, ...]  # gold document(s); HotpotQA has two
    # Sentences that hold the evidence, when the source annotates them (HotpotQA supporting facts);
    # each must be verbatim text of one of evidence_docs. Empty: the composer locates them.
    evidence_sentences: tuple[str, ...] = ()
    source: str = "builtin"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> QARecord:
        return QARecord(
            id=str(d["id"]),
            lang=d["lang"],
            question=d["question"],
            answers=tuple(d["answers"]),
            evidence_docs=tuple(Document(**doc) for doc in d["evidence_docs"]),
            evidence_sentences=tuple(d.get("evidence_sentences") or ()),
            source=d.get("source", "unknown"),
        )


@dataclass
class LongSample:
    """One Parquet row. Column names are a contract other tools read (`data_gen.outputs.SAMPLE_SCHEMA`)."""

    id: str
    messages: list[dict[str, str]]  # [{role, content}], system/user/assistant turns
    n_tokens: int
    n_docs: int
    gold_positions: list[int]  # 0-based indices of gold documents in the context, one per gold doc
    answer_style: AnswerStyle
    source: str
    lang: Lang
    seed: int = 0
    meta: dict = field(default_factory=dict)  # extra, source-specific (e.g. evidence fallback flags)

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Malformed:
    """A source row that cannot become a QARecord (or a record that cannot become a sample): it goes to
    `quarantine/` with its reason, and the job carries on."""

    reason: str  # short key counted in stats.json, e.g. "missing_field", "answer_not_found"
    detail: str = ""  # human-readable specifics (which field, which answer)
    source: str = ""
    location: str = ""  # file:line or record id
    raw: str = ""  # the offending row (truncated), for the user to inspect

    def to_row(self) -> dict:
        return asdict(self)


class Rejected(ValueError):
    """A row, record or sample that cannot be used (raised where it is found, quarantined by the caller as
    a `Malformed`); `reason` is its quarantine key, `detail` the specifics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
