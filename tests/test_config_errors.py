"""Every config validator, one row each: an invalid config and the one-line ConfigError it must produce.

The configs go through the project's loader (`load_config`: defaults, dotted overrides, the schema and its
validators, `_format_error`), so each row checks the message a user sees, with its full key path. Found
with `grep -n "raise ValueError\\|ConfigError(" longctx_core/config/*.py`; each row names its validator.
A row's message is exact unless it is a compiled regex (a message that quotes a library's own text).
"""

from __future__ import annotations

import re

import pytest

from longctx_core.config import ConfigError, load_config

CHAT = "{kind: chat, path: chats.jsonl}"
TEXT = "{kind: text, path: books/}"

# (id: the validator, overrides, expected message)
CASES = [
    # ---- the loader (config/__init__.py) ------------------------------------------------------------------
    (
        "override-not-a-section",
        ["run.name=a", "run.name.x=b"],
        "override 'run.name.x': 'run.name' is not a section",
    ),
    ("override-no-equals", ["train.lr"], "override 'train.lr' is not of the form dotted.key=value"),
    ("override-empty-key", ["=5"], "override '=5' is not of the form dotted.key=value"),
    (
        "override-bad-yaml",
        ["train.lr=[1"],
        re.compile(r"^override 'train\.lr=\[1': value is not valid YAML \(.+\)$"),
    ),
    (
        "unknown-key",
        ["train.num_worker=2"],
        "unknown config key 'train.num_worker' (did you mean 'train.num_workers'?)",
    ),
    (
        "wrong-type",
        ["train.max_steps=many"],
        "train.max_steps: Input should be a valid integer, unable to parse string as an integer (got 'many')",
    ),
    # ---- run: (config/run.py) ------------------------------------------------------------------------------
    ("run.name-slash", ["run.name=a/b"], "run.name: must be a plain folder name (no '/') (got 'a/b')"),
    (
        "run.name-traversal",
        ["run.name=../outside"],
        "run.name: must be a plain folder name (no '/') (got '../outside')",
    ),
    ("run.name-dotdot", ["run.name=.."], "run.name: must be a plain folder name (no '/') (got '..')"),
    ("run.name-dot", ["run.name=."], "run.name: must be a plain folder name (no '/') (got '.')"),
    ("run.name-absolute", ["run.name=/etc"], "run.name: must be a plain folder name (no '/') (got '/etc')"),
    ("run.name-empty", ["run.name="], "run.name: must be a plain folder name (no '/') (got '')"),
    (
        "run.shared_storage-relative",
        ["run.shared_storage=[/mnt/a, data]"],
        "run.shared_storage: must be absolute folders, got ['data']",
    ),
    (
        "run.log_level",
        ["run.log_level=LOUD"],
        "run.log_level: must be one of ('DEBUG', 'INFO', 'WARNING', 'ERROR') (got 'LOUD')",
    ),
    # ---- cross-section checks (config/checks.py) -------------------------------------------------------------
    (
        "target-over-max_seq_len",
        ["train.max_seq_len=2048", "data.target_tokens=[4096]"],
        "data.target_tokens: largest target 4096 exceeds train.max_seq_len 2048 (samples must fit the training "
        "length)",
    ),
    (
        "float16-on-cpu",
        ["model.torch_dtype=float16"],
        "model.torch_dtype: float16 is not supported on CPU workers (train.use_gpu is false)",
    ),
    (
        "flash-attention-on-cpu",
        ["model.attn_implementation=flash_attention_2"],
        "model.attn_implementation: flash_attention_2 needs train.use_gpu=true",
    ),
    # ---- sources, mixtures, pretrain (config/sources.py) -----------------------------------------------------
    (
        "pretrain-without-source",
        ["pretrain.enabled=true"],
        "pretrain.source: required when pretrain.enabled is true (a kind: text source)",
    ),
    (
        "pretrain-then-text-sft",
        ["pretrain.enabled=true", f"pretrain.source={TEXT}", f"data.source={TEXT}"],
        "data.source.kind: the SFT stage after pretrain: trains on assistant turns; raw text (kind: text) "
        "belongs in pretrain.source (or mix it in with data.mix)",
    ),
    (
        "pretrain-with-init-adapter",
        ["pretrain.enabled=true", f"pretrain.source={TEXT}", "train.init_adapter=/some/adapter"],
        "train.init_adapter: with pretrain.enabled the SFT stage starts from the pretrain stage's adapter; unset "
        "it, or turn pretrain off to continue from your own adapter",
    ),
    (
        "pretrain-source-not-text",
        [f"pretrain.source={CHAT}"],
        "pretrain.source.kind: continued pre-training reads raw text (kind: text), got 'chat'",
    ),
    (
        "text-suffixes-undotted",
        [f"data.source={TEXT}", "data.source.text.suffixes=[txt]"],
        "data.source.text.suffixes: must list suffixes starting with '.', got ['txt']",
    ),
    (
        "text-suffixes-empty",
        [f"data.source={TEXT}", "data.source.text.suffixes=[]"],
        "data.source.text.suffixes: must list suffixes starting with '.', got []",
    ),
    (
        "chat-field_map-unknown",
        [f"data.source={CHAT}", "data.source.field_map={question: q}"],
        "data.source.field_map.question: unknown field for kind=chat (expected one of id, lang, messages, "
        "conversations, prompt, query, response, system)",
    ),
    (
        "chat-prompt-without-response",
        [f"data.source={CHAT}", "data.source.field_map={prompt: p}"],
        "data.source.field_map.response: prompt/response rows need both 'prompt' and 'response' mapped",
    ),
    (
        "chat-response-without-prompt",
        [f"data.source={CHAT}", "data.source.field_map={response: r}"],
        "data.source.field_map.prompt: prompt/response rows need both 'prompt' and 'response' mapped",
    ),
    (
        "text-field_map-unknown",
        [f"data.source={TEXT}", "data.source.field_map={question: q}"],
        "data.source.field_map.question: unknown field for kind=text (expected one of id, lang, text)",
    ),
    (
        "qa-field_map-unknown",
        ["data.source.field_map={passage: p}"],
        "data.source.field_map.passage: unknown record field (expected one of id, question, answers, text, "
        "title, lang, evidence)",
    ),
    (
        "mix-shares-sum",
        [f"data.mix=[{{share: 0.6, source: {CHAT}}}, {{share: 0.5, source: {TEXT}}}]"],
        "data.mix: shares sum to 1.1, which leaves nothing for the main data.source (must be < 1)",
    ),
    (
        "mix-qa-source",
        ["data.mix=[{share: 0.2, source: {kind: squad, path: s.jsonl}}]"],
        "data.mix.0.source.kind: only chat and text sources can be mixed in, got 'squad' (QA sources are "
        "composed by the main data.source)",
    ),
    (
        "mix-name-twice",
        [f"data.mix=[{{name: a, share: 0.1, source: {CHAT}}}, {{name: a, share: 0.1, source: {TEXT}}}]"],
        "data.mix.1.name: 'a' is used twice (names label stats and losses)",
    ),
    (
        "mix-name-of-the-main-source",
        [f"data.mix=[{{name: builtin, share: 0.1, source: {CHAT}}}]"],
        "data.mix.0.name: 'builtin' is used twice (names label stats and losses)",
    ),
    # ---- data: (config/data.py) ------------------------------------------------------------------------------
    (
        "answer_styles-unknown",
        ["data.answer_styles={bogus: 1}"],
        "data.answer_styles.bogus: unknown style (expected one of paraphrase, quote, plain, unanswerable)",
    ),
    (
        "answer_styles-negative",
        ["data.answer_styles={paraphrase: 1, plain: -1}"],
        "data.answer_styles.plain: weight must be >= 0, got -1.0",
    ),
    (
        "answer_styles-all-zero",
        ["data.answer_styles={plain: 0}"],
        "data.answer_styles: at least one style needs a positive weight",
    ),
    (
        "builtin-range-reversed",
        ["data.source.builtin.facts_per_doc=[5, 2]"],
        "data.source.builtin.facts_per_doc: expected [min, max] with 0 <= min <= max, got [5, 2]",
    ),
    (
        "builtin-no-facts",
        ["data.source.builtin.facts_per_doc=[0, 2]"],
        "data.source.builtin.facts_per_doc: min must be >= 1 (and name_syllables min >= 1)",
    ),
    (
        "builtin-no-syllables",
        ["data.source.builtin.name_syllables=[0, 1]"],
        "data.source.builtin.facts_per_doc: min must be >= 1 (and name_syllables min >= 1)",
    ),
    (
        "builtin-no-kinds",
        ["data.source.builtin.kinds=[]"],
        "data.source.builtin.kinds: must name at least one entity kind",
    ),
    (
        "builtin-unknown-fact",
        ["data.source.builtin.facts=[flavour]"],
        re.compile(r"^data\.source\.builtin\.facts: unknown for kinds \(.*\): \['flavour'\]$"),
    ),
    (
        "target_tokens-range-reversed",
        ["data.target_tokens={min: 2000, max: 1000}"],
        "data.target_tokens.max: 1000 is smaller than min 2000",
    ),
    (
        "target_tokens-range-extra-key",
        ["data.target_tokens={min: 200, max: 300, mid: 250}"],
        "data.target_tokens: expected a list of lengths or {min, max}",
    ),
    (
        "target_tokens-range-too-short",
        ["data.target_tokens={min: 100, max: 300}"],
        "data.target_tokens: min and max must be integers >= 128, got {'min': 100, 'max': 300}",
    ),
    (
        "target_tokens-not-a-list",
        ["data.target_tokens=long"],
        "data.target_tokens: expected a list of lengths or {min, max} (got 'long')",
    ),
    (
        "target_tokens-empty",
        ["data.target_tokens=[]"],
        "data.target_tokens: must list at least one integer length",
    ),
    (
        "target_tokens-too-short",
        ["data.target_tokens=[1024, 100]"],
        "data.target_tokens: every target must be >= 128 tokens, got 100",
    ),
    (
        "source-without-path",
        ["data.source.kind=squad"],
        "data.source.path: is required when source.kind is 'squad'",
    ),
    (
        "turns-reversed",
        ["data.turns_per_sample=[3, 1]"],
        "data.turns_per_sample: expected [min, max] with 1 <= min <= max, got [3, 1]",
    ),
    (
        "eval_samples-without-held-out",
        ["data.eval_samples=4", "data.eval_fraction=0"],
        "data.eval_samples: needs eval_fraction > 0 (no questions are held out)",
    ),
    # ---- eval: (config/eval.py) ------------------------------------------------------------------------------
    ("positions-empty", ["eval.qa.positions=[]"], "eval.qa.positions: must list at least one value"),
    (
        "positions-outside",
        ["eval.passkey.depths=[0.5, 1.5]"],
        "eval.passkey.depths: fractions must lie in [0, 1], got [1.5]",
    ),
    (
        "lengths-too-short",
        ["eval.qa.lengths=[8]"],
        "eval.qa.lengths: must be a non-empty list of token counts >= 16 (or unset for the default)",
    ),
    (
        "lengths-empty",
        ["eval.perplexity.lengths=[]"],
        "eval.perplexity.lengths: must be a non-empty list of token counts >= 16 (or unset for the default)",
    ),
    (
        "base-model-with-path",
        ["eval.models=[{name: b, kind: base, path: /x}]"],
        "eval.models.0.path: a base model takes its checkpoint from model.name_or_path; leave it unset",
    ),
    (
        "merged-model-without-path",
        ["eval.models=[{name: m, kind: merged}]"],
        "eval.models.0.path: is required for a merged model (the merged HF folder)",
    ),
    (
        "longbench-unknown-subset",
        ["eval.longbench.subsets=[hotpotqa, nope]"],
        re.compile(r"^eval\.longbench\.subsets: unknown subsets \['nope'\]; choose from \['.*'\]$"),
    ),
    (
        "litm-without-path",
        ["eval.litm.enabled=true"],
        "eval.litm.path: is required when litm.enabled is true (the LitM qa_data folder)",
    ),
    (
        "length_factors-not-positive",
        ["eval.length_factors=[1, 0]"],
        "eval.length_factors: must be a non-empty list of positive multiples",
    ),
    (
        "no-task",
        ["eval.qa.enabled=false", "eval.passkey.enabled=false", "eval.perplexity.enabled=false"],
        "eval.qa.enabled: no evaluation task is enabled; enable at least one of eval.qa, eval.passkey, "
        "eval.perplexity, eval.longbench, eval.litm",
    ),
    ("no-models", ["eval.models=[]"], "eval.models: list at least one model to evaluate"),
    (
        "duplicate-models",
        ["eval.models=[{name: a, kind: base}, {name: a, kind: adapter}]"],
        "eval.models: duplicate model names ['a']",
    ),
    # ---- model: (config/model.py) ----------------------------------------------------------------------------
    (
        "tiny-qwen-vocab-size",
        ["model.tiny={vocab: qwen, vocab_size: 1000}"],
        "model.tiny.vocab_size: is fixed at 151936 with vocab=qwen (got 1000)",
    ),
    (
        "tiny-hidden-heads",
        ["model.tiny.hidden_size=130"],
        "model.tiny.hidden_size: must be divisible by num_attention_heads",
    ),
    (
        "tiny-heads-kv",
        ["model.tiny.num_key_value_heads=3"],
        "model.tiny.num_attention_heads: must be divisible by num_key_value_heads",
    ),
    (
        "rope-factor-below-one",
        ["model.rope.type=linear", "model.rope.target_max_position_embeddings=1024", "model.rope.factor=0.5"],
        "model.rope.factor: must be >= 1 (RoPE scaling only extends the context) (got 0.5)",
    ),
    (
        "rope-factor-without-type",
        ["model.rope.factor=2"],
        "model.rope.factor: is set but type is 'none' (choose linear, dynamic or yarn)",
    ),
    (
        "rope-beta-without-yarn",
        ["model.rope.type=linear", "model.rope.factor=2", "model.rope.beta_fast=32"],
        "model.rope.beta_fast: only used with type=yarn (type is 'linear')",
    ),
    (
        "rope-betas-order",
        ["model.rope.type=yarn", "model.rope.factor=2", "model.rope.beta_fast=1", "model.rope.beta_slow=2"],
        "model.rope.beta_fast: must be greater than beta_slow (1 <= 2)",
    ),
    (
        "rope-target-without-scaling",
        ["model.rope.original_max_position_embeddings=512", "model.rope.target_max_position_embeddings=1024"],
        "model.rope.type: target_max_position_embeddings=1024 exceeds the original context 512 but no RoPE "
        "scaling is set (choose linear, dynamic or yarn)",
    ),
    (
        "rope-type-without-size",
        ["model.rope.type=dynamic"],
        "model.rope.factor: type=dynamic needs factor or target_max_position_embeddings",
    ),
    (
        "rope-target-shorter",
        [
            "model.rope.original_max_position_embeddings=512",
            "model.rope.type=linear",
            "model.rope.target_max_position_embeddings=256",
        ],
        "model.rope.target_max_position_embeddings: 256 is shorter than the original context 512; nothing to "
        "extend (use type=none)",
    ),
    (
        "rope-factor-short-of-target",
        [
            "model.rope.type=linear",
            "model.rope.factor=2",
            "model.rope.original_max_position_embeddings=512",
            "model.rope.target_max_position_embeddings=4096",
        ],
        "model.rope.factor: 2 x original context 512 = 1024 does not reach target_max_position_embeddings=4096",
    ),
    (
        "rope-against-the-tiny-checkpoint",
        ["model.rope.type=yarn", "model.rope.factor=2", "model.rope.target_max_position_embeddings=4096"],
        "model.rope.factor: 2 x original context 512 = 1024 does not reach target_max_position_embeddings=4096",
    ),
    (
        "rope-yarn-on-a-real-checkpoint",
        ["model.name_or_path=some-org/some-model", "model.rope.type=yarn", "model.rope.factor=4"],
        "model.rope.original_max_position_embeddings: required with rope.type=yarn on a real checkpoint (its "
        "pretraining context, e.g. 32768 for Qwen2.5)",
    ),
    (
        "lora-no-targets",
        ["model.lora.target_modules=[]"],
        "model.lora.target_modules: must name at least one module",
    ),
    (
        "lora-all-linear-and-more",
        ["model.lora.target_modules=[all-linear, q_proj]"],
        "model.lora.target_modules: 'all-linear' already covers every projection; give it alone, not with "
        "['q_proj']",
    ),
    (
        "lora-extra-trainable-twice",
        ["model.lora.extra_trainable=[q_proj, norm]"],
        "model.lora.extra_trainable: ['q_proj'] are already LoRA target_modules",
    ),
    # ---- train: (config/train.py) ----------------------------------------------------------------------------
    (
        "warmup-not-below-max_steps",
        ["train.max_steps=5", "train.warmup_steps=5"],
        "train.warmup_steps: 5 is not below max_steps=5 (no step would run at the peak learning rate)",
    ),
    (
        "accelerator-resource-with-gpu",
        ["train.use_gpu=true", "train.accelerator_resource=longctx_sim_gpu"],
        "train.accelerator_resource: 'longctx_sim_gpu' stands in for a GPU on CPU workers; set use_gpu=false "
        "(or accelerator_resource=GPU for real GPUs)",
    ),
    (
        "adam-betas",
        ["train.adam_betas=[1.0, 0.9]"],
        "train.adam_betas: each must be in [0, 1), got [1.0, 0.9]",
    ),
]


@pytest.mark.parametrize("overrides, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config_gives_its_one_line_error(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "\n" not in message
    if isinstance(expected, re.Pattern):
        assert expected.match(message), message
    else:
        assert message == expected


# Rows whose offence is their last two overrides together (each alone is valid, or fails otherwise).
JOINT = {"rope-target-shorter", "rope-yarn-on-a-real-checkpoint"}
LOADER = {"override-not-a-section", "override-no-equals", "override-empty-key", "override-bad-yaml"}


def test_each_row_fails_for_its_own_reason():
    """A row's other overrides (all but its last, the offending one; the last two for JOINT rows) form a
    valid config, so the error comes from the value under test, not from its context. The loader's own rows
    are malformed on purpose."""
    for name, overrides, _ in CASES:
        if name not in LOADER:
            load_config(None, overrides[: -2 if name in JOINT else -1])  # raises if the context is invalid


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, re.compile(r"^config file not found: .*missing\.yaml$")),
        ("train: [1\n", re.compile(r"^.*bad\.yaml: not valid YAML: .+$")),
        ("- train\n- eval\n", re.compile(r"^.*bad\.yaml: top level must be a mapping of sections$")),
    ],
    ids=["missing", "not-yaml", "not-a-mapping"],
)
def test_preset_file_errors(tmp_path, text, expected):
    path = tmp_path / ("missing.yaml" if text is None else "bad.yaml")
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected.match(str(info.value)), str(info.value)
