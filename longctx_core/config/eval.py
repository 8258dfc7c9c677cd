"""`eval:` section: which evaluation tasks run, on which models, over which grid.

    eval:
      models: [{name: base, kind: base}, {name: tuned, kind: adapter}]   # adapter default: <run>/train/adapter
      qa: {positions: [0, 0.5, 1], lengths: [1024, 2048]}
      passkey: {depths: [0, 0.5, 1]}
      longbench: {enabled: true, limit: 50}

Grid lengths are tokens with the chat template: the prompt for passkey, the composed sample (prompt plus the
reference answer, as in training) for qa, the sequence for perplexity. A task whose `lengths` is unset uses
`eval.length_factors` x the model's original context (minus `max_new_tokens` for generation tasks, so the
reply fits), keeping those within the RoPE-scaled context of every model; an explicit length that does not
fit is an error raised before any work starts.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, field_validator, model_validator

from longctx_core.config.base import Section
from longctx_core.config.sources import SourceConfig

# LongBench subsets this project scores (its multi-document QA and retrieval tasks, plus single-doc QA).
LONGBENCH_SUBSETS = (
    "passage_retrieval_en",
    "passage_retrieval_zh",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "dureader",
    "multifieldqa_en",
    "multifieldqa_zh",
)
_FIVE_POINTS = [0.0, 0.25, 0.5, 0.75, 1.0]


def _fractions(values: list[float]) -> list[float]:
    if not values:
        raise ValueError("must list at least one value")
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"fractions must lie in [0, 1], got {bad}")
    return values


def _lengths(values: Optional[list[int]]) -> Optional[list[int]]:
    if values is not None and (not values or min(values) < 16):
        raise ValueError("must be a non-empty list of token counts >= 16 (or unset for the default)")
    return values


Fractions = Annotated[list[float], AfterValidator(_fractions)]
Lengths = Annotated[Optional[list[int]], AfterValidator(_lengths)]


class EvalModel(Section):
    name: str = Field(description="Label of this model in tables, plots and predictions.")
    kind: Literal["base", "adapter", "merged"] = Field(
        description="base = model.name_or_path with RoPE scaling, no adapter; adapter = base + a PEFT "
        "adapter folder; merged = a full HF folder (adapter merged in)."
    )
    path: Optional[str] = Field(
        None,
        description="adapter: PEFT folder (unset = <run>/train/adapter); merged: the HF folder (required); "
        "base: must be unset.",
    )

    @model_validator(mode="after")
    def _path_matches_kind(self) -> EvalModel:
        if self.kind == "base" and self.path:
            raise ValueError(
                "path: a base model takes its checkpoint from model.name_or_path; leave it unset"
            )
        if self.kind == "merged" and not self.path:
            raise ValueError("path: is required for a merged model (the merged HF folder)")
        return self


def _default_models() -> list[EvalModel]:
    return [EvalModel(name="base", kind="base"), EvalModel(name="adapter", kind="adapter")]


class QAPositionTask(Section):
    enabled: bool = Field(True, description="Multi-document QA with the gold document at fixed positions.")
    source: Optional[SourceConfig] = Field(
        None, description="QA source of the questions and distractors; unset = data.source."
    )
    num_questions: int = Field(
        8, ge=1, description="Held-out questions; each is asked at every position x length cell."
    )
    positions: Fractions = Field(
        default_factory=lambda: list(_FIVE_POINTS),
        description="Gold document positions as fractions of the document list (0 = first, 1 = last).",
    )
    lengths: Lengths = Field(
        None,
        description="Composed sample tokens (prompt + reference answer) per cell; unset = eval.length_factors.",
    )
    pool_records: int = Field(
        2000,
        ge=2,
        description="Source records read to find held-out questions and distractor documents.",
    )


class PasskeyTask(Section):
    enabled: bool = Field(True, description="Passkey retrieval: a number hidden at a depth of a filler text.")
    depths: Fractions = Field(
        default_factory=lambda: list(_FIVE_POINTS),
        description="Where the key sits, as a fraction of the haystack (0 = start, 1 = end).",
    )
    lengths: Lengths = Field(
        None, description="Prompt tokens per cell; unset = eval.length_factors x original context."
    )
    trials: int = Field(2, ge=1, description="Different keys per depth x length cell.")
    haystack: Optional[str] = Field(
        None, description="A UTF-8 text file to hide the key in; unset = the built-in repetitive filler."
    )


class PerplexityTask(Section):
    enabled: bool = Field(True, description="Per-position loss on long documents, by context length.")
    path: Optional[str] = Field(
        None,
        description="Long text: a .txt file, a folder of .txt files, or a .jsonl with a 'text' field; "
        "unset = built-in corpus documents concatenated.",
    )
    lengths: Lengths = Field(
        None, description="Sequence lengths in tokens; unset = eval.length_factors x original context."
    )
    num_sequences: int = Field(2, ge=1, description="Sequences per length (disjoint windows of the text).")
    buckets: int = Field(8, ge=1, le=256, description="Position buckets the per-token loss is averaged over.")


class LongBenchTask(Section):
    enabled: bool = Field(False, description="LongBench subsets with LongBench's own prompts and metrics.")
    subsets: list[str] = Field(
        default_factory=lambda: list(LONGBENCH_SUBSETS[:6]),
        description="LongBench subsets (multi-document QA and passage retrieval by default).",
    )
    dataset: str = Field(
        "THUDM/LongBench",
        description="HF dataset name (one config per subset, split 'test'). The THUDM repository uses a "
        "loading script that datasets>=4 refuses; point this at a Parquet copy or use `path`.",
    )
    path: Optional[str] = Field(
        None,
        description="Local folder of <subset>.jsonl files (LongBench's data.zip layout); overrides dataset.",
    )
    limit: Optional[int] = Field(None, ge=1, description="Samples per subset (smoke runs); unset = all.")
    max_length: Optional[int] = Field(
        None,
        ge=64,
        description="Prompt tokens before middle truncation; unset = the model's scaled limit minus the "
        "subset's generation budget and the chat template.",
    )

    @field_validator("subsets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in LONGBENCH_SUBSETS]
        if unknown or not v:
            raise ValueError(f"unknown subsets {unknown}; choose from {list(LONGBENCH_SUBSETS)}")
        return v


class LitMTask(Section):
    enabled: bool = Field(False, description="Lost-in-the-Middle NQ multi-document QA files.")
    path: Optional[str] = Field(
        None,
        description="Folder with LitM's qa_data layout (<N>_total_documents/nq-open-<N>_total_documents_"
        "gold_at_<k>.jsonl.gz) or those files directly.",
    )
    num_docs: list[int] = Field(
        default_factory=lambda: [10, 20, 30], description="Document counts (settings) to evaluate."
    )
    gold_indices: Optional[list[int]] = Field(
        None, description="Gold positions (0-based) to evaluate; unset = every file found."
    )
    limit: Optional[int] = Field(None, ge=1, description="Questions per file (smoke runs); unset = all.")
    prompt: Literal["litm", "project"] = Field(
        "litm",
        description="litm = the paper's qa.prompt (comparable with its numbers); project = this project's "
        "numbered-document prompt, the format the fine-tuned model was trained on.",
    )

    @model_validator(mode="after")
    def _needs_path(self) -> LitMTask:
        if self.enabled and not self.path:
            raise ValueError("path: is required when litm.enabled is true (the LitM qa_data folder)")
        return self


class EvalConfig(Section):
    num_workers: int = Field(
        1, ge=1, description="Model actors for batch inference (one model replica each)."
    )
    max_new_tokens: int = Field(64, ge=1, description="Generation budget per reply (LongBench uses its own).")
    batch_size: int = Field(
        4, ge=1, description="Prompts per generate() call (left-padded, similar lengths)."
    )
    use_gpu: bool = Field(False, description="Each model actor asks for one GPU.")
    dtype: Optional[Literal["auto", "float32", "bfloat16", "float16"]] = Field(
        None,
        description="Weights dtype of unquantised models under evaluation; unset = model.torch_dtype. auto: "
        "bfloat16 on a GPU that has it and on CPUs with native bf16 matmuls (AVX512-BF16/AMX), else float32.",
    )
    cpu_threads: Optional[int] = Field(
        None,
        ge=1,
        description="Torch threads per model actor without a GPU; unset = the node's cores / num_workers (Ray "
        "would give a fractional-CPU actor one thread).",
    )
    quantize: Optional[bool] = Field(
        None, description="Load the base in 4-bit; unset = model.quantization.load_in_4bit."
    )
    models: list[EvalModel] = Field(
        default_factory=_default_models,
        description="Models compared side by side (default: base and base + <run>/train/adapter).",
    )
    length_factors: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 4.0],
        description="Default grid lengths: multiples of the original context (minus the reply budget), kept when "
        "within every model's scaled context.",
    )
    seed: int = Field(0, description="Seed of prompt construction (added to run.seed).")
    qa: QAPositionTask = Field(default_factory=QAPositionTask, description="Accuracy by gold position.")
    passkey: PasskeyTask = Field(default_factory=PasskeyTask, description="Needle/passkey heatmap.")
    perplexity: PerplexityTask = Field(default_factory=PerplexityTask, description="Loss by position.")
    longbench: LongBenchTask = Field(default_factory=LongBenchTask, description="LongBench subsets.")
    litm: LitMTask = Field(default_factory=LitMTask, description="Lost-in-the-Middle 10/20/30-doc files.")

    @field_validator("length_factors")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or min(v) <= 0:
            raise ValueError("must be a non-empty list of positive multiples")
        return v

    @model_validator(mode="after")
    def _tasks_and_models(self) -> EvalConfig:
        if not any(t.enabled for t in (self.qa, self.passkey, self.perplexity, self.longbench, self.litm)):
            raise ValueError(
                "qa.enabled: no evaluation task is enabled; enable at least one of "
                "eval.qa, eval.passkey, eval.perplexity, eval.longbench, eval.litm"
            )
        if not self.models:
            raise ValueError("models: list at least one model to evaluate")
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: duplicate model names {dup}")
        return self
