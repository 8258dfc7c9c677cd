"""Prompt construction of every task, with the tiny tokenizer: passkey depth and length, perplexity buckets
and windows, LongBench loading / prompt / middle truncation, LitM files and prompt format, and the QA grid
(gold exactly at the requested position, lengths on target, no training question leaking in)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from litm_fixture import litm_layout
from transformers import AutoTokenizer

from longctx_core.config import SourceConfig
from longctx_core.data.records import Document
from longctx_core.errors import LongctxError
from longctx_core.eval import contexts, litm, longbench, passkey, perplexity
from longctx_core.eval.prompts import Prompt, chat_ids, check_window

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


# ---- passkey ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [200, 400])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_passkey_length_and_depth(tok, length, depth):
    units = passkey.haystack_units(None)
    ids, facts = passkey.build_passkey_prompt(tok, units, length, depth, "48213")
    longest_unit = max(len(tok(u, add_special_tokens=False)["input_ids"]) for u in units) + 1
    assert length - longest_unit <= len(ids) <= length  # the longest prompt not above the target
    assert facts["key_unit"] == round(depth * facts["n_units"])  # the key sits exactly at depth
    text = tok.decode(ids)
    assert text.count("The pass key is 48213.") == 1
    haystack = text[text.index("I will quiz you") :]
    before = haystack[: haystack.index("The pass key is")]
    assert before.count(". ") + before.count(".\n") >= facts["key_unit"]  # that many units precede it


def test_passkey_haystack_from_a_file(tok, tmp_path):
    f = tmp_path / "essay.txt"
    f.write_text(
        "Rivers carve valleys over long ages. Wind shapes the dunes!\nSnow packs into glaciers? Yes."
    )
    units = passkey.haystack_units(str(f))
    assert units == [
        "Rivers carve valleys over long ages.",
        "Wind shapes the dunes!",
        "Snow packs into glaciers?",
        "Yes.",
    ]
    prompts = passkey.passkey_prompts(tok, [300], [0.0, 1.0], 2, units, seed=0)
    assert [p.cell for p in prompts] == [{"length": 300, "depth": 0.0}] * 2 + [
        {"length": 300, "depth": 1.0}
    ] * 2
    assert len({p.answers[0] for p in prompts}) == 4  # a different key per prompt
    with pytest.raises(LongctxError, match="not found"):
        passkey.haystack_units(str(tmp_path / "missing.txt"))
    with pytest.raises(LongctxError, match="cannot hold the instructions"):
        passkey.build_passkey_prompt(tok, units, 20, 0.5, "12345")


# ---- perplexity -------------------------------------------------------------------------------------------


def test_bucket_golden_example():
    # The module docstring's example: L = 8, B = 4 -> targets 1..7 fall in buckets 0,1,1,2,2,3,3.
    assert [perplexity.bucket_of(t, 8, 4) for t in range(1, 8)] == [0, 1, 1, 2, 2, 3, 3]
    sums, counts = perplexity.bucket_sums([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8, 4)
    assert counts == [1, 2, 2, 2] and sums == [1.0, 5.0, 9.0, 13.0]
    rows = perplexity.summarize_buckets([sums, sums], [counts, counts], 8)
    assert [r["nll"] for r in rows] == [1.0, 2.5, 4.5, 6.5]
    assert [(r["start"], r["end"], r["tokens"]) for r in rows] == [(0, 2, 2), (2, 4, 4), (4, 6, 4), (6, 8, 4)]


def test_perplexity_windows_are_disjoint_and_exact(tok, tmp_path):
    prompts = perplexity.perplexity_prompts(tok, [64, 128], 3, None, seed=0)
    assert [(p.cell["length"], p.n_tokens, p.kind) for p in prompts] == [(64, 64, "nll")] * 3 + [
        (128, 128, "nll")
    ] * 3
    a, b = prompts[3].input_ids, prompts[4].input_ids
    assert a != b
    f = tmp_path / "tiny.txt"
    f.write_text("short text")
    with pytest.raises(LongctxError, match="fewer than"):
        perplexity.perplexity_prompts(tok, [512], 2, str(f), seed=0)


# ---- LongBench --------------------------------------------------------------------------------------------


def test_longbench_loader_and_prompt_format(tok):
    rows = longbench.load_subset("hotpotqa", "unused", str(FIXTURES / "longbench"), limit=None)
    assert len(rows) == 2 and rows[0]["answers"] == ["Kestrel Bay"]
    prompts = longbench.longbench_prompts(
        tok, ["hotpotqa", "passage_retrieval_zh"], "unused", str(FIXTURES / "longbench"), None, None, 4096
    )
    assert [p.cell["subset"] for p in prompts] == ["hotpotqa", "hotpotqa", "passage_retrieval_zh"]
    assert prompts[0].max_new_tokens == 32 and prompts[2].lang == "zh"
    expected = longbench.PROMPTS["hotpotqa"].format(context=rows[0]["context"], input=rows[0]["input"])
    assert prompts[0].input_ids == chat_ids(tok, [{"role": "user", "content": expected}])
    assert expected.endswith("Question: Which city is the harbour master of Port Velmar from?\nAnswer:")
    with pytest.raises(LongctxError, match="no musique.jsonl"):
        longbench.load_subset("musique", "unused", str(FIXTURES / "longbench"), None)


def test_longbench_sample_lacking_fields_is_named(tmp_path):
    """A <subset>.jsonl whose sample misses LongBench's input/context/answers: one error naming the file, the
    sample's index and exactly the fields it lacks (in the data/ subfolder too); samples past `limit` are
    not read, so they cannot fail."""
    good = json.loads((FIXTURES / "longbench" / "hotpotqa.jsonl").read_text().splitlines()[0])
    broken = {k: v for k, v in good.items() if k not in ("context", "answers")}
    (tmp_path / "data").mkdir()
    file = tmp_path / "data" / "hotpotqa.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in (good, good, broken)) + "\n")
    with pytest.raises(LongctxError) as err:
        longbench.load_subset("hotpotqa", "unused", str(tmp_path), limit=None)
    assert str(err.value) == f"LongBench {file}: sample 2 lacks fields ['context', 'answers']"
    assert [r["_id"] for r in longbench.load_subset("hotpotqa", "unused", str(tmp_path), limit=2)] == [
        "hq-1"
    ] * 2
    file.write_text(json.dumps({"input": "q?"}) + "\n")
    with pytest.raises(LongctxError, match=r"sample 0 lacks fields \['context', 'answers'\]$"):
        longbench.load_subset("hotpotqa", "unused", str(tmp_path), limit=1)


def test_longbench_truncates_from_the_middle(tok):
    head, tail = "Read the passages first.\n", "\nQuestion: where?\nAnswer:"
    middle = " ".join(f"Passage {i} talks about river number {i}." for i in range(300))
    text, cut = longbench.truncate_middle(tok, head + middle + tail, 200)
    assert cut and text.startswith("Read the passages first.") and text.endswith("Answer:")
    assert "Passage 150 talks" not in text
    assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 202  # re-encoding may merge at the seam
    assert longbench.truncate_middle(tok, "short", 200) == ("short", False)
    assert longbench.window_for("hotpotqa", 1024, 20, None) == 1024 - 20 - 32
    assert longbench.window_for("hotpotqa", 1024, 20, 500) == 500


# ---- Lost in the Middle -----------------------------------------------------------------------------------


def test_litm_prompt_matches_the_paper():
    docs = [Document("first doc", "first doc text"), Document("second doc", "second doc text")]
    assert litm.litm_prompt("test question", docs) == (
        "Write a high-quality answer for the given question using only the provided search results "
        "(some of which might be irrelevant).\n\nDocument [1](Title: first doc) first doc text\n"
        "Document [2](Title: second doc) second doc text\n\nQuestion: test question\nAnswer:"
    )


def test_litm_files_gold_positions_and_prompts(tok, tmp_path):
    litm_dir = str(litm_layout(tmp_path / "litm"))
    files = litm.find_files(litm_dir, [10, 20, 30], None)
    assert [(n, k) for n, k, _ in files] == [(10, 0), (10, 4), (10, 9)]  # .jsonl.gz and .jsonl alike
    prompts = litm.litm_prompts(tok, litm_dir, [10], [4, 9], limit=1)
    assert [p.cell for p in prompts] == [{"num_docs": 10, "gold_index": 4}, {"num_docs": 10, "gold_index": 9}]
    for p in prompts:
        gold_text = p.extra["docs"][p.extra["gold"][0]]
        assert "Teodor Maas" in gold_text and len(p.extra["docs"]) == 10
        assert f"Document [{p.cell['gold_index'] + 1}](Title: Orlen Choir)" in tok.decode(p.input_ids)
    own = litm.litm_prompts(tok, litm_dir, [10], [0], limit=1, prompt_style="project")
    assert "Document [1] (Title: Orlen Choir)" in tok.decode(own[0].input_ids)
    with pytest.raises(LongctxError, match="no nq-open"):
        litm.find_files(litm_dir, [20], None)


def test_litm_rejects_a_misplaced_gold(tmp_path):
    row = {
        "question": "q",
        "answers": ["a"],
        "ctxs": [{"title": "t", "text": "x", "isgold": True}, {"title": "u", "text": "y"}],
    }
    f = tmp_path / "nq-open-2_total_documents_gold_at_1.jsonl"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(LongctxError, match="file name says 1"):
        litm.read_examples(f, 1, None)


def test_check_window_names_the_longest_prompt():
    prompts = [Prompt("a", "qa", [0] * 90, {}, max_new_tokens=16), Prompt("b", "qa", [0] * 50, {})]
    check_window(prompts, 106, "eval.qa", "hint")
    with pytest.raises(
        LongctxError, match=r"1 prompt\(s\) exceed .* 100 tokens \(longest 90 tokens, a\); hint"
    ):
        check_window(prompts, 100, "eval.qa", "hint")


# ---- the QA grid ------------------------------------------------------------------------------------------

SMALL_WORLD = SourceConfig(
    kind="builtin", builtin={"num_records": 200, "facts_per_doc": [2, 3], "filler_per_doc": [0, 1]}
)


@pytest.fixture(scope="module")
def held_out():
    return contexts.held_out_records(SMALL_WORLD, seed=0, eval_fraction=0.2, n=2, pool_records=200)


def test_held_out_questions_follow_the_split(held_out):
    from longctx_core.data.split import split_of

    records, docs, langs = held_out
    assert len(records) >= 2 and all(split_of(r.id, 0.2, 0) == "eval" for r in records)
    assert len(docs) == len(langs) >= 150
    with pytest.raises(LongctxError, match="asked for 50 held-out questions"):
        contexts.held_out_records(SMALL_WORLD, seed=0, eval_fraction=0.2, n=50, pool_records=40)
    with pytest.raises(LongctxError, match="eval_fraction: is 0"):
        contexts.held_out_records(SMALL_WORLD, seed=0, eval_fraction=0.0, n=1, pool_records=40)


def test_gold_at_exact_position_and_lengths_on_target(tok, held_out):
    from longctx_core.data.compose import token_tolerance

    records, docs, langs = held_out
    positions = [0.0, 0.25, 0.5, 0.75, 1.0]
    prompts = contexts.qa_prompts(tok, records, docs, langs, [600, 1200], positions, seed=0, n=2)
    assert len(prompts) == 2 * 2 * 5
    by_q_len: dict = {}
    for p in prompts:
        n_docs, gold = p.extra["n_docs"], p.extra["gold"]
        assert gold == [round(p.cell["position"] * (n_docs - 1))]  # exactly where asked
        rec = next(r for r in records if r.id == p.extra["record_id"])
        assert p.extra["docs"][gold[0]] == rec.evidence_docs[0].text  # the parsed context agrees
        assert len(p.extra["docs"]) == n_docs
        length = p.cell["length"]
        assert length - token_tolerance(length) <= p.extra["sample_tokens"] <= length  # on target
        assert p.n_tokens < p.extra["sample_tokens"]  # the prompt lacks the reference answer
        assert rec.question in tok.decode(p.input_ids)
        by_q_len.setdefault((rec.id, length), []).append(sorted(p.extra["docs"]))
    for doc_sets in by_q_len.values():  # across positions only the gold document moves
        assert all(d == doc_sets[0] for d in doc_sets)
    assert max(p.extra["n_docs"] for p in prompts if p.cell["length"] == 1200) > max(
        p.extra["n_docs"] for p in prompts if p.cell["length"] == 600
    )


def _write_train(root: Path, questions: list[str]) -> None:
    (root / "data" / "train").mkdir(parents=True)
    rows = [
        {
            "id": f"s{i}",
            "messages": [
                {"role": "system", "content": "x"},
                {"role": "user", "content": f"Docs...\n\nQuestion: {q}"},
            ],
            "meta": json.dumps({"questions": [q]}),
        }
        for i, q in enumerate(questions)
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "train" / "part-0.parquet")


def test_leak_check_fails_loudly(tmp_path, held_out):
    records = held_out[0][:2]
    assert contexts.training_questions(tmp_path) is None
    contexts.check_no_leak(records, None, str(tmp_path))  # nothing to leak from
    _write_train(tmp_path, ["Where was the harbour master born?", "  " + records[1].question.upper() + " "])
    train = contexts.training_questions(tmp_path)
    assert contexts.question_key("Where was the harbour master born?") in train
    with pytest.raises(LongctxError, match=r"1 of 2 evaluation questions also appear in the training data"):
        contexts.check_no_leak(records, train, str(tmp_path))
