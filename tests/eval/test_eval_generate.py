"""Parity of the model runners on the tiny model: batched greedy generation (prompts prefilled alone, decoded
together from a left-padded cache) equals transformers' own `generate` on each prompt alone, stop tokens and
budgets included, and the chunked per-token loss equals transformers' own loss."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx_core.eval import generate


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def model_and_tok(request, tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation=request.param
    )
    # The tiny model's small init repeats one token forever; larger random weights make every step's argmax
    # depend on the whole cache, so a misplaced pad or position would change the tokens.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _reference(model, seq: list[int], budget: int, stop: int | None) -> list[int]:
    """transformers' greedy `generate` on one prompt, cut before its first stop token."""
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([seq]),
            max_new_tokens=budget,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=0,
        )[0, len(seq) :].tolist()
    return out[: out.index(stop)] if stop in out else out


TEXTS = [
    "Velmora was founded in 1742 by river traders and",
    "The harbour",
    "Document [3] (Title: Kalor Tessin) Kalor Tessin works as a cartographer in Orlen. Question: where",
]


def test_batched_generation_equals_generate_on_each_prompt(model_and_tok):
    model, tok = model_and_tok
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert len({len(s) for s in seqs}) == 3  # different lengths: the cache really is left-padded
    budgets = [10, 6, 12]
    model.generation_config.eos_token_id = None
    free = [_reference(model, s, b, None) for s, b in zip(seqs, budgets, strict=True)]
    assert generate.greedy_generate(model, seqs, budgets, pad_id=0) == free
    assert [len(r) for r in free] == budgets  # no stop token: each row runs to its own budget
    assert all(len(set(r)) > 2 for r in free)  # not a degenerate repetition
    # a stop token that some row first emits after a few steps: that row stops early, the others may not
    stop = next(row[j] for row in free for j in range(2, len(row)) if row[j] not in row[:j])
    model.generation_config.eos_token_id = stop
    try:
        expected = [_reference(model, s, b, stop) for s, b in zip(seqs, budgets, strict=True)]
        assert generate.greedy_generate(model, seqs, budgets, pad_id=0) == expected
    finally:
        model.generation_config.eos_token_id = None
    assert any(len(e) < b for e, b in zip(expected, budgets, strict=True))  # some row stopped early


def test_chunked_token_nll_equals_the_model_loss(model_and_tok, monkeypatch):
    model, tok = model_and_tok
    ids = tok(" ".join(["The grass is green. The sky is blue."] * 20), add_special_tokens=False)["input_ids"][
        :150
    ]
    monkeypatch.setattr(generate, "NLL_CHUNK", 32)  # several chunks on a short sequence
    losses = generate.token_nll(model, ids)
    assert len(losses) == len(ids) - 1
    with torch.no_grad():
        reference = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert sum(losses) / len(losses) == pytest.approx(reference, rel=1e-5)
