"""The real pretrained chat model through the product's own code: SmolLM2-135M-Instruct (the embedded model,
from the shared cache) takes one QLoRA training step on a synthesized paraphrase sample, and the evaluate
stage's model actor answers two QA prompts exactly as transformers' `generate` does.

Kept short (one step at ~600 tokens, two prompts): the demo (`make demo`) runs the whole pipeline on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longctx_core.config import load_config
from longctx_core.data.chat import IGNORE_INDEX, tokenize_chat
from tests.model.test_model_qlora import frozen_state, same

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "ray_jobs" / "configs" / "demo_cpu.yaml"


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory):
    """The shipped demo preset (the embedded model), evaluating the base alone on 2 questions at ~600 tokens."""
    root = tmp_path_factory.mktemp("smol")
    return load_config(
        DEMO,
        [
            f"run.storage_path={root}",
            "run.name=smol",
            "eval.models=[{name: base, kind: base}]",
            "eval.qa.num_questions=2",
            "eval.qa.positions=[0.5]",
            "eval.qa.lengths=[600]",
            "eval.qa.pool_records=200",
            "eval.max_new_tokens=24",
            "eval.dtype=float32",
            "data.source.builtin.num_records=200",
        ],
    )


@pytest.fixture(scope="module")
def checked(demo_cfg):
    """(model specs, prompts) of the evaluate stage's checks on the real model."""
    from longctx_core.eval.runner import check

    return check(demo_cfg)


def test_the_real_chat_template_masks_only_the_reply(demo_cfg, checked):
    """SmolLM2's own ChatML template: the labelled tokens are the reference answer and <|im_end|>, nothing of
    the system prompt, the documents or the question."""
    from longctx_core.model.loading import load_tokenizer

    tok = load_tokenizer(demo_cfg.model)
    _, prompts = checked
    p = prompts[0]
    reference = p.extra["reference"]
    chat = tokenize_chat(
        tok,
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": p.extra["question"]},
            {"role": "assistant", "content": reference},
        ],
    )
    labelled = [i for i, t in enumerate(chat.labels) if t != IGNORE_INDEX]
    assert tok.decode([chat.input_ids[i] for i in labelled]) == reference + "<|im_end|>"
    assert labelled == list(range(labelled[0], labelled[-1] + 1))  # one contiguous run: the reply
    assert tok.decode(chat.input_ids[: labelled[0]]).endswith("<|im_start|>assistant\n")


def test_one_qlora_step_on_the_real_model(demo_cfg, checked):
    """4-bit NF4 base + LoRA on SmolLM2 (tied embeddings, rope_theta 100,000): one step on a real paraphrase
    sample changes the LoRA weights and nothing else, and lowers the loss on that sample."""
    from longctx_core.model.loading import load_model, load_tokenizer
    from longctx_core.model.lora import add_lora

    tok = load_tokenizer(demo_cfg.model)
    model = load_model(demo_cfg.model)  # the preset's 4-bit QLoRA load
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    assert model.config.rope_parameters["rope_theta"] == 100_000
    peft = add_lora(model, demo_cfg.model)
    _, prompts = checked
    p = prompts[0]
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": tok.decode(p.input_ids, skip_special_tokens=True)[:1500]},
        {"role": "assistant", "content": p.extra["reference"]},
    ]
    chat = tokenize_chat(tok, messages)
    ids, labels = torch.tensor([chat.input_ids]), torch.tensor([chat.labels])
    lora = {n: q.detach().clone() for n, q in peft.named_parameters() if q.requires_grad}
    frozen = frozen_state(peft)  # packed 4-bit weights and their quant state included
    assert lora and all("lora_" in n for n in lora)
    opt = torch.optim.AdamW([q for q in peft.parameters() if q.requires_grad], lr=1e-3)
    peft.train()
    before = peft(input_ids=ids, labels=labels, use_cache=False).loss
    before.backward()
    opt.step()
    with torch.no_grad():
        after = peft(input_ids=ids, labels=labels, use_cache=False).loss
    assert torch.isfinite(before) and after < before
    changed = [n for n, q in peft.named_parameters() if q.requires_grad and not torch.equal(q, lora[n])]
    assert changed, "no LoRA weight moved"
    after_state = peft.state_dict()
    assert not [k for k, v in frozen.items() if not same(v, after_state[k])]


def test_two_question_evaluation_matches_generate(ray_local, demo_cfg, checked):
    """The evaluate stage's actor on the real model: each reply equals transformers' greedy `generate` on
    the same prompt (fp32), and the scored metrics carry intervals and seconds per prompt."""
    from longctx_core.eval.generate import run_prompts
    from longctx_core.eval.report import score_run
    from longctx_core.model.loading import load_model, load_tokenizer

    specs, prompts = checked
    assert len(prompts) == 2 and all(500 <= p.n_tokens <= 600 for p in prompts)
    outputs = run_prompts(demo_cfg, specs[0], prompts)
    model = load_model(demo_cfg.model, quantize=False).eval()
    tok = load_tokenizer(demo_cfg.model)
    for p in prompts:
        with torch.inference_mode():
            ref = model.generate(
                input_ids=torch.tensor([p.input_ids]),
                max_new_tokens=demo_cfg.eval.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )[0, p.n_tokens :]
        assert outputs[p.prompt_id]["reply"] == tok.decode(ref, skip_special_tokens=True)
        assert outputs[p.prompt_id]["reply"].strip()  # a pretrained model answers in words
    _, metrics = score_run(prompts, {"base": outputs}, [{"name": "base", "kind": "base"}])
    qa = metrics["tasks"]["qa"]
    cell = qa["cells"][0]
    assert cell["n"] == 2 and cell["accuracy_lo"] <= cell["accuracy"] <= cell["accuracy_hi"]
    assert cell["seconds_per_prompt"] > 0
    assert qa["intervals"]["base"]["all"]["accuracy"]["n"] == 2
