"""`validate_row` negative tests: one crafted bad row per rule, each reported under its own reason."""

from __future__ import annotations

import copy

import pytest

from data_gen.validate import RULES, validate_row
from longctx_core.data.records import Document
from longctx_core.data.styles import (
    UNANSWERABLE_REPLY,
    render_answer,
    render_first_user,
    render_followup_user,
)

DOCS = {
    "en": [
        Document("Alpha", "Alpha is a small town. The mayor of Alpha is Rosa Venn. It has a mill."),
        Document("Beta", "Beta is a river port. Beta sings at night."),
        Document("Gamma", "Gamma has a long bridge. The bridge is made of iron."),
    ],
    "zh": [
        Document("甲城", "甲城是一个小镇。甲城的市长是王芳。镇上有一座磨坊。"),
        Document("乙港", "乙港是一个河港。夜里很安静。"),
    ],
}
TURNS = {
    "en": [
        ("Who is the mayor of Alpha?", "Rosa Venn", "The mayor of Alpha is Rosa Venn."),
        ("What is Alpha's mill?", "a mill", "It has a mill."),
    ],
    "zh": [("甲城的市长是谁？", "王芳", "甲城的市长是王芳。")],
}


def make_row(lang: str = "en", style: str = "paraphrase", gold: int = 0) -> dict:
    """A sound row built with the composer's own renderers: gold document at `gold`, the rest distractors
    (unanswerable: the gold document left out)."""
    docs = list(DOCS[lang])
    docs.insert(gold, docs.pop(0))
    if style == "unanswerable":  # the gold document is left out of an unanswerable sample
        docs = docs[:gold] + docs[gold + 1 :]
    turns = TURNS[lang]
    messages = [{"role": "system", "content": "sys"}]
    for t, (q, answer, sentence) in enumerate(turns):
        user = render_first_user(docs, q, lang) if t == 0 else render_followup_user(q, lang)
        quotes = [(gold + 1, sentence)] if style in ("paraphrase", "quote") else []
        messages += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": render_answer(style, lang, answer, quotes)},
        ]
    return {
        "id": "s0",
        "messages": messages,
        "n_tokens": 300,
        "n_docs": len(docs),
        "gold_positions": [] if style == "unanswerable" else [gold],
        "answer_style": style,
        "source": "test",
        "lang": lang,
        "seed": 0,
        "meta": {
            "questions": [q for q, _, _ in turns],
            "answers": [[a] for _, a, _ in turns],
            "titles": [d.title for d in docs],
            "target_tokens": 512,
        },
    }


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("style", ["paraphrase", "quote", "plain", "unanswerable"])
@pytest.mark.parametrize("gold", [0, 1])
def test_sound_rows_pass(lang, style, gold):
    assert validate_row(make_row(lang, style, gold)) == []


def _reply(row: dict, t: int, text: str) -> None:
    row["messages"][2 + 2 * t]["content"] = text


def _first_user(row: dict, docs: list[Document], lang: str = "en") -> None:
    row["messages"][1]["content"] = render_first_user(docs, row["meta"]["questions"][0], lang)


def _case_missing_column(row):
    del row["lang"]


def _case_bad_value(row):
    row["answer_style"] = "fancy"


def _case_roles(row):
    row["messages"] = row["messages"][:-1]


def _case_question(row):
    row["meta"]["questions"][1] = "Where is the mill?"


def _case_n_docs(row):
    row["n_docs"] = 4


def _case_gold_range(row):
    row["gold_positions"] = [3]


def _case_gold_duplicate(row):
    row["gold_positions"] = [1, 1]


def _case_gold_missing(row):
    row["gold_positions"] = []


def _case_unanswerable(row):
    row["answer_style"] = "unanswerable"  # the replies still answer and a gold position is set


def _case_answer(row):
    _reply(row, 1, row["messages"][4]["content"].replace("a mill", "a forge"))


def _case_plain_quotes(row):
    row["answer_style"] = "plain"  # paraphrase replies hold quotes


def _case_quote_count(row):
    _reply(row, 0, row["messages"][2]["content"].replace("in Document [2] ", ""))


def _case_quote_not_verbatim(row):
    _reply(row, 0, row["messages"][2]["content"].replace("Rosa Venn.", "Rosa  Venn."))


def _case_quote_not_gold(row):
    _reply(
        row, 0, 'The original text in Document [1] says: "Beta sings at night."\nSo the answer is: Rosa Venn'
    )


def _case_answer_leak(row):
    docs = [DOCS["en"][1], DOCS["en"][0], Document("Gamma", "Gamma was once run by Rosa Venn.")]
    _first_user(row, docs)


def _case_too_long(row):
    row["n_tokens"] = 513


CASES = {name[len("_case_") :]: fn for name, fn in globals().items() if name.startswith("_case_")}


def test_every_rule_has_a_crafted_case():
    assert set(CASES) == set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_reports_its_own_reason(rule):
    row = make_row("en", "paraphrase", gold=1)
    assert validate_row(row) == []
    bad = copy.deepcopy(row)
    CASES[rule](bad)
    reasons = {p.split(":", 1)[0] for p in validate_row(bad)}
    assert rule in reasons, validate_row(bad)


def test_quote_rows_are_paraphrase_rows_without_document_numbers():
    for lang, number in (("en", " in Document [2]"), ("zh", "文档[2]中的")):
        para, quote = make_row(lang, "paraphrase", gold=1), make_row(lang, "quote", gold=1)
        for a, b in zip(para["messages"], quote["messages"], strict=True):
            assert a["content"].replace(number, "") == b["content"]


QUOTE_CASES = {  # rule -> turn-0 replies of a quote row whose gold document is Document [2]
    "quote_count": [
        "So the answer is: Rosa Venn",  # no quote
        'The original text in Document [2] says: "The mayor of Alpha is Rosa Venn."\nSo the answer is: Rosa Venn',
    ],
    "quote_not_verbatim": [
        'The original text says: "The mayor of Alpha is Rosa  Venn."\nSo the answer is: Rosa Venn'
    ],
    "quote_not_gold": ['The original text says: "Beta sings at night."\nSo the answer is: Rosa Venn'],
    "answer": ['The original text says: "The mayor of Alpha is Rosa Venn."\nSo the answer is: Rosa'],
}


@pytest.mark.parametrize(("rule", "reply"), [(r, x) for r, xs in QUOTE_CASES.items() for x in xs])
def test_quote_style_rules(rule, reply):
    row = make_row("en", "quote", gold=1)
    assert validate_row(row) == []
    _reply(row, 0, reply)
    assert {p.split(":", 1)[0] for p in validate_row(row)} == {rule}, validate_row(row)


def test_chinese_unanswerable_reply_is_checked():
    row = make_row("zh", "unanswerable")
    assert validate_row(row) == []
    _reply(row, 0, "答案是：王芳")
    assert {p.split(":", 1)[0] for p in validate_row(row)} == {"unanswerable"}
    _reply(row, 0, UNANSWERABLE_REPLY["en"])  # the other language's template is recognised too
    assert validate_row(row) == []


def test_answer_with_quotation_marks_is_not_read_as_a_quote():
    """Real NQ: `So the answer is: Thomas "Tom" Robinson` must not count "Tom" as a second quote."""
    row = make_row("en", "paraphrase", gold=0)
    name = 'Thomas "Tom" Robinson'
    fact = f"The accused is {name}, a farm worker."
    docs = [Document("Trial", f"{fact} The trial lasted a day."), DOCS["en"][1]]
    row["meta"] |= {"questions": ["Who is accused?"], "answers": [[name]], "titles": ["Trial", "Beta"]}
    row["n_docs"] = 2
    row["messages"] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": render_first_user(docs, "Who is accused?", "en")},
        {"role": "assistant", "content": render_answer("paraphrase", "en", name, [(1, fact)])},
    ]
    assert validate_row(row) == []


@pytest.mark.parametrize("style", ["paraphrase", "quote", "plain"])
def test_answer_ending_in_a_period_is_accepted(style):
    """Real NQ: the answer "R.E.M." reads back as "R.E.M" (split_reply strips sentence punctuation); the
    validator reads the accepted answers the same way instead of quarantining a sound sample."""
    row = make_row("en", style, gold=0)
    fact = "The band R.E.M. recorded the song in 1991."
    docs = [Document("Song", f"{fact} It was a hit."), DOCS["en"][1]]
    row["meta"] |= {"questions": ["Who recorded it?"], "answers": [["R.E.M."]], "titles": ["Song", "Beta"]}
    row["n_docs"] = 2
    quotes = [(1, fact)] if style != "plain" else []
    row["messages"] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": render_first_user(docs, "Who recorded it?", "en")},
        {"role": "assistant", "content": render_answer(style, "en", "R.E.M.", quotes)},
    ]
    assert validate_row(row) == []
    row["messages"][-1]["content"] = render_answer(style, "en", "U2", quotes)
    assert any(p.startswith("answer:") for p in validate_row(row))  # a wrong answer is still reported
