"""The repro's config: the product config (`longctx_core.config.Config`) plus a `repro:` section.

    cfg = load_repro_config("ray_jobs/configs/repro_cpu.yaml", ["repro.only_base=true"])

    repro:
      base: {context: 256, max_steps: 3000, target_accuracy: 0.85}    # the cached toy base chat model
      seeds: [0, 1]                                                    # QLoRA arms per seed
      arms: {paraphrase: {paraphrase: 1.0}, plain: {plain: 1.0}}   # name -> data.answer_styles

The section lives here, not in the product schema: the reproduction is an experiment built on the library,
so a product preset given `repro:` fails as an unknown key. The toy world (single-token names, 1-2 sentence
documents) is `data.source.builtin`; the base, the QLoRA arms and the evaluation all read the same world, so
one place defines it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, field_validator, model_validator

from longctx_core.config import Config, ConfigError, load_config
from longctx_core.config.base import Section
from longctx_core.config.data import check_style_mix

logger = logging.getLogger(__name__)


def _records_range(v: tuple[int, int]) -> tuple[int, int]:
    lo, hi = v
    if lo < 1 or hi < lo:
        raise ValueError(f"expected [min, max] with 1 <= min <= max, got [{lo}, {hi}]")
    return v


# [min, max] questions per base sample, and the answer-style mix of base samples (both base stages)
RecordsRange = Annotated[tuple[int, int], AfterValidator(_records_range)]
BaseStyleMix = Annotated[
    dict[str, float], AfterValidator(lambda v: check_style_mix(v, allowed=("paraphrase", "quote", "plain")))
]


class ToyBaseConfig(Section):
    """The toy base chat model: full fine-tuning of a small Qwen2 at short context (a cached build step)."""

    context: int = Field(
        256,
        ge=64,
        description="L0: the base's context (max_position_embeddings); base samples fill up to it.",
    )
    min_tokens: int = Field(
        128, ge=64, description="Shortest base sample (curriculum start: few documents per sample)."
    )
    curriculum_steps: int = Field(
        300,
        ge=0,
        description="Steps over which the longest sample grows from min_tokens to L0 (2 -> ~8 documents).",
    )
    recall_warmup_steps: int = Field(
        0,
        ge=0,
        description="Steps of associative recall on random tokens (k1 v1 ... kn vn, then the keys again, each "
        "followed by its value) before the QA steps: they form the find-the-key-and-copy heads lookup needs.",
    )
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary trained on the toy world's texts.")
    hidden_size: int = Field(256, ge=16, description="Qwen2Config.hidden_size.")
    intermediate_size: int = Field(704, ge=16, description="Qwen2Config.intermediate_size.")
    num_hidden_layers: int = Field(4, ge=1, description="Qwen2Config.num_hidden_layers.")
    num_attention_heads: int = Field(4, ge=1, description="Qwen2Config.num_attention_heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Qwen2Config.num_key_value_heads.")
    worlds: int = Field(
        12,
        ge=1,
        description="Training worlds (builtin seeds): names recur with new facts, so lookup beats recall.",
    )
    records_per_world: int = Field(
        600, ge=8, description="Entities per training world (single-syllable names run out near 800)."
    )
    records_per_sample: RecordsRange = Field(
        (1, 3), description="[min, max] questions (turns) per base sample; more turns = more answer tokens."
    )
    answer_styles: BaseStyleMix = Field(
        default_factory=lambda: {"paraphrase": 0.5, "plain": 0.5},
        description="Answer-style mix of base samples (the base answers with and without quotes).",
    )
    gold_beta: Optional[float] = Field(
        None,
        gt=0,
        description="Unset: base samples place the gold document uniformly (the composer's default). A value a: "
        "its position (fraction of the document list) is drawn from Beta(a, a); a < 1 is U-shaped, the bias of "
        "natural text that evidence sits near the start and the end, which makes a base lose the middle.",
    )
    gold_beta_scope: Literal["every", "first"] = Field(
        "every",
        description="Which gold documents of a multi-question base sample gold_beta places: every one (golds "
        "fill the list from its edges inward) or only the first (the rest uniform; with 2-6 questions among ~8 "
        "documents that left most golds unbiased). Ignored while gold_beta is unset.",
    )
    shuffle_values: bool = Field(
        False,
        description="Rename each base sample's values (colours, ...) by a fresh permutation of their set, in its "
        "documents, questions and answers alike: a name's value is then new in every sample, so remembering "
        "facts from the 12 worlds predicts nothing and only the lookup lowers the loss.",
    )
    name_read_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of an auxiliary attention loss: the mean over name_read_scope's reads of -log the "
        "attention a head pays where a lookup reads. A pretrained model arrives with heads that look entities "
        "up; this builds the toy base's in the layers the lookup needs (repro/README.md has the runs behind it). "
        "0: off.",
    )
    name_read_scope: Literal["question", "documents", "lookup"] = Field(
        "question",
        description="The reads name_read_weight supervises (repro.base.samples.name_reads), from each value slot "
        "of a reply (the token before a value it states): 'question', layer 0 head 0 to the asked entity's "
        "name; 'documents' adds layer 0 head 1 from each document's value to its name; 'lookup' adds layer 1 "
        "head 0 from each value slot to the asked document's value.",
    )
    batch_size: int = Field(16, ge=1, description="Samples per optimizer step.")
    max_steps: int = Field(4000, ge=1, description="Upper bound on optimizer steps.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (cosine decay to 10%).")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    prompt_loss_weight: float = Field(
        0.5, ge=0, description="Weight of the LM loss on prompt tokens (measured to speed up learning)."
    )
    eval_every: int = Field(250, ge=1, description="Steps between validation checks (greedy, fresh world).")
    eval_questions: int = Field(64, ge=4, description="Validation questions per check.")
    target_accuracy: float = Field(
        0.85, ge=0, le=1, description="Stop once validation exact match reaches this (the issue asks >= 0.8)."
    )
    time_budget_min: float = Field(
        90.0,
        gt=0,
        description="Minutes one build run may take; below target it stops there (reported, not hidden) and the "
        "next run trains on from its checkpoint. Not part of the recipe hash.",
    )
    threads: int = Field(2, ge=1, description="torch threads (1 per process when two trainings share cores).")
    pack: bool = Field(
        True,
        description="Pack a step's samples into rows of `context` tokens (first-fit-decreasing), kept apart by "
        "the block-diagonal mask transformers builds from restarting positions: the padded batch's loss on "
        "fewer slot tokens. Speed only: not part of the recipe hash.",
    )
    prefetch: int = Field(
        2,
        ge=0,
        description="Steps whose samples a worker process composes ahead while the current step trains (0: "
        "composed in line). Speed only: not part of the recipe hash.",
    )
    seed: int = Field(0, description="Seed of weights, tokenizer corpus, worlds and sample order.")

    @model_validator(mode="after")
    def _checks(self) -> ToyBaseConfig:
        if self.min_tokens > self.context:
            raise ValueError(f"min_tokens: {self.min_tokens} exceeds context {self.context}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size: must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads: must be divisible by num_key_value_heads")
        return self


class LongPretrainConfig(Section):
    """The base's long-context pre-training, as a model vendor's: the finished L0 base with `model.rope`
    applied (YaRN x repro.length_factor), fully fine-tuned on base samples up to factor x L0 whose gold
    documents sit where natural text puts evidence (Beta(gold_beta, gold_beta): mostly at the start and the
    end). Cached beside the L0 base; the arms start from it and the evaluation's "base" is it."""

    steps: int = Field(
        0, ge=0, description="Optimizer steps (0: no long pre-training; the arms start from the L0 base)."
    )
    gold_beta: Optional[float] = Field(
        0.3,
        gt=0,
        description="Every gold document's position (fraction of the list) ~ Beta(a, a); a < 1 is U-shaped. "
        "Unset: uniform (a long pre-training without the bias, the control).",
    )
    min_tokens: Optional[int] = Field(
        None, ge=64, description="Shortest sample (unset: L0); lengths are drawn up to factor x L0."
    )
    records_per_sample: RecordsRange = Field(
        (1, 3), description="[min, max] questions per sample: few golds among many distractors."
    )
    answer_styles: BaseStyleMix = Field(
        default_factory=lambda: {"paraphrase": 0.5, "plain": 0.5},
        description="Answer-style mix (as the L0 base's).",
    )
    batch_size: int = Field(16, ge=1, description="Samples per optimizer step.")
    lr: float = Field(3e-4, gt=0, description="Peak AdamW learning rate (warm-up, cosine to 10%).")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up steps.")
    eval_every: int = Field(50, ge=1, description="Steps between validation checks (and checkpoints).")
    eval_questions: int = Field(48, ge=4, description="Validation questions per check (its own placement).")
    time_budget_min: float = Field(
        30.0,
        gt=0,
        description="Minutes one run may take; a run stopped early trains on from its checkpoint next time. "
        "Not part of the recipe hash.",
    )


def _default_arms() -> dict[str, dict[str, float]]:
    # Pure styles: the toy base never saw unanswerable samples, and the claim is about the answer style.
    return {"paraphrase": {"paraphrase": 1.0}, "plain": {"plain": 1.0}}


class ReproSection(Section):
    """The `repro:` section: the toy base, the extension factor, the QLoRA arms and their seeds."""

    only_base: bool = Field(False, description="Build (or reuse) the cached toy base chat model and stop.")
    base: ToyBaseConfig = Field(default_factory=ToyBaseConfig, description="The toy base chat model.")
    long_pretrain: LongPretrainConfig = Field(
        default_factory=LongPretrainConfig,
        description="The base's long-context pre-training at factor x L0 (off at steps 0).",
    )
    allow_weak_base: bool = Field(
        False,
        description="Run the arms even when the toy base missed base.target_accuracy (accuracy by position of "
        "a base that cannot answer at L0 means little; the report says so either way).",
    )
    skip_weak_bases: bool = Field(
        False,
        description="With several seeds (repro.base_per_seed): leave out the seeds whose base missed "
        "base.target_accuracy (taken as built, not trained on) and run the arms of the others; the report "
        "names each seed left out and what its base's diagnosis says went wrong.",
    )
    length_factor: int = Field(
        4, ge=2, description="RoPE extension factor (YaRN): arms train and evaluate at factor x L0."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        description="QLoRA seeds per arm (run.seed of each arm's synthesis and training): spread across seeds.",
    )
    base_per_seed: bool = Field(
        True,
        description="Each seed gets its own toy base (repro.base.seed = the seed, trained without that seed's "
        "held-out questions only), so the seeds' spread includes the base build's; false: one base for every "
        "seed (built without any seed's held-out questions).",
    )
    arms: dict[str, dict[str, float]] = Field(
        default_factory=_default_arms,
        description="QLoRA arms: name -> data.answer_styles. Arms of one seed share records, budget and seed.",
    )
    bootstrap: int = Field(
        1000, ge=100, description="Bootstrap resamples (over questions) for the 95% intervals in the report."
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError("must list at least one seed, without repeats")
        return v

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        if not v:
            raise ValueError("must define at least one arm")
        for name, mix in v.items():
            if name == "base" or not name.isidentifier():
                raise ValueError(f"{name}: arm names are identifiers other than 'base'")
            check_style_mix(mix, where=f"{name}.")
        return v


class ReproConfig(Config):
    """The product config plus `repro:`; what `python -m ray_jobs.repro` loads. The stages it drives get
    product configs without the section (`repro.arms.stage_config`)."""

    repro: ReproSection = Field(
        default_factory=ReproSection, description="Toy-scale reproduction (make repro)."
    )


def load_repro_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ReproConfig:
    """`longctx_core.config.load_config` with the `repro:` section; raises the same one-line ConfigError."""
    return load_config(path, overrides, schema=ReproConfig)


def check_repro_config(cfg: ReproConfig) -> None:
    """Contradictions between `repro` and the other sections, as one-line ConfigErrors naming the key;
    cheap (no model, no Ray), so a bad preset fails in a second."""
    from repro.base.worlds import world_records

    b, factor = cfg.repro.base, cfg.repro.length_factor
    rope = cfg.model.rope
    if cfg.data.source.kind != "builtin":
        raise ConfigError("data.source.kind: the repro's toy world is 'builtin'")
    if rope.type == "none" or rope.original_max_position_embeddings != b.context:
        raise ConfigError(
            f"model.rope.original_max_position_embeddings: must equal repro.base.context ({b.context}) with a "
            "scaling type set (the base is trained at L0 and extended from there)"
        )
    if (rope.factor or 0) != factor and rope.target_max_position_embeddings != factor * b.context:
        raise ConfigError(f"model.rope.factor: must be repro.length_factor ({factor})")
    if cfg.data.target_bounds()[1] > factor * b.context:
        raise ConfigError(f"data.target_tokens: longer than repro.length_factor x L0 = {factor * b.context}")
    long = cfg.repro.long_pretrain
    if long.min_tokens is not None and long.min_tokens > factor * b.context:
        raise ConfigError(
            f"repro.long_pretrain.min_tokens: {long.min_tokens} exceeds repro.length_factor x L0 = "
            f"{factor * b.context}"
        )
    if cfg.repro.skip_weak_bases and cfg.repro.allow_weak_base:
        raise ConfigError(
            "repro.skip_weak_bases: contradicts repro.allow_weak_base (leave weak bases out or use them)"
        )
    if cfg.repro.skip_weak_bases and not cfg.repro.base_per_seed:
        raise ConfigError(
            "repro.skip_weak_bases: needs repro.base_per_seed (one shared base leaves nothing to skip to)"
        )
    if float(factor) not in [float(f) for f in cfg.eval.length_factors]:
        raise ConfigError(f"eval.length_factors: must include repro.length_factor ({factor})")
    qa = cfg.eval.qa
    for seed in cfg.repro.seeds:
        held = _held_out_count(world_records(cfg, seed, qa.pool_records), cfg.data.eval_fraction, seed)
        if held < qa.num_questions:
            raise ConfigError(
                f"eval.qa.num_questions: {qa.num_questions} asked, the world of seed {seed} holds out {held} "
                "(raise data.eval_fraction or data.source.builtin.num_records)"
            )


def _held_out_count(records, eval_fraction: float, seed: int) -> int:
    from longctx_core.data.split import split_of

    return sum(split_of(r.id, eval_fraction, seed) == "eval" for r in records)


def base_seeds(cfg: ReproConfig) -> list[int]:
    """The seeds that build a toy base: every seed with `repro.base_per_seed`, else the first (shared)."""
    return list(cfg.repro.seeds) if cfg.repro.base_per_seed else list(cfg.repro.seeds[:1])


def seed_config(cfg: ReproConfig, seed: int) -> ReproConfig:
    """The single-seed reproduction of `seed` within `cfg`: with `repro.base_per_seed` its own toy base
    (`repro.base.seed` = seed) held out from the evaluation split of that seed alone; otherwise `cfg`."""
    if not cfg.repro.base_per_seed:
        return cfg
    repro = cfg.repro.model_copy(
        update={"seeds": [seed], "base": cfg.repro.base.model_copy(update={"seed": seed})}
    )
    return cfg.model_copy(update={"repro": repro, "run": cfg.run.model_copy(update={"seed": seed})})
