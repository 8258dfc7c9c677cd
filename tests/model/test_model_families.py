"""The supported model families: Qwen2/2.5/3 (and their MoE types) and the Llama architecture (Llama 3.x,
Mistral, SmolLM2), each through the project's own loading, RoPE, LoRA and merge code.

Tiny checkpoints of each architecture are built in code with the shape of conftest.SMALL (hidden 64, 2 heads
of 32, original context 128, RoPE base 1e4) and the small tiny-kit tokenizer, saved as ordinary HF folders,
and loaded with `longctx_core.model.loading.load_model` like a real checkpoint. RoPE is checked against the
independent formulas of test_model_rope.py. The chat-template goldens use the real templates of Qwen2.5,
SmolLM2 and Llama 3.1 (fixtures/chat_templates, provenance in its README) on the tiny tokenizer with each
template's special tokens added: the labelled text must be exactly each reply and its end-of-turn marker.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path

import pytest
import torch
from test_model_qlora import PROJECTIONS, batch, logits_of, train_steps  # tiny-model training helpers
from test_model_rope import (  # the independent reference formulas, shared with the Qwen2 RoPE tests
    BASE,
    HEAD_DIM,
    ORIGINAL,
    assert_inv_freq,
    ref_default,
    ref_dynamic,
    ref_linear,
    ref_yarn,
)
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from longctx_core.config import ConfigError, ModelConfig, RopeConfig, load_config
from longctx_core.data.chat import IGNORE_INDEX, labelled_text, tokenize_chat
from longctx_core.errors import LongctxError
from longctx_core.model.families import FAMILIES, resolve_lora_targets
from longctx_core.model.loading import check_model_config, load_model, load_tokenizer
from longctx_core.model.lora import add_lora, merge_adapter, save_adapter
from longctx_core.model.rope import apply_rope_extension, max_context

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"


# ---- tiny checkpoints of each architecture -----------------------------------------------------------------


def tiny_hf_config(model_type: str, vocab_size: int, **overrides):
    """A config of `model_type` with the small tiny model's shape (head_dim 32, original context 128)."""
    shape = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=HEAD_DIM,  # Qwen3 defaults to 128 whatever the width
        max_position_embeddings=ORIGINAL,
        rope_parameters={"rope_type": "default", "rope_theta": BASE},
    )
    return AutoConfig.for_model(model_type, **{**shape, **overrides})


@pytest.fixture(scope="module")
def build_checkpoint(small_dir, tmp_path_factory):
    """build(model_type, **config overrides) -> a saved HF folder with random weights and the tiny tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(small_dir)
    root = tmp_path_factory.mktemp("families")

    def build(model_type: str, **overrides) -> Path:
        out = root / "-".join([model_type, *(f"{k}={v}" for k, v in sorted(overrides.items()))])
        if not (out / "config.json").is_file():
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_hf_config(model_type, len(tokenizer), **overrides))
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
        return out

    return build


def model_cfg(folder: Path, **sections) -> ModelConfig:
    tree = {
        "name_or_path": str(folder),
        "attn_implementation": "sdpa",
        "gradient_checkpointing": False,
        "quantization": {"load_in_4bit": False},
    }
    return ModelConfig.model_validate({**tree, **sections})


# ---- family list and RoPE ----------------------------------------------------------------------------------


def test_the_tested_families_and_their_projections():
    assert list(FAMILIES) == ["qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "llama", "mistral"]
    assert all(f.projections == PROJECTIONS for f in FAMILIES.values())
    assert all(f.reads_rope_parameters for f in FAMILIES.values())
    # The config field that lets other types through names the same list (config sits below the model layer).
    described = ModelConfig.model_fields["allow_untested_architecture"].description
    assert all(t in described for t in FAMILIES)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_every_family_reads_the_yarn_rope_parameters(model_type):
    """Config only (no weights), MoE types included: the family's own rotary embedding class, given the
    config `apply_rope_extension` wrote, computes the published YaRN frequencies and temperature."""
    hf_config = tiny_hf_config(model_type, vocab_size=600)
    apply_rope_extension(
        hf_config, RopeConfig(type="yarn", factor=4.0, original_max_position_embeddings=ORIGINAL)
    )
    modeling = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    (rotary_cls,) = [v for k, v in vars(modeling).items() if k.endswith("RotaryEmbedding")]
    emb = rotary_cls(hf_config)
    expected, mscale = ref_yarn(HEAD_DIM, BASE, 4.0, ORIGINAL)
    assert_inv_freq(emb.inv_freq, expected)
    assert emb.attention_scaling == pytest.approx(mscale, abs=1e-6)


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen3"])
@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn"])
def test_rope_extension_of_a_loaded_checkpoint_matches_the_formulas(build_checkpoint, model_type, kind):
    rope = {"type": kind, "factor": 4.0}
    if kind == "yarn":
        rope["original_max_position_embeddings"] = ORIGINAL
    model = load_model(model_cfg(build_checkpoint(model_type), rope=rope)).eval()
    assert model.config.model_type == model_type
    assert max_context(model.config) == 4 * ORIGINAL
    rotary = model.model.rotary_emb
    if kind == "linear":
        assert_inv_freq(rotary.inv_freq, ref_linear(HEAD_DIM, BASE, 4.0))
        assert rotary.attention_scaling == 1.0
    elif kind == "yarn":
        expected, mscale = ref_yarn(HEAD_DIM, BASE, 4.0, ORIGINAL)
        assert_inv_freq(rotary.inv_freq, expected)
        assert rotary.attention_scaling == pytest.approx(mscale, abs=1e-6)
    else:  # dynamic NTK: the original frequencies up to L0, the rescaled base after a longer forward
        assert_inv_freq(rotary.inv_freq, ref_default(HEAD_DIM, BASE))
        long_len = 3 * ORIGINAL + 17
        with torch.no_grad():
            model(batch(n=1, length=long_len))
        assert_inv_freq(rotary.inv_freq, ref_dynamic(HEAD_DIM, BASE, 4.0, long_len, ORIGINAL))
        assert rotary.attention_scaling == 1.0


# ---- untested architectures --------------------------------------------------------------------------------

PHI3 = tiny_hf_config("phi3", vocab_size=600, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # ids < vocab


@pytest.fixture(scope="module")
def phi3_dir(tmp_path_factory) -> Path:
    """A Phi-3 checkpoint folder (config only: check_model_config reads no weights)."""
    out = tmp_path_factory.mktemp("phi3")
    PHI3.save_pretrained(out)
    return out


def test_untested_model_type_is_a_one_line_error(phi3_dir):
    with pytest.raises(LongctxError) as err:
        check_model_config(model_cfg(phi3_dir))
    message = str(err.value)
    assert "\n" not in message
    assert "model type 'phi3' is not one of the tested families" in message
    assert (
        "(qwen2: Qwen2, Qwen2.5; qwen2_moe: " in message
        and "; llama: Llama 3.x, SmolLM2; mistral: Mistral)" in message
    )
    assert "model.allow_untested_architecture=true" in message


def test_untested_model_type_loads_with_a_warning_when_allowed(phi3_dir, caplog):
    cfg = model_cfg(phi3_dir, allow_untested_architecture=True)
    with caplog.at_level(logging.WARNING, logger="longctx_core.model.families"):
        hf_config = check_model_config(cfg)
    assert hf_config.model_type == "phi3" and max_context(hf_config) == ORIGINAL
    assert "model type 'phi3' is not one of the tested families" in caplog.text


def test_a_rope_type_the_untested_model_refuses_is_a_one_line_error(phi3_dir):
    """Phi-3 takes only longrope: linear scaling, allowed past the family check, fails in one line."""
    cfg = model_cfg(phi3_dir, allow_untested_architecture=True, rope={"type": "linear", "factor": 2.0})
    with pytest.raises(LongctxError) as err:
        check_model_config(cfg)
    assert str(err.value).startswith("model.rope.type: linear does not fit model type 'phi3': ")
    assert "\n" not in str(err.value)


def test_all_linear_on_an_untested_model_takes_every_linear_layer_but_the_head():
    """Phi-3 fuses its projections (qkv_proj, gate_up_proj): the fallback finds them by type."""
    model = AutoModelForCausalLM.from_config(PHI3)
    assert resolve_lora_targets(model, ["all-linear"]) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]


# ---- LoRA on "all-linear" ----------------------------------------------------------------------------------


def test_all_linear_is_given_alone_and_explicit_names_pass():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.lora.target_modules=[all-linear, q_proj]"])
    assert str(err.value).startswith(
        "model.lora.target_modules: 'all-linear' already covers every projection; give it alone"
    )
    assert resolve_lora_targets(None, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]  # explicit names pass


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
def test_all_linear_adapts_the_seven_projections_and_trains(build_checkpoint, model_type):
    cfg = model_cfg(
        build_checkpoint(model_type),
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["all-linear"]},
    )
    model = load_model(cfg)
    assert resolve_lora_targets(model, ["all-linear"]) == list(PROJECTIONS)
    peft_model = add_lora(model, cfg)
    assert set(peft_model.peft_config["default"].target_modules) == set(PROJECTIONS)
    adapted = {n.partition(".lora_A.")[0] for n, _ in peft_model.named_parameters() if ".lora_A." in n}
    assert len(adapted) == len(PROJECTIONS) * 2  # 7 projections x 2 layers
    assert {n.rpartition(".")[2] for n in adapted} == set(PROJECTIONS)

    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in peft_model.named_parameters() if ".lora_B." in n}
    train_steps(peft_model, batch(), steps=1)
    now = dict(peft_model.named_parameters())
    # lora_B starts at zero, so it is what the first step must move.
    assert all(not torch.equal(p, now[n].detach()) for n, p in lora_b.items())
    assert all(torch.equal(p, now[n].detach()) for n, p in frozen.items())


def test_all_linear_finds_the_4bit_projections(build_checkpoint):
    cfg = model_cfg(build_checkpoint("llama"), quantization={"load_in_4bit": True})
    assert resolve_lora_targets(load_model(cfg), ["all-linear"]) == list(PROJECTIONS)


# ---- tied embeddings (SmolLM2-like Llama) through merge and export -----------------------------------------


@pytest.mark.parametrize("extra_trainable", [["embed_tokens"], []], ids=["trained-embeddings", "lora-only"])
def test_tied_embeddings_stay_tied_through_merge(build_checkpoint, tmp_path, extra_trainable):
    base_dir = build_checkpoint("llama", tie_word_embeddings=True)
    cfg = model_cfg(
        base_dir,
        lora={
            "r": 4,
            "alpha": 8,
            "dropout": 0.0,
            "target_modules": ["all-linear"],
            "extra_trainable": extra_trainable,
        },
    )
    peft_model = add_lora(load_model(cfg), cfg)
    train_steps(peft_model, batch(), steps=1)
    adapter = save_adapter(peft_model, tmp_path / "adapter", load_tokenizer(cfg))
    out = merge_adapter(cfg, adapter, tmp_path / "merged")

    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.config.tie_word_embeddings
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    probe = batch(seed=1)
    torch.testing.assert_close(logits_of(merged, probe), logits_of(peft_model, probe), atol=1e-5, rtol=0)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    trained_embeddings = not torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert trained_embeddings == bool(extra_trainable)


# ---- chat-template label masks on the real templates -------------------------------------------------------

LLAMA3_TOKENS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

TWO_TURNS = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome is the capital of Italy."},
]
NO_SYSTEM = TWO_TURNS[1:]
CHATML_REPLIES = ["Paris is the capital of France.<|im_end|>", "Rome is the capital of Italy.<|im_end|>"]
LLAMA3_REPLIES = ["Paris is the capital of France.<|eot_id|>", "Rome is the capital of Italy.<|eot_id|>"]


@pytest.fixture(scope="module")
def chat_tokenizer(small_dir):
    """template name -> the tiny tokenizer with that real template and the special tokens it uses."""

    def load(name: str):
        tok = AutoTokenizer.from_pretrained(small_dir)  # has <|endoftext|>, <|im_start|>, <|im_end|>
        if name == "llama3":
            tok.add_tokens(LLAMA3_TOKENS, special_tokens=True)
            tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
        tok.chat_template = (TEMPLATES / f"{name}.jinja").read_text()
        return tok

    return load


@pytest.mark.parametrize(
    "name, messages, default_header, expected",
    [
        ("qwen2_5", TWO_TURNS, None, CHATML_REPLIES),
        (
            "qwen2_5",
            NO_SYSTEM,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>",
            CHATML_REPLIES,
        ),
        ("smollm2", TWO_TURNS, None, CHATML_REPLIES),
        (
            "smollm2",
            NO_SYSTEM,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>",
            CHATML_REPLIES,
        ),
        (
            "llama3",
            TWO_TURNS,
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou answer in one short sentence.",
            LLAMA3_REPLIES,
        ),
        (
            "llama3",
            NO_SYSTEM,
            "<|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>",
            LLAMA3_REPLIES,
        ),
    ],
    ids=["qwen2_5", "qwen2_5-no-system", "smollm2", "smollm2-no-system", "llama3", "llama3-no-system"],
)
def test_real_chat_templates_label_exactly_the_replies(
    chat_tokenizer, name, messages, default_header, expected
):
    tok = chat_tokenizer(name)
    chat = tokenize_chat(tok, messages)
    assert labelled_text(tok, chat) == expected
    # What the template adds by itself (default system prompt, date header) is in the input, unlabelled.
    if default_header:
        assert default_header in chat.text
    assert tok.decode(chat.input_ids, skip_special_tokens=False) == chat.text
    assert all(lab in (IGNORE_INDEX, i) for lab, i in zip(chat.labels, chat.input_ids, strict=True))


def test_template_fixtures_are_the_exact_strings():
    """The fixtures are byte-exact copies (README: provenance): no editor newline, no header line."""
    digests = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in TEMPLATES.glob("*.jinja")}
    assert digests == {
        "llama3": "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
        "qwen2_5": "d5495a1e5db0611132a97e46a65dbb64a642a499421228b9c8b93229097fa9a4",
        "smollm2": "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
    }
