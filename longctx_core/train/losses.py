"""Causal-LM loss that never materialises the full fp32 logits, NEFTune noise, and the training forward.

For a 32k-token row and a 150k vocabulary the full logits are 32k x 150k = 4.9G values (19.7 GB in fp32):
more than the rest of the step. The loss here

1. keeps only positions that have a label (assistant tokens: in long-context QA a small share of the row),
2. computes logits chunk by chunk (`train.loss_chunk_size` tokens), upcast to fp32 one chunk at a time,
3. recomputes each chunk's logits in backward (activation checkpointing) instead of storing them,

so at most one chunk of fp32 logits exists at any time. On GPU, Liger's fused linear cross-entropy does
the same in one kernel and is used when `liger-kernel` is installed (and the head weight is not ZeRO-3
partitioned).
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from longctx_core.data.chat import IGNORE_INDEX

logger = logging.getLogger(__name__)


def liger_available() -> bool:
    """True when liger-kernel is importable and a CUDA device is present (its kernels are Triton)."""
    return importlib.util.find_spec("liger_kernel") is not None and torch.cuda.is_available()


def _chunk_loss(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """Summed fp32 cross-entropy of one chunk: hidden [n, H] through the head against targets [n]."""
    return F.cross_entropy(head(hidden).float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


def _chunk_token_losses(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """Per-token fp32 cross-entropy of one chunk (for per-source sums); returns [n]."""
    return F.cross_entropy(head(hidden).float(), targets, ignore_index=IGNORE_INDEX, reduction="none")


def group_losses(
    hidden: torch.Tensor,
    head: nn.Module,
    targets: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed fp32 cross-entropy (scalar, differentiable) and, detached, per group [n_groups, 2] the loss
    sum and token count of labelled positions whose group is `groups` [n] (-1: no group). Chunked like
    `chunked_cross_entropy`, recomputing each chunk's logits in backward."""
    stats = torch.zeros((n_groups, 2), dtype=torch.float64, device=hidden.device)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.size(0), chunk_size):
        sl = slice(start, start + chunk_size)
        per_token = checkpoint(_chunk_token_losses, hidden[sl], head, targets[sl], use_reentrant=False)
        total = total + per_token.sum()
        g = groups[sl]
        known = g >= 0
        stats[:, 0].index_add_(0, g[known], per_token.detach()[known].double())
        stats[:, 1].index_add_(0, g[known], torch.ones_like(g[known], dtype=torch.float64))
    return total, stats


def labelled_positions(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift for next-token prediction and keep labelled positions; returns (hidden [n, H], targets [n]).

    `labels` are aligned with the inputs (HF convention): position t's hidden state predicts labels[t + 1].
    """
    h = hidden[:, :-1, :].reshape(-1, hidden.size(-1))
    y = labels[:, 1:].reshape(-1)
    keep = (y != IGNORE_INDEX).nonzero(as_tuple=True)[0]
    return h.index_select(0, keep), y.index_select(0, keep)


def chunked_cross_entropy(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Summed fp32 cross-entropy of `head(hidden)` against `targets`, computed `chunk_size` rows at a time;
    returns a scalar. With more than one chunk each chunk's logits are recomputed in backward."""
    if hidden.size(0) <= chunk_size:
        return _chunk_loss(hidden, head, targets)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.size(0), chunk_size):
        sl = slice(start, start + chunk_size)
        total = total + checkpoint(_chunk_loss, hidden[sl], head, targets[sl], use_reentrant=False)
    return total


def _liger_loss(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy through Liger's fused linear + CE kernel (no logits kept)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss_fn = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_fn(head.weight, hidden, targets, getattr(head, "bias", None))


def causal_lm_loss(
    hidden: torch.Tensor,
    head: nn.Module,
    labels: torch.Tensor,
    chunk_size: int,
    use_liger: bool = False,
    loss_groups: torch.Tensor | None = None,
    n_groups: int = 0,
):
    """Next-token loss of a batch; returns (summed fp32 loss, number of labelled tokens) so callers can
    normalise over any set of micro-batches and ranks. With `loss_groups` [B, T] (a data-source index per
    token, -1 none) it returns a third item: per group [n_groups, 2] the detached loss sum and token count
    (the per-token path: Liger's fused kernel gives no per-token losses)."""
    if loss_groups is not None:
        keep = (labels[:, 1:].reshape(-1) != IGNORE_INDEX).nonzero(as_tuple=True)[0]
        g = loss_groups[:, 1:].reshape(-1).index_select(0, keep)
        h, y = labelled_positions(hidden, labels)
        n = torch.tensor(y.numel(), device=hidden.device)
        if y.numel() == 0:
            empty = torch.zeros((n_groups, 2), dtype=torch.float64, device=hidden.device)
            return hidden.sum() * 0.0, n, empty
        total, stats = group_losses(h, head, y, g, n_groups, chunk_size)
        return total, n, stats
    h, y = labelled_positions(hidden, labels)
    n = torch.tensor(y.numel(), device=hidden.device)
    if y.numel() == 0:
        # Keep the graph connected (every rank must run backward) with an exact zero.
        return hidden.sum() * 0.0, n
    partitioned = hasattr(getattr(head, "weight", None), "ds_id")  # ZeRO-3 shards it: Liger needs it whole
    if use_liger and not partitioned:
        return _liger_loss(h, head, y), n
    return chunked_cross_entropy(h, head, y, chunk_size), n


def sample_lengths(position_ids: torch.Tensor) -> torch.Tensor:
    """For each token of packed rows [B, T], the length of the sample it belongs to (same shape).

    A sample starts wherever the position does not continue the previous one (the rule transformers uses
    to build the block-diagonal mask), so padding that continues the last sample counts towards it.
    """
    prev = torch.cat([position_ids[:, :1] - 1, position_ids[:, :-1]], dim=1)
    segment = (position_ids - prev != 1).long().cumsum(dim=1)  # 1-based segment index per row
    out = torch.empty_like(position_ids)
    for b in range(position_ids.size(0)):
        counts = torch.bincount(segment[b])
        out[b] = counts[segment[b]]
    return out


def neftune_noise(embeds: torch.Tensor, position_ids: torch.Tensor, alpha: float) -> torch.Tensor:
    """NEFTune noise for packed rows: uniform(-1, 1) x alpha / sqrt(L x d) with L each token's own sample
    length (as if the sample were alone, the paper's setting), d the hidden size. Returns the noise."""
    scale = alpha / torch.sqrt(sample_lengths(position_ids).to(embeds.dtype) * embeds.size(-1))
    return torch.empty_like(embeds).uniform_(-1, 1) * scale.unsqueeze(-1)


class PackedCausalLM(nn.Module):
    """The training forward around a (PEFT) causal LM: embeddings (+ NEFTune in training), the decoder on
    packed rows with position_ids and NO attention mask (samples kept apart), then `causal_lm_loss`.

    `forward(input_ids, position_ids, labels)` returns (summed loss, labelled tokens). Wrapping the whole
    computation in one module lets DeepSpeed's ZeRO-3 hooks see every parameter use.
    """

    def __init__(self, lm: nn.Module, chunk_size: int, neftune_alpha: float | None = None, use_liger=False):
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size
        self.neftune_alpha = neftune_alpha
        self.use_liger = use_liger and liger_available()
        if use_liger and not self.use_liger:
            logger.info("liger-kernel not usable here (needs it installed and a GPU): chunked cross-entropy")

    def causal_lm(self) -> nn.Module:
        """The underlying `*ForCausalLM` (inside the PEFT wrapper, LoRA layers injected)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def forward(self, input_ids, position_ids, labels, loss_groups=None, n_groups: int = 0):
        model = self.causal_lm()
        embeds = model.get_input_embeddings()(input_ids)
        if self.training and self.neftune_alpha:
            embeds = embeds + neftune_noise(embeds, position_ids, self.neftune_alpha)
        out = model.model(inputs_embeds=embeds, position_ids=position_ids, use_cache=False)
        return causal_lm_loss(
            out.last_hidden_state,
            model.get_output_embeddings(),
            labels,
            self.chunk_size,
            self.use_liger,
            loss_groups,
            n_groups,
        )
