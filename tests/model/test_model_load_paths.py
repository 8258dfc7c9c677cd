"""Every documented way to use a fine-tuned adapter runs the model with the RoPE it was trained with.

A tiny Qwen2 with YaRN x4 (original context 128 -> 512) is loaded through the project's own code, LoRA is
trained for two steps and the adapter saved as the train stage saves it. Then each path a user is told to
take — `load_finetuned`, the merged folder under plain `AutoModelForCausalLM.from_pretrained`, and the
`vllm serve --hf-overrides` dict applied to the base config — must give the trained `inv_freq`, attention
scaling and (for the loaders) logits on a 300-token input, past the original context. The naive
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)` must NOT: that is the trap
these paths exist for, and the check fails if transformers or PEFT start carrying the RoPE by themselves
(then the docs should say so).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from pathlib import Path

import pytest
import torch

YARN = {"type": "yarn", "factor": 4, "original_max_position_embeddings": 128}
LONG = 300  # tokens: past the original context of 128, inside the extended 512


def _cfg(make_cfg, quantized: bool, rope=YARN):
    return make_cfg(
        rope=rope,
        quantization={"load_in_4bit": quantized},
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        gradient_checkpointing=False,
    )


@pytest.fixture(scope="module", params=[False, True], ids=["lora", "qlora"])
def trained(request, make_cfg, tmp_path_factory):
    """(trained PeftModel in eval mode, its adapter folder at <run>/train/adapter, 4-bit or not)."""
    from longctx_core.model.loading import load_model, load_tokenizer
    from longctx_core.model.lora import add_lora, save_adapter

    quantized = request.param
    cfg = _cfg(make_cfg, quantized)
    tok = load_tokenizer(cfg)
    peft = add_lora(load_model(cfg), cfg)
    ids = tok(["Alma Vesk lives in Orlen and works as a cartographer."] * 2, return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(2):  # so the adapter really changes the outputs
        peft(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    run = tmp_path_factory.mktemp("run")
    adapter = save_adapter(peft, run / "train" / "adapter", tok)
    return peft.eval(), adapter, quantized


@pytest.fixture(scope="module")
def long_ids(small_tiny):
    return torch.randint(3, small_tiny.vocab_size, (1, LONG), generator=torch.Generator().manual_seed(0))


def _rotary(model):
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return causal.model.rotary_emb


def _same_rope(model, trained_model) -> bool:
    """True when `model` has exactly the trained model's inverse frequencies and attention scaling."""
    got, want = _rotary(model), _rotary(trained_model)
    return torch.equal(got.inv_freq, want.inv_freq) and got.attention_scaling == want.attention_scaling


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.float()


def test_the_trained_model_really_is_yarn_x4(trained):
    peft, _, _ = trained
    cfg = peft.get_base_model().config
    assert cfg.rope_parameters["rope_type"] == "yarn" and cfg.rope_parameters["factor"] == 4.0
    assert _rotary(peft).attention_scaling == pytest.approx(0.1 * torch.log(torch.tensor(4.0)).item() + 1)


def test_adapter_folder_records_base_rope_and_context(trained, small_dir):
    from longctx_core.model.finetuned import adapter_record

    peft, adapter, quantized = trained
    record = adapter_record(adapter)
    assert Path(record["base"]) == small_dir.resolve()
    assert record["rope_parameters"] == peft.get_base_model().config.rope_parameters
    assert record["max_position_embeddings"] == 128 and record["context"] == 512
    assert record["r"] == 4 and record["dtype"] == "float32"
    assert (record["quantization"] is not None) == quantized
    assert (adapter / "tokenizer_config.json").is_file()


def test_load_finetuned_gives_the_trained_rope_and_logits(trained, long_ids):
    from longctx_core import load_finetuned

    peft, adapter, quantized = trained
    model, tok = load_finetuned(adapter, quantize=quantized)
    assert _same_rope(model, peft)
    assert model.get_base_model().config.rope_parameters == peft.get_base_model().config.rope_parameters
    torch.testing.assert_close(_logits(model, long_ids), _logits(peft, long_ids), rtol=1e-4, atol=1e-4)
    assert tok.pad_token is not None and tok("Orlen")["input_ids"]


def test_naive_peft_load_drops_the_rope_extension(trained, small_dir, long_ids):
    """The documented trap: the standard two-liner silently runs the base's original RoPE."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    peft, adapter, _ = trained
    naive = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(small_dir)), str(adapter)
    ).eval()
    assert not _same_rope(naive, peft)
    assert not torch.allclose(_logits(naive, long_ids), _logits(peft, long_ids), atol=1e-3)


def test_merged_folder_loads_with_the_trained_rope(trained, tmp_path, long_ids):
    from transformers import AutoModelForCausalLM

    from longctx_core import merge_finetuned

    peft, adapter, _ = trained
    out = merge_finetuned(adapter, tmp_path / "merged")
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"] == peft.get_base_model().config.rope_parameters
    assert "quantization_config" not in config  # a 4-bit merge is written dequantised: vLLM loads it plainly
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert _same_rope(merged, peft)
    torch.testing.assert_close(_logits(merged, long_ids), _logits(peft, long_ids), rtol=1e-3, atol=1e-3)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _apply_like_vllm(config, overrides: dict, merge_dicts: bool):
    """Apply `--hf-overrides` as vLLM does: plain values with `PretrainedConfig.update`; a dict value either
    replaces the config's (older vLLM: everything through `update`) or is merged into it key by key (newer
    vLLM's `_apply_dict_overrides`). Returns the config."""
    for key, value in overrides.items():
        if merge_dicts and isinstance(value, dict):
            config.update({key: {**(getattr(config, key, None) or {}), **value}})
        else:
            config.update({key: value})
    return config


def test_vllm_commands_carry_the_trained_rope(trained, small_dir, tmp_path):
    """The `vllm serve` lines parse as a shell command; their --hf-overrides JSON applied to the base config
    the way vLLM applies it gives the trained frequencies (whether vLLM replaces or merges the dict)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from longctx_core import vllm_serve_commands

    peft, adapter, _ = trained
    trained_rope = peft.get_base_model().config.rope_parameters
    cmds = vllm_serve_commands(adapter, tmp_path / "merged", name="tuned")
    lora = shlex.split(cmds["adapter"])
    assert lora[:3] == ["vllm", "serve", str(small_dir.resolve())] and "--enable-lora" in lora
    assert _flag(lora, "--lora-modules") == f"tuned={adapter.resolve()}"
    assert _flag(lora, "--max-lora-rank") == "8"  # r=4 rounded up to a rank vLLM accepts
    merged = shlex.split(cmds["merged"])
    assert merged[:3] == ["vllm", "serve", str((tmp_path / "merged").resolve())]
    for argv in (lora, merged):
        assert _flag(argv, "--max-model-len") == "512"
        overrides = json.loads(_flag(argv, "--hf-overrides"))
        assert overrides["rope_parameters"] == trained_rope

    plain = AutoModelForCausalLM.from_pretrained(str(small_dir))
    assert not _same_rope(plain, peft)  # without the overrides the base runs its own RoPE
    for merge_dicts in (False, True):
        config = _apply_like_vllm(AutoConfig.from_pretrained(str(small_dir)), overrides, merge_dicts)
        assert config.rope_parameters == trained_rope
        served = AutoModelForCausalLM.from_pretrained(str(small_dir), config=config)
        assert _same_rope(served, peft), merge_dicts


def test_reports_print_the_paths_and_the_printed_merge_command_works(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    from longctx_core.config import load_config
    from longctx_core.runner.report import write_top_report

    peft, adapter, _ = trained
    run = adapter.parent.parent
    cfg = load_config(None, [f"run.storage_path={run.parent}", f"run.name={run.name}"])
    report = write_top_report(cfg, run, {"train": "done"}).read_text()
    section = report[report.index("## Use the model") :]
    assert f"load_finetuned({str(adapter.resolve())!r})" in section
    assert "PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)" in section
    lines = section.splitlines()
    serve = [line for line in lines if line.startswith("vllm serve ")]
    assert len(serve) == 2 and all("--hf-overrides" in line for line in serve)

    # the printed merge one-liner, run as printed (its Python code, in this process)
    merge_line = next(line for line in lines if line.startswith("python -c "))
    code = shlex.split(merge_line)[2]
    merged_dir = run / "train" / "merged"
    assert repr(str(merged_dir)) in code
    shutil.rmtree(merged_dir, ignore_errors=True)
    exec(code, {})  # noqa: S102 - the exact text the report tells users to run
    assert _same_rope(AutoModelForCausalLM.from_pretrained(str(merged_dir)), peft)


def test_eval_report_carries_the_section(trained, tmp_path):
    from longctx_core.eval.report import write_outputs

    _, adapter, _ = trained
    models = [{"name": "tuned", "kind": "adapter", "path": str(adapter), "limit": 512}]
    write_outputs(tmp_path / "eval", [], {"models": models, "tasks": {}})
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Use the model" in report and f"load_finetuned({str(adapter.resolve())!r})" in report


def test_config_driven_load_with_another_rope_warns(trained, make_cfg, caplog):
    """`model.rope` set to something else than the adapter was trained with: loaded as asked, with a warning."""
    from longctx_core.model.lora import load_model_with_adapter

    peft, adapter, _ = trained
    other = _cfg(make_cfg, False, rope={"type": "linear", "factor": 2})
    with caplog.at_level(logging.WARNING, logger="longctx_core.model.loading"):
        model = load_model_with_adapter(other, adapter, quantize=False)
    assert "was trained with" in caplog.text
    assert not _same_rope(model, peft)


def test_load_finetuned_errors_and_explicit_base(trained, small_dir, tmp_path):
    from longctx_core import load_finetuned
    from longctx_core.errors import LongctxError

    peft, adapter, quantized = trained
    with pytest.raises(LongctxError, match="not a PEFT adapter"):
        load_finetuned(tmp_path)
    moved = tmp_path / "adapter"
    shutil.copytree(adapter, moved)
    record = json.loads((moved / "adapter_config.json").read_text())
    record["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / "adapter_config.json").write_text(json.dumps(record))
    with pytest.raises(LongctxError, match="pass base="):
        load_finetuned(moved)
    model, _ = load_finetuned(moved, base=str(small_dir), quantize=quantized)
    assert _same_rope(model, peft)


def test_adapter_without_rope_record_is_reported_not_fatal(trained, small_dir, tmp_path, caplog):
    """A plain PEFT folder (no base_config.json): the report says the RoPE is unknown, the loader warns."""
    from longctx_core import load_finetuned
    from longctx_core.model.finetuned import usage_markdown
    from longctx_core.model.loading import BASE_CONFIG_NAME

    _, adapter, _ = trained
    bare = tmp_path / "bare"
    shutil.copytree(adapter, bare)
    (bare / BASE_CONFIG_NAME).unlink()
    section = "\n".join(usage_markdown(bare))
    assert "RoPE it was trained with is unknown" in section and "vllm serve" not in section
    with caplog.at_level(logging.WARNING, logger="longctx_core.model.loading"):
        model, _ = load_finetuned(bare)
    assert f"has no {BASE_CONFIG_NAME}" in caplog.text
    assert model.get_base_model().config.rope_parameters["rope_type"] == "default"
