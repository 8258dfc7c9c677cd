"""Mixtures (`data.mix`): the token-share interleave, the seeded shuffle buffer, a large mixture through the
real Ray Data stage (shares within tolerance, same Parquet with 1 and 2 workers), and the per-source loss."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from data_gen.mix import Mixer, shuffled
from longctx_core.config import load_config


def stream(name: str, n: int, seed: int, lo: int = 5, hi: int = 60):
    rng = random.Random(seed)
    return [{"id": f"{name}{i}", "n_tokens": rng.randint(lo, hi)} for i in range(n)]


def test_shares_are_met_within_one_row():
    main, a, b = stream("m", 400, 1), stream("a", 1000, 2), stream("b", 1000, 3, 100, 200)
    mixer = Mixer(("main", main), [("a", 0.3, a), ("b", 0.2, b)])
    out = list(mixer.rows())
    report = mixer.report()
    total = mixer.total_tokens
    assert report["main"]["samples"] == 400 and not report["a"]["exhausted"]
    longest = max(r["n_tokens"] for _, r in out)
    for name, share in (("main", 0.5), ("a", 0.3), ("b", 0.2)):
        assert abs(report[name]["share_achieved"] - share) <= longest / total
    assert sum(report[n]["tokens"] for n in report) == sum(r["n_tokens"] for _, r in out)
    # every source's rows keep their own order (streaming: nothing is re-sorted)
    assert [r["id"] for n, r in out if n == "a"] == [r["id"] for r in a[: report["a"]["samples"]]]


def test_a_source_that_runs_out_is_reported_short():
    mixer = Mixer(("main", stream("m", 200, 1)), [("small", 0.4, stream("s", 5, 2))])
    list(mixer.rows())
    report = mixer.report()
    assert report["small"]["exhausted"] and report["small"]["samples"] == 5
    assert report["small"]["share_achieved"] < 0.1


def test_interleave_is_deterministic_and_lazy():
    def counting(rows, seen):
        for r in rows:
            seen.append(r["id"])
            yield r

    seen: list = []
    big = stream("a", 100_000, 2)
    out = list(Mixer(("main", stream("m", 50, 1)), [("a", 0.2, counting(big, seen))]).rows())
    again = list(Mixer(("main", stream("m", 50, 1)), [("a", 0.2, iter(big))]).rows())
    assert out == again
    assert len(seen) < 100  # only what the share needs was read from the big source


def test_shuffle_buffer_is_a_seeded_permutation():
    rows = [{"i": i} for i in range(1000)]
    a = [r["i"] for r in shuffled(rows, 64, random.Random(7))]
    b = [r["i"] for r in shuffled(rows, 64, random.Random(7))]
    c = [r["i"] for r in shuffled(rows, 64, random.Random(8))]
    assert a == b and a != c and sorted(a) == list(range(1000))
    assert a[:64] != list(range(64))


def test_shares_above_one_are_refused():
    with pytest.raises(ValueError, match="sum to 1.1"):
        Mixer(("main", []), [("a", 0.6, []), ("b", 0.5, [])])


# ---- through Ray ---------------------------------------------------------------------------------------


def _write_sources(folder: Path) -> dict[str, Path]:
    rng = random.Random(0)
    words = "tide harbour lantern keeper ship sail wind mill river stone".split()
    folder.mkdir()
    paths = {"main": folder / "main.jsonl", "sg": folder / "sg.jsonl", "text": folder / "docs"}
    with paths["main"].open("w") as fh:
        for i in range(240):
            q = " ".join(rng.choices(words, k=rng.randint(3, 30)))
            a = " ".join(rng.choices(words, k=rng.randint(1, 20)))
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            fh.write(json.dumps({"id": f"main-{i}", "messages": msgs}) + "\n")
    with paths["sg"].open("w") as fh:
        for i in range(400):
            q = " ".join(rng.choices(words, k=rng.randint(3, 40)))
            conv = [{"from": "human", "value": q}, {"from": "gpt", "value": "ok " + q[:20]}]
            fh.write(json.dumps({"id": f"sg-{i}", "conversations": conv}) + "\n")
    paths["text"].mkdir()
    for i in range(60):
        (paths["text"] / f"d{i:02d}.txt").write_text(" ".join(rng.choices(words, k=rng.randint(20, 200))))
    return paths


def _mix_args(base: Path, paths: dict[str, Path], name: str, workers: int) -> list[str]:
    mix = (
        f"[{{name: sg, share: 0.3, shuffle_buffer: 50, source: {{kind: chat, path: {paths['sg']}}}}},"
        f" {{name: books, share: 0.15, source: {{kind: text, path: {paths['text']}}}}}]"
    )
    return [
        f"run.storage_path={base}",
        f"run.name={name}",
        "data.source.kind=chat",
        f"data.source.path={paths['main']}",
        f"data.mix={mix}",
        "train.max_seq_len=128",
        f"data.num_workers={workers}",
        "data.samples_per_shard=100",
    ]


@pytest.fixture(scope="module")
def mixed_runs(ray_local, tmp_path_factory):
    from ray_jobs.synthesize import run

    base = tmp_path_factory.mktemp("mix")
    paths = _write_sources(base / "src")
    run(load_config(None, _mix_args(base, paths, "w1", 1)))
    run(load_config(None, _mix_args(base, paths, "w2", 2)))
    return base / "w1" / "data", base / "w2" / "data"


@pytest.mark.e2e
def test_large_mixture_reaches_its_shares(mixed_runs):
    out, _ = mixed_runs
    stats = json.loads((out / "stats.json").read_text())
    rows = [r for f in sorted((out / "train").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    total = sum(r["n_tokens"] for r in rows)
    longest = max(r["n_tokens"] for r in rows)
    # the main source is read to its end (its rows over 128 tokens were quarantined as overlong)
    assert (
        stats["num_samples"] == len(rows)
        and stats["mix"]["chat"]["samples"] == stats["sources"]["chat"]["samples"]
    )
    assert stats["sources"]["chat"]["rows_read"] == 240 and stats["mix"]["chat"]["exhausted"]
    for name, share in (("chat", 0.55), ("sg", 0.3), ("books", 0.15)):
        got = sum(r["n_tokens"] for r in rows if r["source"] == name) / total
        assert stats["mix"][name]["share_achieved"] == pytest.approx(got)
        assert abs(got - share) <= longest / total, (name, got)
    # the sources' own shards stay beside the mixture
    assert sorted(p.name for p in (out / "sources").iterdir()) == ["books", "chat", "sg"]
    # the shuffle buffer spread the rows taken from sg over more than its first rows
    sg_ids = [int(r["id"].split("-")[1]) for r in rows if r["source"] == "sg"]
    assert max(sg_ids) >= len(sg_ids)


@pytest.mark.e2e
def test_mixture_parquet_identical_with_one_and_two_workers(mixed_runs):
    one, two = mixed_runs
    names = sorted(p.name for p in (one / "train").glob("*.parquet"))
    assert len(names) >= 2
    for name in names:
        assert (one / "train" / name).read_bytes() == (two / "train" / name).read_bytes()


# ---- per-source loss -----------------------------------------------------------------------------------


@pytest.mark.timeout(900)
@pytest.mark.e2e
def test_training_on_the_mixture_logs_loss_per_source(mixed_runs):
    """The train stage on Ray Train over the mixture just written: every logged step carries the loss of
    each source, and the label-weighted mean of those is the step's loss (the identity holds exactly per
    step; the labels per source are not logged, so the check is that the total lies within the sources'
    range)."""
    from longctx_core.infra.metrics import read_jsonl
    from ray_jobs import train

    out, _ = mixed_runs
    cfg = load_config(
        str(out.parent / "config.yaml"),
        [
            "train.num_workers=1",
            "train.max_steps=3",
            "train.checkpoint_every=0",
            "train.micro_batch_size=2",
            "model.quantization.load_in_4bit=false",
            "model.torch_dtype=float32",
            "model.attn_implementation=sdpa",
        ],
    )
    summary = train.run(cfg)
    assert summary["steps"] == 3
    steps = [r for r in read_jsonl(out.parent / "train" / "metrics.jsonl") if "loss" in r]
    assert len(steps) == 3
    for row in steps:
        by_source = row["loss_by_source"]
        assert by_source and set(by_source) <= {"chat", "sg", "books"}, by_source
        assert min(by_source.values()) - 1e-4 <= row["loss"] <= max(by_source.values()) + 1e-4, row
    seen = {name for row in steps for name in row["loss_by_source"]}
    assert len(seen) >= 2, seen  # the mixture interleaves its sources from the first rows on


def test_loss_by_source_sums_to_the_total_and_matches_each_source_alone():
    from longctx_core.train.losses import causal_lm_loss
    from longctx_core.train.packing import collate_packed

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    rows = [
        {
            "input_ids": [1, 2, 3, 4, 5, 6],
            "labels": [-100, 2, 3, -100, 5, 6],
            "position_ids": [0, 1, 2, 0, 1, 2],
            "seq_lens": [3, 3],
            "sources": ["a", "b"],
        },
        {
            "input_ids": [7, 8, 9],
            "labels": [-100, 8, 9],
            "position_ids": [0, 1, 2],
            "seq_lens": [3],
            "sources": ["b"],
        },
    ]
    batch = collate_packed(rows, pad_id=0, groups={"a": 0, "b": 1})
    assert batch["loss_groups"].tolist() == [[0, 0, 0, 1, 1, 1], [1, 1, 1, -1, -1, -1]]
    hidden = torch.randn(2, 6, 8, requires_grad=True)
    total, n, by_group = causal_lm_loss(
        hidden, head, batch["labels"], 2, loss_groups=batch["loss_groups"], n_groups=2
    )
    plain, n_plain = causal_lm_loss(hidden, head, batch["labels"], 2)
    torch.testing.assert_close(total, plain)
    assert int(n) == int(n_plain) == 6 and by_group[:, 1].tolist() == [2.0, 4.0]
    assert float(by_group[:, 0].sum()) == pytest.approx(float(total), rel=1e-6)
    only_a = batch["labels"].clone()
    only_a[batch["loss_groups"] != 0] = -100
    loss_a, _ = causal_lm_loss(hidden, head, only_a, 2)
    assert float(by_group[0, 0]) == pytest.approx(float(loss_a), rel=1e-6)
    total.backward()  # the per-token path stays differentiable
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
