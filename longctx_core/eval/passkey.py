"""Passkey retrieval: a five-digit key hidden at depth d of a filler haystack, in a prompt of L tokens.

The default filler is the repetitive one of the passkey test (Mohtashami & Jaggi 2023, "Landmark
Attention"), so nothing but position makes the key hard to find; any UTF-8 text file can be the haystack
instead (split into sentences, repeated when too short). One prompt, L = 96 tokens, depth 0.5:

    user: There is an important info hidden inside a lot of irrelevant text. Find it and memorize it.
          I will quiz you about the important information there.

          The grass is green. The sky is blue. ... The pass key is 48213. Remember it. 48213 is the pass
          key. The sun is yellow. Here we go. ...

          What is the pass key?

Depth is measured in haystack units (sentences): the key sentence goes before unit round(d * n_units), so
d = 0 puts it first and d = 1 last. Length is the whole chat-templated prompt, matched to within one unit.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from longctx_core.data.seeding import rng_for
from longctx_core.errors import LongctxError
from longctx_core.eval.prompts import Prompt, chat_ids

logger = logging.getLogger(__name__)

FILLER = [
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
]
INSTRUCTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there."
)
QUESTION = "What is the pass key?"
KEY_TEMPLATE = "The pass key is {key}. Remember it. {key} is the pass key."
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")


def haystack_units(path: str | None) -> list[str]:
    """Sentences of the haystack: the built-in filler, or the text file at `path` split at sentence ends."""
    if path is None:
        return list(FILLER)
    p = Path(path).expanduser()
    if not p.is_file():
        raise LongctxError(f"eval.passkey.haystack: file not found: {p}")
    units = [u.strip() for u in _SENTENCE_END.split(p.read_text(encoding="utf-8")) if u.strip()]
    if not units:
        raise LongctxError(f"eval.passkey.haystack: {p} holds no text")
    return units


def _render(units: list[str], n_units: int, depth: float, key_sentence: str) -> tuple[str, int]:
    """The haystack of the first `n_units` units (cycled) with the key inserted; returns (text, key index)."""
    body = [units[i % len(units)] for i in range(n_units)]
    at = round(depth * n_units)
    body.insert(at, key_sentence)
    return " ".join(body), at


def _messages(haystack: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n{haystack}\n\n{QUESTION}"}]


def build_passkey_prompt(
    tokenizer, units: list[str], length: int, depth: float, key: str
) -> tuple[list[int], dict]:
    """Token ids of one passkey prompt of about `length` tokens, and facts about it
    (`n_units`, `key_unit`: where the key sentence sits among the units, `key_char_depth`).

    Grows the haystack from an estimate (mean tokens per unit) and corrects it until the prompt is the
    longest one not above `length`; raises LongctxError when even an empty haystack does not fit."""
    key_sentence = KEY_TEMPLATE.format(key=key)
    fixed = len(chat_ids(tokenizer, _messages(key_sentence)))
    if fixed > length:
        raise LongctxError(
            f"eval.passkey.lengths: {length} tokens cannot hold the instructions ({fixed} tokens)"
        )
    per_unit = sum(len(tokenizer(u, add_special_tokens=False)["input_ids"]) + 1 for u in units) / len(units)
    n = max(0, int((length - fixed) / per_unit))

    def measure(k: int) -> tuple[list[int], int, str]:
        text, at = _render(units, k, depth, key_sentence)
        return chat_ids(tokenizer, _messages(text)), at, text

    ids, at, text = measure(n)
    for _ in range(8):  # jump by the estimated number of units missing (or extra), then step by one
        step = int((length - len(ids)) / per_unit)
        if step == 0 or n + step < 0:
            break
        n += step
        ids, at, text = measure(n)
    while len(ids) < length:  # grow while the next unit still fits
        nxt = measure(n + 1)
        if len(nxt[0]) > length:
            break
        n, (ids, at, text) = n + 1, nxt
    while len(ids) > length and n > 0:
        n -= 1
        ids, at, text = measure(n)
    pos = text.index(key_sentence)
    return ids, {"n_units": n, "key_unit": at, "key_char_depth": pos / max(1, len(text) - len(key_sentence))}


def passkey_prompts(
    tokenizer, lengths: list[int], depths: list[float], trials: int, units: list[str], seed: int
):
    """One prompt per length x depth x trial, each with its own five-digit key; returns a list of Prompt."""
    prompts = []
    for length in lengths:
        for depth in depths:
            for trial in range(trials):
                key = str(rng_for(seed, "passkey", length, depth, trial).randint(10000, 99999))
                ids, facts = build_passkey_prompt(tokenizer, units, length, depth, key)
                prompts.append(
                    Prompt(
                        prompt_id=f"passkey-L{length}-d{depth:g}-t{trial}",
                        task="passkey",
                        input_ids=ids,
                        cell={"length": length, "depth": depth},
                        answers=[key],
                        extra=facts,
                    )
                )
    logger.info(
        "passkey: %d prompts (%d lengths x %d depths x %d keys)",
        len(prompts),
        len(lengths),
        len(depths),
        trials,
    )
    return prompts
