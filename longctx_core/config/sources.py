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

`data.py` holds `SourceConfig` itself; the classes here are what it and the top-level config add.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from pydantic import Field, field_validator

from longctx_core.config.base import Section

if TYPE_CHECKING:
    from longctx_core.config.data import SourceConfig

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
