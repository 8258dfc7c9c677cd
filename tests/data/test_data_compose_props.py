"""Property-based tests of the composer (hypothesis) and an exhaustive test of gold placement.

Documents here are generated to a wanted length in tiny-tokenizer tokens (50 to 3,000), so that contexts
range from 60 short documents down to the gold document alone: the cases real NQ passages produce. Every
sample the composer returns must pass `validate_row`; the only allowed exception is a `ComposeError` whose
reason is a genuine "cannot fit", checked against an independent bound.
"""

from __future__ import annotations

import itertools
import random
import re

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from data_gen.validate import context_documents, validate_row
from longctx_core.data.compose import (
    ComposeError,
    DocPool,
    PositionSpec,
    compose_sample,
    count_doc_tokens,
    count_tokens,
    middle_slots,
    place_golds,
    token_tolerance,
)
from longctx_core.data.evidence import locate_evidence
from longctx_core.data.records import Document, QARecord
from longctx_core.data.seeding import rng_for
from longctx_core.data.styles import (
    ANSWER_STYLES,
    SYSTEM_PROMPT,
    render_answer,
    render_first_user,
    render_followup_user,
)

KINDS = ("uniform", "middle", "fixed")
EN_WORDS = (
    "river stone market winter garden lantern harbor valley copper meadow signal archive bridge orchard "
    "engine candle mirror forest canal pepper ribbon tunnel basket glacier"
).split()
ZH_CHARS = "山水木火土石田禾米竹花草风云雨雪日月星光明书画门窗桥路城村"
# Answers use letters/characters that never occur in filler text, so distractors cannot hold them.
EN_ANSWER = "QXZJVK"
ZH_ANSWER = "甲乙丙丁戊己庚辛壬癸"


def _filler_sentence(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        return "".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(8, 30))) + "。"
    words = [rng.choice(EN_WORDS) for _ in range(rng.randint(6, 24))]
    return " ".join(words).capitalize() + "."


def _sentences(tok, rng: random.Random, lang: str, n_tokens: int) -> list[str]:
    """Filler sentences whose joined text is about `n_tokens` tiny-tokenizer tokens (counted in batches)."""
    out, total = [], 0
    while total < n_tokens:
        batch = [_filler_sentence(rng, lang) for _ in range(max(1, (n_tokens - total) // 12))]
        sizes = [len(e.ids) + 1 for e in tok.backend_tokenizer.encode_batch(batch, add_special_tokens=False)]
        for sentence, size in zip(batch, sizes, strict=True):
            out.append(sentence)
            total += size
            if total >= n_tokens:
                break
    return out


def _join(sentences: list[str], lang: str) -> str:
    return ("" if lang == "zh" else " ").join(sentences)


def _make_pool_docs(tok, n: int, seed: int) -> tuple[list[Document], list[str]]:
    rng = random.Random(seed)
    docs, langs = [], []
    for i in range(n):
        lang = "zh" if i % 2 else "en"
        length = int(round(50 * (60 ** rng.random()))) if i < 160 else rng.randint(50, 150)  # log-uniform
        docs.append(Document(f"Pool {i}", _join(_sentences(tok, rng, lang, length), lang)))
        langs.append(lang)
    return docs, langs


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


class Bank(tuple):
    """(docs, langs, counts) of the distractor bank, with a short repr for hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"Bank({len(self[0])} documents)"


@pytest.fixture(scope="module")
def big_pool(tok):
    """240 distractors, half English, half Chinese, with their token counts: 160 of 50-3,000 tokens
    (log-uniform) and 80 short ones (50-150), so that a context can hold 60 documents."""
    docs, langs = _make_pool_docs(tok, 240, seed=5)
    return Bank((docs, langs, count_doc_tokens(tok, docs, langs)))


def _pool(big_pool, lo: int, hi: int, langs: set[str] | None = None) -> DocPool:
    """The distractors of `big_pool` of lo..hi tokens (in `langs`, default any)."""
    docs, doc_langs, counts = big_pool
    keep = [i for i in range(len(docs)) if lo <= counts[i] <= hi and (langs is None or doc_langs[i] in langs)]
    return DocPool([docs[i] for i in keep], [doc_langs[i] for i in keep], [counts[i] for i in keep])


def _answer(rng: random.Random, lang: str, k: int) -> str:
    if lang == "zh":
        return "".join(rng.choice(ZH_ANSWER) for _ in range(3)) + ZH_ANSWER[k % 10]
    return "".join(rng.choice(EN_ANSWER) for _ in range(4)) + str(k)


def _fact(lang: str, entity: str, answer: str) -> tuple[str, str]:
    """(question, verbatim fact sentence holding `answer`)."""
    if lang == "zh":
        return f"{entity}的代码是什么？", f"{entity}的代码是{answer}。"
    return f"What is the code of {entity}?", f"The code of {entity} is {answer}."


def _records(tok, rng: random.Random, lang: str, lengths: list[int], two_gold: list[bool]) -> list[QARecord]:
    """One record per length; a `two_gold` record has a second gold document and annotated evidence in
    both (HotpotQA-like)."""
    records = []
    for k, (length, both) in enumerate(zip(lengths, two_gold, strict=True)):
        answer = _answer(rng, lang, k)
        entity = f"实体{ZH_CHARS[k]}" if lang == "zh" else f"Entity {EN_WORDS[k].capitalize()}"
        question, fact = _fact(lang, entity, answer)
        body = _sentences(tok, rng, lang, length)
        body.insert(rng.randrange(len(body) + 1), fact)
        docs = [Document(f"Gold {k}", _join(body, lang))]
        evidence: tuple[str, ...] = ()
        if both:
            other = _sentences(tok, rng, lang, max(50, length // 2))
            hint = f"{entity}很有名。" if lang == "zh" else f"{entity} is well known."
            other.insert(0, hint)
            docs.append(Document(f"Gold {k}b", _join(other, lang)))
            evidence = (fact, hint)
        records.append(QARecord(f"r{k}", lang, question, (answer,), tuple(docs), evidence, source="prop"))
    return records


def _budget_style(style: str) -> str:
    """The style the composer sizes the context for: plain and quote are twins of paraphrase."""
    return "paraphrase" if style in ("plain", "quote") else style


def _bound_tokens(tok, records: list[QARecord], style: str, lang: str) -> int:
    """An upper bound on what the gold documents and the turns alone take (system prompt and template
    included with margin): when even this bound is under the cap, `document_too_long` is not legitimate."""
    golds = (
        list(dict.fromkeys(d for r in records for d in r.evidence_docs)) if style != "unanswerable" else []
    )
    total = count_tokens(tok, SYSTEM_PROMPT[lang]) + 64
    total += sum(count_tokens(tok, d.title) + count_tokens(tok, d.text) + 16 for d in golds)
    for r in records:
        quotes = [(99, s) for _, s in locate_evidence(r).quotes]
        answer = render_answer(_budget_style(style), lang, r.answers[0], quotes)
        total += count_tokens(tok, render_followup_user(r.question, lang)) + count_tokens(tok, answer) + 16
    return total


def _lower_bound_tokens(tok, records: list[QARecord], style: str) -> int:
    """A lower bound on the same: the gold documents' texts alone."""
    if style == "unanswerable":
        return 0
    golds = list(dict.fromkeys(d for r in records for d in r.evidence_docs))
    return sum(count_tokens(tok, d.text) for d in golds) - 8 * len(golds)


def _golds_only_tokens(tok, records: list[QARecord], style: str, lang: str) -> int:
    """The chat with the gold documents (none when unanswerable) and no distractor, rendered with the
    templates: what the composer starts from, within a few tokens (document numbering may differ)."""
    golds = (
        list(dict.fromkeys(d for r in records for d in r.evidence_docs)) if style != "unanswerable" else []
    )
    messages = [{"role": "system", "content": SYSTEM_PROMPT[lang]}]
    for t, r in enumerate(records):
        ev = locate_evidence(r)
        quotes = [(golds.index(r.evidence_docs[i]) + 1, q) for i, q in ev.quotes] if golds else []
        user = (
            render_first_user(golds, r.question, lang) if t == 0 else render_followup_user(r.question, lang)
        )
        answer = render_answer(_budget_style(style), lang, ev.answer or r.answers[0], quotes)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


# Distractor length bands (tokens): short ones give contexts of up to ~60 documents, long ones leave room
# for the gold document alone.
BANDS = [(50, 150), (50, 400), (50, 3000), (300, 1500), (800, 3000)]


@st.composite
def cases(draw):
    n_records = draw(st.integers(1, 4))
    short_or_any = st.one_of(st.integers(50, 300), st.integers(50, 3000))
    return {
        "lang": draw(st.sampled_from(["en", "zh"])),
        "lengths": draw(st.lists(short_or_any, min_size=n_records, max_size=n_records)),
        "two_gold": draw(st.lists(st.booleans(), min_size=n_records, max_size=n_records)),
        "band": draw(st.sampled_from(BANDS)),
        "pool_lang": draw(st.sampled_from(["same", "same", "both", "other", "none"])),
        # Target: relative to what the gold documents and turns need (negative: they cannot fit), or
        # absolute; `cap` (max_tokens) mostly absent, sometimes below the target (a contradictory pair).
        "slack": draw(st.one_of(st.integers(-400, 300), st.integers(300, 2000), st.integers(2000, 8000))),
        "absolute": draw(st.one_of(st.none(), st.none(), st.integers(128, 8192))),
        "cap": draw(st.one_of(st.none(), st.none(), st.none(), st.integers(128, 8192))),
        "style": draw(st.sampled_from(ANSWER_STYLES)),
        "kind": draw(st.sampled_from(KINDS)),
        "middle_weight": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "fixed": draw(st.floats(0, 1)),
        "first_fixed": draw(st.one_of(st.none(), st.none(), st.floats(0, 1))),
        "seed": draw(st.integers(0, 2**32)),
    }


def _case(**kw) -> dict:
    """An explicit case for `@example` (defaults: one short English record, uniform placement)."""
    case = {
        "lang": "en",
        "lengths": [120],
        "two_gold": [False],
        "band": (50, 3000),
        "pool_lang": "same",
        "slack": 500,
        "absolute": None,
        "cap": None,
        "style": "paraphrase",
        "kind": "uniform",
        "middle_weight": 0.5,
        "fixed": 0.5,
        "first_fixed": None,
        "seed": 7,
    }
    case.update(kw)
    case.setdefault("two_gold", [False] * len(case["lengths"]))
    if len(case["two_gold"]) != len(case["lengths"]):
        case["two_gold"] = [False] * len(case["lengths"])
    return case


def _fillable(pool: DocPool, records: list[QARecord]) -> int:
    """Tokens of pool documents the composer may draw (those holding no answer string)."""
    needles = [a.casefold() for r in records for a in r.answers]
    return sum(
        n + 3
        for d, n in zip(pool.docs, pool.counts, strict=True)
        if not any(x in d.text.casefold() for x in needles)
    )


def _check_compose_error(exc: ComposeError, tok, records, pool, style, lang, target, cap) -> None:
    """Legitimate failures only: the gold documents and turns alone exceed the cap; the pool holds too
    little answer-free text to reach the floor (or the cap is below the floor); an unanswerable sample
    beside which no distractor fits."""
    assert exc.reason in ("document_too_long", "token_target_missed", "empty_context"), exc
    event(f"ComposeError {exc.reason}")  # see --hypothesis-show-statistics
    floor = target - token_tolerance(target)
    fillable = _fillable(pool, records)
    if exc.reason == "document_too_long":
        assert _bound_tokens(tok, records, style, lang) > cap, exc
        return
    start = _golds_only_tokens(tok, records, style, lang)
    if exc.reason == "token_target_missed":
        assert cap < floor or start - 16 + fillable < floor, (exc, start, fillable)
    else:  # a first sentence (< 80 tokens with its header) fits whenever 150 tokens are left
        assert style == "unanswerable" and (fillable == 0 or cap - start < 150), (exc, start, fillable)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(case=cases())
@example(
    case=_case(band=(50, 150), pool_lang="both", slack=6800, kind="middle", middle_weight=1.0)
)  # ~60 docs
@example(case=_case(lengths=[1400], band=(300, 1500), slack=150, kind="middle", middle_weight=1.0))  # NQ-like
@example(case=_case(lang="zh", lengths=[900, 200], two_gold=[True, False], band=(800, 3000), slack=900))
@example(case=_case(lang="zh", lengths=[300, 120], two_gold=[True, False], style="quote", slack=700))
def test_composer_samples_always_validate_or_fail_for_a_fit_reason(tok, big_pool, case):
    rng = random.Random(case["seed"])
    lang, style = case["lang"], case["style"]
    records = _records(tok, rng, lang, case["lengths"], case["two_gold"])
    want_lang = {"same": {lang}, "other": {"en", "zh"} - {lang}, "both": {"en", "zh"}, "none": set()}
    pool = _pool(big_pool, *case["band"], want_lang[case["pool_lang"]])
    spec = PositionSpec(case["kind"], case["middle_weight"], case["fixed"])
    target = case["absolute"] or max(128, _bound_tokens(tok, records, "paraphrase", lang) + case["slack"])
    cap = min(target, case["cap"] or target)
    try:
        sample = compose_sample(
            records,
            pool,
            tok,
            target_tokens=target,
            answer_style=style,
            gold_position=case["first_fixed"],
            positions=spec,
            seed=case["seed"],
            max_tokens=case["cap"],
        )
    except ComposeError as exc:
        _check_compose_error(exc, tok, records, pool, style, lang, target, cap)
        return
    n = sample.n_docs
    event(
        f"n_docs {'1' if n == 1 else '2-3' if n <= 3 else '4-19' if n < 20 else '20-39' if n < 40 else '40+'}"
    )
    assert validate_row(sample.to_row()) == []
    true_len = len(tok.apply_chat_template(sample.messages, tokenize=True, return_dict=True)["input_ids"])
    assert sample.n_tokens == true_len <= cap
    if _budget_style(style) == style:  # twins are shorter than their paraphrase sample
        assert sample.n_tokens >= target - token_tolerance(target)
    golds = list(dict.fromkeys(d for r in records for d in r.evidence_docs))
    if style == "unanswerable":
        assert sample.gold_positions == []
        return
    assert len(sample.gold_positions) == len(set(sample.gold_positions)) == len(golds)
    assert all(0 <= p < n for p in sample.gold_positions)
    context = context_documents(sample.messages[1]["content"], sample.meta["titles"])
    assert [context[p] for p in sample.gold_positions] == [d.text for d in golds]
    first = round(case["first_fixed"] * (n - 1)) if case["first_fixed"] is not None else None
    if first is None and case["kind"] == "fixed":
        first = round(case["fixed"] * (n - 1))
    if first is not None:
        assert sample.gold_positions[0] == first
    elif case["kind"] == "middle" and case["middle_weight"] == 1.0:
        assert sample.gold_positions[0] in middle_slots(n)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(
    lang=st.sampled_from(["en", "zh"]),
    length=st.integers(300, 1500),
    style=st.sampled_from(ANSWER_STYLES),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**32),
)
def test_long_passages_leave_room_for_one_to_three_documents(tok, big_pool, lang, length, style, kind, seed):
    """Real-data shape: a long gold passage, long distractors, a target just above the gold's size."""
    rng = random.Random(seed)
    records = _records(tok, rng, lang, [length], [False])
    pool = _pool(big_pool, 300, 1500)
    target = _bound_tokens(tok, records, "paraphrase", lang) + rng.choice([0, 200, 600, 1200])
    sample = compose_sample(
        records,
        pool,
        tok,
        target_tokens=target,
        answer_style=style,
        positions=PositionSpec(kind, 1.0, 0.5),
        seed=seed,
    )
    assert validate_row(sample.to_row()) == []
    assert sample.n_tokens <= target
    assert sample.n_tokens >= target - token_tolerance(target) or _budget_style(style) != style
    assert sample.n_docs >= 1


_DOC_NUMBER = re.compile(r" in Document \[\d+\]|文档\[\d+\]中的")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(
    lang=st.sampled_from(["en", "zh"]),
    lengths=st.lists(st.integers(50, 600), min_size=1, max_size=3),
    two_gold=st.booleans(),
    slack=st.integers(0, 2000),
    seed=st.integers(0, 2**32),
)
def test_quote_twin_is_the_paraphrase_sample_without_document_numbers(
    tok, big_pool, lang, lengths, two_gold, slack, seed
):
    """Same records, seed and target: the same context and questions; each quote reply is its paraphrase
    reply with "in Document [k]" / "文档[k]中的" removed, so only the document numbers differ."""
    records = _records(tok, random.Random(seed), lang, lengths, [two_gold] + [False] * (len(lengths) - 1))
    pool = DocPool(*big_pool)
    target = _bound_tokens(tok, records, "paraphrase", lang) + slack
    kw = {"target_tokens": target, "positions": PositionSpec("middle"), "seed": seed}
    para = compose_sample(records, pool, tok, answer_style="paraphrase", **kw)
    quote = compose_sample(records, pool, tok, answer_style="quote", **kw)
    assert validate_row(quote.to_row()) == []
    assert quote.gold_positions == para.gold_positions and quote.meta["titles"] == para.meta["titles"]
    for a, b in zip(para.messages, quote.messages, strict=True):
        assert b["content"] == (
            _DOC_NUMBER.sub("", a["content"]) if a["role"] == "assistant" else a["content"]
        )
    assert quote.n_tokens < para.n_tokens <= target


def test_document_too_long_bound_is_not_vacuous(tok):
    """The bound used above must separate: a 3,000-token gold cannot fit a 512 cap, a 60-token gold can."""
    rng = random.Random(0)
    big = _records(tok, rng, "en", [3000], [False])
    small = _records(tok, rng, "en", [60], [False])
    assert _lower_bound_tokens(tok, big, "paraphrase") > 512
    assert _bound_tokens(tok, small, "paraphrase", "en") < 512
    with pytest.raises(ComposeError) as exc:
        compose_sample(big, [], tok, target_tokens=512, answer_style="paraphrase", seed=1)
    assert exc.value.reason == "document_too_long"


# ---- gold placement, exhaustively on small contexts --------------------------------------------------------


def test_middle_slots_small_contexts():
    assert [middle_slots(n) for n in range(1, 6)] == [[0], [0, 1], [1], [1, 2], [1, 2, 3]]
    for n in range(1, 40):
        mid = middle_slots(n)
        assert mid and all(0 <= s < n for s in mid)
        assert mid == sorted(n - 1 - s for s in mid)  # symmetric about the centre


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("first_fixed", [None, 0.0, 0.4, 1.0])
def test_place_golds_every_small_case(kind, first_fixed):
    for n_docs, weight, seed in itertools.product(range(1, 9), (0.0, 0.5, 1.0), range(6)):
        for n_golds in range(0, n_docs + 1):
            rng = rng_for("place", kind, n_docs, n_golds, seed)
            spec = PositionSpec(kind, middle_weight=weight, fixed=0.7)
            slots = place_golds(n_docs, n_golds, spec, first_fixed, rng)
            assert len(slots) == len(set(slots)) == n_golds
            assert all(0 <= s < n_docs for s in slots)
            if not n_golds:
                continue
            if first_fixed is not None:
                assert slots[0] == round(first_fixed * (n_docs - 1))
            elif kind == "fixed":
                assert slots[0] == round(0.7 * (n_docs - 1))
            elif kind == "middle" and weight == 1.0:
                # every gold takes a free middle slot while one is left
                mid = middle_slots(n_docs)
                assert set(slots[: len(mid)]) <= set(mid)
        with pytest.raises(ValueError, match="cannot place"):
            place_golds(n_docs, n_docs + 1, PositionSpec(kind), first_fixed, random.Random(0))
