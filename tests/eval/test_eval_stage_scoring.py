"""The evaluate stage's scoring wiring, on hand-made replies with known right answers.

The prompts are the ones the stage builds (`runner.build_prompts`: its qa and passkey builders, the tiny
tokenizer, the built-in world). Instead of a model, each prompt gets a reply written here — right with a
verbatim gold quote, right with a mis-copied quote, quoted but wrong, quoting a distractor, plain, with a
made-up quote, a refusal — shaped as a `ModelWorker` output row. The rows go through exactly what
`runner.run` runs after the model actors (`generate.output_of_row`, `report.score_run`,
`report.write_outputs`), and the test asserts the exact metrics: accuracy, quoted, faithful_any,
faithful_gold and near_miss by gold position, passkey accuracy by depth, the per-model summaries, and that
metrics.json is what the same scoring gives on predictions.jsonl read back.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import asdict

import numpy as np
import pytest

MODEL = ["model.rope.type=linear", "model.rope.factor=2", "model.quantization.load_in_4bit=false"]
WRONG = "Nowhere in particular"
MADE_UP = "The moon is made of green cheese"
REFUSAL = "None of the documents contains the answer."

# reply kind -> (score, quoted, faithful_any, faithful_gold, near_miss)
KINDS = {
    "right_gold": (1, 1, 1, 1, 0),  # verbatim quote of the gold document, right answer
    "right_bad_quote": (1, 1, 0, 0, 1),  # right answer, gold quote mis-copied (a space added): not faithful
    "wrong_gold_quote": (0, 1, 1, 1, 0),  # quoted the gold document verbatim, then answered wrong
    "wrong_other_quote": (0, 1, 1, 0, 0),  # verbatim quote of a distractor, wrong answer
    "plain_right": (1, 0, 0, 0, 0),  # "The answer is: X" without a quote
    "made_up_quote": (1, 1, 0, 0, 0),  # right answer behind a quote found in no document
    "refusal": (0, 0, 0, 0, 0),
}
# base model: the replies of questions 0..3 at each gold position
BASE_TABLE = {
    0.0: ["right_gold"] * 4,
    0.5: ["right_gold", "right_bad_quote", "wrong_gold_quote", "refusal"],
    1.0: ["wrong_other_quote", "plain_right", "made_up_quote", "refusal"],
}
# expected base cells, by hand from the tables above: (accuracy, quoted, faithful_any, faithful_gold, near_miss)
BASE_CELLS = {
    0.0: (1.0, 1.0, 1.0, 1.0, 0.0),
    0.5: (0.5, 0.75, 0.5, 0.5, 0.25),
    1.0: (0.5, 0.5, 0.25, 0.0, 0.0),
}
# passkey: depth -> the two trials' replies; "key" stands for the prompt's key
PASSKEY_TABLE = {
    0.0: ["The pass key is {key}.", "{key}, not 12345"],  # right; first number is the key
    1.0: ["The pass key is {wrong}.", "12345, or maybe {key}"],  # wrong number; the key only comes second
}


@pytest.fixture(scope="module")
def stage_prompts(tmp_path_factory, tiny_model_dir):
    """(the stage's prompts for 4 questions x 3 positions at 500 tokens + 2 depths x 2 passkeys, models)."""
    from longctx_core.config import load_config, run_dir
    from longctx_core.eval.models import resolve_models
    from longctx_core.eval.runner import build_prompts
    from longctx_core.model.loading import load_tokenizer

    cfg = load_config(
        None,
        [
            f"run.storage_path={tmp_path_factory.mktemp('stage')}",
            "run.name=sc",
            *MODEL,
            "eval.models=[{name: base, kind: base}]",
            "eval.max_new_tokens=12",
            "data.eval_fraction=0.2",
            "data.source.builtin={num_records: 200, facts_per_doc: [2, 3], filler_per_doc: [0, 1]}",
            "eval.qa.num_questions=4",
            "eval.qa.pool_records=200",
            "eval.qa.positions=[0, 0.5, 1]",
            "eval.qa.lengths=[500]",
            "eval.passkey.depths=[0, 1]",
            "eval.passkey.trials=2",
            "eval.passkey.lengths=[500]",
            "eval.perplexity.enabled=false",
        ],
    )
    root = run_dir(cfg)
    specs = resolve_models(cfg, root)
    prompts = build_prompts(cfg, root, load_tokenizer(cfg.model), specs)
    models = [asdict(s) for s in specs] + [{"name": "tuned", "kind": "adapter", "path": None, "limit": 0}]
    return prompts, models


def _span(doc: str) -> str:
    """A verbatim stretch of a document fit for quoting: its first sentence, without quotation marks."""
    sentence = re.split(r"(?<=[.!?])\s", doc.strip())[0]
    assert sentence and not set(sentence) & set('"“”「」『』'), sentence
    return sentence


def _reply(kind: str, prompt) -> str:
    from longctx_core.eval import scoring

    docs, gold, answer = prompt.extra["docs"], prompt.extra["gold"][0], prompt.answers[0]
    gold_span = _span(docs[gold])
    assert scoring.best_subspan_em(WRONG, prompt.answers) == 0.0
    assert scoring.best_subspan_em(REFUSAL, prompt.answers) == 0.0
    assert not any(MADE_UP.lower() in d.lower() for d in docs)
    cite = f"The original text in Document [{gold + 1}] says:"
    if kind == "right_gold":
        return f'{cite} "{gold_span}"\nSo the answer is: {answer}'
    if kind == "right_bad_quote":  # a space slipped in: no longer verbatim, the same text up to spacing
        return f'{cite} "{gold_span[:1]} {gold_span[1:]}"\nSo the answer is: {answer}'
    if kind == "wrong_gold_quote":
        return f'{cite} "{gold_span}"\nSo the answer is: {WRONG}'
    if kind == "wrong_other_quote":
        other = next(i for i, d in enumerate(docs) if i != gold and _span(d) not in docs[gold])
        return f'The original text in Document [{other + 1}] says: "{_span(docs[other])}"\nSo the answer is: {WRONG}'
    if kind == "plain_right":
        return f"The answer is: {answer}"
    if kind == "made_up_quote":
        return f'{cite} "{MADE_UP}."\nSo the answer is: {answer}'
    assert kind == "refusal"
    return REFUSAL


def _worker_row(prompt_id: str, reply: str) -> dict:
    """One output row as `ModelWorker` emits it (numpy scalars, "" for no losses)."""
    return {
        "prompt_id": prompt_id,
        "reply": reply,
        "new_tokens": np.int64(len(reply.split())),
        "nll": "",
        "seconds": np.float64(0.01),
    }


def _hand_made_outputs(prompts) -> tuple[dict, dict]:
    """({model: {prompt id: output}} through `output_of_row`, {prompt id: base reply kind})."""
    from longctx_core.eval.generate import output_of_row

    questions: dict[str, int] = {}
    base, tuned, kinds = {}, {}, {}
    keys_seen: dict[float, int] = defaultdict(int)
    for p in prompts:
        if p.task == "qa":
            q = questions.setdefault(p.extra["record_id"], len(questions))
            kinds[p.prompt_id] = BASE_TABLE[float(p.cell["position"])][q]
            base[p.prompt_id] = _reply(kinds[p.prompt_id], p)
            tuned[p.prompt_id] = _reply("right_gold", p)
        else:
            assert p.task == "passkey"
            key, depth = p.answers[0], float(p.cell["depth"])
            assert key != "12345"
            template = PASSKEY_TABLE[depth][keys_seen[depth]]
            keys_seen[depth] += 1
            base[p.prompt_id] = template.format(key=key, wrong=int(key) + 1)
            tuned[p.prompt_id] = f"The pass key is {key}."
    assert len(questions) == 4 and dict(keys_seen) == {0.0: 2, 1.0: 2}
    outputs = {
        name: {pid: output_of_row(_worker_row(pid, text)) for pid, text in replies.items()}
        for name, replies in (("base", base), ("tuned", tuned))
    }
    return outputs, kinds


@pytest.fixture(scope="module")
def scored(stage_prompts):
    from longctx_core.eval.report import score_run

    prompts, models = stage_prompts
    outputs, kinds = _hand_made_outputs(prompts)
    records, metrics = score_run(prompts, outputs, models, {"run": "sc", "num_prompts": len(prompts)})
    return records, metrics, kinds


def test_the_stage_builds_the_expected_grid(stage_prompts):
    prompts, _ = stage_prompts
    qa = [p for p in prompts if p.task == "qa"]
    assert len(qa) == 4 * 3 and {p.cell["position"] for p in qa} == {0, 0.5, 1}
    for p in qa:  # the gold document sits where the cell says
        assert p.extra["gold"] == [round(p.cell["position"] * (p.extra["n_docs"] - 1))]
    assert len([p for p in prompts if p.task == "passkey"]) == 4


def test_each_reply_is_scored_as_its_kind(scored):
    records, _, kinds = scored
    base = {r["prompt_id"]: r for r in records if r["model"] == "base" and r["task"] == "qa"}
    assert set(base) == set(kinds)
    for pid, kind in kinds.items():
        r = base[pid]
        got = (r["score"], r["quoted"], r["faithful_any"], r["faithful_gold"], r["near_miss"])
        assert got == KINDS[kind], (kind, r["reply"])
        if kind in ("right_gold", "plain_right"):
            assert r["answer"] in r["answers"]


def test_metrics_by_position_and_model_are_exact(scored):
    _, metrics, _ = scored
    qa = metrics["tasks"]["qa"]
    cells = {(c["model"], c["position"]): c for c in qa["cells"]}
    assert set(cells) == {(m, p) for m in ("base", "tuned") for p in (0, 0.5, 1)}
    for position, (acc, quoted, f_any, f_gold, near) in BASE_CELLS.items():
        c = cells[("base", position)]
        assert c["n"] == 4 and c["length"] == 500
        assert (c["accuracy"], c["quoted"], c["faithful_any"], c["faithful_gold"], c["near_miss"]) == (
            pytest.approx(acc),
            pytest.approx(quoted),
            pytest.approx(f_any),
            pytest.approx(f_gold),
            pytest.approx(near),
        ), position
        t = cells[("tuned", position)]
        assert (t["accuracy"], t["faithful_gold"]) == (1.0, 1.0)
    summary = qa["by_model"]
    assert summary["accuracy"] == {"base": pytest.approx(8 / 12), "tuned": 1.0}
    assert summary["quoted"] == {"base": pytest.approx(9 / 12), "tuned": 1.0}
    assert summary["faithful_any"] == {"base": pytest.approx(7 / 12), "tuned": 1.0}
    assert summary["faithful_gold"] == {"base": pytest.approx(6 / 12), "tuned": 1.0}

    # every reply here that has the answer states it alone after the marker: exact match agrees
    assert summary["exact"] == summary["accuracy"]
    # pooled with question-clustered intervals; the paired difference is per question, by hand:
    # base answers 2/3, 3/3, 2/3, 1/3 of the positions of questions 0..3 and tuned all: +4/12 on average
    pooled = qa["intervals"]
    assert pooled["base"]["all"]["accuracy"]["mean"] == pytest.approx(8 / 12)
    assert pooled["base"]["all"]["accuracy"]["n"] == 4  # questions, not prompts
    assert pooled["base"]["length=500"]["accuracy"]["mean"] == pytest.approx(8 / 12)
    diff = pooled["tuned"]["all"]["accuracy_vs_base"]
    assert diff["mean"] == pytest.approx(4 / 12) and 0.0 <= diff["lo"] <= diff["mean"] <= diff["hi"] <= 2 / 3
    assert "accuracy_vs_base" not in pooled["base"]["all"]
    lo, hi = cells[("base", 0.5)]["accuracy_lo"], cells[("base", 0.5)]["accuracy_hi"]
    assert (lo, hi) == (pytest.approx(0.15004, abs=1e-4), pytest.approx(0.84996, abs=1e-4))  # Wilson 2/4

    passkey = {(c["model"], c["depth"]): c for c in metrics["tasks"]["passkey"]["cells"]}
    assert passkey[("base", 0)]["accuracy"] == 1.0 and passkey[("base", 1)]["accuracy"] == 0.0
    assert passkey[("base", 0)]["n"] == 2 and passkey[("tuned", 1)]["accuracy"] == 1.0
    assert metrics["tasks"]["passkey"]["by_model"]["accuracy"] == {"base": 0.5, "tuned": 1.0}


def test_written_files_agree_with_the_scoring(scored, stage_prompts, tmp_path):
    """predictions.jsonl holds the scored rows, and metrics.json is what scoring those rows gives."""
    from longctx_core.eval.report import aggregate, write_outputs

    records, metrics, kinds = scored
    _, models = stage_prompts
    write_outputs(tmp_path, records, metrics)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == len(records) == 2 * 16
    assert on_disk == json.loads(json.dumps(metrics))
    again = aggregate(predictions, on_disk["models"], {"run": "sc", "num_prompts": 16})
    assert again == on_disk
    refusal = next(p for p in predictions if p["model"] == "base" and kinds.get(p["prompt_id"]) == "refusal")
    assert refusal["reply"] == REFUSAL and refusal["score"] == 0.0 and refusal["quoted"] == 0.0
    report = (tmp_path / "report.md").read_text()
    assert report.count("| base |") >= 3
    assert "| tuned | all | accuracy_vs_base | 33.3 [" in report  # the paired difference, in points
