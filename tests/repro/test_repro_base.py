"""The toy base build on a miniature: data layout, loss weights, held-out questions, the cached build."""

from __future__ import annotations

import pytest

PRESET = "ray_jobs/configs/repro_cpu.yaml"
MINI = [
    "repro.base.hidden_size=32",
    "repro.base.intermediate_size=64",
    "repro.base.num_hidden_layers=1",
    "repro.base.num_attention_heads=2",
    "repro.base.num_key_value_heads=1",
    "repro.base.vocab_size=400",
    "repro.base.worlds=2",
    "repro.base.records_per_world=60",
    "repro.base.batch_size=4",
    "repro.base.max_steps=12",
    "repro.base.eval_every=6",
    "repro.base.eval_questions=4",
    "repro.base.warmup_steps=2",
    "repro.base.curriculum_steps=4",
    "repro.base.min_tokens=224",  # a 400-token vocabulary spells documents out: longer samples
    "repro.base.lr=0.01",
    "repro.allow_weak_base=true",  # a 12-step miniature base answers nothing
    "repro.long_pretrain.steps=0",  # the preset's long stage is off unless a test turns it on
    "repro.arms={paraphrase: {paraphrase: 1}, plain: {plain: 1}}",
    "data.source.builtin.num_records=120",
    "eval.qa.num_questions=4",
    "eval.qa.pool_records=120",
]


def mini_config(*extra: str):
    from repro.config import load_repro_config

    return load_repro_config(PRESET, [*MINI, *extra])


@pytest.fixture(scope="module")
def mini_base(tmp_path_factory):
    """(config, folder) of a miniature toy base, built once per session (cached by its recipe hash)."""
    from repro.base.cache import ensure_toy_base

    cfg = mini_config()
    cache = tmp_path_factory.getbasetemp() / "toybase-cache"
    return cfg, ensure_toy_base(cfg, cache)


def test_encode_chat_matches_template_and_weights_answers():
    from longctx_core.model.tiny import train_tokenizer
    from repro.base.samples import encode_chat

    tok = train_tokenizer(["Where was Far born? The answer is: Four"] * 20, 300)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where was Far born?"},
        {"role": "assistant", "content": "The answer is: Four"},
    ]
    ids, weights = encode_chat(tok, messages, prompt_weight=0.5)
    assert (
        ids == tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    )
    answer = tok("The answer is: Four<|im_end|>", add_special_tokens=False)["input_ids"]
    ones = [i for i, w in enumerate(weights) if w == 1.0]
    assert [ids[i] for i in ones] == answer  # exactly the reply and its end marker weigh 1
    assert set(weights) == {0.5, 1.0}


def test_weighted_batch_puts_weights_on_predicted_tokens():
    import torch

    from repro.base.step import weighted_batch

    # Row a = [5, 6, 7] with weights [.5, .5, 1]: position 0 predicts 6 (w .5), 1 predicts 7 (w 1), 2 nothing.
    batch = weighted_batch([([5, 6, 7], [0.5, 0.5, 1.0]), ([8, 9], [0.5, 1.0])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    # No attention mask (the library's batch): padding continues the row's positions and is never a target.
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, 9, -100]]
    # The weights of the predictions made at positions 0, 1 (of the tokens at 1, 2), as the loss reads them.
    assert torch.equal(batch["weights"][:, 1:], torch.tensor([[0.5, 1.0], [1.0, 0.0]]))


def test_packed_weighted_batch_restarts_positions_and_never_targets_the_next_sample():
    import torch

    from repro.base.step import weighted_batch

    rows = [([5, 6, 7], [0.5, 0.5, 1.0]), ([8, 9], [0.5, 1.0]), ([1, 2, 3, 4], [0.5, 0.5, 0.5, 1.0])]
    batch = weighted_batch(rows, pad_id=0, pack_to=5)
    # first-fit-decreasing: [1 2 3 4] opens row 0, [5 6 7] opens row 1, [8 9] joins it (3 + 2 = 5)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 0], [5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[1, 2, 3, 4, -100], [5, 6, 7, -100, 9]]
    # 7 does not predict 8 (weight 0); 8 predicts 9 as in its own row
    assert torch.equal(batch["weights"][1, 1:], torch.tensor([0.5, 1.0, 0.0, 1.0]))
    assert batch["weights"][:, 1:].sum() == sum(sum(w[1:]) for _, w in rows)  # the weights the loss reads


def test_packed_rows_train_as_padded_ones():
    """The same rows, one per padded row or packed (positions restarting, no mask): the same loss and
    gradients, so samples never see each other and packing changes a build's speed, not its recipe."""
    import torch

    from longctx_core.model.tiny import build_tiny_model, train_tokenizer
    from repro.base.model import model_shape
    from repro.base.step import weighted_batch, weighted_loss

    b = mini_config().repro.base
    tok = train_tokenizer(["Where was Far born? The answer is: Four"] * 20, 300)
    model = build_tiny_model(model_shape(b), tok)
    assert model.config._attn_implementation == "sdpa"  # what a build trains with
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (40, 9, 23, 31, 17, 5):
        ids = torch.randint(3, len(tok), (n,), generator=g).tolist()
        rows.append((ids, [0.5] * (n - 3) + [1.0] * 3))

    def loss_and_grads(pack_to):
        model.zero_grad()
        loss, answer = weighted_loss(model, weighted_batch(rows, tok.pad_token_id, pack_to))
        loss.backward()
        return loss.detach(), answer.detach(), [p.grad.clone() for p in model.parameters()]

    padded, packed = loss_and_grads(None), loss_and_grads(64)
    assert weighted_batch(rows, tok.pad_token_id, 64)["input_ids"].shape[0] < len(rows)
    torch.testing.assert_close(packed[0], padded[0])
    torch.testing.assert_close(packed[1], padded[1])
    for a, b_ in zip(packed[2], padded[2], strict=True):
        torch.testing.assert_close(a, b_, rtol=1e-4, atol=1e-6)
    # and the check can fail: one row holding the samples unseparated (positions running on) differs
    flat = weighted_batch(rows, tok.pad_token_id, 64)
    flat["position_ids"] = torch.arange(flat["input_ids"].shape[1]).expand_as(flat["input_ids"])
    assert not torch.allclose(weighted_loss(model, flat)[0], padded[0])


def _rows_of(step):
    if step == 3:
        raise RuntimeError("step 3 cannot be composed")
    return [([step, step + 1], [0.5, 1.0])]


@pytest.mark.parametrize("ahead", [0, 2])
def test_row_feed_gives_each_steps_rows_in_order_and_raises_a_workers_error(ahead):
    from repro.base.feed import RowFeed

    with RowFeed(_rows_of, first=1, ahead=ahead) as feed:
        assert [feed.take(s) for s in (1, 2)] == [_rows_of(1), _rows_of(2)]
        with pytest.raises(ValueError, match="step 3 is next"):
            feed.take(4)
        with pytest.raises(RuntimeError, match="step 3 cannot be composed"):
            feed.take(3)
    assert feed.pool is None


def test_shuffle_values_renames_each_value_the_same_way_in_the_whole_sample():
    import random

    from repro.base.samples import shuffle_values, value_lists

    doc = "Document [1] (Title: Tar) Tar likes the colour red more than any other. Fred keeps a cat, not a category."
    messages = [
        {"role": "user", "content": doc + "\n\nQuestion: What is the favourite colour of Tar?"},
        {
            "role": "assistant",
            "content": 'The original text says: "Tar likes the colour red more than any other."',
        },
    ]
    colours, animals = value_lists()[0], value_lists()[2]

    def renamed(out):  # (the colour red became, the animal cat became)
        words = out[0]["content"].replace(",", " ").split()
        return words[8], words[words.index("keeps") + 2]

    draws = [renamed(shuffle_values(messages, random.Random(k))) for k in range(40)]
    assert {c for c, _ in draws} <= set(colours) and len({c for c, _ in draws}) > 5  # drawn at random
    assert {a for _, a in draws} <= set(animals) and len({a for _, a in draws}) > 4
    out = shuffle_values(messages, random.Random(3))
    assert out == shuffle_values(messages, random.Random(3))  # a function of the rng
    colour, animal = renamed(out)
    assert out[0]["content"] == messages[0]["content"].replace(" red ", f" {colour} ").replace(
        " cat,", f" {animal},"
    )
    assert "Fred" in out[0]["content"] and "category" in out[0]["content"]  # whole words only
    assert out[1]["content"] == messages[1]["content"].replace(
        " red ", f" {colour} "
    )  # the quote still quotes


def test_shuffled_rows_still_answer_from_their_own_documents():
    """With shuffle_values every answer is still the value its sample's gold document states."""
    import re

    from longctx_core.model.tiny import train_tokenizer
    from repro.base.model import tokenizer_texts
    from repro.base.samples import qa_rows
    from repro.base.worlds import base_worlds, heldout_questions

    cfg = mini_config("repro.base.shuffle_values=true", "repro.base.answer_styles={plain: 1}")
    b = cfg.repro.base
    excluded = heldout_questions(cfg)
    tok = train_tokenizer(tokenizer_texts(cfg, excluded), b.vocab_size)
    worlds, _ = base_worlds(cfg, tok, excluded)
    plain = qa_rows(worlds, tok, b.model_copy(update={"shuffle_values": False}), 50)
    shuffled = qa_rows(worlds, tok, b, 50)
    changed = 0
    for (ids, _), (ids0, _) in zip(shuffled, plain, strict=True):
        text = tok.decode(ids)
        answers = [a.split("<|im_end|>")[0].strip() for a in text.split("The answer is:")[1:]]
        context = text.split("Question:")[0]
        assert answers and all(re.search(rf"\b{a}\b", context) for a in answers), text
        changed += ids != ids0
    assert changed > 0


def test_curriculum_grows_to_l0():
    from repro.base.samples import curriculum_max
    from repro.config import load_repro_config

    b = load_repro_config(PRESET).repro.base
    assert curriculum_max(b, 0) == b.min_tokens
    assert curriculum_max(b, b.curriculum_steps) == b.context
    assert curriculum_max(b, 10 * b.curriculum_steps) == b.context


def test_evaluation_questions_never_reach_base_training():
    """Every question the evaluation can ask (held-out split of every arm seed's world) is excluded from
    every base training world, and no composed base sample asks one."""
    from longctx_core.eval.contexts import held_out_records, question_key
    from longctx_core.model.tiny import train_tokenizer
    from repro.base.model import tokenizer_texts
    from repro.base.samples import batch_for_step
    from repro.base.worlds import base_worlds, heldout_questions

    cfg = mini_config("repro.seeds=[0, 1]", "repro.base.records_per_world=200")
    excluded = heldout_questions(cfg)
    asked, records = set(), []
    for seed in cfg.repro.seeds:
        held, _, _ = held_out_records(cfg.data.source, seed, cfg.data.eval_fraction, 4, 120)
        asked |= {question_key(r.question) for r in held}
        records += held
    assert asked and asked <= excluded
    texts = tokenizer_texts(cfg, excluded)
    assert not any(f"Question: {r.question}" in t for t in texts for r in records)
    tok = train_tokenizer(texts, 400)
    worlds, _ = base_worlds(cfg, tok, excluded)
    trained = {question_key(r.question) for w in worlds for r in w.records}
    assert trained and not trained & excluded
    # Names recur across worlds, so the unfiltered training worlds do hold excluded questions.
    from longctx_core.data.seeding import derive_seed
    from repro.base.worlds import world_records

    raw = [
        r
        for k in range(cfg.repro.base.worlds)
        for r in world_records(cfg, derive_seed("toy-base-world", 0, k), 200)
    ]
    assert any(question_key(r.question) in excluded for r in raw)
    b = cfg.repro.base
    composed = {
        question_key(q)
        for step in range(3)
        for s in batch_for_step(worlds, tok, b, step)
        for q in s.meta["questions"]
    }
    assert composed and not composed & excluded


def test_base_builds_trains_and_is_cached(mini_base, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repro.base.cache import ensure_toy_base
    from repro.base.checkpoint import read_base_info

    cfg, folder = mini_base
    info = read_base_info(folder)
    summary = info["summary"]
    assert summary["steps"] >= 6 and summary["curve"], summary
    first, last = summary["curve"][0], summary["curve"][-1]
    assert last["answer_loss"] < 6.0  # from ~ln(400) = 6.0 at initialisation
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.config.max_position_embeddings == cfg.repro.base.context
    assert tok.chat_template and len(tok) == model.config.vocab_size
    assert first["step"] <= last["step"]
    # Same recipe -> same folder, no rebuild; a different recipe -> a different folder.
    cache = tmp_path_factory.getbasetemp() / "toybase-cache"
    assert ensure_toy_base(cfg, cache) == folder
    from repro.base.cache import toy_base_dir

    assert toy_base_dir(mini_config("repro.base.lr=0.02"), cache) != folder


def test_question_type_cuts_the_entity_name_out():
    from repro.base.validate import question_type

    assert question_type("At what house number does Kos live?") == "At what house number does ... live?"
    assert question_type("Where was Far born?") == question_type("Where was Zim born?")


def test_entity_name_is_the_name_a_question_asks_about():
    from repro.base.validate import entity_name

    assert entity_name("What is the favourite colour of Tar?") == "Tar"
    assert entity_name("What colour does Lir like best?") == "Lir"
    assert entity_name("what is it?") is None


def test_diagnosis_counts_every_question_and_the_gold_document_quote(mini_base):
    """The breakdown that shows whether a base looks entities up: per question type, gold document named."""
    from repro.base.cache import base_diagnosis
    from repro.report import diagnosis_lines

    cfg, folder = mini_base
    d = base_diagnosis(cfg, folder, questions=6)
    assert d["questions"] == sum(c["n"] for c in d["by_question_type"].values()) > 0
    assert 0 <= d["replies_naming_the_gold_document"] <= d["replies_naming_a_document"] <= 1
    assert d["exact_match"] <= d["answers_found_in_the_prompt"] <= 1  # a right answer is in its prompt
    # the gold document holds the gold value, so a random pick finds it at least sometimes
    assert 0 < d["random_document_copy"] <= 1
    assert 0 <= d["training_exact_match"] <= 1 and d["training_questions"] > 0
    layers = d["question_name_attention"]
    assert len(layers) == cfg.repro.base.num_hidden_layers and all(0 <= a <= 1 for a in layers)
    to_value = d["gold_value_attention"]
    assert len(to_value) == len(layers) and all(0 <= a <= 1 for a in to_value)
    assert 0 <= d["slot_exact_match"] <= 1
    for cut in ("by_question_type", "by_gold_third"):
        assert sum(c["n"] for c in d[cut].values()) == d["questions"], cut
        mean = sum(c["exact_match"] * c["n"] for c in d[cut].values()) / d["questions"]
        assert abs(mean - d["exact_match"]) < 1e-9, cut
    assert list(d["by_gold_third"]) == ["start", "middle", "end"]
    assert base_diagnosis(cfg, folder, questions=99) == d  # computed once, kept beside the base
    text = "\n".join(diagnosis_lines(d))
    assert "| question type | exact match | n |" in text and f"({d['questions']} fresh" in text
    assert f"would score {100 * d['random_document_copy']:.1f}%" in text
    assert f"it trained on) it scores {100 * d['training_exact_match']:.1f}%" in text
    assert f"by layer: layer 0: {layers[0]:.2f}" in text
    assert (
        f"value: layer 0: {to_value[0]:.2f}" in text and f"{100 * d['slot_exact_match']:.1f}% of the" in text
    )


def test_score_reply_tells_the_gold_document_from_another():
    from repro.base.validate import score_reply

    prompt = {"answers": ["485"], "gold_doc": 3}
    right = 'The original text in Document [3] says: "Kos lives at number 485."\nSo the answer is: 485'
    wrong = 'The original text in Document [1] says: "Kos lives at number 9."\nSo the answer is: 9'
    assert score_reply(prompt, right) == (1.0, True, True)
    assert score_reply(prompt, wrong) == (0.0, True, False)
    assert score_reply(prompt, "The answer is: 485") == (1.0, False, False)


def test_a_build_stopped_below_target_trains_on_from_its_checkpoint(tmp_path):
    """A build cut short (here by a time budget that ends it after its first step) leaves a checkpoint;
    the next call goes on from its step with the optimizer state, and the curve and runs add up."""
    import json

    from repro.base.cache import ensure_toy_base, toy_base_dir
    from repro.base.checkpoint import STATE_FILE, read_base_info

    short = mini_config("repro.base.time_budget_min=0.0001")  # over budget after step 1: validates, stops
    folder = ensure_toy_base(short, tmp_path)
    first = read_base_info(folder)["summary"]
    partial = folder.with_name(folder.name + ".partial")
    assert first["steps"] == 1 and not first["reached_target"]
    assert json.loads((partial / STATE_FILE).read_text())["steps"] == 1
    assert (partial / "optimizer.pt").is_file()
    # The time budget is per run, not part of the recipe: a longer budget finds the same base and trains on.
    longer = mini_config("repro.base.time_budget_min=60")
    assert toy_base_dir(longer, tmp_path) == folder
    assert ensure_toy_base(longer, tmp_path, resume=False) == folder  # taken as it is: no training
    assert read_base_info(folder)["summary"]["steps"] == 1
    assert ensure_toy_base(longer, tmp_path) == folder
    second = read_base_info(folder)["summary"]
    assert second["steps"] == 12  # max_steps: final now
    assert [c["step"] for c in second["curve"]] == [1, 6, 12]
    assert [(r["from_step"], r["to_step"]) for r in second["runs"]] == [(0, 1), (1, 12)]
    assert second["minutes"] >= first["minutes"]
    assert not partial.exists()  # a finished build drops its checkpoint


def test_skip_weak_bases_takes_each_base_as_built_and_stops_when_none_is_left(tmp_path, monkeypatch):
    """repro.skip_weak_bases on miniatures that answer nothing: each seed's base is built (here cut short
    after one step by its time budget), diagnosed, and the run stops before any arm or Ray resource with
    every seed's figure in the error; a second run takes the weak bases as built instead of training on."""
    from longctx_core.errors import LongctxError
    from repro.base.cache import toy_base_dir
    from repro.base.checkpoint import read_base_info
    from repro.config import seed_config
    from repro.run import run_repro

    monkeypatch.setenv("LONGCTX_CACHE_DIR", str(tmp_path / "cache"))
    cfg = mini_config(
        f"run.storage_path={tmp_path}",
        "repro.allow_weak_base=false",
        "repro.skip_weak_bases=true",
        "repro.seeds=[0, 1]",
        "repro.base.time_budget_min=0.0001",  # over budget after step 1: validates, stops below target
    )
    for _ in range(2):
        with pytest.raises(
            LongctxError, match=r"every seed's toy base missed the 85% target \(seed 0: .*seed 1: "
        ):
            run_repro(cfg)
        for seed in (0, 1):
            summary = read_base_info(toy_base_dir(seed_config(cfg, seed)))["summary"]
            assert summary["steps"] == 1 and not summary["reached_target"]
    assert not (tmp_path / "repro" / "arms").exists()


def test_a_base_without_optimizer_state_resumes_with_a_fresh_optimizer(tmp_path):
    import shutil

    from repro.base.cache import ensure_toy_base
    from repro.base.checkpoint import read_base_info

    short = mini_config("repro.base.time_budget_min=0.0001")
    folder = ensure_toy_base(short, tmp_path)
    shutil.rmtree(folder.with_name(folder.name + ".partial"))  # e.g. a base built before checkpoints
    assert ensure_toy_base(mini_config(), tmp_path) == folder
    summary = read_base_info(folder)["summary"]
    assert summary["steps"] == 12 and [c["step"] for c in summary["curve"]] == [1, 6, 12]


def test_recall_warmup_rows_repeat_each_key_with_its_value_and_weigh_only_those_values():
    from longctx_core.model.tiny import train_tokenizer
    from repro.base.samples import recall_rows

    tok = train_tokenizer(["Where was Far born? The answer is: Four"] * 20, 300)
    b = mini_config("repro.base.context=64", "repro.base.min_tokens=64").repro.base
    rows = recall_rows(tok, b, step=3)
    assert len(rows) == b.batch_size and rows == recall_rows(tok, b, step=3)
    assert rows != recall_rows(tok, b, step=4)
    for ids, weights in rows:
        n = len(ids) // 4
        assert len(ids) == len(weights) == 4 * n <= b.context
        value_of = dict(zip(ids[0 : 2 * n : 2], ids[1 : 2 * n : 2], strict=True))
        assert len(value_of) == n  # distinct keys: every query has one answer
        queries = ids[2 * n :]
        assert sorted(queries[0::2]) == sorted(value_of)
        assert all(value_of[k] == v for k, v in zip(queries[0::2], queries[1::2], strict=True))
        assert weights == [0.0] * 2 * n + [0.0, 1.0] * n
        assert not set(ids) & set(tok.all_special_ids)


def test_a_recall_warmup_precedes_the_qa_steps(tmp_path):
    from repro.base.cache import ensure_toy_base
    from repro.base.checkpoint import read_base_info

    cfg = mini_config("repro.base.recall_warmup_steps=6")
    summary = read_base_info(ensure_toy_base(cfg, tmp_path))["summary"]
    assert summary["steps"] == 12 and [c["step"] for c in summary["curve"]] == [6, 12]


def test_replace_dir_swaps_and_keeps_the_old_folder_when_the_rename_fails(tmp_path):
    from longctx_core.fsio import replace_dir as _replace_dir  # the folder swap the base's cache relies on

    dest, new = tmp_path / "base", tmp_path / "new"
    dest.mkdir()
    (dest / "v").write_text("old")
    new.mkdir()
    (new / "v").write_text("new")
    _replace_dir(new, dest)
    assert (dest / "v").read_text() == "new" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]
    # A source that cannot be renamed (it does not exist): the error surfaces and dest keeps its folder.
    with pytest.raises(OSError):
        _replace_dir(tmp_path / "missing", dest)
    assert (dest / "v").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def _base_samples(overrides: list[str], steps: range):
    """(cfg, tokenizer, held-out questions, base samples of `steps`) of the preset with `overrides`."""
    from longctx_core.model.tiny import train_tokenizer
    from repro.base.model import tokenizer_texts
    from repro.base.samples import batch_for_step
    from repro.base.worlds import base_worlds, heldout_questions
    from repro.config import load_repro_config

    cfg = load_repro_config(PRESET, overrides)
    excluded = heldout_questions(cfg)
    tok = train_tokenizer(tokenizer_texts(cfg, excluded), cfg.repro.base.vocab_size)
    worlds, _ = base_worlds(cfg, tok, excluded)
    return (
        cfg,
        tok,
        excluded,
        [s for step in steps for s in batch_for_step(worlds, tok, cfg.repro.base, step)],
    )


def test_u_shaped_gold_positions_and_the_recipe_hash():
    """repro.base.gold_beta=0.3 puts the gold document of base samples near the start or the end far more
    often than in the middle half (Beta(0.3, 0.3): ~22% in [.25, .75]; uniform slots: ~50%), measured on the
    preset's base at L0, one question per sample; unset, the recipe hash is the one bases built before the
    knob have (their cache stays valid)."""
    from repro.base.cache import base_fingerprint
    from repro.base.validate import validation_prompts
    from repro.base.worlds import base_worlds
    from repro.config import load_repro_config

    middle = {}
    for name, extra in (("u", ["repro.base.gold_beta=0.3"]), ("uniform", [])):
        overrides = [*extra, "repro.base.batch_size=32", "repro.base.records_per_sample=[1, 1]"]
        cfg, tok, excluded, samples = _base_samples(overrides, range(3000, 3004))
        fractions = [s.gold_positions[0] / (s.n_docs - 1) for s in samples if s.n_docs >= 3]
        assert len(fractions) >= 60, len(fractions)
        middle[name] = sum(0.25 <= f <= 0.75 for f in fractions) / len(fractions)
        middle[name + " hash"] = base_fingerprint(cfg)
        # validation follows the same placement (diagnosis reads every position evenly: gold_beta None)
        b = cfg.repro.base.model_copy(update={"eval_questions": 40})
        _, val_world = base_worlds(cfg, tok, excluded)
        prompts = validation_prompts(val_world, tok, b)
        assert len(prompts) == 40
        middle[name + " validation"] = sum(0.25 <= p["gold_frac"] <= 0.75 for p in prompts) / len(prompts)
    assert middle["u"] < 0.35 and middle["uniform"] > 0.4, middle
    assert middle["u validation"] < 0.35 and middle["uniform validation"] > 0.4, middle
    assert middle["u hash"] != middle["uniform hash"]
    assert load_repro_config(PRESET).repro.base.model_dump()["gold_beta"] is None  # left out of the hash


def test_gold_beta_places_every_gold_of_a_multi_question_sample():
    """Scope "every" (the default) draws one Beta(0.3, 0.3) fraction per gold, so the golds of a 2-question
    sample (here at 768 tokens, 8+ documents) fill the list from its edges inward (23% of golds in the
    middle half, measured); scope "first" biased only the first gold and left the others
    uniform (41%). Both scopes hash differently (a base built with "first" keeps its cache)."""
    from repro.base.cache import base_fingerprint
    from repro.config import load_repro_config

    share, hashes = {}, {}
    for scope in ("every", "first"):
        overrides = [
            "repro.base.gold_beta=0.3",
            f"repro.base.gold_beta_scope={scope}",
            "repro.base.batch_size=48",
            "repro.base.records_per_sample=[2, 2]",
            "repro.base.context=768",
        ]
        cfg, _, _, samples = _base_samples(overrides, range(3000, 3003))
        fracs = [p / (s.n_docs - 1) for s in samples if s.n_docs >= 8 for p in s.gold_positions]
        assert len(fracs) >= 60, (len(fracs), [s.n_docs for s in samples])
        share[scope] = sum(0.25 <= f <= 0.75 for f in fracs) / len(fracs)
        hashes[scope] = base_fingerprint(cfg)
    assert share["every"] < share["first"] - 0.1, share
    assert hashes["first"] != hashes["every"]
    default = load_repro_config(PRESET, ["repro.base.gold_beta=0.3"])
    assert default.repro.base.gold_beta_scope == "every"
    # the U-placement base built before the scope existed (README, 2026-12-05) keeps its cache folder
    first = load_repro_config(PRESET, ["repro.base.gold_beta=0.3", "repro.base.gold_beta_scope=first"])
    assert base_fingerprint(first) == "e792b7c4364e"


def test_each_seed_builds_its_own_base_held_out_from_its_own_split():
    """repro.base_per_seed (default): seed s trains base seed s and holds out only seed s's evaluation split;
    seed 0 of a three-seed run reuses the single-seed preset's base (same hash)."""
    from repro.base.cache import base_fingerprint
    from repro.base.worlds import heldout_questions
    from repro.config import load_repro_config, seed_config

    one = load_repro_config(PRESET)
    three = load_repro_config(PRESET, ["repro.seeds=[0, 1, 2]"])
    per = {s: seed_config(three, s) for s in (0, 1, 2)}
    assert [per[s].repro.base.seed for s in (0, 1, 2)] == [0, 1, 2]
    assert [per[s].run.seed for s in (0, 1, 2)] == [0, 1, 2] and per[2].repro.seeds == [2]
    assert base_fingerprint(per[0]) == base_fingerprint(one)
    assert len({base_fingerprint(c) for c in per.values()}) == 3
    held = {s: heldout_questions(c) for s, c in per.items()}
    assert held[1] != held[2] and held[0] == heldout_questions(one)
    assert heldout_questions(three) == held[0] | held[1] | held[2]  # a shared base excludes every split
    shared = load_repro_config(PRESET, ["repro.seeds=[0, 1, 2]", "repro.base_per_seed=false"])
    assert seed_config(shared, 2) is shared


def test_diagnose_cli_reports_each_seeds_cached_base_without_training(mini_base, monkeypatch, capsys):
    """`make repro-diagnose`: the kept diagnosis of each seed's base, and a plain line for a seed not built."""
    from repro.base.cache import base_diagnosis
    from repro.base.diagnose import main

    cfg, folder = mini_base
    monkeypatch.setenv("LONGCTX_CACHE_DIR", str(folder.parent))
    before = sorted(p.name for p in folder.parent.iterdir())
    found = main(["--config", PRESET, *MINI, "repro.seeds=[0, 1]"])
    assert found[1] is None and found[0]["dir"] == str(folder)
    d = base_diagnosis(cfg, folder)
    assert found[0]["diagnosis"] == d
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0].startswith(f"seed 0: {folder}: ")
        and f"random document {100 * d['random_document_copy']:.1f}%" in out[0]
        and f"trained on {100 * d['training_exact_match']:.1f}%" in out[0]
        and " / ".join(f"{a:.2f}" for a in d["question_name_attention"]) + "; gold-value head" in out[0]
        and out[0].endswith(f"value predicted at the slot {100 * d['slot_exact_match']:.1f}%")
    )
    assert out[1] == "seed 1: no base built yet (make repro-base)"
    assert sorted(p.name for p in folder.parent.iterdir()) == before  # nothing built or trained


def test_diagnose_cli_reads_the_checkpoint_of_an_unfinished_build(tmp_path, monkeypatch, capsys):
    """A build killed before its run ended has only its `.partial` checkpoint: diagnosed there, and said so."""
    from repro.base.cache import toy_base_dir
    from repro.base.diagnose import main
    from repro.base.train import train_toy_base
    from repro.config import seed_config

    monkeypatch.setenv("LONGCTX_CACHE_DIR", str(tmp_path))
    overrides = [*MINI, "repro.seeds=[3]", "repro.base.max_steps=6", "repro.base.eval_every=6"]
    scfg = seed_config(mini_config(*overrides[len(MINI) :]), 3)
    checkpoint = toy_base_dir(scfg).with_name(toy_base_dir(scfg).name + ".partial")
    train_toy_base(scfg, tmp_path / "not-kept", checkpoint=checkpoint)  # as if killed before it was kept
    found = main(["--config", PRESET, *overrides])
    assert found[3]["partial"] and found[3]["dir"] == str(checkpoint) and found[3]["summary"]["steps"] == 6
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"seed 3: {checkpoint}: the checkpoint of an unfinished build, 6 steps")
    assert not (checkpoint / "diagnosis.json").exists()  # a moving checkpoint is diagnosed afresh


def test_name_reads_point_from_each_value_slot_to_the_asked_name_and_the_asked_value():
    """Every value a reply states (after "answer is:", and inside a quote) gets one QUESTION_READ from the
    token before it to the last mention of the asked entity (the question's, or the quote's own). Scope
    "lookup" adds a DOCUMENT_READ per document, from its value to its name, and a LOOKUP_READ per value slot,
    to the value of the document the question asks about."""
    import re

    from longctx_core.model.tiny import train_tokenizer
    from repro.base.model import tokenizer_texts
    from repro.base.samples import DOCUMENT_READ, LOOKUP_READ, QUESTION_READ, entity_name, qa_rows
    from repro.base.worlds import base_worlds, heldout_questions

    cfg = mini_config("repro.base.name_read_weight=1", "repro.base.records_per_sample=[2, 3]")
    b = cfg.repro.base
    excluded = heldout_questions(cfg)
    tok = train_tokenizer(tokenizer_texts(cfg, excluded), b.vocab_size)
    worlds, _ = base_worlds(cfg, tok, excluded)
    rows = qa_rows(worlds, tok, b, 40)  # past the curriculum: several questions per sample
    assert len(rows) == b.batch_size and all(len(row) == 3 for row in rows)
    quoted = 0
    for ids, _, row_reads in rows:
        text = tok.decode(ids)
        replies = [r.split("<|im_end|>")[0] for r in text.split("<|im_start|>assistant\n")[1:]]
        quoted += sum('says: "' in r for r in replies)
        assert len(row_reads) == sum(2 if 'says: "' in r else 1 for r in replies) >= 1, text
        for slot, name, *read in row_reads:
            assert tuple(read) == QUESTION_READ
            before = tok.decode(ids[: slot + 1])
            question = before.rsplit("Question: ", 1)[1].split("<|im_end|>")[0]
            value = tok.decode(ids[slot + 1]).strip()  # the value the slot predicts is the reply's answer
            reply_answer = text[len(before) :].split("<|im_end|>")[0]
            assert reply_answer.strip().startswith(value) or f"answer is: {value}" in reply_answer
            # the name's first token (the preset's names are one token each; this vocabulary splits some)
            assert re.match(rf"{entity_name(question)}\b", tok.decode(ids[name : slot + 1]).strip())
            between = tok.decode(ids[name : slot + 1])
            assert "Document [" not in between and "Question:" not in between, between
    assert quoted > 0  # the preset's mix: quoted and plain replies
    # off (the preset): rows stay (ids, weights)
    assert all(len(row) == 2 for row in qa_rows(worlds, tok, mini_config().repro.base, 40))

    lookup = qa_rows(worlds, tok, b.model_copy(update={"name_read_scope": "lookup"}), 40)
    for (ids, _, all_reads), (ids0, _, questions_only) in zip(lookup, rows, strict=True):
        assert ids == ids0 and [r for r in all_reads if tuple(r[2:]) == QUESTION_READ] == questions_only
        text = tok.decode(ids)
        documents = re.findall(r"\(Title: (\w+)\) ", text)
        doc_reads = [r for r in all_reads if tuple(r[2:]) == DOCUMENT_READ]
        assert len(doc_reads) == len(documents) >= 2
        values = {}
        for (value, name, *_), title in zip(doc_reads, documents, strict=True):
            sentence = tok.decode(ids[name : value + 1])  # from the name to the value, within one document
            assert re.match(rf"{title}\b", sentence.strip()) and "Document [" not in sentence
            assert tok.decode(ids[value]).strip() in sentence.split()[-1] and value > name
            values[value] = tok.decode(ids[value])
        # the lookup: from each value slot to the asked document's value, the very token the slot predicts
        lookups = [r for r in all_reads if tuple(r[2:]) == LOOKUP_READ]
        assert [slot for slot, *_ in lookups] == [slot for slot, *_ in questions_only]
        assert all(values[to] == tok.decode(ids[slot + 1]) for slot, to, *_ in lookups)


def test_name_read_loss_is_the_first_layers_attention_and_training_on_it_raises_it():
    """`name_read_nll` recomputes what layer 0 computes: it equals -log of the eager attention weight of
    each read's head from its `from` to its `to` position, in packed rows too; and steps on it make those
    heads read there."""
    import torch

    from longctx_core.model.tiny import build_tiny_model, train_tokenizer
    from repro.base.model import model_shape
    from repro.base.step import adamw, attention_inputs, name_read_nll, weighted_batch
    from repro.base.train import train_step

    b = mini_config("repro.base.num_hidden_layers=2").repro.base
    tok = train_tokenizer(["Where was Far born? The answer is: Four"] * 20, 300)
    torch.manual_seed(0)
    model = build_tiny_model(model_shape(b), tok)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (40, 9, 23, 31, 17):
        ids = torch.randint(3, len(tok), (n,), generator=g).tolist()
        rows.append(
            (ids, [0.5] * (n - 3) + [1.0] * 3, [(n - 2, n // 3, 0, 0), (n - 4, 1, 0, 1), (n - 2, 2, 1, 0)])
        )
    model.set_attn_implementation("eager")  # the one that returns attention weights

    def read_nll(pack_to):
        batch = weighted_batch(rows, tok.pad_token_id, pack_to)
        eager = model.config._attn_implementation == "eager"
        with attention_inputs(model, [0, 1]) as seen, torch.no_grad():
            out = model(
                input_ids=batch["input_ids"],
                position_ids=batch["position_ids"],
                output_attentions=eager,
                use_cache=False,
            )
        return batch, out, name_read_nll(model, seen, batch["reads"])

    batch, out, padded = read_nll(None)
    row, at, to, _, layer, head = batch["reads"].unbind(1)
    assert set(zip(layer.tolist(), head.tolist(), strict=True)) == {(0, 0), (0, 1), (1, 0)}
    weights = torch.stack(out.attentions)[layer, row, head, at, to]
    torch.testing.assert_close(padded, -weights.log().mean())
    # packed (samples kept apart by the mask transformers derives from restarting positions, as a build
    # trains without a cache): each read sees its own sample only
    batch, _, packed = read_nll(64)
    assert batch["input_ids"].shape[0] < len(rows) and len(batch["reads"]) == 3 * len(rows)
    assert batch["reads"][:, 3].any()  # some read's sample starts inside its packed row
    torch.testing.assert_close(packed, padded)

    model.set_attn_implementation("sdpa")  # what a build trains with
    opt = adamw(model, 0.01, 0.0)
    first = [train_step(model, opt, rows, tok.pad_token_id, 0.01, 64, read_weight=1.0) for _ in range(40)]
    assert first[-1][2] < 0.5 * first[0][2], (first[0], first[-1])
    assert train_step(model, opt, rows, tok.pad_token_id, 0.01, 64)[2] is None  # weight 0: no read loss


def test_the_name_read_loss_joins_the_recipe_hash_only_when_on():
    from repro.base.cache import toy_base_dir
    from repro.config import load_repro_config, seed_config

    cfg = load_repro_config(PRESET)
    # the preset's seed-0 base as built before the knob existed (README result): its cache stays valid
    assert toy_base_dir(seed_config(cfg, 0)).name == "toybase-136daab8ce4a"
    on = load_repro_config(PRESET, ["repro.base.name_read_weight=1"])
    assert toy_base_dir(seed_config(on, 0)) != toy_base_dir(seed_config(cfg, 0))
