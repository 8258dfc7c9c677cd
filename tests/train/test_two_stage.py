"""Two stages in one run folder on a real local Ray: continued pre-training on raw text (`pretrain:`), then
SFT from its adapter (`train.init_adapter`), one worker SIGKILLed mid-run in each stage.

One fixture runs both stages (about two fits with a restart each); the assertions share it.
"""

from __future__ import annotations

import json
import threading

import pytest
from test_train_ray import _attempts, _kill_rank_mid_run

from longctx_core.infra.metrics import read_jsonl

pytestmark = pytest.mark.e2e  # a whole pipeline: make test-e2e (CI runs it after make test)

MAX_STEPS = 8
CHECKPOINT_EVERY = 3


@pytest.fixture(scope="module")
def two_stage(ray_local, make_train_cfg, tmp_path_factory):
    from longctx_core.runner.two_stage import run_pretrain
    from ray_jobs import train as train_job

    storage = tmp_path_factory.mktemp("runs-2stage")
    corpus = storage / "corpus"
    corpus.mkdir()
    for d in range(24):  # 24 documents in the words the small test tokenizer was trained on
        lines = [
            f"Document {d * 10 + k}: Alma Vesk lives in Orlen and works as a baker since {1900 + k}. "
            "The river floods every spring."
            for k in range(10)
        ]
        (corpus / f"doc{d:03d}.txt").write_text("\n".join(lines))
    cfg = make_train_cfg(
        storage,
        name="ts",
        **{
            "train.max_steps": MAX_STEPS,
            "train.checkpoint_every": CHECKPOINT_EVERY,
            "train.max_failures": 2,
            "pretrain.enabled": True,
            "pretrain.source": {"kind": "text", "path": str(corpus)},
            "pretrain.max_steps": MAX_STEPS,
        },
    )
    root = storage / "ts"
    killed = {"pretrain": {}, "sft": {}}
    killer = threading.Thread(
        target=_kill_rank_mid_run, args=(root / "pretrain", 1, killed["pretrain"]), daemon=True
    )
    killer.start()
    sft_cfg, done = run_pretrain(cfg)
    killer.join(timeout=1)
    killer = threading.Thread(target=_kill_rank_mid_run, args=(root, 1, killed["sft"]), daemon=True)
    killer.start()
    summary = train_job.run(sft_cfg)
    killer.join(timeout=1)
    return {"root": root, "cfg": sft_cfg, "done": done, "killed": killed, "summary": summary}


def test_pretrain_stage_writes_its_own_run_folder(two_stage):
    pre = two_stage["root"] / "pretrain"
    stats = json.loads((pre / "data" / "stats.json").read_text())
    assert stats["sources"]["text"]["rows_read"] == 24 and stats["num_samples"] >= 4
    assert (pre / "train" / "adapter" / "adapter_config.json").is_file()
    assert set(two_stage["done"]) == {"pretrain synthesize", "pretrain train"}
    assert two_stage["cfg"].train.init_adapter == str(pre / "train" / "adapter")
    # loss on every token of the text pieces: only each document segment's first label is masked
    steps = [r for r in read_jsonl(pre / "train" / "metrics.jsonl") if "loss" in r]
    assert steps and all(r["label_tokens"] > 0.9 * r["tokens_per_s"] * r["step_time_s"] for r in steps)


def test_sft_starts_from_the_first_stage_final_adapter(two_stage):
    from longctx_core.train.init_adapter import file_digest

    root = two_stage["root"]
    starts = [r for r in read_jsonl(root / "train" / "metrics.jsonl") if r.get("event") == "start"]
    assert starts[0]["resumed_from_step"] == 0
    assert starts[0]["init_adapter_digest"] == file_digest(root / "pretrain" / "train" / "adapter")
    assert file_digest(root / "train" / "adapter") != starts[0]["init_adapter_digest"]  # and it trained


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_both_stages_resume_after_a_killed_worker(two_stage, stage):
    root = two_stage["root"] / "pretrain" if stage == "pretrain" else two_stage["root"]
    report = two_stage["killed"][stage]
    assert report.get("pid"), f"the {stage} run ended before a worker could be killed"
    attempts = _attempts(read_jsonl(root / "train" / "metrics.jsonl"))
    assert len(attempts) >= 2
    resumed = [start for start, _ in attempts[1:]]
    assert all(0 < s <= report["step_at_kill"] for s in resumed) and resumed[0] % CHECKPOINT_EVERY == 0
    final = max(r["step"] for _, rows in attempts for r in rows)
    assert final == MAX_STEPS


def test_init_adapter_loads_exactly_and_a_mismatch_is_one_line(make_train_cfg, tmp_path):
    """Without Ray: a saved adapter loaded into a fresh LoRA gives the file's digest; other LoRA shapes and
    a folder without an adapter are refused with a one-line error naming train.init_adapter."""
    import torch

    from longctx_core.errors import LongctxError
    from longctx_core.model.loading import load_model
    from longctx_core.model.lora import add_lora, save_adapter
    from longctx_core.train.init_adapter import check_init_adapter, file_digest, load_init_adapter

    cfg = make_train_cfg(tmp_path)
    torch.manual_seed(1)
    first = add_lora(load_model(cfg.model, quantize=False), cfg.model)
    for p in first.parameters():  # non-trivial B matrices (PEFT initialises them to zero)
        if p.requires_grad:
            p.data.normal_()
    save_adapter(first, tmp_path / "a")
    torch.manual_seed(2)
    second = add_lora(load_model(cfg.model, quantize=False), cfg.model)
    assert check_init_adapter(cfg.model, str(tmp_path / "a")) == tmp_path / "a"
    assert load_init_adapter(second, tmp_path / "a") == file_digest(tmp_path / "a")
    for p1, p2 in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p1, p2)
    other = make_train_cfg(tmp_path, **{"model.lora.r": 4})
    with pytest.raises(LongctxError, match=r"train.init_adapter: .* has r=8, model.lora has 4"):
        check_init_adapter(other.model, str(tmp_path / "a"))
    with pytest.raises(LongctxError, match="no adapter_config.json") as err:
        check_init_adapter(cfg.model, str(tmp_path))
    assert "\n" not in str(err.value)


def test_top_report_shows_the_pretrain_stage(two_stage):
    """The run's report.md lists stage 1's stages with links into pretrain/, and its headline numbers come
    before stage 2's."""
    from longctx_core.runner.report import headline, write_top_report

    root = two_stage["root"]
    done = two_stage["done"] | {"train": "done in 1 s"}
    text = write_top_report(two_stage["cfg"], root, done).read_text()
    assert "- **pretrain synthesize**: " in text and "- **pretrain train**: " in text
    assert text.index("**pretrain train**") < text.index("- **synthesize**")
    assert "  - [pretrain/data/stats.json](pretrain/data/stats.json)" in text
    assert "  - [pretrain/train/adapter/](pretrain/train/adapter/)" in text
    lines = headline(root)
    assert lines[0].startswith("pretrain data: ") and lines[1].startswith("pretrain train: "), lines
    assert any(line.startswith("train: ") for line in lines[2:]), lines
