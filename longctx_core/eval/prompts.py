"""The unit of evaluation work: one `Prompt` (token ids + what to score it against), built on the driver.

Every task turns its grid into prompts; the model actors see only `prompt_id`, `kind`, `input_ids` and the
generation budget (`to_row`), and the driver scores their output against the rest. `kind="generate"` asks
for a greedy reply; `kind="nll"` asks for the per-position loss of `input_ids` (perplexity).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

# Shared by prompt builders: leave at least this many tokens for the reply when checking the window.
MIN_REPLY_TOKENS = 8


@dataclass
class Prompt:
    prompt_id: str
    task: str  # qa | passkey | perplexity | longbench | litm
    input_ids: list[int]
    cell: dict[
        str, Any
    ]  # the grid coordinates this prompt counts towards, e.g. {"length": 2048, "position": 0.5}
    kind: Literal["generate", "nll"] = "generate"
    max_new_tokens: int = 0  # 0 = eval.max_new_tokens
    answers: list[str] = field(default_factory=list)
    lang: str = "en"
    extra: dict[str, Any] = field(default_factory=dict)  # scoring inputs kept on the driver (docs, key, ...)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    def to_row(self, default_new_tokens: int, buckets: int = 0) -> dict[str, Any]:
        """The part a model actor needs, as a Ray Data row."""
        return {
            "prompt_id": self.prompt_id,
            "kind": self.kind,
            "input_ids": list(self.input_ids),
            "max_new_tokens": int(self.max_new_tokens or default_new_tokens),
            "buckets": int(buckets),
        }


def chat_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of `messages` rendered with the chat template and the assistant generation prompt."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat_overhead(tokenizer, system: str | None = None) -> int:
    """Tokens the chat template adds around an empty user turn (and the optional system turn)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": ""}]
    return len(chat_ids(tokenizer, messages))


def check_window(prompts: list[Prompt], limit: int, what: str, hint: str) -> None:
    """Raise LongctxError when any prompt plus its reply budget exceeds the model's context `limit`."""
    from longctx_core.errors import LongctxError

    too_long = [p for p in prompts if p.n_tokens + max(p.max_new_tokens, MIN_REPLY_TOKENS) > limit]
    if too_long:
        worst = max(too_long, key=lambda p: p.n_tokens)
        raise LongctxError(
            f"{what}: {len(too_long)} prompt(s) exceed the model's scaled context of {limit} tokens "
            f"(longest {worst.n_tokens} tokens, {worst.prompt_id}); {hint}"
        )
