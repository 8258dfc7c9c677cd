"""Piece-wise token counting (longctx_core.data.token_count) is exact: on the real Qwen vocabulary the cached piece
counts sum to the whole text's count, for composed samples in both languages and for random texts built
around the cut points; a tokenizer outside the Qwen family is counted whole."""

from __future__ import annotations

import random

import pytest

from longctx_core.data.token_count import (
    PieceCounter,
    backend_counts,
    chat_tokens,
    forget_pieces,
    piece_counter,
    qwen_family,
)


@pytest.fixture(scope="module")
def qwen():
    from transformers import AutoTokenizer

    from longctx_core.model.qwen_vocab import ensure_qwen_tokenizer

    return AutoTokenizer.from_pretrained(ensure_qwen_tokenizer())


def whole(tok, text: str) -> int:
    return backend_counts(tok.backend_tokenizer, [text])[0]


# Fragments that sit on both sides of the cuts: headers of both languages, newline and space runs,
# punctuation, digits, contractions, CJK, combining marks, Hangul jamo, special tokens.
FRAGMENTS = [
    "Document [",
    "] (Title: ",
    ") ",
    "文档[",
    "]（标题：",
    "）",
    "（",
    "\n",
    "\n\n",
    "\r\n",
    " ",
    "  ",
    "\t",
    "12",
    "7",
    "²",
    "'s",
    "'t",
    "I'm",
    "The",
    "river",
    "Kos",
    "长城",
    "是",
    "。",
    "!",
    "?",
    ".",
    "]",
    "[",
    "(",
    ")",
    " (",
    "\u0301",
    "e\u0301",
    "\u1100",
    "\u1161",
    "가",
    "_",
    "а́",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "😀",
]


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def test_qwen_family_is_detected_and_a_gpt2_style_bpe_is_not(qwen, tiny_model_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from data_gen.light_tokenizer import LightTokenizer, spec_of

    assert qwen_family(qwen.backend_tokenizer)
    assert piece_counter(qwen) is piece_counter(qwen) is not None  # one counter per tokenizer object
    assert piece_counter(LightTokenizer.from_spec(spec_of(qwen))) is not None  # what an actor holds
    # The tiny kit's checkpoint loads as a Qwen2Tokenizer, which sets Qwen's normalizer and pattern ...
    assert piece_counter(AutoTokenizer.from_pretrained(tiny_model_dir)) is not None
    # ... while its tokenizer.json alone is a GPT-2-style byte-level BPE ("\n\n" splits differently at an end)
    gpt2 = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    )
    assert not qwen_family(gpt2.backend_tokenizer)
    assert piece_counter(gpt2) is None
    gpt2.chat_template = AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    chat = [{"role": "user", "content": "Document [1] (Title: A) x\n\nDocument [2] (Title: B) y"}]
    assert chat_tokens(gpt2, chat) == whole(gpt2, gpt2.apply_chat_template(chat, tokenize=False))


def test_piece_counts_equal_whole_counts_on_random_texts(qwen):
    counter = PieceCounter(qwen.backend_tokenizer)
    texts = random_texts(3000, seed=5)
    got = [counter.count(t) for t in texts]
    want = backend_counts(qwen.backend_tokenizer, texts)
    bad = [(t, g, w) for t, g, w in zip(texts, got, want, strict=True) if g != w]
    assert not bad, bad[:5]
    cut = sum(len(counter.pieces(t)) > 1 for t in texts)
    assert cut > len(texts) // 2  # the cuts were exercised, not skipped
    assert counter.hits > 0


def test_the_cache_is_bounded_and_stays_exact(qwen):
    counter = PieceCounter(qwen.backend_tokenizer, max_cached=20)
    texts = random_texts(300, seed=6)
    assert [counter.count(t) for t in texts] == backend_counts(qwen.backend_tokenizer, texts)
    assert len(counter.cache) <= max(20, max(len(set(counter.pieces(t))) for t in texts))
    shared = piece_counter(qwen)
    assert shared.count(texts[0]) == backend_counts(qwen.backend_tokenizer, texts[:1])[0] and shared.cache
    forget_pieces()  # what the synthesis benchmark does before each timed loop
    assert not shared.cache


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_composed_samples_count_exactly_and_reuse_pieces(qwen, lang):
    from longctx_core.data.builtin import builtin_records
    from longctx_core.data.compose import DocPool, compose_sample
    from longctx_core.data.seeding import derive_seed

    world = [r for r in builtin_records(500, seed=3) if r.lang == lang]
    assert len(world) > 40
    pool = DocPool.build([r.evidence_docs[0] for r in world], [lang] * len(world), qwen)
    counter = piece_counter(qwen)
    hits = counter.hits
    for i in range(8):
        for style in ("paraphrase", "quote", "plain"):
            s = compose_sample(
                world[i : i + 2],
                pool,
                qwen,
                target_tokens=3000,
                answer_style=style,
                seed=derive_seed("tc", i),
            )
            text = qwen.apply_chat_template(s.messages, tokenize=False)
            assert s.n_tokens == whole(qwen, text)
            assert len(counter.pieces(text)) > s.n_docs  # each document header cut off its body
    assert counter.hits > hits
