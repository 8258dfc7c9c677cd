"""Check a written sample row against the promises the composer makes (tests, users, the evaluate stage).

problems = validate_row(row)        # a Parquet row as a dict; [] when the sample is sound
"""

from __future__ import annotations

import re

from data_gen.records import Document
from data_gen.styles import cited_documents, is_unanswerable_reply, render_document, split_reply

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


def validate_row(row: dict) -> list[str]:
    """Problems with one sample row: roles, document count, gold positions, verbatim quotes, answers."""
    problems: list[str] = []
    msgs, meta = row["messages"], row["meta"]
    roles = [m["role"] for m in msgs]
    if roles != ["system"] + ["user", "assistant"] * len(meta["questions"]):
        problems.append(f"roles {roles}")
        return problems
    docs = context_documents(msgs[1]["content"], meta.get("titles"))
    if len(docs) != row["n_docs"]:
        problems.append(f"context holds {len(docs)} documents, n_docs says {row['n_docs']}")
    if any(not 0 <= p < row["n_docs"] for p in row["gold_positions"]):
        problems.append(f"gold position out of range: {row['gold_positions']}")
    for t, reply in enumerate(m["content"] for m in msgs[2::2]):
        quotes, final = split_reply(reply, row["lang"])
        if row["answer_style"] == "unanswerable":
            if not is_unanswerable_reply(reply, row["lang"]) or row["gold_positions"]:
                problems.append(f"turn {t}: unanswerable sample with an answer or a gold document")
            continue
        if final not in meta["answers"][t]:
            problems.append(f"turn {t}: final answer {final!r} not among {meta['answers'][t]}")
        if row["answer_style"] == "plain":
            if quotes:
                problems.append(f"turn {t}: plain answer holds quotes")
            continue
        cited = cited_documents(reply)
        if not quotes or len(cited) != len(quotes):
            problems.append(f"turn {t}: {len(quotes)} quotes but {len(cited)} cited documents")
        for q, n in zip(quotes, cited, strict=False):
            if not 1 <= n <= len(docs) or q not in docs[n - 1]:
                problems.append(f"turn {t}: quote {q[:60]!r} is not verbatim in Document [{n}]")
    return problems
