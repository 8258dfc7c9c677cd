"""QLoRA on CPU with the small tiny model: 4-bit loading, LoRA training sanity, adapter round trip, merge.

The training fixture is the seed recipe in miniature: YaRN-extended (x4) base in 4-bit NF4 with double
quantisation, LoRA on all seven projections plus trained embeddings and norms (LongLoRA), a few AdamW steps
on one repeated batch.

Tolerances: a reloaded adapter gives bit-identical logits (same quantised weights, same kernels). The merged
folder is compared with the adapter on the 4-bit base: measured max |logit diff| ~1e-6 (float32 rounding of
W + BA vs Wx + BAx); the test allows 1e-4. For scale, the dequantisation error (4-bit base vs the full-
precision base) is ~1e-1 on this model, and merging into the full-precision originals instead is off by as
much; the test checks that it is at least 100x the merge error.
"""

from __future__ import annotations

import json
import logging

import bitsandbytes as bnb
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from longctx_core.errors import LongctxError
from longctx_core.model.loading import BASE_CONFIG_NAME, load_model, load_tokenizer
from longctx_core.model.lora import add_lora, load_model_with_adapter, merge_adapter, save_adapter
from longctx_core.model.rope import current_rope, max_context

ORIGINAL = 128  # conftest.SMALL.max_position_embeddings
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL}
STEPS = 8


def batch(seed: int = 0, n: int = 2, length: int = 48) -> torch.Tensor:
    return torch.randint(3, 500, (n, length), generator=torch.Generator().manual_seed(seed))


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality: 4-bit weights packed into float32 storage hold NaN bit patterns, and NaN != NaN."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    )


def frozen_state(peft_model) -> dict[str, torch.Tensor]:
    """Everything in the state dict that training must not touch (packed 4-bit weights and their quant
    state included), cloned."""
    return {
        k: v.detach().clone()
        for k, v in peft_model.state_dict().items()
        if "lora_" not in k and ".modules_to_save." not in k
    }


def train_steps(peft_model, ids: torch.Tensor, steps: int = STEPS, lr: float = 1e-2) -> list[float]:
    torch.manual_seed(0)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    peft_model.train()
    losses = []
    for _ in range(steps):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def qlora_cfg(make_cfg):
    return make_cfg(
        rope=YARN,
        quantization={"load_in_4bit": True, "compute_dtype": "float32"},
        lora={"r": 4, "alpha": 16, "dropout": 0.05, "extra_trainable": ["embed_tokens", "norm"]},
    )


@pytest.fixture(scope="module")
def trained(qlora_cfg, tmp_path_factory):
    """Train once; returns a namespace of the model, its before/after states, losses and the adapter dir."""
    torch.manual_seed(0)
    model = add_lora(load_model(qlora_cfg), qlora_cfg)
    before_frozen = frozen_state(model)
    before_trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = train_steps(model, batch())
    adapter = save_adapter(model, tmp_path_factory.mktemp("qlora") / "adapter", load_tokenizer(qlora_cfg))
    return {
        "model": model,
        "before_frozen": before_frozen,
        "before_trainable": before_trainable,
        "losses": losses,
        "adapter": adapter,
    }


# ---- 4-bit loading -----------------------------------------------------------------------------------------


def test_4bit_load_quantises_every_projection_and_keeps_the_rest(qlora_cfg):
    model = load_model(qlora_cfg)
    quantised = {n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(quantised) == len(PROJECTIONS) * 2  # 7 projections x 2 layers
    assert all(n.rpartition(".")[2] in PROJECTIONS for n in quantised)
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    assert isinstance(model.model.embed_tokens, torch.nn.Embedding)
    q = model.config.quantization_config
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == (
        "nf4",
        True,
        torch.float32,
    )
    assert current_rope(model.config)["rope_type"] == "yarn"  # the extension is in the 4-bit model too
    assert max_context(model.config) == 4 * ORIGINAL


def test_zero3_ready_quant_storage_is_the_model_dtype(make_cfg):
    """ZeRO-3 shards float parameters: with quant_storage = model dtype the packed 4-bit weights are float32
    tensors (8 nibbles each) and every parameter of the model has one float dtype. The storage dtype is only
    a container: uint8 storage gives bit-identical logits."""
    as_float = load_model(make_cfg())  # quant_storage unset = torch_dtype (float32)
    as_uint8 = load_model(make_cfg(quantization={"quant_storage": "uint8"}))
    q_float = as_float.model.layers[0].self_attn.q_proj.weight
    q_uint8 = as_uint8.model.layers[0].self_attn.q_proj.weight
    assert type(q_float).__name__ == "Params4bit"
    assert q_float.dtype == torch.float32 and q_uint8.dtype == torch.uint8
    assert q_float.numel() * 8 == 64 * 64 == q_uint8.numel() * 2  # hidden 64 x 64, 4 bits per weight
    assert {p.dtype for p in as_float.parameters()} == {torch.float32}
    ids = batch(length=16)
    assert torch.equal(logits_of(as_float, ids), logits_of(as_uint8, ids))


def test_eval_forward_leaves_4bit_weights_as_they_are(make_cfg):
    """bitsandbytes repacks 4-bit weights in place on the first CPU eval forward (AVX512-BF16 machines) and
    then fails on the 352-wide MLP of the default tiny model; load_model keeps the portable layout."""
    model = load_model(make_cfg())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = batch(length=16)
    model.train()
    with torch.no_grad():
        train_mode = model(input_ids=ids).logits
    eval_mode = logits_of(model, ids)
    assert torch.equal(train_mode, eval_mode)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(same(before[k], after[k]) for k in before)


# ---- training sanity ---------------------------------------------------------------------------------------


def test_qlora_model_is_set_up_for_packed_training(trained):
    model = trained["model"]
    assert isinstance(model, PeftModel)
    assert model.config.use_cache is False  # packed samples would attend to each other with a cache
    assert model.get_base_model().is_activation_checkpointing
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    extra = [n for n in trainable if ".modules_to_save." in n]
    assert len(lora) == 2 * len(PROJECTIONS) * 2  # A and B per projection per layer
    assert sorted(trainable) == sorted(lora + extra)
    assert any("embed_tokens" in n for n in extra) and any("norm" in n for n in extra)


def test_frozen_base_is_unchanged_after_steps(trained):
    after = frozen_state(trained["model"])
    before = trained["before_frozen"]
    assert before.keys() == after.keys()
    assert any("q_proj.base_layer.weight" in k for k in before)  # the packed 4-bit weights are covered
    changed = [k for k in before if not same(before[k], after[k])]
    assert changed == []


def test_every_trainable_parameter_changed(trained):
    after = dict(trained["model"].named_parameters())
    unchanged = [n for n, p in trained["before_trainable"].items() if torch.equal(p, after[n].detach())]
    assert unchanged == []


def test_loss_falls_on_a_repeated_batch(trained):
    losses = trained["losses"]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses


# ---- adapters ----------------------------------------------------------------------------------------------


def test_adapter_folder_is_standard_peft_plus_tokenizer_and_scaled_config(trained, small_dir):
    adapter = trained["adapter"]
    names = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", BASE_CONFIG_NAME, "tokenizer.json"} <= names
    assert "config.json" not in names  # would make transformers take the folder for a full model
    peft_cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert peft_cfg["base_model_name_or_path"] == str(small_dir)
    assert set(peft_cfg["target_modules"]) == set(PROJECTIONS)
    recorded = json.loads((adapter / BASE_CONFIG_NAME).read_text())
    assert recorded["rope_parameters"]["rope_type"] == "yarn" and recorded["rope_parameters"]["factor"] == 4.0


def test_adapter_save_then_load_gives_identical_logits(trained, qlora_cfg):
    ids = batch(seed=1)
    expected = logits_of(trained["model"], ids)
    reloaded = load_model_with_adapter(qlora_cfg, trained["adapter"])
    assert torch.equal(logits_of(reloaded, ids), expected)


def test_adapter_uses_the_recorded_rope_when_the_config_asks_for_none(trained, qlora_cfg):
    plain_rope = qlora_cfg.model_copy(update={"rope": type(qlora_cfg.rope)()})
    reloaded = load_model_with_adapter(plain_rope, trained["adapter"])
    assert current_rope(reloaded.config)["rope_type"] == "yarn"
    ids = batch(seed=1)
    assert torch.equal(logits_of(reloaded, ids), logits_of(trained["model"], ids))


def test_save_adapter_from_a_gathered_state_dict(trained, tmp_path):
    """What a ZeRO-3 rank 0 does: pass the (gathered) trainable entries; the files match a normal save."""
    model = trained["model"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    gathered = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}
    out = save_adapter(model, tmp_path / "from-state-dict", state_dict=gathered)
    ours = load_file(out / "adapter_model.safetensors")
    reference = load_file(trained["adapter"] / "adapter_model.safetensors")
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)


def test_merged_folder_matches_adapter_on_the_4bit_base(trained, qlora_cfg, make_cfg, tmp_path):
    out = merge_adapter(qlora_cfg, trained["adapter"], tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers: no PEFT, no bitsandbytes
    assert getattr(merged.config, "quantization_config", None) is None
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    assert current_rope(merged.config) == current_rope(trained["model"].config)
    assert max_context(merged.config) == 4 * ORIGINAL
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()

    ids = batch(seed=2)
    adapter_on_4bit = logits_of(trained["model"], ids)
    merge_err = (logits_of(merged, ids) - adapter_on_4bit).abs().max().item()
    assert merge_err < 1e-4

    # For scale: the dequantisation error, and what merging into the full-precision originals would give.
    full_base = load_model(qlora_cfg, quantize=False)
    dequant_err = (logits_of(full_base, ids) - logits_of(load_model(qlora_cfg), ids)).abs().max().item()
    into_originals = PeftModel.from_pretrained(load_model(qlora_cfg, quantize=False), str(trained["adapter"]))
    originals_err = (logits_of(into_originals.merge_and_unload(), ids) - adapter_on_4bit).abs().max().item()
    logging.getLogger(__name__).info(
        "merge error %.3g, dequantisation error %.3g, merge-into-originals error %.3g",
        merge_err,
        dequant_err,
        originals_err,
    )
    assert dequant_err > 100 * merge_err and originals_err > 100 * merge_err


# ---- plain LoRA, options and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_plain_lora_trains_with_either_checkpointing_flavour(make_cfg, use_reentrant, tmp_path):
    cfg = make_cfg(
        quantization={"load_in_4bit": False},
        use_reentrant=use_reentrant,
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    )
    torch.manual_seed(0)
    model = add_lora(load_model(cfg), cfg)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    before = frozen_state(model)
    losses = train_steps(model, batch(), steps=4)
    assert losses[-1] < losses[0]
    after = frozen_state(model)
    assert all(same(before[k], after[k]) for k in before)
    ids = batch(seed=3)
    expected = logits_of(model, ids)
    adapter = save_adapter(model, tmp_path / "adapter")
    assert torch.equal(logits_of(load_model_with_adapter(cfg, adapter), ids), expected)


def test_dynamic_ntk_in_fine_tuning_warns(make_cfg, caplog):
    cfg = make_cfg(rope={"type": "dynamic", "factor": 2.0}, quantization={"load_in_4bit": False})
    with caplog.at_level(logging.WARNING, logger="longctx_core.model.rope"):
        add_lora(load_model(cfg), cfg)
    assert any("model.rope.type=dynamic" in r.getMessage() for r in caplog.records)


def test_unknown_lora_modules_are_a_longctx_error(make_cfg):
    cfg = make_cfg(quantization={"load_in_4bit": False}, lora={"target_modules": ["q_proj", "c_attn"]})
    with pytest.raises(LongctxError, match=r"model.lora.target_modules: \['c_attn'\] match no module"):
        add_lora(load_model(cfg), cfg)


def test_missing_adapter_folder_is_a_longctx_error(make_cfg, tmp_path):
    with pytest.raises(LongctxError, match="has no adapter_config.json"):
        load_model_with_adapter(make_cfg(), tmp_path)


def test_merge_never_overwrites_a_folder_that_is_not_a_model(trained, qlora_cfg):
    adapter = trained["adapter"]
    files = sorted(p.name for p in adapter.iterdir())
    with pytest.raises(LongctxError, match="exists and is not a model folder"):
        merge_adapter(qlora_cfg, adapter, adapter)
    assert sorted(p.name for p in adapter.iterdir()) == files
