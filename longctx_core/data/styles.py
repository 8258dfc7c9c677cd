"""Prompt and answer templates (English and Chinese), and the parser that reads replies back.

Rendering and parsing live together so the evaluate stage parses exactly what the composer writes.

A first user turn (numbers are 1-based in the text; `gold_positions` in the metadata are 0-based):

    Answer the questions based on the documents below.

    Document [1] (Title: Velmora) Velmora was founded in 1742. ...

    Document [2] (Title: Kalor Tessin) ...

    Question: When was Velmora founded?

The four answer styles for that question (gold in Document [1]):

    paraphrase:   The original text in Document [1] says: "Velmora was founded in 1742."
                  So the answer is: 1742
    quote:        The original text says: "Velmora was founded in 1742."
                  So the answer is: 1742
    plain:        The answer is: 1742
    unanswerable: None of the documents contains the answer to this question.

Chinese uses 文档[1]（标题：…）, 问题：…, 文档[1]中的原文是：「…」 (quote: 原文是：「…」), 所以答案是：…,
答案是：….
Every quote sits on its own line and is verbatim text of the cited document (`quote`: of a gold document;
sentences never hold a newline: the splitter breaks at newlines), so `split_reply` can read it back even
when it holds quotation marks itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from longctx_core.data.records import AnswerStyle, Document, Lang

ANSWER_STYLES: tuple[AnswerStyle, ...] = ("paraphrase", "quote", "plain", "unanswerable")
QUOTING_STYLES: tuple[AnswerStyle, ...] = ("paraphrase", "quote")  # replies that quote the evidence

SYSTEM_PROMPT = {
    "en": "You are a helpful assistant. Answer questions using only the numbered documents you are given.",
    "zh": "你是一个乐于助人的助手。请只根据给出的编号文档回答问题。",
}
_INSTRUCTION = {
    "en": "Answer the questions based on the documents below.",
    "zh": "请根据下面的文档回答问题。",
}
_QUESTION = {"en": "Question: {q}", "zh": "问题：{q}"}
_DOC_HEADER = {"en": "Document [{n}] (Title: {title}) ", "zh": "文档[{n}]（标题：{title}）"}
_QUOTE_INTRO = {
    "paraphrase": {"en": "The original text in Document [{n}] says: ", "zh": "文档[{n}]中的原文是："},
    "quote": {"en": "The original text says: ", "zh": "原文是："},  # the same without the document number
}
_FINAL = {"en": "So the answer is: {a}", "zh": "所以答案是：{a}"}
_PLAIN = {"en": "The answer is: {a}", "zh": "答案是：{a}"}
UNANSWERABLE_REPLY = {
    "en": "None of the documents contains the answer to this question.",
    "zh": "所给文档中没有这个问题的答案。",
}
# Preferred quotation marks first; the second pair is used when the sentence holds the first closer.
_QUOTE_PAIRS = {"en": (('"', '"'), ("\u201c", "\u201d")), "zh": (("\u300c", "\u300d"), ("\u201c", "\u201d"))}
_ALL_PAIRS = {'"': '"', "\u201c": "\u201d", "\u300c": "\u300d", "\u300e": "\u300f"}
_ANSWER_MARK = re.compile(r"(?:answer is|答案是)\s*[:：]\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_DOC_REF = re.compile(r"(?:Document\s*\[(\d+)\]|文档\s*\[(\d+)\])")


def render_document(number: int, doc: Document, lang: Lang) -> str:
    """One numbered document (`number` is 1-based) as it appears in the context."""
    return _DOC_HEADER[lang].format(n=number, title=doc.title) + doc.text


def render_context(docs: Sequence[Document], lang: Lang) -> str:
    """All documents, numbered from 1, separated by blank lines."""
    return "\n\n".join(render_document(i + 1, d, lang) for i, d in enumerate(docs))


def render_first_user(docs: Sequence[Document], question: str, lang: Lang) -> str:
    """The first user turn: instruction, numbered documents, first question."""
    return f"{_INSTRUCTION[lang]}\n\n{render_context(docs, lang)}\n\n{_QUESTION[lang].format(q=question)}"


def render_followup_user(question: str, lang: Lang) -> str:
    """A later user turn: just the next question (the documents are already in the conversation)."""
    return _QUESTION[lang].format(q=question)


def quote(text: str, lang: Lang) -> str:
    """`text` in quotation marks of `lang`, picking a pair whose closer the text does not contain."""
    first, second = _QUOTE_PAIRS[lang]
    opener, closer = second if first[1] in text and second[1] not in text else first
    return f"{opener}{text}{closer}"


def render_answer(style: AnswerStyle, lang: Lang, answer: str, quotes: Sequence[tuple[int, str]] = ()) -> str:
    """The assistant turn for one question.

    `quotes` are (1-based document number, verbatim sentence) pairs, used by the quoting styles only
    (`quote` drops the number).
    """
    if style == "unanswerable":
        return UNANSWERABLE_REPLY[lang]
    if style == "plain":
        return _PLAIN[lang].format(a=answer)
    if style not in QUOTING_STYLES:
        raise ValueError(f"unknown answer style {style!r}; expected one of {ANSWER_STYLES}")
    if not quotes:
        raise ValueError(f"the {style} style needs at least one quoted evidence sentence")
    intro = _QUOTE_INTRO[style][lang]
    lines = [intro.format(n=n) + quote(sentence, lang) for n, sentence in quotes]
    return "\n".join([*lines, _FINAL[lang].format(a=answer)])


def _quotes_in_line(line: str) -> list[str]:
    """Quoted spans in one line: the whole span from the first opener to its last closer when the line is
    a single quote (our template), else every non-nested pair from left to right."""
    starts = [(i, ch) for i, ch in enumerate(line) if ch in _ALL_PAIRS]
    if not starts:
        return []
    i, opener = starts[0]
    closer = _ALL_PAIRS[opener]
    end = line.rfind(closer)
    if end > i and line[end + 1 :].strip(" .。") == "":
        return [line[i + 1 : end]]
    return [m.group(2) for m in re.finditer(r'(["\u201c\u300c\u300e])(.*?)(["\u201d\u300d\u300f])', line)]


def split_reply(reply: str, lang: Lang = "en") -> tuple[list[str], str]:
    """Parse an assistant reply into (quoted evidence spans, final answer).

    The final answer is the text after the last "answer is:" / "答案是：" marker; without a marker it is the
    reply minus its quote lines. Trailing sentence punctuation and wrapping quotes are stripped. `lang` is
    accepted for symmetry with the renderers; both languages' markers are recognised either way.
    """
    quotes: list[str] = []
    rest: list[str] = []
    for line in reply.splitlines():
        mark = _ANSWER_MARK.search(line)  # an answer may hold quotation marks (Thomas "Tom" Robinson)
        found = _quotes_in_line(line[: mark.start()] if mark else line)
        quotes.extend(found)
        if not found:
            rest.append(line)
    marks = _ANSWER_MARK.findall(reply)
    return quotes, clean_answer(marks[-1] if marks else "\n".join(rest))


def clean_answer(text: str) -> str:
    """An answer as `split_reply` reads it back: trailing sentence punctuation and wrapping quotes stripped
    (so "R.E.M." reads back as "R.E.M": compare accepted answers through this too)."""
    final = text.strip().rstrip("。.").strip()
    if len(final) >= 2 and final[0] in _ALL_PAIRS and final[-1] == _ALL_PAIRS[final[0]]:
        final = final[1:-1].strip()
    return final


def cited_documents(reply: str) -> list[int]:
    """The 1-based document numbers a reply cites ("Document [3]" / "文档[3]"), in order."""
    return [int(a or b) for a, b in _DOC_REF.findall(reply)]


def is_unanswerable_reply(reply: str, lang: Lang = "en") -> bool:
    """True when the reply says the documents do not hold the answer (our template or close wording)."""
    text = reply.strip().lower()
    if UNANSWERABLE_REPLY["en"].lower().rstrip(".") in text or UNANSWERABLE_REPLY["zh"].rstrip("。") in text:
        return True
    return bool(
        re.search(r"(do(es)? not|don't|doesn't) contain|no (document|answer)|没有.*答案|无法回答", text)
    )
