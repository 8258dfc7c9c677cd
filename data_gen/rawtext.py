"""Raw text for continued pre-training: documents -> token ids -> pieces of `train.max_seq_len` tokens.

    pieces = cut_pieces(docs, max_len=32768, eot_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                        cross_document=True)

Every document is followed by the end-of-text token (so the model learns where a text ends) and the loss
is on every token. A piece's `doc_lens` are the lengths of its document segments; position ids restart at
0 at each segment and the first label of a segment is -100 (its previous token belongs to another document,
which the segment cannot attend to: the same rule as for packed samples). For max_len = 4, end-of-text E and
three documents A = a0 a1 a2, B = b0 b1 b2 b3 b4, C = c0:

    cross_document=True: the stream a0 a1 a2 E b0 b1 b2 b3 b4 E c0 E cut every 4 tokens
      piece 0  input_ids     a0 a1 a2 E        doc_lens [4]
               position_ids  0  1  2  3
               labels        -  a1 a2 E
      piece 1  input_ids     b0 b1 b2 b3       doc_lens [4]
               position_ids  0  1  2  3
               labels        -  b1 b2 b3
      piece 2  input_ids     b4 E  c0 E        doc_lens [2, 2]
               position_ids  0  1  0  1
               labels        -  E  -  E

    cross_document=False: each document cut on its own (a last piece may be short)
      piece 0  a0 a1 a2 E   doc_lens [4]
      piece 1  b0 b1 b2 b3  doc_lens [4]
      piece 2  b4 E         doc_lens [2]
      piece 3  c0 E         doc_lens [2]

A trailing piece shorter than max_len is kept (the trainer packs it with others): no token is dropped.
A document's continuation in the next piece starts again at position 0 (pieces are independent rows).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from longctx_core.data.chat import IGNORE_INDEX

logger = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"  # Qwen's document separator (id 151643 in the real vocabulary)


@dataclass
class Piece:
    """One training row of raw text: token ids, the lengths of its document segments, the documents."""

    input_ids: list[int] = field(default_factory=list)
    doc_lens: list[int] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def add(self, doc_id: str, ids: Sequence[int]) -> None:
        self.input_ids.extend(ids)
        self.doc_lens.append(len(ids))
        self.doc_ids.append(doc_id)


def end_of_text_id(tokenizer) -> int:
    """The end-of-text token id: Qwen's `<|endoftext|>` when the vocabulary has it, else the eos token."""
    tid = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
        return tid
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither <|endoftext|> nor an eos token to join documents")
    return tokenizer.eos_token_id


def cut_pieces(
    docs: Iterable[tuple[str, Sequence[int]]], max_len: int, eot_id: int, cross_document: bool
) -> Iterator[Piece]:
    """Pieces of at most `max_len` tokens from (document id, token ids) pairs in order; yields `Piece`s
    (module docstring). Streams: holds at most one piece and one document."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    current = Piece()
    for doc_id, ids in docs:
        stream = [*ids, eot_id]
        pos = 0
        while pos < len(stream):
            room = max_len - len(current)
            take = stream[pos : pos + room]
            current.add(doc_id, take)
            pos += len(take)
            if len(current) == max_len or (not cross_document and pos >= len(stream)):
                yield current
                current = Piece()
    if current.input_ids:
        yield current


def piece_layout(input_ids: Sequence[int], doc_lens: Sequence[int]) -> tuple[list[int], list[int]]:
    """(position_ids, labels) of a piece: positions restart per segment, labels are the ids except the
    first of each segment (-100)."""
    positions, labels = [], []
    start = 0
    for n in doc_lens:
        positions.extend(range(n))
        labels.extend([IGNORE_INDEX, *input_ids[start + 1 : start + n]])
        start += n
    if start != len(input_ids):
        raise ValueError(f"doc_lens sum to {start}, the piece has {len(input_ids)} tokens")
    return positions, labels
