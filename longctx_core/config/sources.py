"""Config pieces for data users bring: chat imports, raw text for continued pre-training, mixtures, and the
optional continued pre-training stage that runs before SFT.

    data:
      source: {kind: chat, path: my_chats/, format: auto}         # the main source gets the rest of the tokens
      mix:
        - {name: sharegpt, share: 0.3, source: {kind: chat, path: sharegpt.jsonl, format: sharegpt}}
        - {name: books, share: 0.1, source: {kind: text, path: books/, text: {cross_document: true}}}
    pretrain:                                                       # stage 1 of the two-stage recipe
      enabled: true
      source: {kind: text, path: corpus/}

`SourceConfig` (where samples come from) and what holds one: `data.mix` entries and `pretrain`.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from longctx_core.config.base import Section

SourceKind = Literal["builtin", "litm", "squad", "hotpotqa", "jsonl", "parquet", "hf", "chat", "text"]
RECORD_FIELDS = ("id", "question", "answers", "text", "title", "lang", "evidence")
ChatFormat = Literal["auto", "messages", "sharegpt", "prompt_response"]
# field_map keys a chat source understands (record field -> column of the user's rows).
CHAT_FIELDS = ("id", "lang", "messages", "conversations", "prompt", "query", "response", "system")
# field_map keys a text source understands.
TEXT_FIELDS = ("id", "lang", "text")
# Sources that become training rows without composition (they can be mixed in).
IMPORT_KINDS = ("chat", "text")


class TextSourceConfig(Section):
    cross_document: bool = Field(
        True,
        description="A piece of train.max_seq_len tokens may hold the end of one document and the start of "
        "the next (joined by the end-of-text token); position ids restart at each document inside a piece, "
        "so documents never attend to each other. False: every document is cut on its own and its last "
        "piece is shorter (the trainer packs short pieces together).",
    )
    suffixes: list[str] = Field(
        default_factory=lambda: [".txt", ".md"],
        description="File suffixes read as one plain-text document each, when path is a folder or file "
        "(jsonl/json/parquet files are read as rows with a text column).",
    )

    @field_validator("suffixes")
    @classmethod
    def _dotted(cls, v: list[str]) -> list[str]:
        if not v or any(not s.startswith(".") for s in v):
            raise ValueError(f"must list suffixes starting with '.', got {v}")
        return v


def check_field_map(kind: str, field_map: dict[str, str], record_fields: tuple[str, ...]) -> None:
    """Raise ValueError("<key>: ...") (relative to `field_map`) for a key the source kind does not
    understand, or a prompt without a response."""
    allowed = {"chat": CHAT_FIELDS, "text": TEXT_FIELDS}.get(kind, record_fields)
    for key in field_map:
        if key not in allowed:
            raise ValueError(f"{key}: unknown field for kind={kind} (expected one of {', '.join(allowed)})")
    if kind == "chat" and ("prompt" in field_map) != ("response" in field_map):
        missing = "response" if "prompt" in field_map else "prompt"
        raise ValueError(f"{missing}: prompt/response rows need both 'prompt' and 'response' mapped")


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
    def _world(self) -> BuiltinWorldConfig:
        from longctx_core.data.builtin import WorldSpec

        WorldSpec.from_config(self)  # the world's own rules (ranges, kinds, facts); ValueError names the key
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


class MixEntry(Section):
    name: Optional[str] = Field(
        None,
        description="Label of this source in stats.json, the row `source` column and the per-source loss "
        "(unset = mix<i>-<kind>).",
    )
    share: float = Field(
        ...,
        gt=0,
        lt=1,
        description="Fraction of the training tokens drawn from this source; the main data.source gets the "
        "rest. A source that runs out first reaches less (stats.json reports the share achieved).",
    )
    shuffle_buffer: int = Field(
        1024,
        ge=1,
        description="Rows of this source held in a seeded shuffle buffer, so the rows taken are spread over "
        "the whole source, not its first files, while nothing is loaded whole.",
    )
    source: SourceConfig = Field(
        ..., description="The source: same schema as data.source (kind chat or text)."
    )


def check_mix(mix: list[MixEntry], main_kind: str, main_name: str) -> None:
    """Cross-entry checks of `data.mix`; raises ValueError("mix...: reason")."""
    total = sum(m.share for m in mix)
    if mix and total >= 1:
        raise ValueError(
            f"mix: shares sum to {total:g}, which leaves nothing for the main data.source (must be < 1)"
        )
    names = [main_name]
    for i, m in enumerate(mix):
        if m.source.kind not in IMPORT_KINDS:
            raise ValueError(
                f"mix.{i}.source.kind: only chat and text sources can be mixed in, got '{m.source.kind}' "
                "(QA sources are composed by the main data.source)"
            )
        name = mix_name(m, i)
        if name in names:
            raise ValueError(f"mix.{i}.name: '{name}' is used twice (names label stats and losses)")
        names.append(name)


def mix_name(entry: MixEntry, index: int) -> str:
    """The label of mix entry `index`: its `name`, else `mix<index>-<kind>`."""
    return entry.name or f"mix{index}-{entry.source.kind}"


def source_names(data_cfg) -> list[str]:
    """Every source label of a `data:` section, the main source first (its kind)."""
    return [data_cfg.source.kind] + [mix_name(m, i) for i, m in enumerate(data_cfg.mix)]


class PretrainConfig(Section):
    enabled: bool = Field(
        False,
        description="Run continued pre-training on `source` first (<run>/pretrain/), then SFT starting from "
        "its adapter (train.init_adapter is set to <run>/pretrain/train/adapter).",
    )
    source: Optional[SourceConfig] = Field(
        None, description="Raw text for stage 1 (kind text); same schema as data.source."
    )
    max_steps: Optional[int] = Field(
        None, ge=1, description="Stage 1 optimizer steps (smoke knob); unset = `epochs` passes."
    )
    epochs: int = Field(1, ge=1, description="Stage 1 passes over the text pieces when max_steps is unset.")
    lr: Optional[float] = Field(None, gt=0, description="Stage 1 peak learning rate; unset = train.lr.")

    @field_validator("source")
    @classmethod
    def _text_only(cls, v):
        if v is not None and v.kind != "text":
            raise ValueError(f"kind: continued pre-training reads raw text (kind: text), got '{v.kind}'")
        return v


def check_objectives(cfg) -> None:
    """Sources against the objective of the stage that reads them; raises ValueError("<key>: reason").

    Raw text has no assistant turns: its loss is on every token (continued pre-training). It may be mixed
    into SFT as a minority share, but an SFT stage that follows `pretrain:` must be chat or QA data, and the
    pre-training stage itself reads text only."""
    p = cfg.pretrain
    if p.enabled and p.source is None:
        raise ValueError("pretrain.source: required when pretrain.enabled is true (a kind: text source)")
    if p.enabled and cfg.data.source.kind == "text":
        raise ValueError(
            "data.source.kind: the SFT stage after pretrain: trains on assistant turns; raw text (kind: text) "
            "belongs in pretrain.source (or mix it in with data.mix)"
        )
    if p.enabled and cfg.train.init_adapter:
        raise ValueError(
            "train.init_adapter: with pretrain.enabled the SFT stage starts from the pretrain stage's "
            "adapter; unset it, or turn pretrain off to continue from your own adapter"
        )
