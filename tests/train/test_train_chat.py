"""Chat-template tokenisation: labels exactly on the assistant replies (every turn), checked against the
rendered text, and the template problems that must not pass silently."""

from __future__ import annotations

import pytest

from longctx_core.data.chat import IGNORE_INDEX, assistant_spans, labelled_text, tokenize_chat
from longctx_core.errors import LongctxError

MULTI = [
    {"role": "system", "content": "You are a helpful assistant."},
    {
        "role": "user",
        "content": "Document [1] Alma Vesk lives in Orlen.\nQuestion: where does Alma Vesk live?",
    },
    {"role": "assistant", "content": 'The document says "Alma Vesk lives in Orlen." So the answer is Orlen.'},
    {"role": "user", "content": "Question: who lives in Orlen?"},
    {"role": "assistant", "content": '"林小雨住在青石镇" So it is 林小雨.'},
]


def test_labels_cover_exactly_every_assistant_reply(train_tokenizer):
    chat = tokenize_chat(train_tokenizer, MULTI)
    replies = [m["content"] + "<|im_end|>" for m in MULTI if m["role"] == "assistant"]
    # Decoding the labelled runs gives back each reply and its end-of-turn token, nothing else.
    assert labelled_text(train_tokenizer, chat) == replies
    assert [chat.text[a:b] for a, b in chat.spans] == replies
    # The ids are those of the whole rendered text (no per-segment tokenisation drift).
    whole = train_tokenizer(chat.text, add_special_tokens=False)["input_ids"]
    assert chat.input_ids == whole
    assert all(lab in (IGNORE_INDEX, tok) for tok, lab in zip(chat.input_ids, chat.labels, strict=True))
    # System and user turns, and the assistant header, carry no loss.
    header = train_tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    first = chat.labels.index(next(x for x in chat.labels if x != IGNORE_INDEX))
    assert chat.input_ids[first - len(header) : first] == header
    assert chat.labels[first - 1] == IGNORE_INDEX


def test_default_system_turn_is_not_labelled(train_tokenizer):
    msgs = [{"role": "user", "content": "Question?"}, {"role": "assistant", "content": "Answer."}]
    chat = tokenize_chat(train_tokenizer, msgs)
    assert chat.text.startswith("<|im_start|>system\n")  # the template adds one
    assert labelled_text(train_tokenizer, chat) == ["Answer.<|im_end|>"]


def test_no_assistant_turn_is_an_error(train_tokenizer):
    with pytest.raises(LongctxError, match="no assistant turn"):
        assistant_spans(train_tokenizer, [{"role": "user", "content": "hi"}])


def test_template_that_rewrites_earlier_turns_is_refused(train_tokenizer):
    """A template whose rendering of a prefix is not a prefix of the whole (here: it hides every assistant
    reply but the last, as reasoning-stripping templates do) cannot be masked by prefixes: clear error."""
    import copy

    tok = copy.deepcopy(train_tokenizer)
    tok.chat_template = (
        "{%- for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{%- if m['role'] == 'assistant' and not loop.last %}[hidden]{% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
    )
    with pytest.raises(LongctxError, match="not prefix-stable at turn 2"):
        tokenize_chat(tok, MULTI)
