"""Parity of the model runners on the tiny model: left-padded batched greedy generation equals one-by-one
generation, and the chunked per-token loss equals transformers' own loss."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx_core.eval import generate


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_left_pad_layout():
    ids, mask = generate.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_generation_equals_solo(model_and_tok):
    model, tok = model_and_tok
    texts = ["Velmora was founded in 1742 by river traders and", "The harbour"]
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    pad = tok.pad_token_id
    batched = generate.greedy_generate(model, seqs, [10, 6], pad)
    solo = [generate.greedy_generate(model, [s], [b], pad)[0] for s, b in zip(seqs, [10, 6], strict=True)]
    assert batched == solo
    assert len(batched[1]) <= 6  # each row cut at its own budget


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
