"""Chat-template tokenisation with labels on the assistant turns only.

    ids, labels = tokenize_chat(tokenizer, messages)      # labels[i] == -100 outside assistant replies

The conversation is rendered ONCE with the tokenizer's own chat template and tokenised as a whole, so the
tokens are exactly those the model sees at inference. Which characters belong to an assistant reply is
found by rendering growing prefixes of the conversation: with a prefix-stable template (ChatML: Qwen,
Qwen2, Qwen2.5) the render of `messages[:i]` plus the generation prompt is a prefix of the full render, and
the reply of turn i runs from there to the end of the render of `messages[:i+1]`. A token is labelled when
it starts inside such a span. For ChatML, turn by turn:

    <|im_start|>system\\nYou are ...<|im_end|>\\n<|im_start|>user\\nQ1<|im_end|>\\n<|im_start|>assistant\\n
    A1<|im_end|>            <- labelled (the reply and the end-of-turn token: the model must learn to stop)
    \\n<|im_start|>user\\nQ2<|im_end|>\\n<|im_start|>assistant\\n
    A2<|im_end|>            <- labelled (every assistant turn of a multi-turn sample)
    \\n

Templates that rewrite earlier turns (e.g. ones dropping past reasoning blocks) are not prefix-stable: that
is reported as an error naming the turn, never silently mislabelled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # PyTorch cross-entropy's ignore_index: no loss on these positions


@dataclass
class TokenizedChat:
    """One conversation as model input: token ids, labels (-100 outside assistant replies), the rendered
    text and the character spans of the assistant replies in it."""

    input_ids: list[int]
    labels: list[int]
    text: str
    spans: list[tuple[int, int]]

    @property
    def n_label_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def _render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_spans(tokenizer, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Render `messages`; return the text and the [start, end) character span of every assistant reply.

    A span covers the reply and the template's end-of-turn marker, not the whitespace after it.
    Raises LongctxError when the template is not prefix-stable or a sample has no assistant turn.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise LongctxError("the tokenizer has no chat template (use a chat/instruct checkpoint's tokenizer)")
    text = _render(tokenizer, messages)
    spans = []
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        head = _render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1])
        if not (text.startswith(head) and text.startswith(upto) and len(upto) > len(head)):
            raise LongctxError(
                f"chat template is not prefix-stable at turn {i}: rendering the conversation up to an "
                "assistant reply does not give a prefix of the full rendering, so reply tokens cannot be "
                "located for the label mask"
            )
        end = len(upto.rstrip())
        if msg.get("content") and msg["content"].strip() not in text[len(head) : end]:
            raise LongctxError(f"assistant turn {i}: the rendered span does not contain the reply text")
        spans.append((len(head), end))
    if not spans:
        raise LongctxError("conversation has no assistant turn to train on")
    return text, spans


def tokenize_chat(tokenizer, messages: Sequence[dict]) -> TokenizedChat:
    """Tokenise one conversation with the chat template; labels are the ids on assistant replies, -100
    elsewhere. Returns a `TokenizedChat`.

    Uses the fast tokenizer's character offsets, so the ids are those of the whole rendered text (no
    per-segment tokenisation drift) and each token is assigned by where it starts.
    """
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    k = 0
    for j, (start, _end) in enumerate(offsets):
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k < len(spans) and spans[k][0] <= start < spans[k][1]:
            labels[j] = ids[j]
    return TokenizedChat(input_ids=list(ids), labels=labels, text=text, spans=spans)


def labelled_text(tokenizer, chat: TokenizedChat) -> list[str]:
    """The decoded text of each maximal run of labelled tokens (for checks: it should equal the replies)."""
    runs, current = [], []
    for tok, lab in zip(chat.input_ids, chat.labels, strict=True):
        if lab != IGNORE_INDEX:
            current.append(tok)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r, skip_special_tokens=False) for r in runs]
