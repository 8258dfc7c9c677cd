"""The synthesize stage end to end on a real local Ray: outputs, determinism across worker counts, bad
input, and the real NQ file (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_gen.validate import validate_row
from longctx_core.config import load_config
from longctx_core.data.split import split_of
from longctx_core.data.styles import cited_documents
from longctx_core.errors import LongctxError

FIX = Path(__file__).parent / "fixtures"

SMALL = [
    "data.source.builtin.num_records=300",
    "data.num_samples=12",
    "data.eval_samples=4",
    "data.eval_fraction=0.2",
    "data.target_tokens=[512, 1024]",
    "data.turns_per_sample=[1, 3]",
    "data.answer_styles={paraphrase: 0.6, plain: 0.2, unanswerable: 0.2}",
    "data.samples_per_shard=5",
    "data.batch_size=2",
]


def run_synthesize(tmp_path: Path, name: str, *overrides: str, in_process: bool = False) -> Path:
    """The stage on Ray (`ray_jobs.synthesize.run`), or the same library call composing in-process."""
    from data_gen.synthesis import synthesize
    from ray_jobs.synthesize import run

    cfg = load_config(None, [f"run.storage_path={tmp_path}", f"run.name={name}", *overrides])
    if in_process:
        synthesize(cfg, tmp_path / name, in_process=True)
    else:
        run(cfg)
    return tmp_path / name / "data"


def rows_of(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def two_runs(ray_local, tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    one = run_synthesize(base, "w1", *SMALL, "data.num_workers=1")
    two = run_synthesize(base, "w2", *SMALL, "data.num_workers=2")
    return one, two


def test_byte_identical_parquet_with_one_and_two_workers(two_runs):
    one, two = two_runs
    for split in ("train", "eval"):
        files1 = sorted(p.name for p in (one / split).glob("*.parquet"))
        files2 = sorted(p.name for p in (two / split).glob("*.parquet"))
        assert files1 == files2 and files1
        for name in files1:
            assert (one / split / name).read_bytes() == (two / split / name).read_bytes()
    assert [p.name for p in sorted((one / "train").glob("*.parquet"))] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]


def test_outputs_stats_and_valid_rows(two_runs, png_facts):
    out, _ = two_runs
    stats = json.loads((out / "stats.json").read_text())
    for key in (
        "num_samples",
        "tokens",
        "gold_position_hist",
        "answer_styles",
        "quarantined",
        "samples_per_second",
    ):
        assert key in stats
    assert stats["num_samples"] == 12 and stats["eval"]["num_samples"] == 4
    assert set(stats["tokens"]) >= {"min", "median", "max"}
    assert sum(stats["answer_styles"].values()) == 12
    # the plots are real pictures (600 x 350 px at 100 dpi) with their histogram bars drawn
    for name, bars in (("token_lengths", "#4477aa"), ("gold_positions", "#cc6677")):
        png = png_facts(out / "plots" / f"{name}.png").assert_drawn(600, 350)
        assert png.near(bars) > 200, name
    assert (out / "quarantine" / "rows.jsonl").is_file()
    train, held_out = rows_of(out / "train"), rows_of(out / "eval")
    assert len(train) == 12 and len(held_out) == 4
    for row in train + held_out:
        assert validate_row(row) == [], row["id"]
        assert row["n_tokens"] <= row["meta"]["target_tokens"] <= 1024
    assert sum(stats["gold_position_hist"].values()) == sum(len(r["gold_positions"]) for r in train)
    # the question split: no eval question in training samples, in either direction
    train_ids = {i for r in train for i in r["meta"]["record_ids"]}
    eval_ids = {i for r in held_out for i in r["meta"]["record_ids"]}
    assert not train_ids & eval_ids
    assert all(split_of(i, 0.2, 0) == "train" for i in train_ids)
    assert all(split_of(i, 0.2, 0) == "eval" for i in eval_ids)
    # train contexts never hold an eval question's gold document
    train_docs = {t for r in train for t in r["meta"]["titles"]}
    eval_gold = {r["meta"]["titles"][p] for r in held_out for p in r["gold_positions"]}
    assert not train_docs & eval_gold


def test_parquet_loads_with_datasets(two_runs):
    import datasets

    out, _ = two_runs
    ds = datasets.load_dataset("parquet", data_files=str(out / "train" / "*.parquet"), split="train")
    assert ds.num_rows == 12
    assert set(ds.column_names) >= {
        "id",
        "messages",
        "n_tokens",
        "n_docs",
        "gold_positions",
        "answer_style",
        "source",
        "lang",
    }
    assert ds[0]["messages"][0]["role"] == "system"


def test_in_process_composition_gives_the_same_bytes(two_runs, tmp_path):
    ray_out, _ = two_runs
    local = run_synthesize(tmp_path, "local", *SMALL, in_process=True)
    for split in ("train", "eval"):
        for f in sorted((ray_out / split).glob("*.parquet")):
            assert (local / split / f.name).read_bytes() == f.read_bytes()


def test_plain_twin_run_has_same_contexts(two_runs, tmp_path):
    para, _ = two_runs
    overrides = [o for o in SMALL if not o.startswith("data.answer_styles")] + ["data.eval_samples=0"]
    twin = run_synthesize(tmp_path, "twin", *overrides, "data.answer_styles={plain: 1}", in_process=True)
    a = {r["id"]: r for r in rows_of(para / "train")}
    for row in rows_of(twin / "train"):
        assert row["answer_style"] == "plain"
        if a[row["id"]]["answer_style"] == "paraphrase":
            users = lambda r: [m["content"] for m in r["messages"] if m["role"] == "user"]  # noqa: E731
            assert users(row) == users(a[row["id"]])
            assert row["meta"]["questions"] == a[row["id"]]["meta"]["questions"]
    assert not (twin / "eval").exists() or not list((twin / "eval").glob("*.parquet"))


def test_quote_twin_run_on_ray_drops_only_the_document_numbers(two_runs, tmp_path):
    para, _ = two_runs
    overrides = [o for o in SMALL if not o.startswith("data.answer_styles")] + ["data.eval_samples=0"]
    twin = run_synthesize(tmp_path, "quote", *overrides, "data.answer_styles={quote: 1}")
    assert json.loads((twin / "stats.json").read_text())["answer_styles"] == {"quote": 12}
    number = re.compile(r" in Document \[\d+\]|文档\[\d+\]中的")

    def drop(r: dict) -> list[str]:  # the messages without the replies' document numbers
        return [
            number.sub("", m["content"]) if m["role"] == "assistant" else m["content"] for m in r["messages"]
        ]

    a = {r["id"]: r for r in rows_of(para / "train")}
    twins = 0
    for row in rows_of(twin / "train"):
        assert row["answer_style"] == "quote" and validate_row(row) == [], row["id"]
        assert not any(cited_documents(m["content"]) for m in row["messages"] if m["role"] == "assistant")
        if a[row["id"]]["answer_style"] == "paraphrase":
            assert drop(row) == drop(a[row["id"]])
            twins += 1
    assert twins


def test_litm_fixture_quarantines_bad_rows_and_succeeds(tmp_path):
    out = run_synthesize(
        tmp_path,
        "litm",
        "data.source.kind=litm",
        f"data.source.path={FIX / 'litm_small.jsonl.gz'}",
        "data.num_samples=6",
        "data.eval_samples=0",
        "data.eval_fraction=0.1",
        "data.target_tokens=[512]",
        "data.turns_per_sample=[1, 2]",
        "data.max_bad_fraction=0.4",  # the fixture is a third bad rows on purpose (default limit: 5%)
        in_process=True,
    )
    stats = json.loads((out / "stats.json").read_text())
    bad = stats["bad"]["sources"]["litm"]
    assert bad["rows"] == {"bad": 6, "of": 19} and bad["samples"]["bad"] == 0
    assert stats["quarantined"] == {
        "answer_not_found": 1,
        "bad_encoding": 1,
        "bad_json": 1,
        "empty_answer": 1,
        "empty_text": 1,
        "missing_field": 1,
    }
    rows = [json.loads(line) for line in (out / "quarantine" / "rows.jsonl").read_text().splitlines()]
    assert Counter(r["reason"] for r in rows) == Counter(stats["quarantined"])
    assert all(r["raw"] and r["location"] for r in rows)
    samples = rows_of(out / "train")
    assert len(samples) == 6 and all(validate_row(r) == [] for r in samples)
    assert {r["source"] for r in samples} == {"litm"}


def test_document_longer_than_target_is_quarantined(tiny_model_dir, tmp_path):
    from data_gen.synthesis import prepare_records
    from data_gen.tokenizer import chat_tokenizer

    long_text = " ".join(f"Sentence number {i} talks about the long river." for i in range(400))
    rows = [
        {"question": "Which river is long?", "answers": ["the long river"], "text": long_text, "title": "L"}
    ]
    rows += [
        {
            "question": f"Who is {n}?",
            "answers": [n],
            "text": f"The guard is {n}. He works nights.",
            "title": n,
        }
        for n in ("Ada", "Bo", "Cy")
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(
        None, ["data.source.kind=jsonl", f"data.source.path={path}", "data.target_tokens=[512]"]
    )
    prep = prepare_records(cfg, chat_tokenizer(str(tiny_model_dir)))
    assert [m.reason for m in prep.quarantine] == ["document_too_long"]
    assert sum(len(v) for v in prep.records.values()) == 3


def test_bad_inputs_exit_2_before_ray(monkeypatch, capsys, tmp_path):
    import longctx_core.infra.runtime as runtime
    from ray_jobs.synthesize import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for bad input")

    monkeypatch.setattr(runtime, "ensure_ray", no_ray)  # the stage runner's one start of Ray
    cases = [
        (["data.source.kind=litm", f"data.source.path={tmp_path / 'nope.jsonl'}"], "data.source.path:"),
        (["data.target_tokens=[4096]", "train.max_seq_len=2048"], "data.target_tokens: largest target 4096"),
        (["data.answer_styles={fancy: 1}"], "data.answer_styles.fancy: unknown style"),
        (["data.source.kind=jsonl"], "data.source.path: is required"),
    ]
    for overrides, message in cases:
        with pytest.raises(SystemExit) as exc:
            main([f"run.storage_path={tmp_path}", *overrides])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_no_usable_record_is_an_error(tiny_model_dir, tmp_path):
    from data_gen.synthesis import prepare_records
    from data_gen.tokenizer import chat_tokenizer

    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q"}\n{"nope": 1}\n')
    cfg = load_config(None, ["data.source.kind=jsonl", f"data.source.path={path}"])
    with pytest.raises(LongctxError, match="no usable record among 2 read"):
        prepare_records(cfg, chat_tokenizer(str(tiny_model_dir)))


def test_real_nq_file_builds_valid_samples(shared_nq_file, tiny_model_dir):
    """The Lost-in-the-Middle NQ-open oracle file: records, evidence and valid samples (composed in-process)."""
    from data_gen.synthesis import (
        ComposeSettings,
        compose_locally,
        plan_samples,
        prepare_records,
    )
    from data_gen.tokenizer import chat_tokenizer
    from longctx_core.data.compose import PositionSpec

    cfg = load_config(
        None,
        [
            "data.source.kind=litm",
            f"data.source.path={shared_nq_file}",
            "data.source.limit=600",
            "data.target_tokens=[1024, 2048]",
            "data.turns_per_sample=[1, 3]",
        ],
    )
    tok = chat_tokenizer(str(tiny_model_dir))
    prep = prepare_records(cfg, tok)
    usable = len(prep.records["train"]) + len(prep.records["eval"])
    assert prep.read == 600 and usable >= 500, Counter(m.reason for m in prep.quarantine)
    overhead = {"en": 40, "zh": 40}
    tasks = plan_samples(prep, cfg.data, 0, "train", 12, overhead)
    settings = ComposeSettings(PositionSpec(), 2048, 0, "litm")
    results = list(compose_locally(tasks, tok, prep.pools, settings))
    rows = [json.loads(r["row"]) for r in results if r["row"]]
    assert len(rows) == 12, [r["error"] for r in results if r["error"]]
    for row in rows:
        assert validate_row(row) == [], row["id"]
        assert row["meta"]["target_tokens"] - 64 <= row["n_tokens"] <= row["meta"]["target_tokens"]
