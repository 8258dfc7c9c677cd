"""Packed-row attention that costs what attention over each sample costs: `longctx_packed`.

transformers keeps packed samples apart (no attention mask, no cache, `position_ids` restarting per sample) by
building a dense [batch, 1, T, T] block-diagonal mask; CPU SDPA with a dense mask is slower than its causal
kernel, so packed rows trained slower than padded ones. `longctx_packed` instead cuts each row at the position
restarts and runs causal SDPA on every sample on its own:

    row          a0 a1 a2 a3 a4 b0 b1 b2 c0 c1        (pad tokens continue c's positions: part of c)
    position_ids  0  1  2  3  4  0  1  2  0  1
    segments     [0, 5)          [5, 8)   [8, 10)     -> SDPA(is_causal) on each, outputs concatenated

Cost per sample L²/2 instead of the row's T² with a mask, and no mask is ever built: the mask function
registered for the name returns None in exactly that case. Whenever a mask tensor is needed (a padding mask,
decoding with a cache, sliding-window layers) it builds the plain SDPA mask and attention runs plain SDPA, so
evaluation and batched generation behave as with `sdpa`.

The split rule is transformers' own (`find_packed_sequence_indices`): a sample starts wherever a position does
not continue the previous one. `flex_attention` with a document mask would do the same in one kernel, but in
torch 2.13 it has no backward on CPU (NotImplementedError), so it cannot train here.

    name = resolve_attn_implementation("auto")   # registers longctx_packed; returns the name for from_pretrained
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

PACKED = "longctx_packed"
CHOICES = ("auto", "eager", "sdpa", "flash_attention_2", PACKED)


def segment_bounds(position_ids: torch.Tensor | None, batch: int, length: int) -> list[list[int]]:
    """Per row, the start of every sample plus the row end: [[0, 5, 8, 10], ...] for the docstring's row.

    `position_ids` [batch or 1, length]; None means one sample per row. Returns python ints (one host sync).
    """
    if position_ids is None:
        return [[0, length] for _ in range(batch)]
    pos = position_ids.expand(batch, -1)
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] - pos[:, :-1] != 1
    bounds: list[list[int]] = [[] for _ in range(batch)]
    for b, t in starts.nonzero().tolist():
        bounds[b].append(t)
    for row in bounds:
        row.append(length)
    return bounds


def bounds_from_cu_seqlens(cu_seqlens: torch.Tensor, batch: int, length: int) -> list[list[int]]:
    """Per-row sample bounds from flash-attention style `cu_seqlens` over the flattened batch (batch x length
    tokens). Raises ValueError when a sample would cross a row boundary (the caller flattened it wrongly)."""
    flat = [int(x) for x in cu_seqlens.tolist()]
    if flat[0] != 0 or flat[-1] != batch * length:
        raise ValueError(f"cu_seq_lens {flat[:4]}... do not cover the {batch} x {length} tokens of the batch")
    bounds: list[list[int]] = [[] for _ in range(batch)]
    for start, end in zip(flat[:-1], flat[1:], strict=True):
        b = start // length
        if (end - 1) // length != b:
            raise ValueError(f"cu_seq_lens: a sample spans rows {b} and {(end - 1) // length}")
        bounds[b].append(start - b * length)
    for row in bounds:
        row.append(length)
    return bounds


def _sdpa_kwargs(module, key: torch.Tensor, value: torch.Tensor):
    """(key, value, extra SDPA kwargs) for grouped-query attention, chosen as transformers' SDPA path chooses
    them without a mask (native `enable_gqa` or repeated heads), so both paths run the same kernel."""
    from transformers.integrations.sdpa_attention import repeat_kv, use_gqa_in_sdpa

    groups = getattr(module, "num_key_value_groups", 1)
    if groups <= 1:
        return key, value, {}
    if use_gqa_in_sdpa(None, key, value):
        return key, value, {"enable_gqa": True}
    return repeat_kv(key, groups), repeat_kv(value, groups), {}


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The attention function registered as `longctx_packed`: query [B, H, T, D], key/value [B, Hkv, T, D] in,
    (output [B, T, H, D], None) out, like every transformers attention function.

    Causal SDPA per sample when no mask reached it and queries and keys are the same tokens (training,
    prefill); plain transformers SDPA otherwise (padding mask, decoding with a cache, sliding window).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, _, length, _ = query.shape
    if attention_mask is not None or key.shape[2] != length or kwargs.get("sliding_window") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is not None:
        bounds = bounds_from_cu_seqlens(cu_seqlens, batch, length)
    else:
        bounds = segment_bounds(kwargs.get("position_ids"), batch, length)
    key, value, extra = _sdpa_kwargs(module, key, value)

    def attend(q, k, v):
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, scale=scaling, is_causal=True, **extra
        )

    if all(len(row) == 2 for row in bounds):  # one sample per row: the batched causal kernel, as sdpa runs it
        out = attend(query, key, value)
    else:
        rows = []
        for b, row in enumerate(bounds):
            q, k, v = query[b : b + 1], key[b : b + 1], value[b : b + 1]
            parts = [
                attend(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e])
                for s, e in zip(row[:-1], row[1:], strict=True)
            ]
            rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
        out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def packed_attention_mask(
    *,
    q_length: int,
    kv_length: int,
    q_offset=0,
    kv_offset=0,
    attention_mask: torch.Tensor | None = None,
    local_size: int | None = None,
    **kwargs,
):
    """The mask function registered for `longctx_packed`: None (nothing built) when attention can split the
    rows itself, i.e. no padding mask, no sliding window, queries are the whole key range; else the 4D mask
    (or None) that transformers' `sdpa_mask` gives. Returns what `create_causal_mask` hands to attention."""
    from transformers.masking_utils import sdpa_mask

    offsets_zero = not isinstance(q_offset, torch.Tensor) and q_offset == 0 and kv_offset == 0
    if attention_mask is None and local_size is None and q_length == kv_length and offsets_zero:
        return None
    return sdpa_mask(
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        attention_mask=attention_mask,
        local_size=local_size,
        **kwargs,
    )


def register_packed_attention() -> str:
    """Register `longctx_packed` (attention function + mask function) with transformers; idempotent. Must run
    in every process that loads a model with it, before `from_pretrained`. Returns the name."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(PACKED, packed_attention_forward)
    AttentionMaskInterface.register(PACKED, packed_attention_mask)
    return PACKED


def resolve_attn_implementation(name: str) -> str:
    """The `attn_implementation` to hand to `from_pretrained` for the config value `name`; registers
    `longctx_packed` when that is the answer.

    `auto` is `longctx_packed` on CPU and GPU alike: it is `sdpa` wherever a mask or cache is involved, and on
    packed rows it keeps samples apart for any micro-batch size. (transformers' `flash_attention_2` infers the
    varlen boundaries from position_ids only for a batch of one row: with several packed rows per micro-batch
    and no mask it runs plain causal attention over each whole row, so samples see each other.)
    """
    if name not in CHOICES:
        raise ValueError(f"model.attn_implementation: '{name}' is not one of {list(CHOICES)}")
    if name == "auto":
        name = PACKED
    if name == PACKED:
        register_packed_attention()
    return name
