"""End to end on a real local Ray: `python -m ray_jobs.evaluate` over a small grid for the tiny base model and
the base + a LoRA adapter trained here for two steps; every output is written and agrees with itself.

The tiny model writes garbage, so nothing here is about accuracy: the test checks the pipeline, the files,
that each prediction row is scored as by hand from its own fields, that metrics.json's cells and report.md's
table are counts of those rows by hand (every cell of the models x lengths x positions grid present), and that
the plots are real pictures, saved from figures of exactly those numbers.
"""

from __future__ import annotations

import json
import math
import re
import string
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


def _squad_norm(text: str) -> str:
    """SQuAD's answer normalisation, written out here: lower case, no ASCII punctuation, no articles."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _correct_by_hand(row: dict) -> bool:
    """Whether a prediction row is right, from its own fields: qa/litm when a gold answer is contained in
    the parsed answer (an empty answer never is), passkey when the reply's first number is the key."""
    if row["task"] in ("qa", "litm"):
        answer = _squad_norm(row["answer"])
        return bool(answer) and any(_squad_norm(gold) in answer for gold in row["answers"])
    numbers = re.findall(r"\d+", row["reply"])
    return bool(numbers) and numbers[0] == row["answers"][0]


def _cells_by_hand(predictions: list[dict], task: str, keys: tuple[str, ...]) -> dict[tuple, tuple[int, int]]:
    """{(model, *cell keys): (prompts, correct)} of `task`, counted from the rows."""
    cells: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for p in predictions:
        if p["task"] == task:
            cell = cells[(p["model"], *(p[k] for k in keys))]
            cell[0] += 1
            cell[1] += _correct_by_hand(p)
    return {k: (n, c) for k, (n, c) in cells.items()}


def _wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of correct/n (the textbook formula)."""
    p, d = correct / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, centre - half), min(1.0, centre + half)


def _report_table(report: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table under `heading`, header row first."""
    lines = report.split(f"## {heading}", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_evaluate_stage_end_to_end(ray_local, tmp_path, adapter_dir, capsys, png_facts):
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
    # Every row scored as by hand from its own fields (its parsed answer, its golds, its reply) ...
    for p in predictions:
        if p["task"] in ("qa", "litm", "passkey"):
            assert p["score"] == float(_correct_by_hand(p)), p
    # ... and every cell of metrics.json equal to a count of those rows by hand: prompts, correct, accuracy.
    tasks = metrics["tasks"]
    grids = {"qa": ("length", "position"), "passkey": ("length", "depth"), "litm": ("num_docs", "gold_index")}
    for task, keys in grids.items():
        expect = _cells_by_hand(predictions, task, keys)
        got = {(c["model"], *(c[k] for k in keys)): c for c in tasks[task]["cells"]}
        assert set(got) == set(expect), task
        for key, (prompts, correct) in expect.items():
            assert (got[key]["n"], got[key]["correct"]) == (prompts, correct), (task, key)
            assert got[key]["accuracy"] == pytest.approx(correct / prompts), (task, key)
    # the grids are complete: models x lengths x positions (depths, gold indices), each cell every question
    # eval.length_factors [0.5, 1] of the 1024-token limit, less the reply's tokens
    lengths = {1024 // 2 - 12, 1024 - 12}
    assert {c["length"] for c in tasks["qa"]["cells"]} == lengths
    assert len(tasks["qa"]["cells"]) == 2 * len(lengths) * 3 and all(
        c["n"] == 2 for c in tasks["qa"]["cells"]
    )
    assert len(tasks["passkey"]["cells"]) == 2 * 2 * 2 and all(c["n"] == 1 for c in tasks["passkey"]["cells"])
    assert len(tasks["litm"]["cells"]) == 2 * 1 * 3 and all(c["n"] == 1 for c in tasks["litm"]["cells"])
    qa_by_hand = _cells_by_hand(predictions, "qa", grids["qa"])
    for model in ("base", "tuned"):
        right = sum(c for key, (_, c) in qa_by_hand.items() if key[0] == model)
        assert tasks["qa"]["by_model"]["accuracy"][model] == pytest.approx(right / 12)
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

    # the plots: real pictures (size, colours), saved from figures of exactly these cells
    sizes = {"qa_position": (770, 462), "perplexity_position": (770, 462), "litm_position": (770, 462)}
    sizes["passkey_heatmap"] = (990, 418)  # one panel per model
    for name, (width, height) in sizes.items():
        png_facts(out / "plots" / f"{name}.png").assert_drawn(width, height)
    series = plots.line_series(tasks["qa"]["cells"], "position", ("model", "length"), "accuracy")
    assert set(series) == {f"{m} length={n}" for m in ("base", "tuned") for n in sorted(lengths)}
    for label, (xs, ys) in series.items():
        model, length = label.split(" length=")
        assert xs == [0.0, 0.5, 1.0]
        assert ys == pytest.approx([qa_by_hand[(model, int(length), x)][1] / 2 for x in xs])
    again = plots.save_figure(
        plots.line_figure(
            series,
            "gold document position (0 = first, 1 = last)",
            "accuracy (sub-span EM)",
            "Multi-document QA: accuracy by gold position",
        ),
        tmp_path / "qa_again.png",
    )
    assert (out / "plots" / "qa_position.png").read_bytes() == again.read_bytes()
    heat = plots.heatmap_series(tasks["passkey"]["cells"])
    assert heat["tuned"][0] == [0.0, 1.0] and heat["tuned"][1] == sorted(lengths)

    # report.md's accuracy table: each cell the hand count's accuracy, Wilson interval and questions
    report = (out / "report.md").read_text()
    for heading in ("by gold position", "Passkey", "Perplexity", "LongBench", "Lost in the Middle"):
        assert heading in report
    table = _report_table(report, "Multi-document QA by gold position")
    assert table[0] == ["model", "length", "position=0", "position=0.5", "position=1"]
    assert len(table) == 1 + 2 * len(lengths)
    for model, length, *cells in table[1:]:
        for position, text in zip((0.0, 0.5, 1.0), cells, strict=True):
            n, correct = qa_by_hand[(model, int(length), position)]
            lo, hi = _wilson(correct, n)
            assert text == f"{correct / n:.3f} [{lo:.2f}, {hi:.2f}] ({n})", (model, length, position)
    assert "plots/qa_position.png" in report


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
