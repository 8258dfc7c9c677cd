"""Answer templates and reply parsing live together: every rendering parses back."""

from __future__ import annotations

import pytest

from longctx_core.data.records import Document
from longctx_core.data.styles import (
    cited_documents,
    is_unanswerable_reply,
    render_answer,
    render_first_user,
    split_reply,
)


@pytest.mark.parametrize(
    ("lang", "quotes", "answer"),
    [
        ("en", [(3, "Velmora was founded in 1742."), (12, 'He said "no" twice.')], "1742"),
        ("zh", [(2, "长江发源于青藏高原。"), (5, "他说：「我来了。」")], "青藏高原"),
        ("en", [(1, 'It holds ” and " both.')], "both"),
    ],
)
def test_paraphrase_roundtrip(lang, quotes, answer):
    reply = render_answer("paraphrase", lang, answer, quotes)
    got_quotes, final = split_reply(reply, lang)
    assert got_quotes == [q for _, q in quotes]
    assert final == answer
    assert cited_documents(reply) == [n for n, _ in quotes]


def test_quote_golden_strings_name_no_document():
    en = render_answer("quote", "en", "1742", [(3, "Velmora was founded in 1742."), (5, 'He said "no".')])
    assert en == (
        'The original text says: "Velmora was founded in 1742."\n'
        'The original text says: \u201cHe said "no".\u201d\n'
        "So the answer is: 1742"
    )
    zh = render_answer("quote", "zh", "青藏高原", [(2, "长江发源于青藏高原。")])
    assert zh == "原文是：「长江发源于青藏高原。」\n所以答案是：青藏高原"
    for reply, lang in ((en, "en"), (zh, "zh")):
        quotes, final = split_reply(reply, lang)
        assert len(quotes) == len(reply.splitlines()) - 1 and final in ("1742", "青藏高原")
        assert cited_documents(reply) == []
    # the paraphrase twin differs only by the document number
    para = render_answer("paraphrase", "zh", "青藏高原", [(2, "长江发源于青藏高原。")])
    assert para.replace("文档[2]中的", "") == zh
    with pytest.raises(ValueError, match="quote style needs"):
        render_answer("quote", "en", "x", [])


def test_plain_and_unanswerable():
    assert split_reply(render_answer("plain", "en", "Rollo"), "en") == ([], "Rollo")
    assert split_reply(render_answer("plain", "zh", "东海"), "zh") == ([], "东海")
    for lang in ("en", "zh"):
        reply = render_answer("unanswerable", lang, "ignored")
        assert is_unanswerable_reply(reply, lang)
        assert not is_unanswerable_reply(render_answer("plain", lang, "x"), lang)
    with pytest.raises(ValueError, match="quoted evidence"):
        render_answer("paraphrase", "en", "x", [])


def test_model_like_replies_parse():
    quotes, final = split_reply('Document [2] says "A is B." and "C is D". The answer is: B.', "en")
    assert quotes == ["A is B.", "C is D"] and final == "B"
    assert split_reply("Paris", "en") == ([], "Paris")


def test_first_user_numbers_documents_from_one():
    text = render_first_user([Document("A", "Alpha."), Document("B", "Beta.")], "Which?", "en")
    assert "Document [1] (Title: A) Alpha." in text and "Document [2] (Title: B) Beta." in text
    assert text.endswith("Question: Which?")
    zh = render_first_user([Document("甲", "一。")], "哪个？", "zh")
    assert "文档[1]（标题：甲）一。" in zh and zh.endswith("问题：哪个？")
