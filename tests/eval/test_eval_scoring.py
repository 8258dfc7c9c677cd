"""Scoring on hand-written cases: SQuAD normalisation, the Lost-in-the-Middle sub-span EM (checked against the
published definition), final-answer extraction, quote faithfulness (near misses too), LongBench metrics."""

from __future__ import annotations

import string

import pytest
import regex

from longctx_core.eval import scoring


def litm_reference_em(prediction: str, ground_truths: list[str]) -> float:
    """The published definition (nelson-liu/lost-in-the-middle, src/lost_in_the_middle/metrics.py), written
    out step by step with the `regex` module it uses: lower -> drop string.punctuation -> articles -> spaces,
    then a case-insensitive substring test."""

    def norm(s: str) -> str:
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = regex.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    pred = norm(prediction)
    return 1.0 if any(norm(gt).lower() in pred.lower() for gt in ground_truths) else 0.0


EM_CASES = [
    ("Wilhelm Conrad Röntgen", ["Wilhelm Conrad Röntgen"], 1.0),
    ("It was wilhelm conrad röntgen, in 1901.", ["Wilhelm Conrad Röntgen"], 1.0),  # case + punctuation
    ("Röntgen", ["Wilhelm Conrad Röntgen"], 0.0),  # gold must sit inside the prediction, not the reverse
    ("The Beatles", ["Beatles"], 1.0),  # articles dropped
    ("an apple a day", ["the apple"], 1.0),
    ("theater", ["the"], 1.0),  # "the" normalises to "" which is a substring of anything
    ("May 18, 2018", ["May 18 2018"], 1.0),
    ("May 18 , 2018", ["May 18, 2018"], 1.0),  # whitespace squashed after punctuation removal
    ("18 May 2018", ["May 18, 2018"], 0.0),
    ("U.S.A.", ["USA"], 1.0),
    ("until September", ["till September", "until September"], 1.0),  # any gold answer
    ("", ["Paris"], 0.0),
    ("l'Étoile", ["l Étoile"], 0.0),  # apostrophe removed, not replaced by a space
    ("3–4 weeks", ["3-4 weeks"], 0.0),  # en dash is not ASCII punctuation: kept
]


@pytest.mark.parametrize("prediction,golds,expected", EM_CASES)
def test_best_subspan_em_matches_the_published_definition(prediction, golds, expected):
    assert scoring.best_subspan_em(prediction, golds) == expected
    assert litm_reference_em(prediction, golds) == expected


def test_normalize_answer():
    assert scoring.normalize_answer("  The  Answer, is: A   Dog! ") == "answer is dog"
    assert scoring.normalize_answer("Theatre") == "theatre"  # only whole-word articles go
    assert scoring.normalize_answer("北京。") == "北京。"  # CJK punctuation is not ASCII: kept, as in SQuAD


@pytest.mark.parametrize(
    "reply, lenient, exact",
    [
        ("So the answer is: Velmora", 1.0, 1.0),
        ("The answer is: the Velmora.", 1.0, 1.0),  # normalisation drops articles and punctuation
        ("It was founded in Velmora, a town by the sea.", 1.0, 0.0),  # the base's own words: lenient only
        ("So the answer is: Kalor", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_lenient_and_exact_match(reply, lenient, exact):
    parsed, em = scoring.answer_em(reply, ["Velmora"])
    assert (em, scoring.exact_match(parsed, ["Velmora"])) == (lenient, exact)


def test_first_line_follows_the_paper_protocol():
    assert scoring.first_line("Paris\nbecause the document says so") == "Paris"
    assert scoring.first_line("\nParis") == ""  # the paper splits before stripping


PARAPHRASE_EN = (
    'The original text in Document [3] says: "Velmora was founded in 1742 by river traders."\n'
    "So the answer is: 1742"
)
PARAPHRASE_ZH = "文档[2]中的原文是：「青石镇位于临川江畔。」\n所以答案是：临川江畔。"


@pytest.mark.parametrize(
    "reply,lang,expected",
    [
        (PARAPHRASE_EN, "en", "1742"),
        (PARAPHRASE_ZH, "zh", "临川江畔"),
        ("The answer is: Kestrel Bay.", "en", "Kestrel Bay"),
        ("答案是：林小雨", "zh", "林小雨"),
        ("Kestrel Bay", "en", "Kestrel Bay"),  # no marker: the reply itself
        ('The original text in Document [1] says: "Kestrel Bay is a city."', "en", ""),  # quote only
    ],
)
def test_final_answer_extraction(reply, lang, expected):
    assert scoring.final_answer(reply, lang) == expected


def test_answer_em_scores_the_final_answer_not_the_quote():
    reply = 'The original text in Document [3] says: "Velmora was founded in 1742."\nSo the answer is: 1850'
    parsed, em = scoring.answer_em(reply, ["1742"])
    assert parsed == "1850" and em == 0.0  # the quote holds the gold answer, the answer is wrong
    assert scoring.best_subspan_em(scoring.first_line(reply), ["1742"]) == 1.0  # first-line EM is fooled
    assert scoring.answer_em(PARAPHRASE_EN, ["1742"]) == ("1742", 1.0)
    assert scoring.answer_em('Document [1] says: "the"', ["the"])[1] == 0.0  # empty answer never matches


DOCS = [
    "Kestrel Bay is a fishing city on the northern coast. It is known for its lighthouse.",
    "Velmora was founded in 1742 by river traders. Its market opens on Saturdays.",
    "青石镇位于临川江畔。镇上有一座石桥。",
]


def _reply(*quotes: str, answer: str = "x") -> str:
    lines = [f'The original text in Document [1] says: "{q}"' for q in quotes]
    return "\n".join([*lines, f"So the answer is: {answer}"])


@pytest.mark.parametrize(
    "reply,gold,expected",
    [
        # verbatim in the gold document
        (_reply("Velmora was founded in 1742 by river traders."), [1], (True, True, True, False)),
        # verbatim, but in a distractor
        (_reply("It is known for its lighthouse."), [1], (True, True, False, False)),
        # near misses: one changed character, changed case, a dropped comma-free word join
        (_reply("Velmora was founded in 1743 by river traders."), [1], (True, False, False, False)),
        (_reply("velmora was founded in 1742 by river traders."), [1], (True, False, False, True)),
        (_reply("Velmora was founded in 1742 by river traders"), [1], (True, True, True, False)),  # a prefix
        (_reply("Velmora  was founded in 1742 by river traders."), [1], (True, False, False, True)),
        # one good and one invented quote: not faithful
        (
            _reply("Its market opens on Saturdays.", "Its market closes on Sundays."),
            [1],
            (True, False, False, False),
        ),
        # no quote at all
        ("So the answer is: 1742", [1], (False, False, False, False)),
        # Chinese corner brackets
        ("文档[3]中的原文是：「青石镇位于临川江畔。」\n所以答案是：临川江畔", [2], (True, True, True, False)),
        (
            "文档[3]中的原文是：「青石镇位於临川江畔。」\n所以答案是：临川江畔",
            [2],
            (True, False, False, False),
        ),
    ],
)
def test_quote_faithfulness(reply, gold, expected):
    lang = "zh" if "文档" in reply else "en"
    got = scoring.quote_faithfulness(reply, DOCS, gold, lang)
    assert (got["quoted"], got["faithful_any"], got["faithful_gold"], got["near_miss"]) == expected


def test_qa_f1_hand_computed():
    # pred tokens: [cello, player]; gold: [cello] -> P = 1/2, R = 1, F1 = 2/3
    assert scoring.qa_f1("The cello player", "the cello") == pytest.approx(2 / 3)
    assert scoring.qa_f1("violin", "cello") == 0.0
    assert scoring.qa_f1("Kestrel Bay", "kestrel bay.") == 1.0


def test_qa_f1_zh_and_rouge_zh():
    assert scoring.qa_f1_zh("临川江畔", "临川江畔。") == 1.0
    assert scoring.qa_f1_zh("石桥", "临川江畔") == 0.0
    assert scoring.rouge_l_zh("灯塔修复了", "灯塔修复了") == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < scoring.rouge_l_zh("看守人修复了灯塔", "二〇一九年冬天修复了灯塔的旧透镜") < 1.0


def test_rouge_l_hand_computed():
    # one sentence each; LCS of [a b c d e] and [a x c e] = [a c e]: R = 3/5, P = 3/4, F = 2PR/(P+R) = 2/3
    assert scoring.rouge_l("a x c e", "a b c d e") == pytest.approx(2 / 3, abs=1e-6)
    # sentence split at '.': union of LCS words over candidate sentences (c1: a b, c2: a c e) = {a, b, c, e}
    assert scoring.rouge_l("a b. a c e", "a b c d e") == pytest.approx(
        2 * (4 / 5) * (4 / 4) / (4 / 5 + 1), abs=1e-6
    )
    assert scoring.rouge_l("", "a b") == 0.0


def test_passage_retrieval_exact_match():
    assert scoring.retrieval_score("Paragraph 2", "Paragraph 2") == 1.0
    assert scoring.retrieval_score("Paragraph 2 or Paragraph 5", "Paragraph 2") == 0.5
    assert scoring.retrieval_score("I do not know", "Paragraph 2") == 0.0
    assert scoring.retrieval_score("段落3", "段落3", zh=True) == 1.0
    assert scoring.longbench_score("passage_retrieval_zh", "答案是段落3", ["段落3"]) == 1.0
    assert scoring.longbench_score("hotpotqa", "the cello", ["violin", "cello"]) == 1.0  # max over golds
    with pytest.raises(ValueError, match="no LongBench metric"):
        scoring.longbench_score("gov_report", "x", ["y"])


def test_passkey_correct_uses_the_first_number():
    assert scoring.passkey_correct("The pass key is 48213.", "48213") == 1.0
    assert scoring.passkey_correct("12345 or 48213", "48213") == 0.0
    assert scoring.passkey_correct("no idea", "48213") == 0.0


@pytest.mark.parametrize(
    "lang,sentence,answer,gold",
    [
        ("en", "Velmora was founded in 1742 by river traders.", "1742", 1),
        ("zh", "青石镇位于临川江畔。", "临川江畔", 2),
    ],
)
def test_quote_style_reply_is_quoted_and_faithful_to_the_gold_document(lang, sentence, answer, gold):
    from longctx_core.data.styles import cited_documents, render_answer

    reply = render_answer("quote", lang, answer, [(gold + 1, sentence)])  # names no document
    assert cited_documents(reply) == []
    assert scoring.answer_em(reply, [answer], lang) == (answer, 1.0)
    got = scoring.quote_faithfulness(reply, DOCS, [gold], lang)
    assert got == {
        "n_quotes": 1,
        "quoted": True,
        "faithful_any": True,
        "faithful_gold": True,
        "near_miss": False,
    }
    distractor = (gold + 1) % len(DOCS)  # the same verbatim quote is not faithful to another document
    assert scoring.quote_faithfulness(reply, DOCS, [distractor], lang)["faithful_gold"] is False
