"""`data:` section: the QA source and how long multi-document samples are composed.

Defaults are the CPU demo's values (tiny tokenizer, 1-2k-token samples); real-data presets raise
`target_tokens`, `turns_per_sample` and `num_samples`.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator, model_validator

from longctx_core.config.base import Section
from longctx_core.config.sources import (
    MixEntry,
    SourceConfig,
    check_mix,
)

STYLES = ("paraphrase", "quote", "plain", "unanswerable")


def check_style_mix(
    mix: dict[str, float], allowed: tuple[str, ...] = STYLES, where: str = ""
) -> dict[str, float]:
    """Validate an answer-style -> weight mix; returns it. `where` prefixes the key path of errors ("arm.")."""
    for key, weight in mix.items():
        if key not in allowed:
            raise ValueError(f"{where}{key}: unknown style (expected one of {', '.join(allowed)})")
        if weight < 0:
            raise ValueError(f"{where}{key}: weight must be >= 0, got {weight}")
    if sum(mix.values()) <= 0:
        key = f"{where.rstrip('.')}: " if where else ""
        raise ValueError(f"{key}at least one style needs a positive weight")
    return mix


class TokenRange(Section):
    min: int = Field(..., ge=128, description="Smallest target length in tokens.")
    max: int = Field(..., ge=128, description="Largest target length in tokens.")

    @model_validator(mode="after")
    def _order(self) -> TokenRange:
        if self.max < self.min:
            raise ValueError(f"max: {self.max} is smaller than min {self.min}")
        return self


class GoldPositionConfig(Section):
    kind: Literal["uniform", "middle", "fixed"] = Field(
        "uniform",
        description="Where gold documents go: uniform over slots; middle = uniform mixed with extra weight on "
        "the middle half (where models fail); fixed = at `fixed` (evaluation sweeps).",
    )
    middle_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="kind=middle: share of gold documents drawn from the middle half [.25, .75].",
    )
    fixed: float = Field(0.5, ge=0, le=1, description="kind=fixed: relative position, 0 = first, 1 = last.")


class DataConfig(Section):
    num_samples: int = Field(64, ge=1, description="Long samples to synthesize (training split).")
    num_workers: int = Field(2, ge=1, description="Ray Data synthesis actors (one tokenizer each).")
    source: SourceConfig = Field(default_factory=SourceConfig, description="QA source.")
    target_tokens: Union[list[int], TokenRange] = Field(
        default_factory=lambda: TokenRange(min=1024, max=2048),
        description="Sample length in tokens of the configured tokenizer: a list (one drawn per sample) or "
        "{min, max} (uniform). Samples land in [target - max(64, 3% of target), target].",
    )
    turns_per_sample: tuple[int, int] = Field(
        (2, 4), description="[min, max] QA turns per sample (the seed paper used ~5 over ~30 documents)."
    )
    answer_styles: dict[str, float] = Field(
        default_factory=lambda: {"paraphrase": 0.9, "unanswerable": 0.1},
        description="Answer-style mix (weights): paraphrase (quote the evidence naming its document, then "
        "answer), quote (the same without the document number), plain (answer only: the ablation twin), "
        "unanswerable (gold removed, the answer says so).",
    )
    gold_position: GoldPositionConfig = Field(
        default_factory=GoldPositionConfig, description="Gold document placement."
    )
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of QUESTIONS held out for evaluation (hash of the record id)."
    )
    eval_samples: int = Field(
        16,
        ge=0,
        description="Held-out samples composed into data/eval/ (0 = none; evaluate may compose its own).",
    )
    samples_per_shard: int = Field(
        256, ge=1, description="Rows per Parquet file (a fixed layout keeps the output byte-identical)."
    )
    batch_size: int = Field(4, ge=1, description="Samples per map_batches call on a synthesis actor.")
    mix: list[MixEntry] = Field(
        default_factory=list,
        description="Further sources (kind chat or text) mixed in by share of training tokens: "
        "[{name, share, source: {...}}]; the main `source` gets the rest and decides the size.",
    )
    max_bad_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="The data stage fails (after writing quarantine/ and stats.json) when, for any one source, "
        "bad rows / rows read or failed samples / samples planned exceeds this (rows quarantined only as "
        "unanswerable or too long for the targets or train.max_seq_len do not count; 1 = never fail).",
    )

    @field_validator("target_tokens", mode="before")
    @classmethod
    def _targets(cls, v):
        # Checked here rather than left to the union, whose error would name the list branch.
        if isinstance(v, dict):
            unknown = set(v) - {"min", "max"}
            if unknown or not {"min", "max"} <= set(v):
                raise ValueError("expected a list of lengths or {min, max}")
            if not all(isinstance(v[k], int) and v[k] >= 128 for k in ("min", "max")):
                raise ValueError(f"min and max must be integers >= 128, got {v}")
            if v["max"] < v["min"]:
                raise ValueError(f"max: {v['max']} is smaller than min {v['min']}")
            return TokenRange(**v)
        if isinstance(v, int):
            v = [v]
        if not isinstance(v, (list, tuple, TokenRange)):
            raise ValueError("expected a list of lengths or {min, max}")
        if isinstance(v, (list, tuple)):
            if not v or not all(isinstance(x, int) for x in v):
                raise ValueError("must list at least one integer length")
            if min(v) < 128:
                raise ValueError(f"every target must be >= 128 tokens, got {min(v)}")
            return list(v)
        return v

    @field_validator("answer_styles")
    @classmethod
    def _styles(cls, v: dict[str, float]) -> dict[str, float]:
        return check_style_mix(v)

    @model_validator(mode="after")
    def _checks(self) -> DataConfig:
        if self.source.kind != "builtin" and not self.source.path:
            raise ValueError(f"source.path: is required when source.kind is '{self.source.kind}'")
        lo, hi = self.turns_per_sample
        if lo < 1 or hi < lo:
            raise ValueError(f"turns_per_sample: expected [min, max] with 1 <= min <= max, got [{lo}, {hi}]")
        if self.eval_samples > 0 and self.eval_fraction <= 0:
            raise ValueError("eval_samples: needs eval_fraction > 0 (no questions are held out)")
        check_mix(self.mix, self.source.kind, self.source.kind)
        return self

    def target_bounds(self) -> tuple[int, int]:
        """(smallest, largest) target length."""
        t = self.target_tokens
        return (min(t), max(t)) if isinstance(t, list) else (t.min, t.max)
