"""The toy base chat model of `make repro`: a small Qwen2 fully fine-tuned at a short context L0 on short
multi-document QA from the built-in world, until it answers in-distribution questions well.

It plays the role of the paper's short-context chat model. It is a cached build step, not the claim, so it
is plain single-process PyTorch (no Ray, no DeepSpeed): one model, one optimizer, one loop.

    path = ensure_toy_base(cfg)      # <cache>/toybase-<hash>/ : config.json, weights, tokenizer, toy_base.json

A build may take longer than one sitting: it checkpoints (weights, optimizer, step, curve) into
`<cache>/toybase-<hash>.partial/` at every validation, a run stops after `time_budget_min`, and the next
`ensure_toy_base` goes on from the checkpoint until the base reaches `target_accuracy` or `max_steps`.

Data. Samples are composed by `data_gen.compose.compose_sample` — the same layout the synthesize and
evaluate stages use — from worlds of `data.source.builtin` shape (single-token names, 1-2 sentence
documents) drawn with their own seeds, so one name carries different facts in different worlds and the
model must look the answer up instead of recalling it. A curriculum grows samples from `min_tokens`
(2-4 documents) to L0 (about 8). Every question the evaluation asks — the held-out split of each arm
seed's world — and every validation question is removed from the training worlds (`heldout_questions`).

Loss. Answer tokens (assistant content and its `<|im_end|>`) weigh 1; prompt tokens weigh
`prompt_loss_weight` (an extra LM loss that was measured to speed up learning per step):

    tokens   <s>system..  <u>user: Document [1] ... Question: Where was Far born?  <a>The answer is: Four<e>
    weight    w  w  w ...   w   w   w   w   ...        w    w    w    w    w          1   1   1   1   1    1
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data_gen.records import QARecord
from data_gen.seeding import derive_seed, rng_for
from longctx_core.config import Config, TinyModelConfig
from longctx_core.config.repro import ToyBaseConfig
from longctx_core.fsio import digest, recover, remove_dir, replace_dir, staged_dir

logger = logging.getLogger(__name__)

_RECIPE_VERSION = 2  # bump when the build changes in a way the config does not show
INFO_FILE = "toy_base.json"
OPTIMIZER_FILE = "optimizer.pt"  # in a build checkpoint (<cache>/toybase-<hash>.partial/)
STATE_FILE = "build_state.json"
VALIDATION_WORLD = "toy-base-validation"
REPLY_TOKENS = 48  # generation budget of a validation reply (a quote line plus the final answer)


# ---- worlds and the held-out questions ----------------------------------------------------------------------


def question_key(question: str) -> str:
    """Case- and space-insensitive form of a question (the evaluate stage's leak-check key)."""
    from longctx_core.eval.contexts import question_key as eval_key

    return eval_key(question)


def world_records(cfg: Config, world_seed: int, n: int | None = None) -> list[QARecord]:
    """The records of the `data.source.builtin`-shaped world for `world_seed` (first `n`, default all)."""
    from data_gen.sources import iter_records

    source = cfg.data.source
    if n is not None:
        source = source.model_copy(update={"limit": n})
    return [r for r in iter_records(source, world_seed) if isinstance(r, QARecord)]


def heldout_questions(cfg: Config) -> set[str]:
    """Question keys the evaluation may ask: the eval split of the world of every arm seed (`repro.seeds`,
    as `run.seed`). No base training sample asks any of them."""
    from data_gen.split import split_of

    keys: set[str] = set()
    for seed in sorted(set(cfg.repro.seeds) | {cfg.run.seed}):
        for rec in world_records(cfg, seed):
            if split_of(rec.id, cfg.data.eval_fraction, seed) == "eval":
                keys.add(question_key(rec.question))
    return keys


@dataclass
class World:
    """One training (or validation) world: its QA records and its distractor pool (same world only, so a
    distractor never shares a name with a gold document)."""

    records: list[QARecord]
    pool: object  # data_gen.compose.DocPool


def _world(records: list[QARecord], tokenizer) -> World:
    from data_gen.compose import DocPool

    docs = list({d: None for r in records for d in r.evidence_docs})
    return World(records, DocPool.build(docs, ["en"] * len(docs), tokenizer))


def base_worlds(cfg: Config, tokenizer, excluded: set[str]) -> tuple[list[World], World]:
    """(training worlds, validation world). Training records whose question is in `excluded` are dropped
    (their documents stay as distractors: a document is not a question); validation questions are also
    excluded from training."""
    b = cfg.repro.base
    val = world_records(cfg, derive_seed(VALIDATION_WORLD, b.seed), b.records_per_world)
    val_keys = {question_key(r.question) for r in val}
    worlds = []
    for k in range(b.worlds):
        recs = world_records(cfg, derive_seed("toy-base-world", b.seed, k), b.records_per_world)
        world = _world(recs, tokenizer)
        world.records = [r for r in recs if question_key(r.question) not in excluded | val_keys]
        worlds.append(world)
    return worlds, _world(val, tokenizer)


# ---- tokenizer and model ------------------------------------------------------------------------------------


def tokenizer_texts(cfg: Config, excluded: set[str] = frozenset()) -> list[str]:
    """Texts the toy BPE learns from: the records of a few training worlds (minus `excluded` questions)
    rendered as one-document prompts with both answer styles, so names, headers and answer markers become
    whole tokens."""
    from data_gen import styles

    b = cfg.repro.base
    texts = [styles.SYSTEM_PROMPT["en"]]
    for k in range(min(4, b.worlds)):
        for rec in world_records(cfg, derive_seed("toy-base-world", b.seed, k), b.records_per_world):
            if question_key(rec.question) in excluded:
                continue
            doc = rec.evidence_docs[0]
            quotes = [(1, s) for s in rec.evidence_sentences]
            texts.append(
                "\n".join(
                    [
                        styles.render_first_user([doc], rec.question, "en"),
                        styles.render_answer("paraphrase", "en", rec.answers[0], quotes),
                        styles.render_answer("plain", "en", rec.answers[0]),
                    ]
                )
            )
    return texts


def model_shape(b: ToyBaseConfig) -> TinyModelConfig:
    """The toy base's shape as the tiny-model kit's config (max_position_embeddings = L0)."""
    return TinyModelConfig(
        vocab_size=b.vocab_size,
        hidden_size=b.hidden_size,
        intermediate_size=b.intermediate_size,
        num_hidden_layers=b.num_hidden_layers,
        num_attention_heads=b.num_attention_heads,
        num_key_value_heads=b.num_key_value_heads,
        max_position_embeddings=b.context,
        seed=b.seed,
    )


# ---- samples -> weighted token rows ---------------------------------------------------------------------------


def encode_chat(tokenizer, messages: Sequence[dict[str, str]], prompt_weight: float):
    """(token ids, per-token loss weights) of a chat: the tokens `longctx_core.chat.tokenize_chat` labels
    (assistant replies and their `<|im_end|>`) weigh 1, every other token `prompt_weight`."""
    from longctx_core.chat import IGNORE_INDEX, tokenize_chat

    chat = tokenize_chat(tokenizer, messages)
    weights = [prompt_weight if lab == IGNORE_INDEX else 1.0 for lab in chat.labels]
    return chat.input_ids, weights


def compose_base_sample(world: World, tokenizer, target: int, style: str, n_records: int, seed: int):
    """One base sample (`LongSample`) of `n_records` questions of `world` at about `target` tokens."""
    from data_gen.compose import compose_sample

    rng = rng_for(seed, "records")
    records = rng.sample(world.records, min(n_records, len(world.records)))
    return compose_sample(
        records,
        world.pool,
        tokenizer,
        target_tokens=target,
        answer_style=style,
        seed=seed,
        sample_id=str(seed),
    )


def curriculum_max(b: ToyBaseConfig, step: int) -> int:
    """Longest sample length at `step`: min_tokens, growing linearly to L0 over the curriculum steps."""
    return int(b.min_tokens + (b.context - b.min_tokens) * min(1.0, step / max(1, b.curriculum_steps)))


def batch_for_step(worlds: list[World], tokenizer, b: ToyBaseConfig, step: int) -> list:
    """The `batch_size` samples of `step` (deterministic in (seed, step)); samples the composer rejects are
    redrawn with the next seed."""
    from data_gen.compose import ComposeError

    rng = rng_for(b.seed, "toy-base-batch", step)
    styles, weights = zip(*b.answer_styles.items(), strict=True)
    samples, attempt = [], 0
    while len(samples) < b.batch_size:
        attempt += 1
        hi = curriculum_max(b, step)
        target = rng.randint(min(b.min_tokens, hi), hi)
        world = worlds[rng.randrange(len(worlds))]
        style = rng.choices(styles, weights)[0]
        n = rng.randint(*b.records_per_sample)
        seed = rng.getrandbits(62)
        while n >= 1:
            try:
                samples.append(compose_base_sample(world, tokenizer, target, style, n, seed))
                break
            except (ComposeError, ValueError) as exc:
                if n > 1:
                    n -= 1  # short targets early in the curriculum hold fewer questions
                elif target < b.context:
                    target = min(b.context, target + 32)  # one long question: give it more room
                elif attempt > 4 * b.batch_size:
                    raise RuntimeError(f"toy base: the composer keeps rejecting samples ({exc})") from exc
                else:
                    break  # draw another sample
    return samples


def recall_rows(tokenizer, b: ToyBaseConfig, step: int) -> list[tuple[list[int], list[float]]]:
    """The `batch_size` associative-recall rows of warm-up `step` (deterministic in (seed, step)): n random
    (key, value) token pairs with distinct keys, then every key again in a new order, each followed by its
    value. Only the repeated values carry loss (weight 1); nothing else in a row is predictable.

        ids      k3 v3 k1 v1 k2 v2 | k1 v1 k3 v3 k2 v2
        weights   0  0  0  0  0  0 |  0  1  0  1  0  1
    """
    rng = rng_for(b.seed, "toy-base-recall", step)
    special = set(tokenizer.all_special_ids)
    pool = [i for i in range(len(tokenizer)) if i not in special]
    return [recall_row(rng, pool, rng.randint(4, max(4, b.context // 4))) for _ in range(b.batch_size)]


def recall_row(rng: random.Random, alphabet: list[int], n: int) -> tuple[list[int], list[float]]:
    """One associative-recall row (see `recall_rows`): `n` pairs of `alphabet` tokens, keys distinct."""
    keys = rng.sample(alphabet, n)
    values = [rng.choice(alphabet) for _ in keys]
    order = rng.sample(range(n), n)
    ids = [t for k, v in zip(keys, values, strict=True) for t in (k, v)]
    ids += [t for i in order for t in (keys[i], values[i])]
    return ids, [0.0] * 2 * n + [0.0, 1.0] * n


def collate(rows: list[tuple[list[int], list[float]]], pad_id: int):
    """Right-padded (input_ids, attention_mask, weights) tensors; weights[i, t] weighs the prediction of
    token t+1 from position t (0 at padding and at each row's last token)."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    weights = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (row_ids, row_w) in enumerate(rows):
        n = len(row_ids)
        ids[i, :n] = torch.tensor(row_ids)
        mask[i, :n] = 1
        weights[i, : n - 1] = torch.tensor(row_w[1:])  # the weight of the token being predicted
    return ids, mask, weights


def weighted_loss(model, ids, mask, weights):
    """(loss, answer-token loss): weighted next-token cross-entropy, and the plain mean over answer tokens
    (weight 1) for logging."""
    import torch.nn.functional as F

    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    w = weights[:, :-1].reshape(-1)
    answer = (w == 1.0).float()
    return (nll * w).sum() / w.sum(), (nll * answer).sum() / answer.sum().clamp(min=1)


# ---- validation ------------------------------------------------------------------------------------------------


def validation_prompts(world: World, tokenizer, b: ToyBaseConfig) -> list[dict]:
    """`eval_questions` one-question prompts of the validation world at L0 (minus the reply budget), gold
    position uniform: {ids, answers, style}. Half ask after paraphrase-style training, half plain: the
    style only changes the (dropped) reference answer, so it does not matter here."""
    from data_gen.compose import ComposeError
    from longctx_core.eval.prompts import chat_ids

    rng = random.Random(derive_seed(VALIDATION_WORLD, b.seed, "prompts"))
    prompts = []
    for rec in rng.sample(world.records, min(len(world.records), 4 * b.eval_questions)):
        if len(prompts) == b.eval_questions:
            break
        one = World([rec], world.pool)
        try:
            sample = compose_base_sample(
                one, tokenizer, b.context - REPLY_TOKENS, "paraphrase", 1, rng.getrandbits(62)
            )
        except ComposeError:
            continue
        prompts.append(
            {
                "ids": chat_ids(tokenizer, sample.messages[:-1]),
                "answers": list(rec.answers),
                "question": rec.question,
                "gold_doc": sample.gold_positions[0] + 1,  # the document number a faithful quote names
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
    "At what house number does ... live?" (the builtin world's names are the capitalised words after the
    first)."""
    words = question.rstrip("?").split()
    return " ".join(w if i == 0 or not w[:1].isupper() else "..." for i, w in enumerate(words)) + "?"


def score_reply(prompt: dict, reply: str) -> tuple[float, bool, bool]:
    """(exact match, the reply cites a document, the first document it cites is the gold one)."""
    from data_gen.styles import cited_documents
    from longctx_core.eval.scoring import answer_em

    cited = cited_documents(reply)
    return answer_em(reply, prompt["answers"])[1], bool(cited), bool(cited) and cited[0] == prompt["gold_doc"]


def diagnose(model, tokenizer, prompts: list[dict], batch: int = 16) -> dict:
    """What the base's validation hits are made of: exact match per question type, and how often the reply
    quotes the right document number (`Document [k]` of the gold). A base that answers closed-set types
    (colours, pets) but not copied values (house numbers, towns) and names Document [1] whatever the gold
    has learnt to match the attribute, not to look the entity up; one whose answers are mostly absent from
    its prompt does not read its context at all."""
    from collections import defaultdict

    from longctx_core.eval.scoring import final_answer, normalize_answer

    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    quoted, right_doc, hits, in_context = 0, 0, 0.0, 0
    for p, reply in replies(model, tokenizer, prompts, batch):
        hit, named, gold_named = score_reply(p, reply)
        answer = normalize_answer(final_answer(reply))
        in_context += bool(answer) and answer in normalize_answer(tokenizer.decode(p["ids"]))
        cell = by_type[question_type(p["question"])]
        cell[0], cell[1] = cell[0] + hit, cell[1] + 1
        hits, quoted, right_doc = hits + hit, quoted + named, right_doc + gold_named
    n = max(1, len(prompts))
    return {
        "exact_match": hits / n,
        "questions": len(prompts),
        "by_question_type": {k: {"exact_match": h / c, "n": c} for k, (h, c) in sorted(by_type.items())},
        "replies_naming_a_document": quoted / n,
        "replies_naming_the_gold_document": right_doc / n,
        # a value copied from some document: chance for a model that reads its context at all
        "answers_found_in_the_prompt": in_context / n,
    }


def diagnose_folder(cfg: Config, folder: str | Path, questions: int = 160) -> dict:
    """`diagnose` a built toy base (no RoPE extension: the base as built) on `questions` fresh prompts of
    its validation world."""
    import torch

    from longctx_core.modeling import load_model, load_tokenizer

    torch.set_num_threads(cfg.repro.base.threads)
    model_cfg = cfg.model.model_copy(
        update={"name_or_path": str(folder), "rope": cfg.model.rope.model_copy(update={"type": "none"})}
    )
    tokenizer = load_tokenizer(model_cfg)
    b = cfg.repro.base.model_copy(update={"eval_questions": questions})
    _, val_world = base_worlds(cfg, tokenizer, heldout_questions(cfg))
    model = load_model(model_cfg, quantize=False)
    return diagnose(model, tokenizer, validation_prompts(val_world, tokenizer, b))


# ---- training -------------------------------------------------------------------------------------------------


def lr_at(b: ToyBaseConfig, step: int) -> float:
    """Linear warm-up to `lr`, then cosine decay to 10% of it at `max_steps`."""
    if step < b.warmup_steps:
        return b.lr * (step + 1) / b.warmup_steps
    t = (step - b.warmup_steps) / max(1, b.max_steps - b.warmup_steps)
    return b.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, t))))


def _load_checkpoint(folder: Path):
    """(model, tokenizer, optimizer state or None, build state) of a saved build: a `.partial` checkpoint
    (weights + optimizer + state) or a finished below-target base (weights + its summary; no optimizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    opt_path = folder / OPTIMIZER_FILE
    opt_state = torch.load(opt_path, weights_only=True) if opt_path.is_file() else None
    if (folder / STATE_FILE).is_file():
        state = json.loads((folder / STATE_FILE).read_text())
    else:
        summary = read_base_info(folder)["summary"]
        state = {k: summary[k] for k in ("steps", "tokens", "minutes", "curve")} | {
            "runs": summary.get("runs", [])
        }
    return model, tokenizer, opt_state, state


def save_checkpoint(folder: Path, model, tokenizer, opt, state: dict) -> None:
    """Write the build's resumable state to `folder` atomically (a new folder renamed over the old one)."""
    import torch

    with staged_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(opt.state_dict(), tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))


_replace_dir = replace_dir  # the name tests/repro imports


def train_toy_base(
    cfg: Config, out_dir: Path, checkpoint: Path | None = None, resume_from: Path | None = None
):
    """Build the tokenizer and model, train until validation exact match reaches `target_accuracy` (or
    `max_steps` run out, or this run's `time_budget_min`), save the HF folder into `out_dir`; returns the
    build summary (steps, minutes over all runs, validation curve, final accuracy).

    With `checkpoint`, the resumable state (weights, optimizer, step, curve) is written there at every
    validation. With `resume_from` (such a checkpoint, or a finished below-target base), training goes on
    from its step: samples are a function of (seed, step), so the continuation sees what an uninterrupted
    build would have seen. A base saved without optimizer state restarts AdamW with a `warmup_steps` ramp."""
    import torch

    from longctx_core.tiny import build_tiny_model, train_tokenizer

    b = cfg.repro.base
    torch.set_num_threads(b.threads)
    torch.manual_seed(b.seed)
    started = time.monotonic()
    excluded = heldout_questions(cfg)  # never seen by any part of the build, tokenizer included
    opt_state, prior = None, {"steps": 0, "tokens": 0, "minutes": 0.0, "curve": [], "runs": []}
    if resume_from is not None:
        model, tokenizer, opt_state, prior = _load_checkpoint(resume_from)
        logger.info(
            "toy base: resuming from %s at step %d (%.1f min so far%s)", resume_from, prior["steps"],
            prior["minutes"], "" if opt_state else "; fresh optimizer with a warm-up ramp",
        )  # fmt: skip
    else:
        tokenizer = train_tokenizer(tokenizer_texts(cfg, excluded), b.vocab_size)
        model = build_tiny_model(model_shape(b), tokenizer)
    worlds, val_world = base_worlds(cfg, tokenizer, excluded)
    val_prompts = validation_prompts(val_world, tokenizer, b)
    model.config.use_cache = False
    logger.info(
        "toy base: %.2fM parameters, vocab %d, L0 %d, %d training worlds (%d questions), %d validation prompts",
        sum(p.numel() for p in model.parameters()) / 1e6, len(tokenizer), b.context, len(worlds),
        sum(len(w.records) for w in worlds), len(val_prompts),
    )  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=b.lr, weight_decay=b.weight_decay, betas=(0.9, 0.95))
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    curve: list[dict] = list(prior["curve"])
    first_step = step = prior["steps"]
    tokens = prior["tokens"]
    rewarm = resume_from is not None and opt_state is None
    accuracy = curve[-1]["accuracy"] if curve else 0.0
    model.train()

    def state(minutes: float) -> dict:
        run = {"from_step": first_step, "to_step": step, "minutes": round(minutes, 2), "threads": b.threads}
        return {"steps": step, "tokens": tokens, "minutes": round(prior["minutes"] + minutes, 2),
                "curve": curve, "runs": [*prior["runs"], run]}  # fmt: skip

    while step < b.max_steps:
        if step < b.recall_warmup_steps:
            rows = recall_rows(tokenizer, b, step)
        else:  # QA steps are numbered from the end of the warm-up (curriculum, sample seeds)
            rows = [
                encode_chat(tokenizer, s.messages, b.prompt_loss_weight)
                for s in batch_for_step(worlds, tokenizer, b, step - b.recall_warmup_steps)
            ]
        ids, mask, weights = collate(rows, tokenizer.pad_token_id)
        ramp = min(1.0, (step - first_step + 1) / max(1, b.warmup_steps)) if rewarm else 1.0
        for group in opt.param_groups:
            group["lr"] = lr_at(b, step) * ramp
        loss, answer_loss = weighted_loss(model, ids, mask, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step, tokens = step + 1, tokens + int(mask.sum())
        minutes = (time.monotonic() - started) / 60
        if step % 25 == 0:
            logger.info(
                "toy base step %d: loss %.3f, answer loss %.3f, %.1f min",
                step,
                loss.item(),
                answer_loss.item(),
                prior["minutes"] + minutes,
            )
        if step % b.eval_every == 0 or step == b.max_steps or minutes > b.time_budget_min:
            accuracy = validate(model, tokenizer, val_prompts)
            curve.append(
                {
                    "step": step,
                    "minutes": round(prior["minutes"] + minutes, 2),
                    "accuracy": accuracy,
                    "answer_loss": answer_loss.item(),
                }
            )
            logger.info(
                "toy base step %d: validation exact match %.3f (target %.2f)",
                step,
                accuracy,
                b.target_accuracy,
            )
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, tokenizer, opt, state(minutes))
            if accuracy >= b.target_accuracy or minutes > b.time_budget_min:
                break
    model.config.use_cache = True
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    total = state((time.monotonic() - started) / 60)
    summary = {
        "steps": step, "tokens": tokens, "minutes": total["minutes"],
        "validation_accuracy": accuracy, "reached_target": accuracy >= b.target_accuracy,
        "validation_questions": len(val_prompts), "curve": curve, "runs": total["runs"],
        "parameters": sum(p.numel() for p in model.parameters()), "threads": b.threads,
    }  # fmt: skip
    return summary


# ---- the cache -------------------------------------------------------------------------------------------------


def base_fingerprint(cfg: Config) -> str:
    """Hash of everything the toy base depends on: its recipe, the world's shape, and the held-out split
    (eval fraction, arm seeds)."""
    recipe = {
        "version": _RECIPE_VERSION,
        # threads change speed only; time_budget_min bounds one run of a resumable build
        "base": cfg.repro.base.model_dump(mode="json", exclude={"threads", "time_budget_min"}),
        "world": cfg.data.source.builtin.model_dump(mode="json"),
        "eval_fraction": cfg.data.eval_fraction,
        "seeds": sorted(set(cfg.repro.seeds) | {cfg.run.seed}),
    }
    return digest(recipe, length=12)


def toy_base_dir(cfg: Config, cache_dir: str | Path | None = None) -> Path:
    """Where the toy base for `cfg` is cached: <cache>/toybase-<fingerprint>/."""
    from longctx_core.tiny import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"toybase-{base_fingerprint(cfg)}"


def read_base_info(folder: Path) -> dict:
    """The build summary saved with a toy base (`toy_base.json`)."""
    return json.loads((Path(folder) / INFO_FILE).read_text())


DIAGNOSIS_FILE = "diagnosis.json"


def base_diagnosis(cfg: Config, folder: Path, questions: int = 160) -> dict:
    """`diagnose_folder` of the built base, computed once and kept beside it (`diagnosis.json`)."""
    path = Path(folder) / DIAGNOSIS_FILE
    if path.is_file():
        return json.loads(path.read_text())
    result = diagnose_folder(cfg, folder, questions)
    path.write_text(json.dumps(result, indent=2))
    return result


def finished(cfg: Config, summary: dict) -> bool:
    """Whether a built base is final: it reached its target or used all of `max_steps`."""
    return bool(summary["reached_target"]) or summary["steps"] >= cfg.repro.base.max_steps


def ensure_toy_base(cfg: Config, cache_dir: str | Path | None = None, resume: bool = True) -> Path:
    """The toy base's folder, built once and reused while its recipe is unchanged.

    The build checkpoints into `<folder>.partial/` at every validation. A build that was killed, or that
    stopped at `time_budget_min` below its target, goes on from there on the next call (`resume=False`
    takes a below-target base as it is). The folder is replaced atomically: a half-built base is never
    visible."""
    out = recover(toy_base_dir(cfg, cache_dir))
    partial = recover(out.with_name(out.name + ".partial"))
    resume_from: Path | None = None
    if (out / INFO_FILE).is_file():
        summary = read_base_info(out)["summary"]
        if not resume or finished(cfg, summary):
            logger.info("toy base: reusing %s (%s)", out, summary["validation_accuracy"])
            return out
        resume_from = partial if (partial / STATE_FILE).is_file() else out
        logger.info("toy base: %s is below its target at step %d; training on", out, summary["steps"])
    elif (partial / STATE_FILE).is_file():
        resume_from = partial
    with staged_dir(out) as tmp:
        summary = train_toy_base(cfg, tmp, checkpoint=partial, resume_from=resume_from)
        info = {"fingerprint": base_fingerprint(cfg), "recipe": cfg.repro.base.model_dump(mode="json"),
                "world": cfg.data.source.builtin.model_dump(mode="json"), "summary": summary}  # fmt: skip
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
    if finished(cfg, summary):
        remove_dir(partial)
    logger.info("toy base: built %s in %.1f min, validation exact match %.3f", out, summary["minutes"],
                summary["validation_accuracy"])  # fmt: skip
    return out
