"""Find the sentence(s) of a record's gold document(s) that hold the evidence for its answer.

Order of preference:
1. Sentences the source annotates (HotpotQA supporting facts, SQuAD answer spans, the built-in world),
   checked to be verbatim text of a gold document.
2. The sentence holding an answer string verbatim (case-sensitive, then case-insensitive); when several
   do, the one sharing most words with the question. An answer that crosses a sentence boundary quotes
   the consecutive sentences around it (still one verbatim span).
3. Fallback: the sentence sharing most tokens with the answer (ties broken by overlap with the question),
   flagged `fallback=True`; none sharing at least half of the answer's tokens -> `EvidenceError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from longctx_core.data.records import QARecord, Rejected
from longctx_core.data.text import normalize, overlap, sentence_spans

MIN_FALLBACK_OVERLAP = 0.5  # share of the answer's tokens the fallback sentence must contain


class EvidenceError(Rejected):
    """No evidence sentence could be found; `reason` is the quarantine reason."""


@dataclass(frozen=True)
class Evidence:
    quotes: tuple[tuple[int, str], ...]  # (index into record.evidence_docs, verbatim sentence/span)
    fallback: bool
    # The answer to state: the one the quotes hold (as the document writes it), else the record's first.
    answer: str = ""

    def to_json(self) -> dict:
        return {"quotes": [list(q) for q in self.quotes], "fallback": self.fallback, "answer": self.answer}

    @staticmethod
    def from_json(d: dict) -> Evidence:
        return Evidence(tuple((int(i), s) for i, s in d["quotes"]), bool(d["fallback"]), d.get("answer", ""))


def _annotated(record: QARecord) -> Evidence:
    """Evidence from the record's own annotation; every sentence must sit verbatim in a gold document."""
    quotes = []
    for sentence in record.evidence_sentences:
        s = sentence.strip()
        hit = next((i for i, d in enumerate(record.evidence_docs) if s and s in d.text), None)
        if hit is None:  # tolerate whitespace differences by matching a normalised sentence of the docs
            hit, s = _match_normalised(record, s)
        if hit is None:
            raise EvidenceError("evidence_not_in_document", sentence[:200])
        quotes.append((hit, s))
    held = [a for a in record.answers if any(a.casefold() in q.casefold() for _, q in quotes)]
    return Evidence(tuple(quotes), fallback=False, answer=(held or list(record.answers))[0])


def _match_normalised(record: QARecord, sentence: str) -> tuple[int | None, str]:
    want = normalize(sentence)
    for i, doc in enumerate(record.evidence_docs):
        for a, b in sentence_spans(doc.text):
            if normalize(doc.text[a:b]) == want:
                return i, doc.text[a:b]
    return None, sentence


def _containing_span(text: str, spans: list[tuple[int, int]], start: int, end: int) -> str:
    """The verbatim text of the consecutive sentences covering [start, end)."""
    first = next(i for i, (_, b) in enumerate(spans) if b > start)
    last = next((i for i, (a, b) in enumerate(spans) if b >= end), len(spans) - 1)
    return text[spans[first][0] : spans[max(first, last)][1]]


def _verbatim(record: QARecord) -> Evidence | None:
    """Sentences holding an answer string (exact case first, then case-folded); None when no answer is."""
    for fold in (False, True):
        candidates: list[tuple[float, int, int, str, str]] = []
        for d_i, doc in enumerate(record.evidence_docs):
            hay = doc.text.casefold() if fold else doc.text
            spans = sentence_spans(doc.text)
            for ans in record.answers:
                needle = ans.strip().casefold() if fold else ans.strip()
                pos = hay.find(needle) if needle else -1
                while pos >= 0 and spans:
                    quote = _containing_span(doc.text, spans, pos, pos + len(needle))
                    said = doc.text[pos : pos + len(needle)]  # the answer as the document writes it
                    candidates.append((overlap(record.question, quote), -len(candidates), d_i, quote, said))
                    pos = hay.find(needle, pos + 1)
        if candidates:
            _, _, d_i, quote, said = max(candidates)
            return Evidence(((d_i, quote),), fallback=False, answer=said)
    return None


def _best_overlap(record: QARecord) -> Evidence:
    best: tuple[float, float, int, str] | None = None
    for d_i, doc in enumerate(record.evidence_docs):
        for a, b in sentence_spans(doc.text):
            sent = doc.text[a:b]
            score = max((overlap(ans, sent) for ans in record.answers), default=0.0)
            key = (score, overlap(record.question, sent), -d_i, sent)
            if best is None or key[:2] > best[:2]:
                best = key
    if best is None or best[0] < MIN_FALLBACK_OVERLAP:
        raise EvidenceError(
            "answer_not_found", f"answers {list(record.answers)[:3]} not in the gold document"
        )
    return Evidence(((-best[2], best[3]),), fallback=True, answer=record.answers[0])


def locate_evidence(record: QARecord) -> Evidence:
    """The evidence quotes for `record` (see the module docstring); raises `EvidenceError`."""
    if record.evidence_sentences:
        return _annotated(record)
    return _verbatim(record) or _best_overlap(record)
