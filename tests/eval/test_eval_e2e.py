"""End to end on a real local Ray: `python -m ray_jobs.evaluate` over a small grid for the tiny base model and
the base + a LoRA adapter trained here for two steps; every output is written and agrees with itself.

The tiny model writes garbage, so nothing here is about accuracy: the test checks the pipeline, the files,
that metrics.json's cells are the predictions' means, and that the plots are real PNGs of those numbers.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from litm_fixture import litm_layout

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = ["model.rope.type=linear", "model.rope.factor=2", "model.quantization.load_in_4bit=false"]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir):
    """A PEFT adapter of the tiny model after two optimizer steps (so it really changes the outputs)."""
    import torch

    from longctx_core.config import load_config
    from longctx_core.model.loading import load_model, load_tokenizer
    from longctx_core.model.lora import add_lora, save_adapter

    cfg = load_config(
        None,
        ["model.quantization.load_in_4bit=false", "model.gradient_checkpointing=false", "model.lora.r=4"],
    )
    tok = load_tokenizer(cfg.model)
    peft = add_lora(load_model(cfg.model, quantize=False), cfg.model)
    ids = tok(["Velmora was founded in 1742 by river traders."] * 2, return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(2):
        peft(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return save_adapter(peft, tmp_path_factory.mktemp("adapter") / "adapter", tok)


def _argv(tmp_path: Path, adapter: Path) -> list[str]:
    return [
        f"run.storage_path={tmp_path}",
        "run.name=ev",
        *MODEL,
        f"eval.models=[{{name: base, kind: base}}, {{name: tuned, kind: adapter, path: {adapter}}}]",
        "eval.max_new_tokens=12",
        "eval.batch_size=4",
        "data.eval_fraction=0.2",
        "data.source.builtin={num_records: 200, facts_per_doc: [2, 3], filler_per_doc: [0, 1]}",
        "eval.qa.num_questions=2",
        "eval.qa.pool_records=200",
        "eval.qa.positions=[0, 0.5, 1]",
        "eval.passkey.depths=[0, 1]",
        "eval.passkey.trials=1",
        "eval.perplexity.num_sequences=1",
        "eval.perplexity.buckets=4",
        "eval.longbench.enabled=true",
        f"eval.longbench.path={FIXTURES / 'longbench'}",
        "eval.longbench.subsets=[hotpotqa, passage_retrieval_en, passage_retrieval_zh, dureader]",
        "eval.litm.enabled=true",
        f"eval.litm.path={litm_layout(tmp_path / 'litm')}",
        "eval.litm.num_docs=[10]",
        "eval.litm.limit=1",
    ]


def _write_train(root: Path, questions: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data" / "train").mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": f"s{i}", "messages": [{"role": "user", "content": f"Question: {q}"}]}
        for i, q in enumerate(questions)
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "train" / "part-0.parquet")


def _cell_means(predictions: list[dict], task: str, keys: tuple[str, ...]) -> dict[tuple, tuple[int, float]]:
    groups = defaultdict(list)
    for p in predictions:
        if p["task"] == task:
            groups[(p["model"], *(p[k] for k in keys))].append(p["score"])
    return {k: (len(v), sum(v) / len(v)) for k, v in groups.items()}


def test_evaluate_stage_end_to_end(ray_local, tmp_path, adapter_dir, capsys):
    import matplotlib.image as mpimg

    from longctx_core.eval import plots
    from ray_jobs.evaluate import main

    _write_train(tmp_path / "ev", ["Where was the harbour master born?"])  # no overlap: the check passes
    main(_argv(tmp_path, adapter_dir))
    out = tmp_path / "ev" / "eval"
    assert "evaluation:" in capsys.readouterr().out
    for name in ("metrics.json", "predictions.jsonl", "report.md", "config.yaml"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    n = metrics["num_prompts"]
    # qa 2 x 2 lengths x 3 positions + passkey 2 x 2 + perplexity 2 + longbench 6 + litm 3
    assert n == 12 + 4 + 2 + 6 + 3
    assert len(predictions) == 2 * n and {p["model"] for p in predictions} == {"base", "tuned"}
    assert {m["name"]: (m["kind"], m["limit"]) for m in metrics["models"]} == {
        "base": ("base", 1024),
        "tuned": ("adapter", 1024),
    }
    # metrics.json is the stage's own scoring of predictions.jsonl (perplexity's bucket sums live only in
    # metrics.json; its cells are checked below). Exact numbers on known replies: test_eval_stage_scoring.py
    from longctx_core.eval.report import aggregate

    again = aggregate([p for p in predictions if p["task"] != "perplexity"], metrics["models"])["tasks"]
    assert again == {t: m for t, m in metrics["tasks"].items() if t != "perplexity"}

    # every cell of every grid, with counts, equal to the predictions' means
    tasks = metrics["tasks"]
    for task, keys in (
        ("qa", ("length", "position")),
        ("passkey", ("length", "depth")),
        ("litm", ("num_docs", "gold_index")),
    ):
        expect = _cell_means(predictions, task, keys)
        got = {(c["model"], *(c[k] for k in keys)): (c["n"], c["accuracy"]) for c in tasks[task]["cells"]}
        assert set(got) == set(expect), task
        for key, (count, mean) in expect.items():
            assert got[key][0] == count and got[key][1] == pytest.approx(mean), (task, key)
    assert len(tasks["qa"]["cells"]) == 2 * 2 * 3 and all(c["n"] == 2 for c in tasks["qa"]["cells"])
    assert {c["length"] for c in tasks["qa"]["cells"]} == {1024 // 2 - 12, 1024 - 12}
    for c in tasks["qa"]["cells"]:
        assert 0.0 <= c["faithful_gold"] <= c["faithful_any"] <= c["quoted"] <= 1.0
    lb = {(c["model"], c["subset"]): c for c in tasks["longbench"]["cells"]}
    assert (
        len(lb) == 8
        and lb[("base", "hotpotqa")]["n"] == 2
        and lb[("base", "dureader")]["metric"] == "rouge_l_zh"
    )
    ppl = {(c["model"], c["length"], c["bucket"]): c for c in tasks["perplexity"]["cells"]}
    assert len(ppl) == 2 * 2 * 4 and all(c["tokens"] > 0 and c["ppl"] > 1 for c in ppl.values())
    # the adapter really is applied: its losses differ from the base's
    assert ppl[("base", 512, 3)]["nll"] != pytest.approx(ppl[("tuned", 512, 3)]["nll"], abs=1e-6)

    # predictions carry what a reader needs
    qa = next(p for p in predictions if p["task"] == "qa")
    assert {"prompt_id", "model", "reply", "answer", "score", "answers", "gold", "faithful_any"} <= set(qa)

    # the plots are PNGs of exactly these numbers
    for name in ("qa_position", "passkey_heatmap", "perplexity_position", "litm_position"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert mpimg.imread(png).shape[0] > 100
    series = plots.line_series(tasks["qa"]["cells"], "position", ("model", "length"), "accuracy")
    cell_acc = _cell_means(predictions, "qa", ("length", "position"))
    assert set(series) == {f"{m} length={n}" for m in ("base", "tuned") for n in (500, 1012)}
    for label, (xs, ys) in series.items():
        model, length = label.split(" length=")
        assert xs == [0.0, 0.5, 1.0]
        assert ys == pytest.approx([cell_acc[(model, int(length), x)][1] for x in xs])
    heat = plots.heatmap_series(tasks["passkey"]["cells"])
    assert heat["tuned"][0] == [0.0, 1.0] and heat["tuned"][1] == [500, 1012]

    report = (out / "report.md").read_text()
    for heading in ("by gold position", "Passkey", "Perplexity", "LongBench", "Lost in the Middle"):
        assert heading in report
    assert "| tuned | 500 |" in report and "plots/qa_position.png" in report


def test_evaluate_refuses_leaked_questions(tmp_path, adapter_dir, capsys):
    from longctx_core.config import load_config
    from longctx_core.eval.contexts import held_out_records
    from ray_jobs.evaluate import main

    argv = _argv(tmp_path, adapter_dir)
    cfg = load_config(None, argv)
    records, _, _ = held_out_records(cfg.data.source, cfg.run.seed, cfg.data.eval_fraction, 2, 200)
    _write_train(tmp_path / "ev", [records[0].question])
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert re.search(
        r"1 of \d+ evaluation questions also appear in the training data", capsys.readouterr().err
    )
    assert not (tmp_path / "ev" / "eval").exists()
