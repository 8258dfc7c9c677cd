"""The tiny model kit: a Qwen2-architecture model and a local BPE tokenizer that load like real Qwen folders."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx_core.config import TinyModelConfig
from longctx_core.model.chatml import IM_END, IM_START
from longctx_core.model.tiny import ensure_tiny_checkpoint, tiny_fingerprint

TEXTS = [
    f"Document {i}: Alma Vesk lives in Orlen and works as a cartographer. 林小雨住在青石镇，是一名医生。"
    for i in range(200)
]
SMALL = TinyModelConfig(
    vocab_size=600,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return ensure_tiny_checkpoint(SMALL, tmp_path_factory.mktemp("tiny"), TEXTS)


def test_round_trip_through_from_pretrained(small_dir):
    tok = AutoTokenizer.from_pretrained(small_dir)
    model = AutoModelForCausalLM.from_pretrained(small_dir)
    assert model.config.model_type == "qwen2"
    assert model.config.num_hidden_layers == SMALL.num_hidden_layers
    assert model.config.max_position_embeddings == 128
    assert model.config.vocab_size == len(tok)
    for special in ("<|endoftext|>", IM_START, IM_END):
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1, special  # one token each, never split
    assert tok.eos_token == IM_END
    text = "Alma Vesk lives in Orlen. 林小雨住在青石镇。"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text  # byte-level: lossless, zh too
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_chat_template_renders_chatml(small_dir):
    tok = AutoTokenizer.from_pretrained(small_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where does Alma live?"},
        {"role": "assistant", "content": "Orlen."},
    ]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhere does Alma live?<|im_end|>\n"
        "<|im_start|>assistant\nOrlen.<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhere does Alma live?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_build_is_deterministic_and_cached(tmp_path, small_dir):
    again = ensure_tiny_checkpoint(SMALL, tmp_path, TEXTS)
    assert again.name == small_dir.name == f"tiny-{tiny_fingerprint(SMALL)}"
    assert (again / "tokenizer.json").read_text() == (small_dir / "tokenizer.json").read_text()
    a = AutoModelForCausalLM.from_pretrained(again).state_dict()
    b = AutoModelForCausalLM.from_pretrained(small_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    mtime = (again / "model.safetensors").stat().st_mtime
    assert ensure_tiny_checkpoint(SMALL, tmp_path, TEXTS) == again
    assert (again / "model.safetensors").stat().st_mtime == mtime  # cached, not rebuilt
    other = SMALL.model_copy(update={"num_hidden_layers": 3})
    assert tiny_fingerprint(other) != tiny_fingerprint(SMALL)
