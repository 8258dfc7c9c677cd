"""The composer on the built-in world with the tiny tokenizer: quotes, answers, lengths, positions, twins."""

from __future__ import annotations

import math
import re

import pytest

from longctx_core.data.builtin import builtin_records
from longctx_core.data.compose import (
    ComposeError,
    DocPool,
    PositionSpec,
    compose_sample,
    place_golds,
    token_tolerance,
)
from longctx_core.data.seeding import derive_seed, rng_for
from longctx_core.data.styles import split_reply

DOC_RE = re.compile(r"(?:Document \[(\d+)\] \(Title: .*?\) |文档\[(\d+)\]（标题：.*?）)")


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def world():
    return builtin_records(600, seed=11)


@pytest.fixture(scope="module")
def pool(world, tok):
    return DocPool.build([r.evidence_docs[0] for r in world], [r.lang for r in world], tok)


def context_docs(sample) -> list[str]:
    """The document texts of a sample's context, parsed back from the first user message."""
    user = sample.messages[1]["content"]
    body = user.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
    return [DOC_RE.sub("", part, count=1) for part in body.split("\n\n")]


def records_for(world, i, k, lang=None):
    lang = lang or world[i].lang
    return [r for r in world[i:] if r.lang == lang][:k]


def compose(world, pool, tok, i, **kw):
    kw.setdefault("target_tokens", 1024)
    kw.setdefault("answer_style", "paraphrase")
    return compose_sample(records_for(world, i, kw.pop("k", 3)), pool, tok, seed=derive_seed("t", i), **kw)


@pytest.mark.parametrize("target", [512, 1024, 2048])
def test_every_sample_quotes_verbatim_answers_and_fits(world, pool, tok, target):
    for i in range(0, 60, 6):
        s = compose(world, pool, tok, i, target_tokens=target, k=1 if target == 512 else 3)
        docs = context_docs(s)
        assert len(docs) == s.n_docs
        true_len = len(tok.apply_chat_template(s.messages, tokenize=True, return_dict=True)["input_ids"])
        assert s.n_tokens == true_len
        assert target - token_tolerance(target) <= s.n_tokens <= target
        assert [m["role"] for m in s.messages] == ["system"] + ["user", "assistant"] * len(
            s.meta["questions"]
        )
        for t, reply in enumerate(s.messages[2::2]):
            quotes, final = split_reply(reply["content"], s.lang)
            assert final == s.meta["answers"][t][0]
            assert quotes == s.meta["evidence"][t]
            numbers = [int(n) for n in re.findall(r"(?:Document \[|文档\[)(\d+)\]", reply["content"])]
            for q, n in zip(quotes, numbers, strict=True):
                assert q in docs[n - 1], "quote must be verbatim text of the document it cites"
            assert [n - 1 for n in numbers] == s.meta["evidence_docs"][t]
        # gold positions point at the records' documents
        for t, rid in enumerate(s.meta["record_ids"]):
            rec = next(r for r in world if r.id == rid)
            assert [docs[p] for p in s.meta["turn_gold_positions"][t]] == [rec.evidence_docs[0].text]


def test_fixed_gold_position_is_exact(world, pool, tok):
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        s = compose(world, pool, tok, 3, gold_position=frac, k=1, target_tokens=2048)
        assert s.gold_positions == [round(frac * (s.n_docs - 1))]
        assert s.n_docs > 5


def test_plain_twin_has_same_context_and_questions(world, pool, tok):
    for i in (0, 10, 20):
        para = compose(world, pool, tok, i, answer_style="paraphrase")
        plain = compose(world, pool, tok, i, answer_style="plain")
        users = lambda s: [m["content"] for m in s.messages if m["role"] != "assistant"]  # noqa: E731
        assert users(para) == users(plain)
        assert para.gold_positions == plain.gold_positions
        for reply, answers in zip(plain.messages[2::2], plain.meta["answers"], strict=True):
            assert split_reply(reply["content"]) == ([], answers[0])
        assert plain.n_tokens < para.n_tokens <= 1024


def test_unanswerable_has_no_gold_and_no_answer_in_context(world, pool, tok):
    for i in (1, 7, 13):
        s = compose(world, pool, tok, i, answer_style="unanswerable")
        assert s.gold_positions == [] and s.answer_style == "unanswerable"
        docs = context_docs(s)
        golds = [r.evidence_docs[0].text for r in records_for(world, i, 3)]
        assert not set(golds) & set(docs)
        context = "\n".join(docs).casefold()
        assert not any(a.casefold() in context for answers in s.meta["answers"] for a in answers)
        assert 1024 - token_tolerance(1024) <= s.n_tokens <= 1024


def test_distractors_never_leak_answers(world, pool, tok):
    for i in range(0, 40, 4):
        s = compose(world, pool, tok, i)
        golds = {p for ps in s.meta["turn_gold_positions"] for p in ps}
        for j, doc in enumerate(context_docs(s)):
            if j not in golds:
                assert not any(
                    a.casefold() in doc.casefold() for answers in s.meta["answers"] for a in answers
                )


def test_deterministic_and_seed_sensitive(world, pool, tok):
    a, b = compose(world, pool, tok, 5), compose(world, pool, tok, 5)
    assert a.to_row() == b.to_row()
    other = compose_sample(
        records_for(world, 5, 3), pool, tok, target_tokens=1024, answer_style="paraphrase", seed=1
    )
    assert other.messages != a.messages


def test_too_long_gold_is_a_compose_error(world, pool, tok):
    with pytest.raises(ComposeError) as exc:
        compose(world, pool, tok, 0, target_tokens=128, k=3)
    assert exc.value.reason == "document_too_long"


def _chi_square(counts, expected):
    return sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True))


def test_uniform_positions_are_uniform():
    n_docs, draws = 10, 4000
    rng = rng_for("uniform-test", 0)
    counts = [0] * n_docs
    for _ in range(draws):
        counts[place_golds(n_docs, 1, PositionSpec("uniform"), None, rng)[0]] += 1
    # chi-square with 9 dof: 27.9 is the 0.999 quantile
    assert _chi_square(counts, [draws / n_docs] * n_docs) < 27.9


def test_middle_weighted_positions():
    n_docs, draws, w = 21, 4000, 0.6
    rng = rng_for("middle-test", 0)
    slots = [
        place_golds(n_docs, 1, PositionSpec("middle", middle_weight=w), None, rng)[0] for _ in range(draws)
    ]
    middle = [s for s in range(n_docs) if 0.25 <= s / (n_docs - 1) <= 0.75]
    expected = w + (1 - w) * len(middle) / n_docs
    share = sum(s in middle for s in slots) / draws
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / draws)
    # outside the middle the distribution stays uniform
    outside = [s for s in slots if s not in middle]
    outer = [s for s in range(n_docs) if s not in middle]
    counts = [outside.count(s) for s in outer]
    assert _chi_square(counts, [len(outside) / len(outer)] * len(outer)) < 31.3  # 10 dof, 0.9995


def test_multiple_golds_get_distinct_slots():
    rng = rng_for("multi", 0)
    for n_docs in (2, 3, 8):
        slots = place_golds(n_docs, 2, PositionSpec("fixed", fixed=0.5), 0.5, rng)
        assert len(set(slots)) == 2 and slots[0] == round(0.5 * (n_docs - 1))


def test_one_pinned_fraction_per_gold():
    """A sequence pins gold i at its i-th fraction; a taken slot moves to the nearest free one (the later on
    a tie); golds past the sequence follow the spec."""
    rng = rng_for("pinned", 0)
    assert place_golds(10, 3, PositionSpec("uniform"), [0.0, 1.0, 0.0], rng) == [0, 9, 1]
    assert place_golds(10, 2, PositionSpec("fixed", fixed=0.5), [1.0], rng) == [9, round(0.5 * 9)]
    assert place_golds(1, 1, PositionSpec("uniform"), [0.7, 0.2], rng) == [0]


def test_hotpot_two_gold_documents_and_chinese_squad(world, pool, tok):
    from pathlib import Path

    from data_gen.validate import validate_row
    from longctx_core.config import SourceConfig
    from longctx_core.data.records import Malformed
    from longctx_core.data.sources import iter_records

    fix = Path(__file__).parent / "fixtures"
    hot = [
        r
        for r in iter_records(SourceConfig(kind="hotpotqa", path=str(fix / "hotpotqa_small.json")), 0)
        if not isinstance(r, Malformed)
    ]
    s = compose_sample(hot, pool, tok, target_tokens=2048, answer_style="paraphrase", seed=3)
    assert validate_row(s.to_row()) == []
    assert len(s.gold_positions) == 6  # three records, two gold documents each
    assert [len(p) for p in s.meta["turn_gold_positions"]] == [2, 2, 2]
    assert len(s.meta["evidence"][2]) == 3 and len(set(s.meta["evidence_docs"][2])) == 2  # quotes cite both
    cm = [r for r in iter_records(SourceConfig(kind="squad", path=str(fix / "cmrc2018_small.json")), 0)]
    s = compose_sample(cm[:3], pool, tok, target_tokens=1024, answer_style="paraphrase", seed=4)
    assert validate_row(s.to_row()) == [] and s.lang == "zh"
    assert s.messages[2]["content"].startswith("文档[") and "「" in s.messages[2]["content"]
    assert s.meta["answers"][0][0] in s.messages[2]["content"]


def test_sample_level_middle_placement(world, pool, tok):
    spec = PositionSpec("middle", middle_weight=1.0)
    rels = []
    for i in range(30):
        s = compose_sample(
            records_for(world, i, 1),
            pool,
            tok,
            target_tokens=768,
            answer_style="paraphrase",
            positions=spec,
            seed=derive_seed("mid", i),
        )
        rels += [p / (s.n_docs - 1) for p in s.gold_positions]
    assert all(0.25 <= r <= 0.75 for r in rels) and len(set(rels)) > 3
