"""Exact token counts for composition, and the piece cache that makes a 32k-token chat cheap to count.

    n = chat_tokens(tokenizer, messages)      # the rendered chat's true token count

A composed chat is mostly documents that every other sample also holds (the distractor pool), in a new
order and under new numbers. Encoding the whole rendered chat was most of a composition's time at 32k Qwen
tokens (cProfile of the synthesis bench's loop). `PieceCounter` counts it piece by piece instead: the text is cut
at boundaries where the tokenizer's pre-tokenizer always starts a new pre-token and whose two sides encode
independently, each piece's count is cached, and only unseen pieces are encoded (one batch). The sum is
the full count, exactly, because BPE never merges across pre-tokens.

The boundaries are sound for one pre-tokenizer family, Qwen2.5's (NFC, then
`Split(QWEN_PATTERN, isolated)`, then `ByteLevel(use_regex=False)`), and are checked for it:

    "\\n" | letter          `\\s*[\\r\\n]+` ends at the newline (nor does any other alternative run
                             on into a letter: `[^\\r\\n\\p{L}\\p{N}]?\\p{L}+` excludes the newline), so a
                             line's first word always starts a pre-token ("...\\n\\n" | "Document [3]")
    "]" | " ("               punctuation runs stop at whitespace and " (" starts one on both sides
                             ("Document [3]" | " (Title: T) text...": the body is the same for any number)
    digit "]（" | letter      after a digit, "]（" is one punctuation run, which a letter ends
                             ("文档[3]（" | "标题：T）text...", the Chinese header)

NFC cannot join across a boundary (its left side ends in a newline, "]" or "（", which compose with nothing
and which no combining mark is reordered across), and no added token of the family contains a newline or
"]". A tokenizer that is not of the family (a GPT-2-style byte-level BPE, where "\\n\\n" before a letter
splits differently at a string's end) is counted whole, as is any whose probe strings disagree.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Sequence

from longctx_core.data import styles
from longctx_core.data.records import Document

logger = logging.getLogger(__name__)

# Pieces cached per tokenizer (~30 MB of text at 32k-token samples); past it the cache starts again.
MAX_CACHED = 50_000

# Strings whose piece-wise count must equal the whole count before a tokenizer is trusted with the cache:
# the cuts next to runs of newlines, spaces, tabs, punctuation, digits, contractions and CJK text.
_PROBES = (
    "Document [12] (Title: A) text.\n\nDocument [3] (Title: B) more\n\n\nQuestion: who?\nAnswer",
    "x  \n  \nDocument [1]  (Title: x)\tyz\n\t\nThe 2024 run's 12,345 items.\n'tis\nI'm here.\n",
    "文档[1]（标题：测试）内容。\n\nDocument [7] (Title: 北京) 中文 text\n\n数字 123\nEnd]\n]( [x] (y)",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nRead:\n\nDocument [1] (Title: T) t",
    "a]\n\n\r\nB \n\n  C!\n\nD?\nE (F) G] (H)\n\n\n\nIJ\n\u00e9\nK\u0301\nL",
    "文档[12]（标题：长城）长城是中国的。\n\n文档[3]（标题：x）y\n\n文档[4]（（标题\n\u1100\u1161\n가\n\u00b2x\n_a\nа́б",
)


# Qwen's pre-tokenizer regex (Qwen1 tiktoken, Qwen2's tokenizer): digits one at a time (`\p{N}`), unlike
# GPT-4's `\p{N}{1,3}`, so numbers tokenise digit by digit.
QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def backend_counts(backend, texts: Sequence[str]) -> list[int]:
    """Token counts from a Rust `tokenizers.Tokenizer` without added special tokens; `encode_batch_fast`
    (tokenizers >= 0.20) skips the character offsets a count does not need."""
    return [len(e.ids) for e in backend.encode_batch_fast(list(texts), add_special_tokens=False)]


def count_tokens(tokenizer, text: str) -> int:
    """Token count of `text` without added special tokens (the Rust backend when there is one: faster)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend_counts(backend, [text])[0]
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_texts(tokenizer, texts: Sequence[str]) -> list[int]:
    """`count_tokens` of each text, in one batch."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend_counts(backend, texts)
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def count_doc_tokens(tokenizer, docs: Sequence[Document], langs: Sequence[str]) -> list[int]:
    """Tokens of each document as rendered in a context (`Document [1] (Title: ...) text`), batched."""
    texts = [styles.render_document(1, d, lang) for d, lang in zip(docs, langs, strict=True)]
    return count_texts(tokenizer, texts)


def chat_tokens(tokenizer, messages: list[dict[str, str]]) -> int:
    """The true length of `messages` rendered with the tokenizer's chat template (piece-wise when the
    tokenizer allows it, see the module docstring)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    counter = piece_counter(tokenizer)
    return counter.count(text) if counter is not None else count_tokens(tokenizer, text)


def qwen_family(backend) -> bool:
    """Whether a `tokenizers.Tokenizer` is a byte-level BPE with Qwen's normalizer, pre-tokenizer and
    added tokens, the family `PieceCounter`'s boundaries are proven for."""

    def state(part) -> dict | None:
        return None if part is None else json.loads(part.__getstate__())

    pre, norm = state(backend.pre_tokenizer), state(backend.normalizer)
    if norm not in (None, {"type": "NFC"}) or not pre or pre.get("type") != "Sequence":
        return False
    steps = pre.get("pretokenizers", [])
    return (
        type(backend.model).__name__ == "BPE"
        and len(steps) == 2
        and steps[0].get("type") == "Split"
        and steps[0].get("pattern") == {"Regex": QWEN_PATTERN}
        and steps[0].get("behavior") == "Isolated"
        and not steps[0].get("invert")
        and steps[1].get("type") == "ByteLevel"
        and not steps[1].get("use_regex")
        and not steps[1].get("add_prefix_space")
        and not any(
            "\n" in t.content or "]" in t.content for t in backend.get_added_tokens_decoder().values()
        )
    )


class PieceCounter:
    """Exact token counts of long texts from cached counts of their pieces (one tokenizer's backend)."""

    def __init__(self, backend, max_cached: int = MAX_CACHED) -> None:
        self.backend = backend
        self.max_cached = max_cached
        self.cache: dict[str, int] = {}
        self.hits = self.misses = 0

    @staticmethod
    def pieces(text: str) -> list[str]:
        """`text` cut at the module's boundaries ("".join gives it back): after a newline before a letter,
        inside a line's first "] (" and after its first digit + "]（" when a letter follows. A loop over lines:
        a regex split with look-behinds tries every character and was many times slower at 32k tokens."""
        cuts = []
        pos = 0
        for line in text.split("\n"):
            if pos and line[:1].isalpha():
                cuts.append(pos)
            j = line.find("] (")
            if j >= 0:
                cuts.append(pos + j + 1)
            k = line.find("]（")
            if k > 0 and line[k - 1].isdecimal() and line[k + 2 : k + 3].isalpha():
                cuts.append(pos + k + 2)
            pos += len(line) + 1
        cuts.sort()
        return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]

    def count(self, text: str) -> int:
        pieces = self.pieces(text)
        cache = self.cache
        unseen = [p for p in dict.fromkeys(pieces) if p not in cache]
        if unseen:
            if len(cache) + len(unseen) > self.max_cached:
                cache.clear()
                unseen = list(dict.fromkeys(pieces))
            cache.update(zip(unseen, backend_counts(self.backend, unseen), strict=True))
        self.misses += len(unseen)
        self.hits += len(pieces) - len(unseen)
        return sum(cache[p] for p in pieces)

    def agrees(self, texts: Sequence[str] = _PROBES) -> bool:
        """Whether piece-wise counts equal whole counts on `texts` (without touching the cache)."""
        whole = backend_counts(self.backend, texts)
        parts = [sum(backend_counts(self.backend, self.pieces(t))) for t in texts]
        return parts == whole


# tokenizer object -> its PieceCounter, or None where counting whole is the safe way
_COUNTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def piece_counter(tokenizer) -> PieceCounter | None:
    """The tokenizer's `PieceCounter` (one per tokenizer object, made on first use), or None when the
    tokenizer is not of the Qwen family or its probes disagree (it is then counted whole)."""
    try:
        return _COUNTERS[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable or not hashable: count whole
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    counter = None
    if backend is not None and qwen_family(backend):
        counter = PieceCounter(backend)
        if not counter.agrees():
            logger.warning("token counts: piece-wise counts disagree with whole counts; counting whole")
            counter = None
    _COUNTERS[tokenizer] = counter
    return counter


def forget_pieces() -> None:
    """Empty every tokenizer's piece cache (a benchmark times each run from a cold cache, as a job starts)."""
    for counter in _COUNTERS.values():
        if counter is not None:
            counter.cache.clear()
