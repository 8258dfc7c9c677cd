"""Sequence packing: tokenised chat samples bin-packed into rows of `max_seq_len` tokens, and the Ray Data
stage that streams them to the training workers.

The packed layout, for max_seq_len = 8 and three tokenised samples (`-` is -100, no loss):

    A: ids a0 a1 a2 a3 a4   labels -  -  a2 a3 a4        (5 tokens)
    B: ids b0 b1 b2         labels -  b1 b2              (3 tokens)
    C: ids c0 c1 c2 c3      labels -  -  c2 c3           (4 tokens)

First-fit-decreasing takes the longest first: A opens row 0; C (4) does not fit next to A (5 + 4 > 8) and
opens row 1; B (3) fits in row 0 (5 + 3 = 8):

    row 0  input_ids     a0 a1 a2 a3 a4 b0 b1 b2
           labels        -  -  a2 a3 a4 -  b1 b2
           position_ids  0  1  2  3  4  0  1  2        restart at 0 per sample: RoPE sees each sample alone
           seq_lens      [5, 3]
    row 1  input_ids     c0 c1 c2 c3
           labels        -  -  c2 c3
           position_ids  0  1  2  3
           seq_lens      [4]

Packing efficiency = real tokens / slot tokens = (8 + 4) / (2 x 8) = 0.75. Labels stay aligned with the
inputs (the loss shifts them); every sample's first label is -100, so no token is trained to predict the
next sample. Samples never attend to each other: the model gets `position_ids` and NO attention mask, and
derives sequence boundaries from the restarts (a block-diagonal causal mask on CPU/SDPA/eager, varlen
flash-attention on GPU). When rows of one micro-batch are padded to a common length, the padding continues
the last sample's positions (row 1 padded to 8: position_ids 0 1 2 3 4 5 6 7, labels - - c2 c3 - - - -),
so it never starts a fake sequence, and nothing real attends to it (it comes last).

Streaming: samples are packed in windows of `train.pack_window` consecutive (shuffled) samples, one
`map_batches` call each, so packing never needs the whole dataset. The output of a window depends only on
its contents (ties broken by sample id, rows ordered by a seeded shuffle), and the Ray Data execution
preserves order, so the packed stream is deterministic for a seed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from longctx_core.data.chat import IGNORE_INDEX, tokenize_chat
from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)

PACKED_COLUMNS = ("input_ids", "labels", "position_ids", "seq_lens", "sample_ids", "n_truncated", "sources")


@dataclass
class Sample:
    """One tokenised sample: its id, token ids and labels (same length). A raw-text piece holds several
    document segments (`segments`, their lengths; None = one): positions restart at each, as for separate
    samples (`data_gen.rawtext`). `source` labels the sample's data source (per-source loss)."""

    id: str
    input_ids: list[int]
    labels: list[int]
    segments: list[int] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PackedRow:
    """One packed row (see the module docstring): concatenated samples, unpadded."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # one per seq_lens entry; all "" without labels

    def add(self, sample: Sample) -> None:
        self.input_ids += sample.input_ids
        start = 0
        # One entry per attention segment (a raw-text piece has several, one id), so seq_lens, sample_ids
        # and sources stay parallel.
        for n in sample.segments or [len(sample)]:
            # The first label of each segment is masked so no loss crosses a sample boundary.
            self.labels += [IGNORE_INDEX, *sample.labels[start + 1 : start + n]]
            self.position_ids += list(range(n))
            self.seq_lens.append(n)
            self.sample_ids.append(sample.id)
            self.sources.append(sample.source)
            start += n

    def to_dict(self) -> dict:
        out = {
            "input_ids": self.input_ids,
            "labels": self.labels,
            "position_ids": self.position_ids,
            "seq_lens": self.seq_lens,
            "sample_ids": self.sample_ids,
        }
        if any(self.sources):
            out["sources"] = self.sources
        return out


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin-pack item indices by length into bins of `capacity`; returns the bins (lists of indices).

    Items go longest first (ties: lower index first) into the first bin with room, else a new bin: the
    classic FFD, which uses at most 11/9 OPT + 6/9 bins. Every length must be in [1, capacity].
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = lengths[i]
        if not 0 < n <= capacity:
            raise ValueError(f"item {i} has length {n}, outside [1, {capacity}]")
        for b, room in enumerate(free):
            if n <= room:
                bins[b].append(i)
                free[b] -= n
                break
        else:
            bins.append([i])
            free.append(capacity - n)
    return bins


def pack_samples(samples: Sequence[Sample], capacity: int, seed: int | None = None) -> list[PackedRow]:
    """Pack samples into rows of at most `capacity` tokens with first-fit-decreasing; returns the rows.

    Ties are broken by sample id, not input order, so a window packs the same whatever order it arrives
    in. `seed` shuffles the rows (FFD emits the longest first); None keeps FFD order.
    """
    ordered = sorted(samples, key=lambda s: s.id)
    bins = first_fit_decreasing([len(s) for s in ordered], capacity)
    rows = []
    for b in bins:
        row = PackedRow()
        for i in b:
            row.add(ordered[i])
        rows.append(row)
    if seed is not None and rows:
        # A string seed hashes deterministically (unlike hash()), across processes and runs.
        random.Random(f"{seed}:{rows[0].sample_ids[0]}").shuffle(rows)
    return rows


def one_per_row(samples: Sequence[Sample]) -> list[PackedRow]:
    """The unpacked layout: one sample per row (the padded baseline), in input order."""
    rows = []
    for s in samples:
        row = PackedRow()
        row.add(s)
        rows.append(row)
    return rows


def fit_length(sample: Sample, max_len: int, overlong: str) -> tuple[Sample, bool]:
    """Return the sample cut to `max_len` tokens when `overlong` is 'truncate' (and whether it was cut);
    raise LongctxError for a longer sample when it is 'error'."""
    if len(sample) <= max_len:
        return sample, False
    if overlong != "truncate":
        raise LongctxError(
            f"sample {sample.id} has {len(sample)} tokens, more than train.max_seq_len={max_len} "
            "(raise train.max_seq_len or set train.overlong=truncate)"
        )
    segments = None
    if sample.segments:  # keep the segments that fit, the last one cut
        segments, left = [], max_len
        for n in sample.segments:
            if left <= 0:
                break
            segments.append(min(n, left))
            left -= n
    cut = Sample(sample.id, sample.input_ids[:max_len], sample.labels[:max_len], segments, sample.source)
    return cut, True


def packing_efficiency(rows: Sequence[PackedRow], capacity: int) -> float:
    """Real tokens / slot tokens (rows x capacity); 0 for no rows."""
    return sum(len(r.input_ids) for r in rows) / (len(rows) * capacity) if rows else 0.0


def collate_packed(
    rows: Sequence[dict], pad_id: int, pad_to: int | None = None, groups: dict[str, int] | None = None
) -> dict:
    """Stack packed rows (dicts with input_ids/labels/position_ids) into tensors `[batch, length]`; returns
    {input_ids, labels, position_ids}, plus `loss_groups` (`loss_groups`) when `groups` maps source names
    to indices.

    Rows are padded to the longest row (or `pad_to`): pad ids, -100 labels, positions continuing the last
    sample (so padding never starts a new sequence). No attention mask: boundaries come from position_ids.
    """
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    if pad_to is not None:
        width = max(width, pad_to)
    out = {
        k: torch.empty((len(rows), width), dtype=torch.long) for k in ("input_ids", "labels", "position_ids")
    }
    for b, r in enumerate(rows):
        n = len(r["input_ids"])
        for key in ("input_ids", "labels", "position_ids"):
            out[key][b, :n] = torch.tensor(r[key])  # a copy: Ray hands out read-only numpy views
        last = int(r["position_ids"][n - 1])
        out["input_ids"][b, n:] = pad_id
        out["labels"][b, n:] = IGNORE_INDEX
        out["position_ids"][b, n:] = torch.arange(last + 1, last + 1 + width - n)
    if groups is not None:
        out["loss_groups"] = loss_groups(rows, groups, width)
    return out


def loss_groups(rows: Sequence[dict], groups: dict[str, int], width: int):
    """Per token of each row, the index of its data source in `groups` (-1 for padding, rows without
    `sources` and unknown sources); returns a long tensor [batch, width]."""
    import torch

    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        sources = r.get("sources")
        if sources is None:
            continue
        start = 0
        for name, n in zip(sources, r["seq_lens"], strict=True):
            out[b, start : start + int(n)] = groups.get(str(name), -1)
            start += int(n)
    return out


# ---- Ray Data: tokenise + mask + pack, window by window ---------------------------------------------------


class TokenizePack:
    """`map_batches` callable (one per actor, one tokenizer each): a window of sample rows (`id`,
    `messages`) in, packed rows out (`PACKED_COLUMNS`; `n_truncated` counts samples cut to fit)."""

    def __init__(self, tokenizer_path: str, max_seq_len: int, packing: bool, overlong: str, seed: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.max_seq_len, self.packing, self.overlong, self.seed = max_seq_len, packing, overlong, seed

    def tokenize(self, sample_id: str, messages: list[dict], source: str = "") -> tuple[Sample, bool]:
        """One row to a `Sample` that fits `max_seq_len`; returns it and whether it was truncated."""
        chat = tokenize_chat(self.tokenizer, messages)
        sample = Sample(sample_id, chat.input_ids, chat.labels, source=source)
        return fit_length(sample, self.max_seq_len, self.overlong)

    def __call__(self, batch):
        import pyarrow as pa

        ids = [str(x) for x in batch["id"].to_pylist()]
        convs = batch["messages"].to_pylist()
        n = len(ids)
        # Optional columns: raw-text pieces come tokenised (loss on every token), rows may name a source.
        pieces = batch["input_ids"].to_pylist() if "input_ids" in batch.column_names else [None] * n
        doc_lens = batch["doc_lens"].to_pylist() if "doc_lens" in batch.column_names else [None] * n
        sources = batch["source"].to_pylist() if "source" in batch.column_names else [""] * n
        samples, cut = [], 0
        for sid, msgs, piece, segs, src in zip(ids, convs, pieces, doc_lens, sources, strict=True):
            if piece is not None:
                sample, truncated = fit_length(
                    Sample(sid, piece, list(piece), segs, src or ""), self.max_seq_len, self.overlong
                )
            else:
                sample, truncated = self.tokenize(sid, msgs, src or "")
            samples.append(sample)
            cut += truncated
        rows = pack_samples(samples, self.max_seq_len, self.seed) if self.packing else one_per_row(samples)
        table = [r.to_dict() for r in rows]
        # Truncations are counted on the window's first row (the sum over rows is the total).
        for i, r in enumerate(table):
            r["n_truncated"] = cut if i == 0 else 0
        return pa.Table.from_pylist(table, schema=packed_schema())


def packed_schema():
    """The Arrow schema of packed rows."""
    import pyarrow as pa

    ints = pa.list_(pa.int32())
    return pa.schema(
        [
            ("input_ids", ints),
            ("labels", ints),
            ("position_ids", ints),
            ("seq_lens", ints),
            ("sample_ids", pa.list_(pa.string())),
            ("n_truncated", pa.int32()),
            ("sources", pa.list_(pa.string())),
        ]
    )


def parquet_files(path: str | Path) -> list[str]:
    """The sorted `*.parquet` files of a folder (or the file itself); LongctxError when there are none."""
    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(p.glob("*.parquet")) if p.is_dir() else []
    if not files:
        raise LongctxError(
            f"train.data_path: no Parquet files at {p} (run `python -m ray_jobs.synthesize` first, or point "
            "train.data_path at a folder of sample rows)"
        )
    return [str(f) for f in files]


def check_sample_lengths(files: Sequence[str], max_seq_len: int, overlong: str) -> dict:
    """Driver-side check before any Ray resource is requested: read the `id`/`messages`/`n_tokens` columns'
    schema and lengths; returns {num_samples, max_tokens, overlong, lengths} (`lengths`: the recorded
    `n_tokens`, empty when the files have no such column).

    Raises LongctxError when a required column is missing, or when `overlong` is 'error' and the recorded
    `n_tokens` of a sample exceeds `max_seq_len` (the tokenising stage checks the true length again).
    """
    import pyarrow.parquet as pq

    n, longest, over, first_over, lengths = 0, 0, 0, None, []
    for f in files:
        schema = pq.read_schema(f)
        missing = [c for c in ("id", "messages") if c not in schema.names]
        if missing:
            raise LongctxError(f"{f}: missing column(s) {missing} (expected the sample-row columns)")
        if "n_tokens" not in schema.names:
            n += pq.read_metadata(f).num_rows
            continue
        table = pq.read_table(f, columns=["id", "n_tokens"])
        tokens = table.column("n_tokens").to_pylist()
        n += len(tokens)
        lengths += tokens
        longest = max([longest, *tokens])
        for sid, t in zip(table.column("id").to_pylist(), tokens, strict=True):
            if t > max_seq_len:
                over += 1
                first_over = first_over or (sid, t)
    if over and overlong == "error":
        sid, t = first_over
        raise LongctxError(
            f"{over} sample(s) are longer than train.max_seq_len={max_seq_len} (e.g. {sid}: {t} tokens); "
            "raise train.max_seq_len or set train.overlong=truncate"
        )
    if n == 0:
        raise LongctxError(f"train.data_path: the Parquet files hold no rows ({files[0]} ...)")
    return {"num_samples": n, "max_tokens": longest, "overlong": over, "lengths": lengths}


def estimate_packing(lengths: Sequence[int], capacity: int, window: int) -> dict:
    """Pack a length distribution the way the training stream does (FFD per window of `window` samples,
    overlong samples cut to `capacity`); returns {rows, samples, efficiency, samples_per_row}."""
    rows = 0
    real = 0
    for start in range(0, len(lengths), window):
        chunk = [min(capacity, max(1, int(n))) for n in lengths[start : start + window]]
        rows += len(first_fit_decreasing(chunk, capacity))
        real += sum(chunk)
    return {
        "rows": rows,
        "samples": len(lengths),
        "efficiency": real / (rows * capacity) if rows else 0.0,
        "samples_per_row": len(lengths) / rows if rows else 0.0,
    }


def sample_columns(files: Sequence[str]) -> list[str]:
    """The columns the packing stage reads: `id`, `messages`, and the optional `input_ids`/`doc_lens`
    (raw-text pieces) and `source` (per-source loss) when the files have them."""
    import pyarrow.parquet as pq

    names = pq.read_schema(files[0]).names
    return ["id", "messages"] + [c for c in ("input_ids", "doc_lens", "source") if c in names]


def packed_dataset(files: Sequence[str], tokenizer_path: str, train_cfg, seed: int, cpus: float):
    """The streaming Ray Dataset of packed rows: read -> seeded shuffle -> tokenise + mask + pack per window.

    Returns the (lazy) dataset; nothing executes until a consumer iterates it.
    """
    import ray.data
    from ray.data import RandomSeedConfig

    # Every task and actor asks for a fraction of a CPU: on a small machine the training workers hold most
    # of them, and a read task waiting for a whole free CPU would stall the stream (and the training).
    ds = ray.data.read_parquet(list(files), columns=sample_columns(files), num_cpus=cpus)
    if train_cfg.shuffle:
        # Same order every execution: a worker-group restart re-executes the dataset from the start and must
        # see the rows in the order its data position was counted in.
        ds = ds.random_shuffle(seed=RandomSeedConfig(seed=seed, reseed_after_execution=False), num_cpus=cpus)
    return ds.map_batches(
        TokenizePack,
        fn_constructor_kwargs=dict(
            tokenizer_path=tokenizer_path,
            max_seq_len=train_cfg.max_seq_len,
            packing=train_cfg.packing,
            overlong=train_cfg.overlong,
            seed=seed,
        ),
        batch_size=train_cfg.pack_window,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=train_cfg.data_workers),
        num_cpus=cpus,
    )
