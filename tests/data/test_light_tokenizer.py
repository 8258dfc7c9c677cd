"""The synthesis actors' LightTokenizer (the driver's tokenizer, shipped as a spec) renders and counts
exactly like the full tokenizer it stands for, so actor start-up gets faster and no sample changes."""

from __future__ import annotations

import pytest

CHATS = [
    [{"role": "user", "content": "Where was Kos born?"}, {"role": "assistant", "content": "In Tarn."}],
    [
        {"role": "system", "content": "Answer from the documents."},
        {
            "role": "user",
            "content": "Document [1] (Title: 河流)\n长江是中国最长的河流。\n\n问题：最长的河流？",
        },
        {"role": "assistant", "content": "原文是：「长江是中国最长的河流。」\n所以答案是：长江"},
        {"role": "user", "content": "  spaces   and\ttabs\n\n\n1234567 digits"},
        {"role": "assistant", "content": "ok", "name": None},  # None-valued keys are dropped, as HF does
    ],
    [{"role": "user", "content": "a literal <|im_end|> and <|endoftext|> inside user text"}],
]


# the tiny kit with its locally trained BPE, and with the real Qwen2.5 vocabulary (a one-layer cut)
QWEN_CUT = dict(num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=2)
TOKENIZERS = {
    "bpe": [],
    "qwen": ["model.tiny.vocab=qwen", "model.tiny.num_key_value_heads=1"]
    + [f"model.tiny.{k}={v}" for k, v in QWEN_CUT.items()],
}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tokenizer_kit(request):
    """(config overrides, checkpoint folder) of each tokenizer."""
    from longctx_core.config import load_config
    from longctx_core.model.tiny import ensure_tiny_checkpoint

    overrides = TOKENIZERS[request.param]
    return overrides, ensure_tiny_checkpoint(load_config(None, overrides).model.tiny)


def test_renders_and_counts_like_the_full_tokenizer(tokenizer_kit):
    import pickle

    from data_gen.light_tokenizer import LightTokenizer, spec_of
    from data_gen.tokenizer import chat_tokenizer
    from longctx_core.data.compose import chat_tokens

    full = chat_tokenizer(str(tokenizer_kit[1]))
    light = LightTokenizer.from_spec(pickle.loads(pickle.dumps(spec_of(full))))  # as an actor receives it
    for chat in CHATS:
        for gen in (False, True):
            want = full.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            assert light.apply_chat_template(chat, add_generation_prompt=gen) == want
        assert chat_tokens(light, chat) == chat_tokens(full, chat) > 10
    assert light.special_tokens_map == full.special_tokens_map
    with pytest.raises(ValueError, match="text only"):
        light.apply_chat_template(CHATS[0], tokenize=True)


def test_composed_rows_are_identical_to_the_full_tokenizers(tokenizer_kit):
    """The guarantee that matters: every planned sample composes to the same row with either tokenizer
    (English and Chinese records, every answer style, 1k-4k tokens)."""
    from bench.fixtures import plan_tasks
    from data_gen.light_tokenizer import LightTokenizer, spec_of
    from data_gen.synthesis import ComposeSettings, build_pools, compose_task
    from longctx_core.config import load_config
    from longctx_core.data.compose import PositionSpec

    overrides, folder = tokenizer_kit
    cfg = load_config(
        None,
        [
            *overrides,
            "data.target_tokens={min: 1024, max: 4096}",
            "train.max_seq_len=4096",
            "data.source.builtin.num_records=400",
            "data.source.builtin.zh_fraction=0.5",
            "data.answer_styles={paraphrase: 1, quote: 1, plain: 1, unanswerable: 1}",
        ],
    )
    path, full, prep, tasks = plan_tasks(cfg, 24)
    assert path == str(folder)
    light = LightTokenizer.from_spec(spec_of(full))
    pools = build_pools(prep.pools)
    settings = ComposeSettings(PositionSpec(), 4096, cfg.run.seed, "builtin")
    assert {t["style"] for t in tasks} == {"paraphrase", "quote", "plain", "unanswerable"}
    rows = 0
    for task in tasks:
        a, b = compose_task(task, full, pools, settings), compose_task(task, light, pools, settings)
        assert (a["row"], a["error"]) == (b["row"], b["error"])
        rows += a["row"] is not None
    assert rows >= 20


def test_a_tokenizer_without_one_chat_template_has_no_spec(tiny_model_dir):
    from data_gen.light_tokenizer import spec_of
    from data_gen.tokenizer import chat_tokenizer

    tok = chat_tokenizer(str(tiny_model_dir))
    tok.chat_template = None
    with pytest.raises(ValueError, match="no single chat template"):
        spec_of(tok)
