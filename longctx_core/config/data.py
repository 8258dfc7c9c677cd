"""`data:` section: the QA source and how long multi-document samples are composed.

Defaults are the CPU demo's values (tiny tokenizer, 1-2k-token samples); real-data presets raise
`target_tokens`, `turns_per_sample` and `num_samples`.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from longctx_core.config.base import Section
from longctx_core.config.sources import (
    ChatFormat,
    MixEntry,
    PretrainConfig,
    TextSourceConfig,
    check_field_map,
    check_mix,
)

SourceKind = Literal["builtin", "litm", "squad", "hotpotqa", "jsonl", "parquet", "hf", "chat", "text"]
RECORD_FIELDS = ("id", "question", "answers", "text", "title", "lang", "evidence")
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


class BuiltinWorldConfig(Section):
    num_records: int = Field(
        2000,
        ge=2,
        description="Entities (= documents = questions) to generate; they also form the distractor pool.",
    )
    zh_fraction: float = Field(
        0.5, ge=0, le=1, description="Share of Chinese entities (the rest are English)."
    )
    facts_per_doc: tuple[int, int] = Field((6, 9), description="[min, max] fact sentences per document.")
    filler_per_doc: tuple[int, int] = Field(
        (4, 8), description="[min, max] neutral sentences per document (lengthen documents, hold no answers)."
    )
    name_syllables: tuple[int, int] = Field(
        (2, 3),
        description="[min, max] syllables per English name word; [1, 1] gives short, often single-token names.",
    )
    full_names: bool = Field(True, description="People get a given and a family name; false = one word.")
    kinds: list[Literal["person", "city", "organisation", "product"]] = Field(
        default_factory=lambda: ["person", "city", "organisation", "product"],
        description="Entity kinds in the world.",
    )
    facts: list[str] = Field(
        default_factory=list,
        description="Fact keys documents may hold (e.g. [colour, pet, instrument]); empty = every fact of a kind. "
        "A closed set of value types, several per document, makes neighbouring documents share the asked "
        "attribute, so the answer needs the entity's name, not just the attribute type.",
    )

    @model_validator(mode="after")
    def _ranges(self) -> BuiltinWorldConfig:
        for key in ("facts_per_doc", "filler_per_doc", "name_syllables"):
            lo, hi = getattr(self, key)
            if lo < 0 or hi < lo:
                raise ValueError(f"{key}: expected [min, max] with 0 <= min <= max, got [{lo}, {hi}]")
        if self.facts_per_doc[0] < 1 or self.name_syllables[0] < 1:
            raise ValueError("facts_per_doc: min must be >= 1 (and name_syllables min >= 1)")
        if not self.kinds:
            raise ValueError("kinds: must name at least one entity kind")
        if self.facts:
            from data_gen.builtin import WorldSpec

            # unknown keys fail here, with the list of known ones
            WorldSpec(kinds=tuple(self.kinds), facts=tuple(self.facts))
        return self


class SourceConfig(Section):
    kind: SourceKind = Field(
        "builtin",
        description="Where samples come from: a QA source composed into long samples (builtin, litm, squad, "
        "hotpotqa, jsonl, parquet, hf), chat data imported as it is (chat), or raw text cut into pieces for "
        "continued pre-training (text).",
    )
    path: Optional[str] = Field(
        None,
        description="File/folder (jsonl, jsonl.gz, json, parquet) or, for kind=hf, a dataset name or local path.",
    )
    name: Optional[str] = Field(None, description="kind=hf: dataset config name (e.g. 'plain_text').")
    split: str = Field("train", description="kind=hf: which split to read.")
    field_map: dict[str, str] = Field(
        default_factory=dict,
        description="kind=jsonl/parquet/hf: record field -> column, e.g. {question: q, answers: ans, text: passage}."
        f" Fields: {', '.join(RECORD_FIELDS)}; unmapped fields use their own name as the column.",
    )
    lang: Optional[Literal["en", "zh"]] = Field(
        None, description="Language of the source; unset = detect per record."
    )
    limit: Optional[int] = Field(None, ge=1, description="Read at most this many records (smoke runs).")
    builtin: BuiltinWorldConfig = Field(
        default_factory=BuiltinWorldConfig, description="kind=builtin: shape of the synthetic world."
    )
    format: ChatFormat = Field(
        "auto",
        description="kind=chat: messages (OpenAI role/content), sharegpt (from/value), prompt_response "
        "(columns named by field_map), or auto (sniffed from the first rows; the choice is logged).",
    )
    text: TextSourceConfig = Field(
        default_factory=TextSourceConfig, description="kind=text: documents and how pieces are cut."
    )

    @field_validator("field_map")
    @classmethod
    def _known_fields(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.data.get("kind") in ("chat", "text"):
            check_field_map(info.data["kind"], v, RECORD_FIELDS)
            return v
        for key in v:
            if key not in RECORD_FIELDS:
                raise ValueError(f"{key}: unknown record field (expected one of {', '.join(RECORD_FIELDS)})")
        return v


# MixEntry and PretrainConfig (config/sources.py) hold a SourceConfig: resolve that reference now.
MixEntry.model_rebuild(_types_namespace={"SourceConfig": SourceConfig})
PretrainConfig.model_rebuild(_types_namespace={"SourceConfig": SourceConfig})


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
        description="The synthesize stage fails (after writing quarantine/ and stats.json) when the worse of two "
        "shares exceeds this: bad source rows / rows read (malformed, no evidence, unexpected errors; rows the "
        "source marks unanswerable and records longer than the smallest target are quarantined but not "
        "counted) and failed samples / samples planned. 1 = never fail.",
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
