"""Validating the toy base: greedy replies to one-question prompts of a fresh world at L0, scored like the
evaluate stage (`answer_em`), and the diagnosis of what its hits are made of."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path

from longctx_core.data.seeding import derive_seed
from repro.base.samples import compose_base_sample, entity_name, gold_fractions, is_name
from repro.base.worlds import VALIDATION_WORLD, World, base_worlds, heldout_questions
from repro.config import ReproConfig, ToyBaseConfig

logger = logging.getLogger(__name__)

THIRDS = ("start", "middle", "end")
REPLY_TOKENS = 48  # generation budget of a validation reply (a quote line plus the final answer)


def validation_prompts(world: World, tokenizer, b: ToyBaseConfig) -> list[dict]:
    """`eval_questions` one-question prompts of the validation world at L0 (minus the reply budget): {ids,
    answers, question, gold_doc, gold_frac, copy_chance}. The gold position follows the base's own training placement
    (uniform, or Beta(gold_beta, gold_beta): a base taught that evidence sits at the edges is validated on
    the text it was taught on, as a pretrained model is on natural text; `diagnose` reads every position
    evenly). Composed paraphrase-style: the style only changes the (dropped) reference answer."""
    from longctx_core.data.compose import ComposeError
    from longctx_core.eval.contexts import split_documents
    from longctx_core.eval.prompts import chat_ids
    from longctx_core.eval.scoring import normalize_answer

    rng = random.Random(derive_seed(VALIDATION_WORLD, b.seed, "prompts"))
    prompts = []
    for rec in rng.sample(world.records, min(len(world.records), 4 * b.eval_questions)):
        if len(prompts) == b.eval_questions:
            break
        one = World([rec], world.pool)
        seed = rng.getrandbits(62)
        gold = gold_fractions(rng, b, 1)
        try:
            sample = compose_base_sample(
                one, tokenizer, b.context - REPLY_TOKENS, "paraphrase", 1, seed, gold
            )
        except ComposeError:
            continue
        docs = split_documents(sample.messages[1]["content"], sample.n_docs, sample.lang)
        golds = [normalize_answer(a) for a in rec.answers]
        holding = sum(any(g in normalize_answer(text) for g in golds) for _, text in docs)
        prompts.append(
            {
                "ids": chat_ids(tokenizer, sample.messages[:-1]),
                "answers": list(rec.answers),
                "question": rec.question,
                "gold_doc": sample.gold_positions[0] + 1,  # the document number a faithful quote names
                "gold_frac": sample.gold_positions[0] / max(1, sample.n_docs - 1),
                # what copying the value of a document picked at random would score on this prompt
                "copy_chance": holding / max(1, len(docs)),
            }
        )
    return prompts


def replies(model, tokenizer, prompts: list[dict], batch: int = 16):
    """Yield (prompt, greedy reply text) for `prompts`, `batch` at a time, the model in eval mode."""
    from longctx_core.eval.generate import greedy_generate

    model.eval()
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        new = greedy_generate(
            model, [p["ids"] for p in chunk], [REPLY_TOKENS] * len(chunk), tokenizer.pad_token_id
        )
        for p, toks in zip(chunk, new, strict=True):
            yield p, tokenizer.decode(toks, skip_special_tokens=True)


def validate(model, tokenizer, prompts: list[dict], batch: int = 16) -> float:
    """Exact match (the evaluate stage's `answer_em`) of greedy replies to `prompts`."""
    from longctx_core.eval.scoring import answer_em

    hits = 0.0
    for k, (p, reply) in enumerate(replies(model, tokenizer, prompts, batch)):
        hits += answer_em(reply, p["answers"])[1]
        if k == 0:  # one reply per check shows how far the format/lookup got
            logger.info("toy base validation reply: %r (gold %r)", reply, p["answers"][0])
    model.train()
    return hits / max(1, len(prompts))


def question_type(question: str) -> str:
    """A question's template, with the entity name cut out: "At what house number does Kos live?" ->
    "At what house number does ... live?"."""
    words = question.rstrip("?").split()
    return " ".join("..." if is_name(i, w) else w for i, w in enumerate(words)) + "?"


def score_reply(prompt: dict, reply: str) -> tuple[float, bool, bool]:
    """(exact match, the reply cites a document, the first document it cites is the gold one)."""
    from longctx_core.data.styles import cited_documents
    from longctx_core.eval.scoring import answer_em

    cited = cited_documents(reply)
    return answer_em(reply, prompt["answers"])[1], bool(cited), bool(cited) and cited[0] == prompt["gold_doc"]


def diagnose(model, tokenizer, prompts: list[dict], batch: int = 16) -> dict:
    """What the base's validation hits are made of: exact match per question type, and how often the reply
    quotes the right document number (`Document [k]` of the gold). A base that answers closed-set types
    (colours, pets) but not copied values (house numbers, towns) and names Document [1] whatever the gold
    has learnt to match the attribute, not to look the entity up; one whose answers are mostly absent from
    its prompt does not read its context at all; one whose answers are found in the prompt but whose exact
    match stays near `random_document_copy` (copying the value of a document drawn at random) copies a
    value without finding the entity's document."""
    from longctx_core.eval.scoring import final_answer, normalize_answer

    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_third: dict[str, list[float]] = {k: [0.0, 0] for k in THIRDS}
    quoted, right_doc, hits, in_context = 0, 0, 0.0, 0
    for p, reply in replies(model, tokenizer, prompts, batch):
        hit, named, gold_named = score_reply(p, reply)
        answer = normalize_answer(final_answer(reply))
        in_context += bool(answer) and answer in normalize_answer(tokenizer.decode(p["ids"]))
        cell = by_type[question_type(p["question"])]
        cell[0], cell[1] = cell[0] + hit, cell[1] + 1
        cell = by_third[THIRDS[min(2, int(3 * p["gold_frac"]))]]
        cell[0], cell[1] = cell[0] + hit, cell[1] + 1
        hits, quoted, right_doc = hits + hit, quoted + named, right_doc + gold_named
    n = max(1, len(prompts))
    return {
        "exact_match": hits / n,
        "questions": len(prompts),
        "by_question_type": {k: {"exact_match": h / c, "n": c} for k, (h, c) in sorted(by_type.items())},
        # where in the document list the gold sat (first, middle, last third): a base with the bias of
        # natural text answers from the edges and misses the middle already at L0
        "by_gold_third": {k: {"exact_match": h / max(1, c), "n": c} for k, (h, c) in by_third.items()},
        "replies_naming_a_document": quoted / n,
        "replies_naming_the_gold_document": right_doc / n,
        # a value copied from some document: chance for a model that reads its context at all
        "answers_found_in_the_prompt": in_context / n,
        "random_document_copy": sum(p["copy_chance"] for p in prompts) / n,
    }


def slot_reads(model, tokenizer, prompts: list[dict], answer_prefix: str = "The answer is:") -> dict:
    """What a base does at the slot where a plain answer puts its value (after `answer_prefix`), on average
    over `prompts`: per layer, the attention its most attentive head pays to the question's entity name
    (`question_name_attention`) and to the gold document's value (`gold_value_attention`), and how often
    its most likely next token there is the value's first token (`slot_exact_match`).

    Looking an entity up takes two layers: one moves the question's name to the answer slot, a later one
    matches it against the documents' names and copies the value. A base whose name-reading head sits in
    the last layer has no layer left to match with; one whose last layer looks at the gold value but does
    not predict it has the lookup's attention without its copy."""
    import torch

    model.eval()
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the only one that returns attention weights
    prefix = tokenizer(answer_prefix, add_special_tokens=False)["input_ids"]
    sums: dict[str, object] = {"name": 0, "value": 0}
    counts, hits = {"name": 0, "value": 0}, 0
    try:
        for p in prompts:
            ids = p["ids"] + prefix
            spans = {"name": _mention(tokenizer, ids, p), "value": _gold_value(tokenizer, ids, p)}
            if spans["name"] is None and spans["value"] is None:
                continue
            with torch.no_grad():
                out = model(torch.tensor([ids]), output_attentions=True, use_cache=False)
            for key, span in spans.items():
                if span is not None:  # per layer, per head: attention from the last position to the span
                    sums[key] = sums[key] + torch.stack(
                        [a[0, :, -1, span[0] : span[1]].sum(-1) for a in out.attentions]
                    )
                    counts[key] += 1
            if spans["value"] is not None:
                hits += out.logits[0, -1].argmax().item() == ids[spans["value"][0]]
    finally:
        model.set_attn_implementation(previous)
        model.train()

    def by_layer(key: str) -> list[float]:
        return (sums[key] / counts[key]).max(dim=1).values.tolist() if counts[key] else []

    return {
        "question_name_attention": by_layer("name"),
        "gold_value_attention": by_layer("value"),
        "slot_exact_match": hits / max(1, counts["value"]),
    }


def _mention(tokenizer, ids: list[int], prompt: dict) -> tuple[int, int] | None:
    """[start, end) tokens of the question's mention of its entity: the last one in `ids`."""
    name = entity_name(prompt["question"])
    if name is None:
        return None
    name_ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
    last = len(ids) - len(name_ids)
    at = next((i for i in range(last, -1, -1) if ids[i : i + len(name_ids)] == name_ids), None)
    return None if at is None else (at, at + len(name_ids))


def _gold_value(tokenizer, ids: list[int], prompt: dict) -> tuple[int, int] | None:
    """[start, end) tokens of the answer's value in the gold document of a prompt (`gold_doc`)."""
    value_ids = tokenizer(" " + prompt["answers"][0], add_special_tokens=False)["input_ids"]
    doc_ids = tokenizer(f"Document [{prompt['gold_doc']}]", add_special_tokens=False)["input_ids"]
    doc = next((i for i in range(len(ids)) if ids[i : i + len(doc_ids)] == doc_ids), None)
    if doc is None:
        return None
    at = next((i for i in range(doc, len(ids)) if ids[i : i + len(value_ids)] == value_ids), None)
    return None if at is None else (at, at + len(value_ids))


def diagnose_folder(cfg: ReproConfig, folder: str | Path, questions: int = 160) -> dict:
    """`diagnose` a built toy base (no RoPE extension: the base as built) on `questions` fresh prompts of
    its validation world, gold positions uniform whatever the base was trained on; plus
    `training_exact_match`, the same prompts built from questions of its first training world (facts it
    trained on): far above the fresh exact match, the base memorised facts instead of looking them up; and
    `slot_reads` on 48 of the fresh prompts: per layer, how strongly its most attentive head reads the
    question's name and the gold document's value from the answer slot, and how often it predicts the value
    there."""
    import torch

    from longctx_core.model.loading import load_model, load_tokenizer
    from repro.base.checkpoint import base_model_config

    torch.set_num_threads(cfg.repro.base.threads)
    model_cfg = base_model_config(cfg, folder)
    tokenizer = load_tokenizer(model_cfg)
    b = cfg.repro.base.model_copy(update={"eval_questions": questions, "gold_beta": None})
    worlds, val_world = base_worlds(cfg, tokenizer, heldout_questions(cfg))
    model = load_model(model_cfg, quantize=False)
    val_prompts = validation_prompts(val_world, tokenizer, b)
    result = diagnose(model, tokenizer, val_prompts)
    trained = validation_prompts(worlds[0], tokenizer, b)
    return (
        result
        | {
            "training_exact_match": validate(model, tokenizer, trained),
            "training_questions": len(trained),
        }
        | slot_reads(model, tokenizer, val_prompts[:48])
    )
