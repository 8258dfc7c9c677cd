"""`data:` section: the QA source and how long multi-document samples are composed."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from longctx_core.config.base import Section

SourceKind = Literal["builtin", "litm", "squad", "hotpotqa", "jsonl", "parquet", "hf"]


class SourceConfig(Section):
    kind: SourceKind = Field("builtin", description="Where QA records come from.")
    path: Optional[str] = Field(
        None,
        description="File/folder (jsonl, jsonl.gz, parquet) or, for kind=hf, a dataset name or local path.",
    )
    name: Optional[str] = Field(None, description="kind=hf: dataset config name (e.g. 'plain_text').")
    split: str = Field("train", description="kind=hf/squad/hotpotqa: which split to read.")
    field_map: dict[str, str] = Field(
        default_factory=dict,
        description="kind=jsonl/parquet/hf: record field -> column, e.g. {question: q, answers: ans, text: passage}.",
    )
    lang: Optional[Literal["en", "zh"]] = Field(
        None, description="Language of the source; unset = detect per record."
    )
    limit: Optional[int] = Field(None, ge=1, description="Read at most this many records (smoke runs).")


class DataConfig(Section):
    num_samples: int = Field(64, ge=1, description="Long samples to synthesize.")
    num_workers: int = Field(2, ge=1, description="Ray Data synthesis actors (one tokenizer each).")
    source: SourceConfig = Field(default_factory=SourceConfig, description="QA source.")

    @model_validator(mode="after")
    def _source_needs_path(self) -> DataConfig:
        if self.source.kind != "builtin" and not self.source.path:
            raise ValueError(f"source.path: is required when source.kind is '{self.source.kind}'")
        return self
