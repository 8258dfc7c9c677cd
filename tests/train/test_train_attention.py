"""Attention on packed rows (`longctx_core.model.attention`): every path that runs on CPU — eager and sdpa (a dense
block-diagonal mask built by transformers) and `longctx_packed` (causal SDPA per sample, no mask) — gives the
logits and per-token losses of each sample run alone, and no gradient crosses a sample boundary; a 4-bit NF4 +
LoRA model loaded through the project's own path with gradient checkpointing too. `longctx_packed` builds no
mask for packed rows, and is plain SDPA with a padding mask or a cache (batched generation)."""

from __future__ import annotations

import pytest
import torch

from longctx_core.model.attention import (
    PACKED,
    bounds_from_cu_seqlens,
    register_packed_attention,
    resolve_attn_implementation,
    segment_bounds,
)
from longctx_core.train.packing import Sample, collate_packed, pack_samples

M = -100
PATHS = ["eager", "sdpa", PACKED]
TOL = dict(atol=1e-5, rtol=1e-5)


def test_segment_bounds_golden():
    """The module docstring's row: samples of 5, 3 and 2 tokens (the last one's padding continues it)."""
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    assert segment_bounds(pos, 2, 10) == [[0, 5, 8, 10], [0, 10]]
    assert segment_bounds(pos[:1], 2, 10) == [[0, 5, 8, 10], [0, 5, 8, 10]]  # [1, T] position ids broadcast
    assert segment_bounds(None, 2, 10) == [[0, 10], [0, 10]]
    # The same bounds from flash-attention style cumulative lengths over the flattened batch.
    assert bounds_from_cu_seqlens(torch.tensor([0, 5, 8, 10, 20]), 2, 10) == [[0, 5, 8, 10], [0, 10]]
    with pytest.raises(ValueError, match="spans rows 0 and 1"):
        bounds_from_cu_seqlens(torch.tensor([0, 5, 12, 20]), 2, 10)


def test_auto_resolves_to_the_packed_path_and_bad_names_fail():
    assert resolve_attn_implementation("auto") == PACKED
    assert resolve_attn_implementation("sdpa") == "sdpa"
    with pytest.raises(ValueError, match="model.attn_implementation"):
        resolve_attn_implementation("flex")


def samples(seed: int = 0) -> list[Sample]:
    """Four samples that FFD packs into 2 rows of 64 ([50, 12] and [37, 21]), labels on their second half."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate((37, 21, 50, 12)):
        ids = torch.randint(5, 500, (n,), generator=g).tolist()
        out.append(Sample(f"p{i}", ids, [M] * (n // 2) + ids[n // 2 :]))
    return out


def packed_batch(seed: int = 0):
    """(rows, the collated micro-batch of 2 packed rows padded to 70 tokens, samples by id)."""
    ss = samples(seed)
    rows = pack_samples(ss, capacity=64)
    assert [r.seq_lens for r in rows] == [[50, 12], [37, 21]]
    return rows, collate_packed([r.to_dict() for r in rows], pad_id=0, pad_to=70), {s.id: s for s in ss}


def per_token_loss(logits, labels):
    return torch.nn.functional.cross_entropy(
        logits[:-1].float(), labels[1:], ignore_index=M, reduction="none"
    )


def load_plain(model_dir, attn: str):
    from transformers import AutoModelForCausalLM

    if attn == PACKED:
        register_packed_attention()
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn, dtype=torch.float32)
    model.config.use_cache = False
    return model.eval()


def assert_packed_equals_solo(model, rows, batch, by_id):
    """Packed logits (a forward of the whole micro-batch) equal each sample's solo logits, per-token losses too."""
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    for b, row in enumerate(rows):
        start = 0
        for sid, n in zip(row.sample_ids, row.seq_lens, strict=True):
            s = by_id[sid]
            with torch.no_grad():
                solo = model(input_ids=torch.tensor([s.input_ids])).logits[0]
            got = packed[b, start : start + n]
            torch.testing.assert_close(got, solo, **TOL)
            labels = torch.tensor(s.labels)
            torch.testing.assert_close(per_token_loss(got, labels), per_token_loss(solo, labels), **TOL)
            start += n


def assert_no_cross_gradient(decoder, embed, batch, first: int):
    """d(logit sum of row 0 after its first sample) / d(first sample's embeddings) is exactly 0, and not 0
    for the tokens after it (so the test can fail)."""
    embeds = embed(batch["input_ids"]).detach().requires_grad_(True)
    hidden = decoder(inputs_embeds=embeds, position_ids=batch["position_ids"], use_cache=False)
    hidden.last_hidden_state[0, first:].sum().backward()
    assert embeds.grad[0, :first].abs().max().item() == 0.0
    assert embeds.grad[0, first:].abs().max().item() > 0.0
    assert embeds.grad[1].abs().max().item() == 0.0  # rows never mix either


@pytest.mark.parametrize("attn", PATHS)
def test_packed_rows_equal_solo_runs(train_model_dir, attn):
    model = load_plain(train_model_dir, attn)
    rows, batch, by_id = packed_batch()
    assert_packed_equals_solo(model, rows, batch, by_id)
    assert_no_cross_gradient(model.model, model.get_input_embeddings(), batch, rows[0].seq_lens[0])


def test_packed_path_builds_no_mask_and_sdpa_does(train_model_dir):
    """The mask builder runs before attention: for packed rows it must not materialise the [B, 1, T, T] mask."""
    from transformers.masking_utils import create_causal_mask

    _, batch, _ = packed_batch()
    masks = {}
    for attn in ("sdpa", PACKED):
        model = load_plain(train_model_dir, attn)
        embeds = model.get_input_embeddings()(batch["input_ids"])
        masks[attn] = create_causal_mask(
            model.config, embeds, attention_mask=None, cache=None, position_ids=batch["position_ids"]
        )
    assert masks[PACKED] is None
    assert masks["sdpa"] is not None and tuple(masks["sdpa"].shape) == (2, 1, 70, 70)


def test_packed_path_is_sdpa_with_padding_mask_and_cache(train_model_dir, train_tokenizer):
    """Evaluation path: a left-padded batch through generate (padding mask, KV cache, decoding steps) gives
    the same tokens and scores as sdpa."""
    prompts = [
        "Document [1] Alma Vesk lives in Orlen.\nQuestion: where does Alma Vesk live?",
        "Question: who?",
    ]
    train_tokenizer.padding_side = "left"
    enc = train_tokenizer(prompts, return_tensors="pt", padding=True)
    assert (enc["attention_mask"] == 0).any()  # really padded
    outs = {}
    for attn in ("sdpa", PACKED):
        model = load_plain(train_model_dir, attn)
        model.generation_config.pad_token_id = train_tokenizer.pad_token_id
        with torch.no_grad():
            outs[attn] = model.generate(
                **enc,
                max_new_tokens=6,
                do_sample=False,
                use_cache=True,
                output_scores=True,
                return_dict_in_generate=True,
            )
    assert torch.equal(outs["sdpa"].sequences, outs[PACKED].sequences)
    for a, b in zip(outs["sdpa"].scores, outs[PACKED].scores, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("attn", ["sdpa", "auto"])
def test_4bit_lora_checkpointed_training_forward_on_packed_rows(make_train_cfg, tmp_path, attn):
    """The project's load path (`load_model` 4-bit NF4 + `add_lora`, gradient checkpointing on, train mode):
    `auto` loads `longctx_packed`; the training forward on packed rows gives each sample's solo loss, and no
    gradient reaches another sample's embeddings."""
    from longctx_core.model.loading import load_model
    from longctx_core.model.lora import add_lora
    from longctx_core.train.losses import PackedCausalLM

    cfg = make_train_cfg(
        tmp_path,
        **{
            "model.attn_implementation": attn,
            "model.gradient_checkpointing": True,
            "model.lora.dropout": 0.0,
        },
    )
    assert cfg.model.quantization.load_in_4bit
    torch.manual_seed(0)
    peft = add_lora(load_model(cfg.model), cfg.model)
    base = peft.get_base_model()
    assert base.config._attn_implementation == (PACKED if attn == "auto" else "sdpa")
    assert base.is_activation_checkpointing
    peft.train()
    rows, batch, by_id = packed_batch(1)
    wrapper = PackedCausalLM(peft, chunk_size=16)
    loss_sum, n = wrapper(**batch)
    solo_sum, solo_n = torch.zeros(()), 0
    for row in rows:
        for sid in row.sample_ids:
            s = by_id[sid]
            labels = torch.tensor([[M, *s.labels[1:]]])
            part, k = wrapper(input_ids=torch.tensor([s.input_ids]), position_ids=None, labels=labels)
            solo_sum, solo_n = solo_sum + part, solo_n + int(k)
    assert int(n) == solo_n
    torch.testing.assert_close(loss_sum / n, solo_sum / solo_n, **TOL)
    assert_no_cross_gradient(base.model, base.get_input_embeddings(), batch, rows[0].seq_lens[0])
