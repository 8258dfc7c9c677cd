"""Check a written sample row against the promises the composer makes (tests, users, the evaluate stage).

problems = validate_row(row)        # a Parquet row as a dict; [] when the sample is sound

Each problem is "<reason>: <detail>"; the reasons (one per rule, see `RULES`) let tests and the
quarantine tell rules apart.
"""

from __future__ import annotations

import re

from longctx_core.data.records import Document
from longctx_core.data.styles import (
    ANSWER_STYLES,
    QUOTING_STYLES,
    cited_documents,
    clean_answer,
    is_unanswerable_reply,
    render_document,
    split_reply,
)

_NEXT_DOC = re.compile(r"\n\n(?=Document \[\d+\] \(Title: |文档\[\d+\]（标题：)")
_HEADER = re.compile(r"^(?:Document \[(\d+)\] \(Title: .*?\) |文档\[(\d+)\]（标题：.*?）)", re.S)


def context_documents(first_user: str, titles: list[str] | None = None) -> list[str]:
    """The document texts of a first user turn, in order (headers removed). With the sample's
    `meta.titles`, headers are removed exactly (a title may itself hold ") ")."""
    if first_user.count("\n\n") < 2:
        return []
    body = first_user.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
    parts = _NEXT_DOC.split(body)
    if titles is not None and len(titles) == len(parts):
        docs = []
        for i, (part, title) in enumerate(zip(parts, titles, strict=True)):
            for lang in ("en", "zh"):
                header = render_document(i + 1, Document(title, ""), lang)
                if part.startswith(header):
                    docs.append(part[len(header) :])
                    break
        if len(docs) == len(parts):
            return docs
    return [part[m.end() :] for part in parts if (m := _HEADER.match(part))]


RULES = {
    "missing_column": "a contract column of the sample row or a meta field is absent",
    "bad_value": "answer_style / lang outside their sets, n_tokens or n_docs not positive",
    "roles": "messages are not system + (user, assistant) per question",
    "question": "a user turn does not hold its question from meta.questions",
    "n_docs": "the context does not hold n_docs documents (or meta.titles disagrees)",
    "gold_range": "a gold position outside [0, n_docs)",
    "gold_duplicate": "two gold positions name the same document",
    "gold_missing": "an answerable sample without a gold document",
    "unanswerable": "an unanswerable sample with an answer or a gold document",
    "answer": "the final answer is not among the accepted answers",
    "plain_quotes": "a plain answer holds quotes",
    "quote_count": "a quoting answer without quotes, or quotes and cited documents that do not pair up "
    "(a quote answer cites none)",
    "quote_not_verbatim": "a quote that is not verbatim text of the document it cites (quote: of any document)",
    "quote_not_gold": "a quote citing a document that is not a gold document (quote: found only outside them)",
    "answer_leak": "a distractor (non-gold document) holds an answer string",
    "too_long": "n_tokens above meta.target_tokens",
}
_COLUMNS = (
    "id",
    "messages",
    "n_tokens",
    "n_docs",
    "gold_positions",
    "answer_style",
    "source",
    "lang",
    "meta",
)


def _columns_problem(row: dict) -> str | None:
    missing = [c for c in _COLUMNS if c not in row]
    missing += [f"meta.{k}" for k in ("questions", "answers") if k not in (row.get("meta") or {})]
    return f"missing_column: {', '.join(missing)}" if missing else None


def _shape_problems(row: dict, docs: list[str]) -> list[str]:
    """Value sets, document count and gold positions."""
    problems = []
    if row["answer_style"] not in ANSWER_STYLES or row["lang"] not in ("en", "zh"):
        problems.append(f"bad_value: answer_style {row['answer_style']!r}, lang {row['lang']!r}")
    if not row["n_tokens"] > 0 or not row["n_docs"] > 0:
        problems.append(f"bad_value: n_tokens {row['n_tokens']}, n_docs {row['n_docs']}")
    titles = row["meta"].get("titles")
    if len(docs) != row["n_docs"] or (titles is not None and len(titles) != row["n_docs"]):
        n_titles = "-" if titles is None else len(titles)
        problems.append(
            f"n_docs: context holds {len(docs)} documents, {n_titles} titles, n_docs {row['n_docs']}"
        )
    gold = list(row["gold_positions"])
    if any(not 0 <= p < row["n_docs"] for p in gold):
        problems.append(f"gold_range: {gold} for {row['n_docs']} documents")
    if len(set(gold)) != len(gold):
        problems.append(f"gold_duplicate: {gold}")
    if row["answer_style"] in (*QUOTING_STYLES, "plain") and not gold:
        problems.append(f"gold_missing: {row['answer_style']} sample with no gold position")
    target = row["meta"].get("target_tokens")
    if target and row["n_tokens"] > target:
        problems.append(f"too_long: {row['n_tokens']} tokens > target {target}")
    return problems


def _leak_problems(row: dict, docs: list[str]) -> list[str]:
    """The composer never draws a distractor holding an answer string (of 2+ characters, case-folded)."""
    gold = set(row["gold_positions"])
    needles = {f for answers in row["meta"]["answers"] for a in answers if len(f := a.casefold()) >= 2}
    return [
        f"answer_leak: distractor Document [{i + 1}] holds an answer"
        for i, doc in enumerate(docs)
        if i not in gold and any(n in doc.casefold() for n in needles)
    ]


def _reply_problems(t: int, reply: str, row: dict, docs: list[str]) -> list[str]:
    """One assistant turn against its style, its accepted answers and the context."""
    style, lang = row["answer_style"], row["lang"]
    if style == "unanswerable":
        if not is_unanswerable_reply(reply, lang) or row["gold_positions"]:
            return [f"unanswerable: turn {t} has an answer or the sample a gold document"]
        return []
    quotes, final = split_reply(reply, lang)
    problems = []
    if final not in {clean_answer(a) for a in row["meta"]["answers"][t]}:  # read back as evaluation reads it
        problems.append(f"answer: turn {t}: final answer {final!r} not among {row['meta']['answers'][t]}")
    if style == "plain":
        return problems + ([f"plain_quotes: turn {t} holds {len(quotes)} quotes"] if quotes else [])
    gold = set(row["gold_positions"])
    cited = cited_documents(reply)
    if style == "quote":
        return problems + _bare_quote_problems(t, quotes, cited, gold, docs)
    if not quotes or len(cited) != len(quotes):
        problems.append(f"quote_count: turn {t}: {len(quotes)} quotes but {len(cited)} cited documents")
    for q, n in zip(quotes, cited, strict=False):
        if not 1 <= n <= len(docs) or q not in docs[n - 1]:
            problems.append(f"quote_not_verbatim: turn {t}: {q[:60]!r} is not verbatim in Document [{n}]")
        elif n - 1 not in gold:
            problems.append(f"quote_not_gold: turn {t} cites Document [{n}], not a gold document")
    return problems


def _bare_quote_problems(
    t: int, quotes: list[str], cited: list[int], gold: set[int], docs: list[str]
) -> list[str]:
    """A `quote` turn names no document, so each quote must be verbatim in some gold document."""
    problems = []
    if not quotes or cited:
        problems.append(
            f"quote_count: turn {t}: {len(quotes)} quotes, cites documents {cited} (expected none)"
        )
    for q in quotes:
        if any(q in docs[g] for g in gold if 0 <= g < len(docs)):
            continue
        elsewhere = [i + 1 for i, d in enumerate(docs) if q in d]
        if elsewhere:
            problems.append(f"quote_not_gold: turn {t}: {q[:60]!r} is only in Document {elsewhere}")
        else:
            problems.append(f"quote_not_verbatim: turn {t}: {q[:60]!r} is verbatim in no document")
    return problems


def validate_row(row: dict) -> list[str]:
    """Problems with one sample row, each "<reason>: <detail>" (reasons in `RULES`); [] when sound."""
    missing = _columns_problem(row)
    if missing:
        return [missing]
    msgs, meta = row["messages"], row["meta"]
    roles = [m["role"] for m in msgs]
    if roles != ["system"] + ["user", "assistant"] * len(meta["questions"]):
        return [f"roles: {roles}"]
    if len(meta["answers"]) != len(meta["questions"]):
        return [
            f"missing_column: meta.answers has {len(meta['answers'])} turns, questions {len(meta['questions'])}"
        ]
    docs = context_documents(msgs[1]["content"], meta.get("titles"))
    problems = _shape_problems(row, docs)
    for t, (user, question) in enumerate(zip(msgs[1::2], meta["questions"], strict=True)):
        if question not in user["content"]:
            problems.append(f"question: turn {t} does not ask {question[:60]!r}")
    for t, reply in enumerate(m["content"] for m in msgs[2::2]):
        problems += _reply_problems(t, reply, row, docs)
    return problems + _leak_problems(row, docs)
