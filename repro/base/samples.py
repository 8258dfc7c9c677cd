"""The toy base's training rows, as (token ids, per-token loss weights): multi-document QA samples on a
length curriculum, and the associative-recall rows of the optional warm-up. Every row is a function of
(seed, step), so a resumed build sees what an uninterrupted one would have seen."""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Sequence

from data_gen.seeding import rng_for
from repro.base.worlds import World
from repro.config import ToyBaseConfig

logger = logging.getLogger(__name__)

Row = tuple[list[int], list[float]]  # token ids, and the loss weight of each token as a prediction target


def encode_chat(tokenizer, messages: Sequence[dict[str, str]], prompt_weight: float) -> Row:
    """(token ids, per-token loss weights) of a chat: the tokens `longctx_core.chat.tokenize_chat` labels
    (assistant replies and their `<|im_end|>`) weigh 1, every other token `prompt_weight`."""
    from longctx_core.chat import IGNORE_INDEX, tokenize_chat

    chat = tokenize_chat(tokenizer, messages)
    weights = [prompt_weight if lab == IGNORE_INDEX else 1.0 for lab in chat.labels]
    return chat.input_ids, weights


def compose_base_sample(
    world: World,
    tokenizer,
    target: int,
    style: str,
    n_records: int,
    seed: int,
    gold: float | Sequence[float] | None = None,
):
    """One base sample (`LongSample`) of `n_records` questions of `world` at about `target` tokens; `gold`:
    the first gold document's position as a fraction of the document list, or one per gold (None: the
    composer draws them)."""
    from data_gen.compose import compose_sample

    rng = rng_for(seed, "records")
    records = rng.sample(world.records, min(n_records, len(world.records)))
    return compose_sample(
        records,
        world.pool,
        tokenizer,
        target_tokens=target,
        answer_style=style,
        gold_position=gold,
        seed=seed,
        sample_id=str(seed),
    )


def gold_fractions(rng: random.Random, b: ToyBaseConfig, n: int) -> float | list[float] | None:
    """Where the gold documents of an `n`-question base sample go (fractions of the document list): None
    (uniform) unless gold_beta is set; then one Beta(gold_beta, gold_beta) draw for the first gold
    (scope "first") or one per gold (scope "every"). Drawn only when set, so other recipes keep their rows."""
    if not b.gold_beta:
        return None
    if b.gold_beta_scope == "first":
        return rng.betavariate(b.gold_beta, b.gold_beta)
    return [rng.betavariate(b.gold_beta, b.gold_beta) for _ in range(n)]


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
        gold = gold_fractions(rng, b, n)
        while n >= 1:
            try:
                samples.append(compose_base_sample(world, tokenizer, target, style, n, seed, gold))
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


@functools.cache
def value_lists() -> tuple[tuple[str, ...], ...]:
    """The builtin world's closed value sets whose members `shuffle_values` permutes (English forms)."""
    from data_gen import builtin

    sets = (builtin.COLOURS, builtin.PROFESSIONS, builtin.ANIMALS, builtin.INSTRUMENTS, builtin.FOODS,
            builtin.HOBBIES, builtin.MATERIALS)  # fmt: skip
    return tuple(tuple(en for en, _ in pairs) for pairs in sets)


@functools.cache
def _value_pattern() -> re.Pattern:
    """Any value of `value_lists` as a whole word, longest first (a value inside a longer one stays whole)."""
    words = sorted((v for values in value_lists() for v in values), key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b")


def shuffle_values(messages: Sequence[dict[str, str]], rng: random.Random) -> list[dict[str, str]]:
    """`messages` of one sample with every closed-set value (a colour, an animal, ...: `value_lists`) renamed
    by one random permutation of its set, the same in every document, question and answer: the sample still
    answers itself (quotes stay verbatim), but which value goes with which name is new in every sample, so
    only reading the context predicts it, never facts remembered from earlier samples.

        "Tar likes the colour yellow ..." / "The answer is: yellow"  ->  "... the colour teal ..." / "... teal"
    """
    rename: dict[str, str] = {}
    for values in value_lists():
        rename |= dict(zip(values, rng.sample(values, len(values)), strict=True))
    pattern = _value_pattern()
    return [m | {"content": pattern.sub(lambda hit: rename[hit.group(0)], m["content"])} for m in messages]


def qa_rows(worlds: list[World], tokenizer, b: ToyBaseConfig, step: int) -> list[Row]:
    """The weighted rows of QA `step` (`batch_for_step`, encoded with `prompt_loss_weight`; with
    `shuffle_values`, each sample's values renamed first)."""
    rows = []
    for i, sample in enumerate(batch_for_step(worlds, tokenizer, b, step)):
        messages = sample.messages
        if b.shuffle_values:
            messages = shuffle_values(messages, rng_for(b.seed, "toy-base-values", step, i))
        rows.append(encode_chat(tokenizer, messages, b.prompt_loss_weight))
    return rows


def recall_rows(tokenizer, b: ToyBaseConfig, step: int) -> list[Row]:
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


def recall_row(rng: random.Random, alphabet: list[int], n: int) -> Row:
    """One associative-recall row (see `recall_rows`): `n` pairs of `alphabet` tokens, keys distinct."""
    keys = rng.sample(alphabet, n)
    values = [rng.choice(alphabet) for _ in keys]
    order = rng.sample(range(n), n)
    ids = [t for k, v in zip(keys, values, strict=True) for t in (k, v)]
    ids += [t for i in order for t in (keys[i], values[i])]
    return ids, [0.0] * 2 * n + [0.0, 1.0] * n
