"""The built-in world: deterministic, bilingual, one answer sentence per question, tokenizer texts."""

from __future__ import annotations

import re

import pytest

from longctx_core.data.builtin import WorldSpec, builtin_records, tokenizer_training_texts
from longctx_core.data.text import split_sentences


def test_tokenizer_texts_are_deterministic_bilingual_and_hold_qa_templates():
    texts = tokenizer_training_texts(300, seed=3)
    assert len(texts) == 300
    assert texts == tokenizer_training_texts(300, seed=3)
    assert texts != tokenizer_training_texts(300, seed=4)
    zh = [t for t in texts if re.search(r"[\u4e00-\u9fff]", t)]
    assert 0.3 < len(zh) / len(texts) < 0.7
    joined = "\n".join(texts)
    for marker in (
        "Document [",
        "Question:",
        "So the answer is:",
        "The answer is:",
        "文档[",
        "问题：",
        "答案是：",
    ):
        assert marker in joined, marker
    assert len(set(texts)) == len(texts)


def test_records_prefix_stable_and_answer_in_exactly_one_sentence():
    recs = builtin_records(120, seed=7)
    assert [r.to_dict() for r in recs[:40]] == [r.to_dict() for r in builtin_records(40, seed=7)]
    assert {r.lang for r in recs} == {"en", "zh"}
    titles = [r.evidence_docs[0].title for r in recs]
    assert len(set(titles)) == len(titles)
    for r in recs:
        doc = r.evidence_docs[0]
        (sentence,) = r.evidence_sentences
        assert sentence in split_sentences(doc.text, r.lang)
        holding = [s for s in split_sentences(doc.text, r.lang) if r.answers[0] in s]
        assert holding == [sentence], (r.question, r.answers, holding)
        assert doc.title in r.question


def test_questions_are_not_answered_by_templates():
    # The same question template must come with many different answers across entities.
    recs = builtin_records(400, seed=1)
    by_template: dict[str, set[str]] = {}
    for r in recs:
        template = r.question.replace(r.evidence_docs[0].title, "{name}")
        by_template.setdefault(template, set()).add(r.answers[0])
    common = [t for t in by_template if len(by_template[t]) >= 3]
    assert len(common) >= 20


def test_short_world_for_toy_repro():
    spec = WorldSpec(
        kinds=("person",),
        name_syllables=(1, 1),
        full_names=False,
        facts_per_doc=(1, 2),
        filler_per_doc=(0, 0),
        zh_fraction=0.0,
    )
    recs = builtin_records(100, seed=0, spec=spec)
    for r in recs:
        n = len(split_sentences(r.evidence_docs[0].text, "en"))
        assert 1 <= n <= 2
        assert " " not in r.evidence_docs[0].title


def test_closed_fact_set_makes_neighbours_share_the_asked_attribute():
    keys = ("colour", "pet", "instrument")
    spec = WorldSpec(
        kinds=("person",),
        name_syllables=(1, 1),
        full_names=False,
        facts_per_doc=(2, 3),
        filler_per_doc=(0, 0),
        zh_fraction=0.0,
        facts=keys,
    )
    recs = builtin_records(60, seed=1, spec=spec)
    asked = {"colour": "colour", "pet": "pet", "instrument": "orchestra|practises"}  # question -> sentence
    shared = 0
    for r in recs:
        kind = next(k for k in asked if k in r.question.lower())
        text = r.evidence_docs[0].text
        assert 2 <= len(split_sentences(text, "en")) <= 3
        assert not re.search(r"born|works|siblings|cooks|spare time|number", text)  # only the chosen facts
        others = [o for o in recs if o is not r]
        shared += any(re.search(asked[kind], o.evidence_docs[0].text) for o in others[:5])
    assert shared >= 50  # nearly every question's attribute also appears in some neighbouring document


def test_spec_validation():
    with pytest.raises(ValueError, match="facts_per_doc"):
        WorldSpec(facts_per_doc=(3, 1))
    with pytest.raises(ValueError, match="kinds"):
        WorldSpec(kinds=("dragon",))
    with pytest.raises(ValueError, match="unknown for kinds"):
        WorldSpec(kinds=("person",), facts=("logo",))
    with pytest.raises(ValueError, match=r"no fact left for kinds \['city'\]"):
        WorldSpec(kinds=("person", "city"), facts=("colour",))
