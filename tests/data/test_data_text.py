"""Sentence splitter, language detection and evidence location."""

from __future__ import annotations

import pytest

from longctx_core.data.evidence import EvidenceError, locate_evidence
from longctx_core.data.records import Document, QARecord
from longctx_core.data.text import detect_lang, overlap, sentence_spans, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Lee moved to St. Louis in 1990. He left in 2001! Why? Nobody knows.",
            ["Dr. Lee moved to St. Louis in 1990.", "He left in 2001!", "Why?", "Nobody knows."],
        ),
        (
            'J. K. Rowling wrote it. The U.S. Army came. "Stop!" he said. It cost 3.5 dollars.',
            ["J. K. Rowling wrote it.", "The U.S. Army came.", '"Stop!" he said.', "It cost 3.5 dollars."],
        ),
        (
            "e.g. this one continues. the lower case goes on.",
            ["e.g. this one continues. the lower case goes on."],
        ),
        (
            "长江是亚洲第一长河。它发源于青海！真的吗？是的",
            ["长江是亚洲第一长河。", "它发源于青海！", "真的吗？", "是的"],
        ),
        (
            "他说：“我来了。”然后走了。第三句……第四句",
            ["他说：“我来了。”", "然后走了。", "第三句……", "第四句"],
        ),
        ("Line one\nLine two. Still two", ["Line one", "Line two.", "Still two"]),
        ("Mixed text. 中文句子。English again.", ["Mixed text.", "中文句子。", "English again."]),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_spans_are_verbatim_offsets():
    text = "  First one.   Second one!\n\n第三句。 "
    for a, b in sentence_spans(text):
        assert text[a:b] == text[a:b].strip() and text[a:b] in text
    assert [text[a:b] for a, b in sentence_spans(text)] == ["First one.", "Second one!", "第三句。"]


def test_detect_lang_and_overlap():
    assert detect_lang("Where was Kalor born?") == "en"
    assert detect_lang("长江发源于哪里？") == "zh"
    assert detect_lang("DNA 是什么？") == "zh"
    assert overlap("1,000 people", "about 1000 people live here") == 1.0
    assert overlap("red car", "a blue car") == 0.5


def _rec(text, answers, question="q?", evidence=()):
    return QARecord("r", "en", question, tuple(answers), (Document("T", text),), tuple(evidence))


def test_verbatim_evidence_prefers_question_overlap():
    text = "Paris hosted the games in 1900. The tower in Paris was finished in 1889. It is tall."
    ev = locate_evidence(_rec(text, ["Paris"], "When was the tower in Paris finished?"))
    assert ev.quotes == ((0, "The tower in Paris was finished in 1889."),) and not ev.fallback


def test_case_insensitive_and_cross_sentence_answers():
    ev = locate_evidence(_rec("The river is called the Volga. It is long.", ["the volga"]))
    assert ev.quotes[0][1] == "The river is called the Volga."
    text = "He lived in Washington, D.C. Later he moved. The end."
    ev = locate_evidence(_rec(text, ["D.C. Later"]))
    assert ev.quotes[0][1] in text and "D.C. Later" in ev.quotes[0][1]


def test_fallback_and_not_found():
    text = "Armstrong landed on July 20, 1969. The crew came home."
    ev = locate_evidence(_rec(text, ["20 July 1969"]))
    assert ev.fallback and ev.quotes[0][1] == "Armstrong landed on July 20, 1969."
    with pytest.raises(EvidenceError) as exc:
        locate_evidence(_rec("Nothing relevant here.", ["Lima"]))
    assert exc.value.reason == "answer_not_found"


def test_annotated_evidence_must_be_in_a_gold_document():
    rec = QARecord(
        "r",
        "en",
        "q?",
        ("x",),
        (Document("A", "One.  Two  words."), Document("B", "Three.")),
        ("Three.", "Two words."),
    )
    ev = locate_evidence(rec)
    assert ev.quotes == ((1, "Three."), (0, "Two  words."))  # whitespace-tolerant, quotes stay verbatim
    with pytest.raises(EvidenceError, match="evidence_not_in_document"):
        locate_evidence(QARecord("r", "en", "q?", ("x",), (Document("A", "One."),), ("Four.",)))
