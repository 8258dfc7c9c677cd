"""The toy base's long-context pre-training (repro.long_pretrain) on a miniature: where it is cached, what
it trains on (4 x L0, golds at the edges), RoPE kept, reuse, and resume after a run cut short."""

from __future__ import annotations

import pytest

from tests.repro.test_repro_base import mini_config

LONG = [
    "repro.long_pretrain.steps=4",
    "repro.long_pretrain.eval_every=2",
    "repro.long_pretrain.eval_questions=4",
    "repro.long_pretrain.batch_size=2",
    "repro.long_pretrain.warmup_steps=1",
    "repro.long_pretrain.lr=0.003",
]


@pytest.fixture(scope="module")
def long_base(tmp_path_factory):
    """(config, L0 base folder, long-pretrained folder) of the miniature."""
    from repro.base.cache import ensure_toy_base
    from repro.base.long import ensure_long_base

    cfg = mini_config(*LONG)
    cache = tmp_path_factory.mktemp("long-cache")
    base = ensure_toy_base(cfg, cache)
    return cfg, base, ensure_long_base(cfg, base)


def test_long_pretraining_extends_the_base_and_trains_at_four_times_l0(long_base):
    import torch
    from transformers import AutoModelForCausalLM

    from repro.base.checkpoint import read_base_info
    from repro.base.long import long_base_dir

    cfg, base, folder = long_base
    assert folder == long_base_dir(cfg, base) and folder.parent == base.parent
    assert folder.name.startswith(base.name + "-long-")
    info = read_base_info(folder)
    summary = info["summary"]
    assert summary["steps"] == 4 and [c["step"] for c in summary["curve"]] == [2, 4]
    assert info["init_from"] == str(base) and info["recipe"]["context"] == 4 * cfg.repro.base.context
    model = AutoModelForCausalLM.from_pretrained(folder)
    rope = model.config.rope_parameters
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0
    assert rope["original_max_position_embeddings"] == cfg.repro.base.context
    before = AutoModelForCausalLM.from_pretrained(base)
    changed = [
        n
        for (n, p), q in zip(model.named_parameters(), before.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert len(changed) == len(list(before.parameters()))  # full fine-tuning: every weight moved
    # 4 steps x 2 samples, each between L0 and 4 x L0 tokens
    tokens = summary["tokens"]
    assert 8 * cfg.repro.base.context <= tokens <= 8 * 4 * cfg.repro.base.context, tokens


def test_long_pretraining_samples_put_golds_at_the_edges_up_to_four_times_l0():
    """The stage's samples are 256..1024 tokens (L0..4 x L0) and, with Beta(0.3, 0.3) per gold, far fewer
    golds sit in the middle half of the document list than with uniform placement (the control)."""
    from longctx_core.model.tiny import train_tokenizer
    from repro.base.long import long_base_config
    from repro.base.model import tokenizer_texts
    from repro.base.samples import batch_for_step
    from repro.base.worlds import base_worlds, heldout_questions

    share = {}
    for name, extra in (("u", []), ("uniform", ["repro.long_pretrain.gold_beta=null"])):
        cfg = long_base_config(mini_config(*LONG, "repro.long_pretrain.batch_size=40", *extra))
        b = cfg.repro.base
        excluded = heldout_questions(cfg)
        tok = train_tokenizer(tokenizer_texts(cfg, excluded), b.vocab_size)
        worlds, _ = base_worlds(cfg, tok, excluded)
        samples = [s for step in (0, 1) for s in batch_for_step(worlds, tok, b, step)]
        assert all(s.n_tokens <= 1024 for s in samples)
        assert max(s.n_tokens for s in samples) > 768
        fracs = [p / (s.n_docs - 1) for s in samples if s.n_docs >= 5 for p in s.gold_positions]
        assert len(fracs) >= 60, len(fracs)
        share[name] = sum(0.25 <= f <= 0.75 for f in fracs) / len(fracs)
    assert share["u"] < 0.35 and share["uniform"] > 0.4, share


def test_long_pretraining_is_reused_rehashed_and_resumed(long_base, tmp_path):
    import shutil

    from repro.base.cache import base_fingerprint
    from repro.base.checkpoint import read_base_info
    from repro.base.long import ensure_long_base, long_base_dir, long_fingerprint

    cfg, base, folder = long_base
    mtime = (folder / "toy_base.json").stat().st_mtime
    assert ensure_long_base(cfg, base) == folder and (folder / "toy_base.json").stat().st_mtime == mtime
    # the stage's recipe and the RoPE it trains under are in its hash; its time budget and the L0 hash are not
    assert long_fingerprint(mini_config(*LONG, "repro.long_pretrain.lr=0.001")) != long_fingerprint(cfg)
    assert long_fingerprint(mini_config(*LONG, "model.rope.beta_fast=16")) != long_fingerprint(cfg)
    assert long_fingerprint(mini_config(*LONG, "repro.long_pretrain.time_budget_min=1")) == long_fingerprint(
        cfg
    )
    assert base_fingerprint(mini_config(*LONG)) == base_fingerprint(mini_config())
    # a run cut short after one step leaves a checkpoint; the next run goes on from it
    l0 = tmp_path / base.name
    shutil.copytree(base, l0)
    short = mini_config(*LONG, "repro.long_pretrain.time_budget_min=0.0001")
    cut = ensure_long_base(short, l0)
    assert cut == long_base_dir(cfg, l0) and read_base_info(cut)["summary"]["steps"] == 1
    assert ensure_long_base(cfg, l0) == cut
    summary = read_base_info(cut)["summary"]
    assert summary["steps"] == 4 and [(r["from_step"], r["to_step"]) for r in summary["runs"]] == [
        (0, 1),
        (1, 4),
    ]
    assert not cut.with_name(cut.name + ".partial").exists()


def test_long_pretraining_config_is_checked():
    from longctx_core.config import ConfigError
    from repro.config import check_repro_config

    with pytest.raises(ConfigError, match="repro.long_pretrain.min_tokens"):
        check_repro_config(mini_config("repro.long_pretrain.min_tokens=2000"))
    with pytest.raises(Exception, match="records_per_sample"):
        mini_config("repro.long_pretrain.records_per_sample=[3, 1]")
    assert mini_config().repro.long_pretrain.steps == 0  # off unless asked for
