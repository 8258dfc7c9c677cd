"""The repro's analysis and report: bootstrap intervals, paired differences, the verdict, the files."""

from __future__ import annotations

import json

import numpy as np
import pytest

PRESET = "ray_jobs/configs/repro_cpu.yaml"
POSITIONS = [0.0, 0.25, 0.5, 0.75, 1.0]


def _qa_row(model, record, length, pos, score, quoted=0.0):
    return {
        "model": model,
        "task": "qa",
        "prompt_id": f"qa-builtin-0-{record}-L{length}-p{pos:g}",
        "length": length,
        "position": pos,
        "score": float(score),
        "quoted": quoted,
        "faithful_gold": quoted,
        "near_miss": 0.0,
    }


def _write_eval(folder, seed_rows):
    folder.mkdir(parents=True)
    with (folder / "predictions.jsonl").open("w") as fh:
        for row in seed_rows:
            fh.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture
def lost_in_the_middle(tmp_path):
    """Two seeds of predictions where the extended base and the plain arm fail in the middle at the long
    length and the paraphrase arm answers everywhere (and quotes)."""
    dirs = {}
    for seed in (0, 1):
        rows = []
        for q in range(30):
            for pos in POSITIONS:
                edge = pos in (0.0, 1.0)
                rows.append(_qa_row("base", q, 208, pos, 1))
                rows.append(_qa_row("base", q, 976, pos, edge))
                rows.append(_qa_row("plain", q, 976, pos, edge))
                rows.append(_qa_row("paraphrase", q, 976, pos, 1, quoted=1.0))
        rows += [
            {"model": m, "task": "passkey", "prompt_id": f"pk-{m}", "length": 976, "depth": 0.5, "score": 1.0}
            for m in ("base", "plain", "paraphrase")
        ]
        dirs[seed] = _write_eval(tmp_path / f"eval-s{seed}", rows)
    return dirs


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_questions():
    from repro.analysis import bootstrap_interval

    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, size=(40, 5)).astype(float)
    big = rng.integers(0, 2, size=(1000, 5)).astype(float)
    a = bootstrap_interval(small, [0, 1, 2, 3, 4], 500, 0)
    b = bootstrap_interval(big, [0, 1, 2, 3, 4], 500, 0)
    assert a["lo"] <= a["mean"] <= a["hi"] and a["n"] == 40
    assert (b["hi"] - b["lo"]) < (a["hi"] - a["lo"])
    const = bootstrap_interval(np.ones((10, 5)), [2], 200, 0)
    assert const == {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": 10}


def test_hierarchical_bootstrap_carries_the_spread_between_seeds():
    """Two seeds whose questions agree within each seed but whose means differ (0.2 vs 0.8): resampling
    questions alone sees 200 units and a narrow interval; drawing seeds first lets a resample be all one
    seed, so the interval spans nearly the whole gap. One seed: both are the same computation."""
    from repro.analysis import bootstrap_interval

    rng = np.random.default_rng(3)
    a = (rng.random((100, 3)) < 0.2).astype(float)
    b = (rng.random((100, 3)) < 0.8).astype(float)
    matrix, seeds = np.vstack([a, b]), [0] * 100 + [1] * 100
    flat = bootstrap_interval(matrix, [0, 1, 2], 1000, 0)
    nested = bootstrap_interval(matrix, [0, 1, 2], 1000, 0, seeds)
    assert flat["mean"] == nested["mean"] and nested["n"] == 200
    assert flat["hi"] - flat["lo"] < 0.15
    assert nested["lo"] < 0.3 and nested["hi"] > 0.7
    assert bootstrap_interval(a, [0, 1, 2], 500, 0) == bootstrap_interval(a, [0, 1, 2], 500, 0, [0] * 100)


def test_arm_pairs_put_the_claims_first():
    from repro.analysis import arm_pairs

    assert arm_pairs(["plain", "quote", "paraphrase"]) == [
        ("quote", "plain"),
        ("paraphrase", "plain"),
        ("paraphrase", "quote"),
    ]
    assert arm_pairs(["paraphrase", "plain"]) == [("paraphrase", "plain")]
    assert arm_pairs(["plain", "quote", "mixed"]) == [
        ("quote", "plain"),
        ("mixed", "plain"),
        ("mixed", "quote"),
    ]
    assert arm_pairs(["plain"]) == []


def _diagnosis(**kw):
    third = {"exact_match": 0.2, "n": 16}
    return {
        "exact_match": 0.2,
        "questions": 48,
        "by_question_type": {"What colour does ... like?": third},
        "by_gold_third": {"start": third, "middle": third, "end": third},
        "replies_naming_a_document": 0.0,
        "replies_naming_the_gold_document": 0.0,
        "answers_found_in_the_prompt": 1.0,
        "random_document_copy": 0.217,
        "training_exact_match": 0.469,
        "training_questions": 48,
        "question_name_attention": [1.0, 0.3],
        "gold_value_attention": [0.1, 0.97],
        "slot_exact_match": 0.312,
    } | kw


def test_report_states_the_middle_gap_with_intervals(lost_in_the_middle, tmp_path, png_facts):
    from repro.config import load_repro_config
    from repro.report import write_report

    cfg = load_repro_config(PRESET, [f"run.storage_path={tmp_path}", "run.name=r", "repro.seeds=[0, 1]"])
    base = {
        "summary": {
            "parameters": 3.5e6,
            "steps": 10,
            "minutes": 1.0,
            "validation_accuracy": 0.9,
            "validation_questions": 48,
            "reached_target": True,
        }
    }
    weak = {"summary": base["summary"] | {"validation_accuracy": 0.6, "reached_target": False}}
    report = write_report(cfg, lost_in_the_middle, {0: base, 1: weak}, command="make repro")
    text = report.read_text()
    data = json.loads((tmp_path / "r" / "repro.json").read_text())["analysis"]
    png = png_facts(tmp_path / "r" / "plots" / "accuracy_by_position.png").assert_drawn(720, 480)
    # the last two lines drawn (plain and paraphrase at 4 x L0; the base's lie beneath them) are in it
    assert png.near("#2ca02c") > 100 and png.near("#d62728") > 100
    # 60 units = 2 seeds x 30 questions; base at L0 perfect, at 4 x L0 only the edges.
    assert data["accuracy"]["208"]["base"]["all"]["mean"] == 1.0
    long = data["accuracy"]["976"]
    assert long["base"]["middle"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 60}
    assert long["paraphrase"]["0.5"]["mean"] == 1.0 and long["plain"]["0"]["mean"] == 1.0
    diff = data["differences"]["paraphrase - plain"]
    assert diff["middle"]["mean"] == 1.0 and diff["0"]["mean"] == 0.0
    assert data["quotes"]["quoted"] == {"base": 0.0, "plain": 0.0, "paraphrase": 1.0}
    assert "paraphrase - plain in the middle: +100.0 [+100.0, +100.0] points, better" in text
    assert "| paraphrase | 100.0 [100.0, 100.0]" in text and "Command: `make repro`" in text
    assert (
        "Toy base (seed 0): 3.50M-parameter" in text and "90.0% on 48 fresh-world questions — reached" in text
    )
    assert (
        "Toy base (seed 1): " in text and "60.0% on 48 fresh-world questions — DID NOT reach the 85%" in text
    )
    # The curve's shape: base and plain hold the edges only (a U at its deepest), paraphrase is flat.
    curve = data["curve"]["976"]
    assert curve["base"]["loses_the_middle"] and curve["plain"]["loses_the_middle"]
    assert curve["base"]["edges - middle"]["mean"] == 1.0 and not curve["paraphrase"]["loses_the_middle"]
    assert "| base | 100.0 [100.0, 100.0] | 0.0 [0.0, 0.0] | +100.0 [+100.0, +100.0] | yes |" in text
    assert "| paraphrase | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] | +0.0 [+0.0, +0.0] | no |" in text
    # Two seeds: each one's figures alone too, intervals over its own 30 questions.
    seed1 = data["by_seed"]["1"]
    assert seed1["models"]["base"]["middle"]["n"] == 30 and seed1["models"]["base"]["loses_the_middle"]
    assert seed1["differences"]["paraphrase - plain"]["middle"]["mean"] == 1.0
    assert "## Each seed alone, 976-token prompts" in text
    assert "| 1 | base | 100.0 [100.0, 100.0] | 0.0 [0.0, 0.0] | 40.0 [40.0, 40.0] | yes |" in text
    assert "| 0 | paraphrase - plain | +100.0 [+100.0, +100.0] | +60.0 [+60.0, +60.0] |" in text
    # Without an explicit command the report names the run's resolved config, which reproduces it.
    text = write_report(cfg, lost_in_the_middle, {0: base}).read_text()
    assert "Toy base: 3.50M-parameter" in text  # one base shared by the seeds: no seed named
    assert "Long pre-training" not in text
    # A long-pretrained base: its build and its diagnosis at 4 x L0 are in the report.
    third = {"exact_match": 0.5, "n": 10}
    diagnosis = _diagnosis(
        exact_match=0.5,
        questions=30,
        by_gold_third={"start": third, "middle": third | {"exact_match": 0.1}, "end": third},
        question_name_attention=[0.9, 0.05],
    )
    long = {"summary": base["summary"] | {"steps": 300, "validation_accuracy": 0.7}, "diagnosis": diagnosis}
    cfg = load_repro_config(
        PRESET, [f"run.storage_path={tmp_path}", "run.name=r", "repro.long_pretrain.steps=300"]
    )
    text = write_report(cfg, lost_in_the_middle, {0: base | {"long": long}}).read_text()
    assert "Long pre-training: the base with RoPE yarn x4, fully trained for 300 steps" in text
    assert "up to 1024 tokens with gold documents placed Beta(0.1, 0.1) per gold" in text  # the preset's
    assert "70.0% on 48 questions of that placement" in text
    assert "## The toy base after its long pre-training, at 4 x L0, by question type (30" in text
    assert "| middle | 10% | 10 |" in text
    assert "to the question's name, by layer: layer 0: 0.90, layer 1: 0.05" in text
    assert f"Command: `python -m ray_jobs.repro --config {tmp_path / 'r' / 'config.yaml'}`" in text


def test_weak_base_why_names_each_failure_its_diagnosis_shows():
    from repro.report import weak_base_why

    # Seed 0's lookup-read base: heads right, no copy, memory, no better than a random document's value.
    why = weak_base_why(_diagnosis())
    assert "fresh exact match 20.0% (copying a random document's value: 21.7%), 46.9% on trained-on" in why
    assert "name at 1.00 (layer 0) and the gold value at 0.97 (layer 1)" in why
    assert "at the answer slot in 31.2% of prompts" in why
    assert "a lookup without its copy" in why and "memory, not lookup" in why and "random document" in why
    # The name read in the last layer only does not count: no layer after it can use it.
    no_read = weak_base_why(_diagnosis(question_name_attention=[0.1, 0.9]))
    assert "name at 0.10 (layer 0)" in no_read and "cannot look the entity up" in no_read
    no_value = weak_base_why(_diagnosis(gold_value_attention=[0.2, 0.3]))
    assert "no head finds the gold value" in no_value
    fine = weak_base_why(_diagnosis(exact_match=0.7, slot_exact_match=0.8, training_exact_match=0.75))
    assert fine.endswith("of prompts.")  # figures only: nothing it shows explains the miss


def test_arm_seeds_leave_out_the_weak_bases_only_when_asked():
    from longctx_core.errors import LongctxError
    from repro.config import load_repro_config
    from repro.run import arm_seeds

    ok = {"validation_accuracy": 0.9, "reached_target": True, "steps": 10, "minutes": 1.0}
    weak = ok | {"validation_accuracy": 0.3, "reached_target": False}
    cfg = load_repro_config(PRESET, ["repro.seeds=[0, 1, 2]"])
    assert arm_seeds(cfg, {0: weak, 1: ok, 2: ok}) == [0, 1, 2]  # not asked: check_base_quality stops it
    skip = load_repro_config(PRESET, ["repro.seeds=[0, 1, 2]", "repro.skip_weak_bases=true"])
    assert arm_seeds(skip, {0: weak, 1: ok, 2: ok}) == [1, 2]
    with pytest.raises(
        LongctxError, match=r"every seed's toy base missed .*seed 0: 30.0%, seed 1: 30.0%, seed 2"
    ):
        arm_seeds(skip, {0: weak, 1: weak, 2: weak})


def test_report_names_the_seeds_left_out_and_why(lost_in_the_middle, tmp_path):
    """repro.skip_weak_bases: seed 0's base missed its target, so only seed 1's predictions are analysed;
    the report lists seed 0 with its figures and its diagnosis's reading, and repro.json records it."""
    from repro.config import load_repro_config
    from repro.report import write_report

    cfg = load_repro_config(
        PRESET,
        [f"run.storage_path={tmp_path}", "run.name=r", "repro.seeds=[0, 1]", "repro.skip_weak_bases=true"],
    )
    summary = {
        "parameters": 6.6e5,
        "steps": 3000,
        "minutes": 30.0,
        "validation_accuracy": 0.9,
        "validation_questions": 48,
        "reached_target": True,
    }
    weak = {"steps": 4192, "minutes": 40.0, "validation_accuracy": 0.312, "reached_target": False}
    bases = {0: {"summary": summary | weak, "diagnosis": _diagnosis()}, 1: {"summary": summary}}
    text = write_report(cfg, {1: lost_in_the_middle[1]}, bases, command="make repro").read_text()
    assert "Arms (QLoRA, seeds 1): " in text and "hierarchical" not in text  # one seed ran
    assert "Each seed alone" not in text
    assert "## Seeds left out" in text
    assert "- Seed 0: its toy base reached 31.2% after 4192 steps (40.0 min), below the 85% target" in text
    assert "Its diagnosis at L0: fresh exact match 20.0%" in text and "a lookup without its copy" in text
    dump = json.loads((tmp_path / "r" / "repro.json").read_text())
    assert dump["left_out"] == [0] and list(dump["eval_dirs"]) == ["1"]
    assert dump["analysis"]["accuracy"]["976"]["base"]["all"]["n"] == 30  # seed 1's 30 questions only
    # Every seed ran: no such section.
    text = write_report(cfg, lost_in_the_middle, bases, command="make repro").read_text()
    assert "Seeds left out" not in text and "Arms (QLoRA, seeds 0, 1): " in text


def test_verdict_says_when_an_interval_contains_zero():
    from repro.report import verdict

    diffs = {"paraphrase - plain": {"middle": {"mean": 0.02, "lo": -0.03, "hi": 0.07, "n": 300}}}
    assert "not distinguishable (interval contains 0)" in verdict(diffs)
    diffs = {"plain - base": {"middle": {"mean": -0.1, "lo": -0.15, "hi": -0.05, "n": 300}}}
    assert "worse (interval below 0)" in verdict(diffs)


def test_a_shallow_or_overlapping_dip_is_not_lost_in_the_middle():
    """Middle 8 points below the edges (under the 10-point bar) is not a U; 30 points below with intervals
    apart is."""
    from repro.analysis import curve_shape

    rng = np.random.default_rng(0)
    rows = []
    for q in range(300):
        for pos in POSITIONS:
            edge = pos in (0.0, 1.0)
            rows.append(
                _qa_row("shallow", q, 976, pos, rng.random() < (0.50 if edge else 0.42))
                | {"seed": 0, "record": str(q)}
            )
            rows.append(
                _qa_row("deep", q, 976, pos, rng.random() < (0.60 if edge else 0.30))
                | {"seed": 0, "record": str(q)}
            )
    curve = curve_shape(rows, ["shallow", "deep"], 976, POSITIONS, 500)
    assert not curve["shallow"]["loses_the_middle"], curve["shallow"]
    assert curve["deep"]["loses_the_middle"], curve["deep"]
    d = curve["deep"]["edges - middle"]
    assert 0.2 < d["mean"] < 0.4 and d["lo"] > 0.1
