"""Packing: the docstring's toy example as a golden test, first-fit-decreasing, the padded collate, and the
parity test: packed samples give the logits and per-token losses of each sample run alone, and no gradient
flows between them."""

from __future__ import annotations

import pytest
import torch

from longctx_core.errors import LongctxError
from longctx_core.train.packing import (
    PackedRow,
    Sample,
    collate_packed,
    estimate_packing,
    first_fit_decreasing,
    fit_length,
    pack_samples,
    packing_efficiency,
)

M = -100


def toy_samples():
    """The module docstring's example: A (5 tokens), B (3), C (4); ids encode sample and position."""
    a = Sample("A", [10, 11, 12, 13, 14], [M, M, 12, 13, 14])
    b = Sample("B", [20, 21, 22], [M, 21, 22])
    c = Sample("C", [30, 31, 32, 33], [M, M, 32, 33])
    return [a, b, c]


def test_golden_toy_example():
    rows = pack_samples(toy_samples(), capacity=8)
    assert [r.to_dict() for r in rows] == [
        {
            "input_ids": [10, 11, 12, 13, 14, 20, 21, 22],
            "labels": [M, M, 12, 13, 14, M, 21, 22],
            "position_ids": [0, 1, 2, 3, 4, 0, 1, 2],
            "seq_lens": [5, 3],
            "sample_ids": ["A", "B"],
        },
        {
            "input_ids": [30, 31, 32, 33],
            "labels": [M, M, 32, 33],
            "position_ids": [0, 1, 2, 3],
            "seq_lens": [4],
            "sample_ids": ["C"],
        },
    ]
    assert packing_efficiency(rows, 8) == pytest.approx(0.75)
    # The input order does not matter (ties and order broken by sample id).
    assert [r.to_dict() for r in pack_samples(toy_samples()[::-1], 8)] == [r.to_dict() for r in rows]


def test_golden_padding_continues_the_last_sample():
    rows = [r.to_dict() for r in pack_samples(toy_samples(), capacity=8)]
    batch = collate_packed(rows, pad_id=0)
    assert batch["input_ids"][1].tolist() == [30, 31, 32, 33, 0, 0, 0, 0]
    assert batch["labels"][1].tolist() == [M, M, 32, 33, M, M, M, M]
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # no fake sequence starts
    assert "attention_mask" not in batch


def test_first_boundary_label_is_masked_even_if_labelled():
    """A sample whose first token carries a label must not be trained to follow the previous sample."""
    row = PackedRow()
    row.add(Sample("x", [1, 2], [1, 2]))
    row.add(Sample("y", [3, 4], [3, 4]))
    assert row.labels == [M, 2, M, 4]


def test_first_fit_decreasing_is_a_real_bin_packing():
    lengths = [7, 5, 5, 4, 3, 2, 2, 1, 1]  # 30 tokens into bins of 10: 3 bins is optimal
    bins = first_fit_decreasing(lengths, 10)
    assert len(bins) == 3
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    with pytest.raises(ValueError, match="outside"):
        first_fit_decreasing([11], 10)


def test_estimate_packing_on_a_length_distribution():
    est = estimate_packing([300, 200, 500, 100, 900, 24], capacity=1024, window=3)
    # Window [300, 200, 500] -> 1 row; window [100, 900, 24] -> 1 row.
    assert est["rows"] == 2 and est["efficiency"] == pytest.approx(2024 / 2048)


def test_overlong_sample_is_an_error_or_truncated_by_config():
    s = Sample("long", list(range(10)), list(range(10)))
    with pytest.raises(LongctxError, match="train.overlong=truncate"):
        fit_length(s, 8, "error")
    cut, truncated = fit_length(s, 8, "truncate")
    assert truncated and len(cut) == 8 and cut.labels == list(range(8))


def test_seeded_row_shuffle_is_deterministic():
    samples = [Sample(f"s{i}", [1] * (i + 1), [1] * (i + 1)) for i in range(20)]
    a = [r.sample_ids for r in pack_samples(samples, 24, seed=3)]
    b = [r.sample_ids for r in pack_samples(samples[::-1], 24, seed=3)]
    assert a == b
    assert a != [r.sample_ids for r in pack_samples(samples, 24, seed=None)]


# ---- parity with solo runs on the tiny model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(train_model_dir):
    from transformers import AutoModelForCausalLM

    def load(attn: str):
        model = AutoModelForCausalLM.from_pretrained(train_model_dir, attn_implementation=attn)
        model.config.use_cache = False
        return model.eval()

    return load


def three_samples(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate((37, 21, 50)):
        ids = torch.randint(5, 500, (n,), generator=g).tolist()
        labels = [M] * (n // 2) + ids[n // 2 :]
        out.append(Sample(f"p{i}", ids, labels))
    return out


def _per_token_loss(logits, labels):
    return torch.nn.functional.cross_entropy(
        logits[:-1].float(), labels[1:], ignore_index=M, reduction="none"
    )


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_logits_and_losses_equal_solo_runs(tiny_lm, attn):
    model = tiny_lm(attn)
    samples = three_samples()
    rows = pack_samples(samples, capacity=128)
    assert len(rows) == 1 and len(rows[0].seq_lens) == 3
    batch = collate_packed([rows[0].to_dict()], pad_id=0, pad_to=128)  # with trailing padding, as in training
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
    start = 0
    for sid, n in zip(rows[0].sample_ids, rows[0].seq_lens, strict=True):
        s = next(x for x in samples if x.id == sid)
        with torch.no_grad():
            solo = model(input_ids=torch.tensor([s.input_ids])).logits[0]
        torch.testing.assert_close(packed[start : start + n], solo, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(
            _per_token_loss(packed[start : start + n], torch.tensor(s.labels)),
            _per_token_loss(solo, torch.tensor(s.labels)),
            atol=2e-5,
            rtol=1e-4,
        )
        start += n


def test_no_gradient_crosses_sample_boundaries(tiny_lm):
    model = tiny_lm("sdpa")
    row = pack_samples(three_samples(1), capacity=128)[0]
    batch = collate_packed([row.to_dict()], pad_id=0)
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, position_ids=batch["position_ids"]).logits
    first = row.seq_lens[0]
    logits[0, first:].sum().backward()  # everything after sample 1 ...
    assert embeds.grad[0, :first].abs().max().item() == 0.0  # ... is blind to sample 1
    assert embeds.grad[0, first:].abs().max().item() > 0.0


def test_parity_test_would_catch_cross_attention(tiny_lm):
    """The regression the parity test guards: an all-ones attention mask (or a cache) makes transformers
    treat the row as one sequence, and later samples attend to earlier ones."""
    model = tiny_lm("sdpa")
    row = pack_samples(three_samples(), capacity=128)[0]
    batch = collate_packed([row.to_dict()], pad_id=0)
    with torch.no_grad():
        apart = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        mixed = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=torch.ones_like(batch["input_ids"]),
        ).logits
    first = row.seq_lens[0]
    assert (apart[0, first:] - mixed[0, first:]).abs().max().item() > 1e-3


def test_training_forward_loss_equals_sum_of_solo_losses(train_model_dir):
    """`PackedCausalLM` (embeddings -> decoder without mask -> chunked loss) on a packed row gives the summed
    loss of the samples run alone through the plain HF forward."""
    from transformers import AutoModelForCausalLM

    from longctx_core.train.losses import PackedCausalLM

    model = AutoModelForCausalLM.from_pretrained(train_model_dir, attn_implementation="sdpa").eval()
    model.config.use_cache = False
    wrapper = PackedCausalLM(model, chunk_size=16).eval()
    samples = three_samples(2)
    row = pack_samples(samples, capacity=128)[0]
    batch = collate_packed([row.to_dict()], pad_id=0, pad_to=128)
    with torch.no_grad():
        loss_sum, n = wrapper(**batch)
        solo_sum, solo_n = 0.0, 0
        for s in samples:
            labels = torch.tensor([[M, *s.labels[1:]]])
            out = model(input_ids=torch.tensor([s.input_ids]), labels=labels)
            k = int((labels[0, 1:] != M).sum())
            solo_sum += out.loss.item() * k
            solo_n += k
    assert int(n) == solo_n
    assert loss_sum.item() == pytest.approx(solo_sum, rel=1e-5)
