"""The toy base's training rows, as (token ids, per-token loss weights): multi-document QA samples on a
length curriculum, and the associative-recall rows of the optional warm-up. Every row is a function of
(seed, step), so a resumed build sees what an uninterrupted one would have seen."""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Sequence

from longctx_core.data.seeding import rng_for
from repro.base.worlds import World
from repro.config import ToyBaseConfig

logger = logging.getLogger(__name__)

# (token ids, the loss weight of each token as a prediction target[, attention reads: (from, to, layer, head),
# see `name_reads`])
Row = tuple[list[int], list[float]] | tuple[list[int], list[float], list[tuple[int, int, int, int]]]


def is_name(i: int, word: str) -> bool:
    """Whether the `i`-th word of a builtin-world question is a name: a capitalised word after the first."""
    return i > 0 and word[:1].isupper()


def entity_name(question: str) -> str | None:
    """The entity a builtin-world question asks about: its last capitalised word after the first
    ("What colour does Tar like best?" -> "Tar"); None if it has none."""
    names = [w.strip("?.,'") for i, w in enumerate(question.split()) if is_name(i, w)]
    return names[-1] if names else None


def encode_chat(
    tokenizer,
    messages: Sequence[dict[str, str]],
    prompt_weight: float,
    reads: str | None = None,
) -> Row:
    """(token ids, per-token loss weights) of a chat: the tokens `longctx_core.data.chat.tokenize_chat` labels
    (assistant replies and their `<|im_end|>`) weigh 1, every other token `prompt_weight`. With `reads`, a
    third element: the chat's `name_reads` of scope `reads`."""
    from longctx_core.data.chat import IGNORE_INDEX, tokenize_chat

    chat = tokenize_chat(tokenizer, messages)
    weights = [prompt_weight if lab == IGNORE_INDEX else 1.0 for lab in chat.labels]
    if reads is None:
        return chat.input_ids, weights
    return chat.input_ids, weights, name_reads(tokenizer, messages, chat.text, chat.spans, reads)


# (layer, head) of each read `name_reads` gives: the asked name to a value slot and each document's name to
# its value (layer 0), and a value slot to the asked document's value (layer 1, the lookup itself)
QUESTION_READ, DOCUMENT_READ, LOOKUP_READ = (0, 0), (0, 1), (1, 0)
_DOCUMENT = re.compile(r"\(Title: ([^)\n]+)\) ([^\n]*)")  # a builtin document: "(Title: Fath) <its sentence>"


def name_reads(
    tokenizer,
    messages: Sequence[dict[str, str]],
    text: str,
    spans: Sequence[tuple[int, int]],
    scope: str = "question",
) -> list[tuple[int, int, int, int]]:
    """The attention reads of a rendered chat (`text`, the replies' character `spans`) as (from, to, layer,
    head), token positions. A reply's value slots are the tokens right before each value it states (a
    closed-set value: a colour ...): after "answer is:" and, in a quoted reply, inside the quote.

    - "question": from each value slot to the entity name its reply's question asks about (the first token
      of the name's last mention before the value: the question's, or the quote's own), `QUESTION_READ`;
    - "documents" adds, per document, from its value to its entity's name in its sentence, `DOCUMENT_READ`;
    - "lookup" adds, from each value slot to the value of the document the question asks about,
      `LOOKUP_READ`: the match the first two reads make possible.

        Document [2] (Title: Fath) The favourite colour of Fath is red. ... Question: Which colour does Fath
                                                            ^ name    ^ value                            ^
        like best?<|im_end|> ... assistant\nThe answer is: red
                                                     slot ^
    Replies without a value, questions without a name, documents without a value give none."""
    import bisect

    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    starts = [a for a, _ in offsets]

    def token_at(c: int) -> int:  # the token holding character c: the last one starting at or before it
        return bisect.bisect_right(starts, c) - 1

    def last_mention(name: str, begin: int, end: int) -> int | None:
        found = [m.start() for m in re.finditer(rf"\b{re.escape(name)}\b", text[begin:end])]
        return begin + found[-1] if found else None

    reads: list[tuple[int, int, int, int]] = []
    values: dict[str, int] = {}  # entity name -> its document's value token
    for doc in _DOCUMENT.finditer(text, 0, spans[0][0] if spans else 0):
        value = _value_pattern().search(text, doc.start(2), doc.end(2))
        named = None if value is None else last_mention(doc[1], doc.start(2), value.start())
        if named is None:
            continue
        values[doc[1]] = token_at(value.start())
        if scope != "question":
            reads.append((values[doc[1]], token_at(named), *DOCUMENT_READ))
    replies = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    for i, (begin, end) in zip(replies, spans, strict=True):
        asked = next((m for m in reversed(messages[:i]) if m.get("role") == "user"), None)
        name = entity_name(asked["content"].rsplit("\n", 1)[-1]) if asked else None
        if name is None:
            continue
        for value in _value_pattern().finditer(text, begin, end):
            slot, named = token_at(value.start()) - 1, last_mention(name, 0, value.start())
            if named is not None:
                reads.append((slot, token_at(named), *QUESTION_READ))
            if scope == "lookup" and name in values:
                reads.append((slot, values[name], *LOOKUP_READ))
    return sorted(reads)


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
    from longctx_core.data.compose import compose_sample

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
    from longctx_core.data.compose import ComposeError

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
    from longctx_core.data import builtin

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
    `shuffle_values`, each sample's values renamed first; with `name_read_weight`, their `name_reads`)."""
    rows = []
    for i, sample in enumerate(batch_for_step(worlds, tokenizer, b, step)):
        messages = sample.messages
        if b.shuffle_values:
            messages = shuffle_values(messages, rng_for(b.seed, "toy-base-values", step, i))
        reads = b.name_read_scope if b.name_read_weight > 0 else None
        rows.append(encode_chat(tokenizer, messages, b.prompt_loss_weight, reads))
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
