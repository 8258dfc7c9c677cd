"""One training step of the toy base: weighted rows -> the library's padded batch, the weighted next-token
loss, and AdamW on the library's LR schedule. `bench.bench_recall_probe` takes its steps the same way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from types import SimpleNamespace

from longctx_core.data.chat import IGNORE_INDEX
from repro.base.samples import Row

logger = logging.getLogger(__name__)

BETAS = (0.9, 0.95)
MIN_LR_RATIO = 0.1  # the cosine ends at 10% of the peak LR
CLIP_NORM = 1.0


def weighted_batch(rows: list[Row], pad_id: int, pack_to: int | None = None) -> dict:
    """`rows` as the library's padded batch (`longctx_core.train.packing.collate_packed`: input_ids, labels and
    position_ids, no attention mask) plus `weights`, aligned with the tokens like the labels:

        rows          [5, 6, 7] weights [.5, .5, 1]     [8, 9] weights [.5, 1]
        input_ids      5   6   7                         8   9   pad
        labels         5   6   7                         8   9   -100      (weight 0: -100 too)
        position_ids   0   1   2                         0   1   2         (padding continues the row)
        weights       .5  .5   1                        .5   1   0

    Position t predicts token t+1, with weight weights[t+1]; a row's first weight is never used. `reads`
    holds the rows' attention reads (`repro.base.samples.name_reads`) in batch coordinates, one per line:
    (batch row, from, to, first position of the read's sample, layer, head).

    With `pack_to`, rows are first packed (`longctx_core.train.packing.first_fit_decreasing`) into rows of at most
    that many tokens (or the longest row), positions restarting per sample; each sample's first token gets
    weight 0, so no sample is trained to predict the next one and the loss is the padded batch's:

        pack_to=5     input_ids      5   6   7   8   9
                      position_ids   0   1   2   0   1
                      weights       .5  .5   1   0   1

    The samples stay apart without a mask: transformers derives a block-diagonal causal mask from the
    restarting positions (for the toy base's short samples SDPA with that dense mask is faster than the
    library's `longctx_packed`, one SDPA call per sample: `bench/bench_toybase.py --packed-attn`)."""
    import torch

    from longctx_core.train.packing import collate_packed, first_fit_decreasing

    groups = [[i] for i in range(len(rows))]
    if pack_to is not None:
        groups = first_fit_decreasing([len(r[0]) for r in rows], max(pack_to, *(len(r[0]) for r in rows)))
    packed, row_weights, reads = [], [], []
    for g, group in enumerate(groups):
        ids, ws, pos = [], [], []
        for k, i in enumerate(group):
            sample_ids, sample_ws, *sample_reads = rows[i]
            start = len(ids)
            for at, to, layer, head in sample_reads[0] if sample_reads else ():
                reads.append((g, start + at, start + to, start, layer, head))
            ids += sample_ids
            ws += [0.0 if k else sample_ws[0], *sample_ws[1:]]  # a later sample's first token: no target
            pos += range(len(sample_ids))
        labels = [t if w > 0 else IGNORE_INDEX for t, w in zip(ids, ws, strict=True)]
        packed.append({"input_ids": ids, "labels": labels, "position_ids": pos})
        row_weights.append(ws)
    batch = collate_packed(packed, pad_id)
    weights = torch.zeros(batch["input_ids"].shape, dtype=torch.float32)
    for i, ws in enumerate(row_weights):
        weights[i, : len(ws)] = torch.tensor(ws)
    reads = torch.tensor(reads, dtype=torch.long).reshape(-1, 6)
    return batch | {"weights": weights, "reads": reads}


def weighted_loss(model, batch: dict):
    """(loss, answer-token loss): next-token cross-entropy weighted by `batch["weights"]`, and the plain
    mean over answer tokens (weight 1) for logging."""
    import torch.nn.functional as F

    # No attention mask: padding comes last, so no real token attends to it; packed samples are kept apart
    # by the mask transformers builds from the restarting position_ids (see `weighted_batch`).
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    logits = out.logits[:, :-1]
    targets = batch["labels"][:, 1:].reshape(-1)
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    w = batch["weights"][:, 1:].reshape(-1)
    answer = (w == 1.0).float()
    return (nll * w).sum() / w.sum(), (nll * answer).sum() / answer.sum().clamp(min=1)


@contextmanager
def attention_inputs(model, layers):
    """Within the block, each forward pass of `model` (a Qwen2 causal LM) leaves the input of the attention
    of each of `layers` in the yielded dict, by layer: (hidden states after the layer norm, RoPE (cos, sin))."""
    seen: dict = {}
    handles = []
    for layer in layers:

        def keep(_module, args, kwargs, layer=layer):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            seen[layer] = (
                hidden,
                kwargs["position_embeddings"] if "position_embeddings" in kwargs else args[1],
            )

        attn = model.model.layers[layer].self_attn
        handles.append(attn.register_forward_pre_hook(keep, with_kwargs=True))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def name_read_nll(model, seen: dict, reads):
    """Mean over `reads` (`weighted_batch`'s) of -log the attention the read's head pays from its `from`
    position to its `to` position, recomputed from its layer's input (`attention_inputs`) as the layer
    computes it: RoPE'd queries and keys, scaled dot products, softmax over the positions `from` sees (its
    own sample, up to itself)."""
    import torch
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    nll = []
    for layer in reads[:, 4].unique().tolist():
        attn = model.model.layers[layer].self_attn
        hidden, rope = seen[layer]
        batch, length, _ = hidden.shape
        q = attn.q_proj(hidden).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(hidden).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rope)
        row, at, to, start, _, head = reads[reads[:, 4] == layer].unbind(1)
        kv_head = torch.div(head, attn.num_key_value_groups, rounding_mode="floor")
        scores = torch.einsum("rd,rtd->rt", q[row, head, at], k[row, kv_head]) * attn.scaling
        positions = torch.arange(length)
        visible = (positions >= start[:, None]) & (positions <= at[:, None])
        logp = scores.masked_fill(~visible, float("-inf")).log_softmax(-1)
        nll.append(-logp[torch.arange(len(row)), to])
    return torch.cat(nll).mean()


def adamw(model, lr: float, weight_decay: float):
    """The toy base's optimizer: AdamW over every weight (full fine-tuning)."""
    import torch

    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=BETAS)


def lr_schedule(warmup_steps: int, total_steps: int | None) -> Callable[[int], float]:
    """The library's LR multiplier per step (`lr_lambda`): linear warm-up over `warmup_steps`, then cosine
    decay to `MIN_LR_RATIO` at `total_steps` (None: constant after the warm-up). Returns a function."""
    from longctx_core.train.schedule import lr_lambda

    # lr_lambda reads these three TrainConfig keys; the toy's own values live in repro.base
    knobs = SimpleNamespace(warmup_steps=warmup_steps, min_lr_ratio=MIN_LR_RATIO, lr_schedule="cosine")
    return lr_lambda(knobs, total_steps)


def optimizer_step(model, opt, loss, lr: float) -> None:
    """One optimizer step on `loss` at learning rate `lr`, the gradient norm clipped to `CLIP_NORM`."""
    import torch

    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    opt.step()
