"""The repro's arms through the project's real synthesize stage on local Ray: twin data, held-out check."""

from __future__ import annotations

import json

import pytest
from test_repro_base import mini_config  # the miniature preset shared by the repro tests


@pytest.fixture(scope="module")
def arm_runs(ray_local, tmp_path_factory):
    """(cfg, base folder, {arm: run folder}) after the real synthesize stage ran for both arms of seed 0."""
    from longctx_core.config import run_dir
    from ray_jobs import synthesize
    from repro.arms import arm_config
    from repro.base.cache import ensure_toy_base

    tmp = tmp_path_factory.mktemp("repro-arms")
    cfg = mini_config(
        f"run.storage_path={tmp}", "data.num_samples=4", "data.num_workers=1", "data.turns_per_sample=[1, 2]"
    )
    base = ensure_toy_base(cfg, tmp_path_factory.getbasetemp() / "toybase-cache")
    roots = {}
    for arm in cfg.repro.arms:
        acfg = arm_config(cfg, base, arm, 0)
        synthesize.run(acfg)
        roots[arm] = run_dir(acfg)
    return cfg, base, roots


def _rows(root):
    import pyarrow.parquet as pq

    files = sorted((root / "data" / "train").glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def test_arms_are_twins_that_differ_only_in_the_answer_style(arm_runs):
    cfg, _, roots = arm_runs
    para, plain = _rows(roots["paraphrase"]), _rows(roots["plain"])
    assert len(para) == len(plain) == cfg.data.num_samples
    for p, q in zip(para, plain, strict=True):
        assert (p["answer_style"], q["answer_style"]) == ("paraphrase", "plain")
        assert p["gold_positions"] == q["gold_positions"]
        users = lambda row: [m["content"] for m in row["messages"] if m["role"] != "assistant"]  # noqa: E731
        assert users(p) == users(q)  # same documents, same order, same questions
        assert max(p["n_tokens"], q["n_tokens"]) <= 4 * cfg.repro.base.context
        replies = [m["content"] for m in p["messages"] if m["role"] == "assistant"]
        assert all('"' in r and "So the answer is:" in r for r in replies)


def test_evaluation_questions_are_absent_from_every_training_stage(arm_runs):
    from repro.arms import check_held_out

    cfg, _, roots = arm_runs
    assert check_held_out(cfg, 0, list(roots.values())) >= cfg.eval.qa.num_questions


def test_the_held_out_check_catches_a_leak(arm_runs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longctx_core.errors import LongctxError
    from longctx_core.eval.contexts import held_out_records
    from repro.arms import check_held_out

    cfg, _, roots = arm_runs
    records, _, _ = held_out_records(cfg.data.source, 0, cfg.data.eval_fraction, 1, cfg.eval.qa.pool_records)
    leaked = tmp_path / "leaky"
    (leaked / "data" / "train").mkdir(parents=True)
    row = {
        "messages": [{"role": "user", "content": f"Question: {records[0].question}"}],
        "meta": json.dumps({}),
    }
    pq.write_table(pa.Table.from_pylist([row]), leaked / "data" / "train" / "part-00000.parquet")
    with pytest.raises(LongctxError, match="also appear in the training data"):
        check_held_out(cfg, 0, [roots["paraphrase"], leaked])
