"""Compose one long multi-document chat sample from QA records and a distractor pool.

    sample = compose_sample([rec1, rec2], pool, tokenizer, target_tokens=8192, answer_style="paraphrase",
                            seed=derive_seed(run_seed, "train", index))

Layout (`styles` renders every piece):

    messages = [system,
                user(instruction + Document [1] ... Document [n] + first question), assistant(answer 1),
                user(question 2), assistant(answer 2), ...]

Length: the context is the gold document(s) plus distractors drawn from the pool (same language first)
until the rendered chat — tokenised with the tokenizer's chat template — lands in

    [target - token_tolerance(target), min(target, max_tokens)],   token_tolerance(t) = max(64, 3% of t)

Each pool document's token count is computed once (`DocPool`); the composer sums them to choose the
documents, fills the last gap with a sentence-truncated distractor, then counts the whole rendered chat to
get the true `n_tokens` (and corrects if the estimate missed); `token_count.chat_tokens` counts it exactly
from cached pieces for Qwen-family tokenizers. The `plain` and `quote` twins of a
`paraphrase` sample (same records, seed and target) have the same context and questions: the context budget
always reserves room for the paraphrase answers, so a plain sample is shorter than its twin by exactly the
quote lines and a quote sample by the document numbers ("in Document [k]"); neither is held to the floor.
`unanswerable` samples hold no gold document and are filled to the window on their own.

Randomness comes from `seed` in separate streams ("context", "positions"), so the answer style never
changes which documents are drawn. Distractors never contain an answer string of the sample's questions
nor repeat a gold document.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from longctx_core.data import styles
from longctx_core.data.evidence import Evidence, locate_evidence
from longctx_core.data.records import AnswerStyle, Document, LongSample, QARecord, Rejected
from longctx_core.data.seeding import rng_for
from longctx_core.data.text import sentence_spans
from longctx_core.data.token_count import chat_tokens, count_doc_tokens, count_texts, count_tokens

logger = logging.getLogger(__name__)

MAX_MISSES = 48  # consecutive pool draws that fit nowhere before the greedy fill stops
MAX_ROUNDS = 6  # exact-count correction rounds
MAX_WINDOW_DOCS = 16  # documents searched for a sentence window when no first sentence fits the last gap
_SEP_TOKENS = 2  # "\n\n" between documents (measured: 2 tokens for the tiny BPE and Qwen2)


def token_tolerance(target: int) -> int:
    """How far below `target` a sample may land: max(64, 3% of target) tokens. It never lands above."""
    return max(64, int(0.03 * target))


class ComposeError(Rejected):
    """A sample cannot be composed from these records; `reason` is the quarantine key."""


@dataclass(frozen=True)
class PositionSpec:
    """Gold placement: uniform over slots; middle = with probability `middle_weight` a slot in the middle
    half (relative position in [.25, .75]; with 1-2 documents the slots nearest the centre, see
    `middle_slots`), else uniform; fixed = at round(fixed * (n_docs - 1))."""

    kind: str = "uniform"
    middle_weight: float = 0.5
    fixed: float = 0.5

    @staticmethod
    def from_config(cfg) -> PositionSpec:
        return PositionSpec(cfg.kind, cfg.middle_weight, cfg.fixed)


class DocPool:
    """Distractor documents with their languages and token counts (counted once, reused by every sample)."""

    def __init__(self, docs: Sequence[Document], langs: Sequence[str], counts: Sequence[int]) -> None:
        if not len(docs) == len(langs) == len(counts):
            raise ValueError("DocPool: docs, langs and counts must have the same length")
        self.docs, self.langs, self.counts = list(docs), list(langs), list(counts)
        self.by_lang: dict[str, list[int]] = {}
        for i, lang in enumerate(self.langs):
            self.by_lang.setdefault(lang, []).append(i)
        self._folded: dict[int, str] = {}

    @classmethod
    def build(cls, docs: Sequence[Document], langs: Sequence[str], tokenizer) -> DocPool:
        return cls(docs, langs, count_doc_tokens(tokenizer, docs, langs))

    def folded(self, i: int) -> str:
        """Case-folded text of document `i` (cached), for the answer-leak check."""
        if i not in self._folded:
            self._folded[i] = self.docs[i].text.casefold()
        return self._folded[i]

    def __len__(self) -> int:
        return len(self.docs)


# ---- gold documents and answers ----------------------------------------------------------------------------


@dataclass
class _Turn:
    record: QARecord
    evidence: Evidence
    gold_ids: list[int]  # indices into the sample's gold list, one per record.evidence_docs


def _gold_layout(
    records: Sequence[QARecord], evidences: Sequence[Evidence]
) -> tuple[list[Document], list[_Turn]]:
    """Unique gold documents (first-seen order) and each turn's mapping onto them."""
    golds: list[Document] = []
    turns = []
    for rec, ev in zip(records, evidences, strict=True):
        ids = []
        for doc in rec.evidence_docs:
            if doc not in golds:
                golds.append(doc)
            ids.append(golds.index(doc))
        turns.append(_Turn(rec, ev, ids))
    return golds, turns


def _render_messages(lang, turns, docs, gold_slots, style) -> list[dict[str, str]]:
    """system + alternating user/assistant turns over `docs` (golds at `gold_slots`)."""
    messages = [{"role": "system", "content": styles.SYSTEM_PROMPT[lang]}]
    for i, turn in enumerate(turns):
        q = turn.record.question
        user = styles.render_first_user(docs, q, lang) if i == 0 else styles.render_followup_user(q, lang)
        quotes = (
            [(gold_slots[turn.gold_ids[d]] + 1, s) for d, s in turn.evidence.quotes] if gold_slots else []
        )
        answer = styles.render_answer(style, lang, turn.evidence.answer or turn.record.answers[0], quotes)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return messages


# ---- placement ---------------------------------------------------------------------------------------------


def middle_slots(n_docs: int) -> list[int]:
    """The slots `middle` placement favours: those whose relative position s / (n_docs - 1) lies in the
    middle half [.25, .75]; when none does, the slot(s) nearest the centre.

        n_docs = 1 -> [0]          (the only slot)
        n_docs = 2 -> [0, 1]       (no slot in [.25, .75]; both are 0.5 from the centre: middle = uniform)
        n_docs = 3 -> [1]
        n_docs = 4 -> [1, 2]       (1/3 and 2/3)
        n_docs = 5 -> [1, 2, 3]    (.25, .5, .75)
    """
    if n_docs < 1:
        return []
    if n_docs == 1:
        return [0]
    inner = [s for s in range(n_docs) if 0.25 <= s / (n_docs - 1) <= 0.75]
    if inner:
        return inner
    centre = (n_docs - 1) / 2
    best = min(abs(s - centre) for s in range(n_docs))
    return [s for s in range(n_docs) if abs(s - centre) == best]


def pinned_fractions(pinned: float | Sequence[float] | None) -> list[float]:
    """Gold positions pinned by the caller, as a list: none, one fraction (the first gold), or one per gold."""
    return [pinned] if isinstance(pinned, (int, float)) else list(pinned or [])


def place_golds(
    n_docs: int, n_golds: int, spec: PositionSpec, first_fixed: float | Sequence[float] | None, rng
) -> list[int]:
    """Distinct 0-based slots (one per gold, in gold order) for `n_golds` gold documents among `n_docs`.

    Defined for every 0 <= n_golds <= n_docs (n_docs >= 1 when n_golds > 0), including contexts where only
    the gold document(s) fit:
    - `first_fixed` (a fraction) pins the first gold at round(first_fixed * (n_docs - 1)); a sequence of
      fractions pins gold i at its i-th fraction (golds past its end follow `spec`);
    - kind `fixed`: every gold wants round(fixed * (n_docs - 1));
    - kind `middle`: with probability `middle_weight` a gold draws from the free `middle_slots(n_docs)`
      (all of them when every middle slot is taken: it then moves to the nearest free slot), else uniform;
    - kind `uniform`: uniform over all slots.
    A wanted slot that is already taken moves to the nearest free one (the later slot on a tie).
    Raises ValueError when there are more golds than slots (the composer never asks for that).
    """
    if n_golds < 0 or n_golds > n_docs:
        raise ValueError(f"place_golds: cannot place {n_golds} gold documents among {n_docs} slots")
    slots: list[int] = []
    middle = middle_slots(n_docs)
    pinned = pinned_fractions(first_fixed)
    for g in range(n_golds):
        if g < len(pinned):
            want = round(pinned[g] * (n_docs - 1))
        elif spec.kind == "fixed":
            want = round(spec.fixed * (n_docs - 1))
        elif spec.kind == "middle" and rng.random() < spec.middle_weight:
            want = rng.choice([s for s in middle if s not in slots] or middle)
        else:
            want = rng.randrange(n_docs)
        for d in range(n_docs):
            cand = [c for c in (want + d, want - d) if 0 <= c < n_docs and c not in slots]
            if cand:
                slots.append(cand[0])
                break
    return slots


def _interleave(golds: list[Document], slots: list[int], fillers: list[Document]) -> list[Document]:
    out: list[Document | None] = [None] * (len(golds) + len(fillers))
    for doc, slot in zip(golds, slots, strict=True):
        out[slot] = doc
    it = iter(fillers)
    return [d if d is not None else next(it) for d in out]


# ---- distractor fill ---------------------------------------------------------------------------------------


class _Filler:
    """Draws distractors from the pool for one sample: same language first, never a gold document, never a
    document holding an answer string."""

    def __init__(self, pool: DocPool, lang: str, golds: list[Document], needles: list[str], rng) -> None:
        self.pool, self.rng = pool, rng
        self.golds = {(d.title, d.text) for d in golds}
        self.needles = [n for n in needles if len(n) >= 2]
        self.lists = [pool.by_lang.get(lang, []), list(range(len(pool)))]
        self.used: set[int] = set()
        self.rejected: set[int] = set()
        self.cuts: list[Document] = []  # truncated distractors handed out

    def _ok(self, j: int) -> bool:
        if j in self.used or j in self.rejected:
            return False
        doc = self.pool.docs[j]
        if (doc.title, doc.text) in self.golds or any(n in self.pool.folded(j) for n in self.needles):
            self.rejected.add(j)
            return False
        return True

    def draw(self, budget: int) -> list[int]:
        """Pool indices whose estimated cost fits `budget`, greedily in random order."""
        chosen: list[int] = []
        for cands in self.lists:
            misses = 0
            while budget > 0 and misses < MAX_MISSES and cands:
                j = cands[self.rng.randrange(len(cands))]
                cost = self.pool.counts[j] + _SEP_TOKENS + 1
                if self._ok(j) and cost <= budget:
                    chosen.append(j)
                    self.used.add(j)
                    budget -= cost
                    misses = 0
                else:
                    misses += 1
            if misses < MAX_MISSES and budget > 0 and len(self.used | self.rejected) < len(cands):
                break  # stopped for another reason than exhausting this language
        return chosen

    def truncated(self, tokenizer, budget: int, lang: str) -> Document | None:
        """A distractor cut after as many leading sentences as fit `budget` tokens; when no drawn document's
        first sentence fits, a window of consecutive sentences (`_window`); None if no sentence fits."""
        tries = [c for c in self.lists if c for _ in range(MAX_MISSES)]  # same language first, then any
        for cands in tries:
            j = cands[self.rng.randrange(len(cands))]
            if not self._ok(j):
                continue
            doc = self.pool.docs[j]
            spans = sentence_spans(doc.text)
            best = None
            for _, end in spans:
                part = Document(doc.title, doc.text[:end])
                if count_tokens(tokenizer, styles.render_document(1, part, lang)) + _SEP_TOKENS + 1 > budget:
                    break
                best = part
            if best is not None:
                return self._take(j, best)
        return self._window(tokenizer, budget, lang)

    def _take(self, j: int, part: Document) -> Document:
        self.used.add(j)
        self.cuts.append(part)
        return part

    def _window(self, tokenizer, budget: int, lang: str) -> Document | None:
        """Fallback when no document's first sentence fits (real passages have long sentences and the
        last gap can be smaller than one of them): the run of consecutive sentences, anywhere in one of up
        to MAX_WINDOW_DOCS unused documents (same language first, in pool order), that fills most of
        `budget`. Still verbatim sentences; None when no single sentence fits."""
        best: tuple[int, int, Document] | None = None
        tried = 0
        # each list from a random offset, so that fallback windows do not always come from the same documents
        offsets = [self.rng.randrange(len(c)) if c else 0 for c in self.lists]
        order = (c[(k + o) % len(c)] for c, o in zip(self.lists, offsets, strict=True) for k in range(len(c)))
        for j in order:
            if tried >= MAX_WINDOW_DOCS or (best and budget - best[0] <= _SEP_TOKENS + 8):
                break
            if not self._ok(j):
                continue
            tried += 1
            doc = self.pool.docs[j]
            spans = sentence_spans(doc.text)
            sizes = [n + 1 for n in count_texts(tokenizer, [doc.text[a:b] for a, b in spans])]
            head = count_tokens(tokenizer, styles.render_document(1, Document(doc.title, ""), lang))
            room = budget - head - _SEP_TOKENS - 1
            lo, total, pick = 0, 0, None  # two pointers: the largest window of sentences within `room`
            for hi, size in enumerate(sizes):
                total += size
                while total > room and lo <= hi:
                    total -= sizes[lo]
                    lo += 1
                if lo <= hi and (pick is None or total > pick[0]):
                    pick = (total, lo, hi)
            while pick is not None:  # the sum of sentence counts is an estimate: verify, shrink if over
                _, a, b = pick
                part = Document(doc.title, doc.text[spans[a][0] : spans[b][1]])
                cost = count_tokens(tokenizer, styles.render_document(1, part, lang)) + _SEP_TOKENS + 1
                if cost <= budget:
                    if best is None or cost > best[0]:
                        best = (cost, j, part)
                    break
                pick = (0, a, b - 1) if b > a else None
        return self._take(best[1], best[2]) if best else None


# ---- the composer ------------------------------------------------------------------------------------------


def compose_sample(
    records: Sequence[QARecord],
    distractors: DocPool | Sequence[Document],
    tokenizer,
    *,
    target_tokens: int,
    answer_style: AnswerStyle,
    gold_position: float | Sequence[float] | None = None,
    positions: PositionSpec | None = None,
    seed: int,
    sample_id: str = "sample",
    max_tokens: int | None = None,
    evidences: Sequence[Evidence] | None = None,
    run_seed: int = 0,
) -> LongSample:
    """One long sample: `records` as consecutive QA turns over one numbered context (see module docstring).

    `gold_position`: None = draw from `positions` (default uniform); a fraction in [0, 1] = put the first
    gold document at round(frac * (n_docs - 1)) exactly; a sequence of fractions = one per gold document, in
    record order (a taken slot moves to the nearest free one, see `place_golds`). `evidences` default to `locate_evidence(record)`.
    Raises `ComposeError` (or `EvidenceError`) with a quarantine reason when the records cannot make a
    sample: `document_too_long` (the gold documents and turns alone exceed the cap), `token_target_missed`
    (the pool holds too little text to reach the floor, or `max_tokens` is below it), `empty_context` (an
    unanswerable sample beside which no distractor fits), or an evidence reason.
    """
    lang = _check_request(records, gold_position)
    pool = (
        distractors
        if isinstance(distractors, DocPool)
        else DocPool.build(distractors, [lang] * len(distractors), tokenizer)
    )
    evidences = list(evidences) if evidences is not None else [locate_evidence(r) for r in records]
    golds, turns = _gold_layout(records, evidences)
    f = _Frame.of(tokenizer, records, turns, golds, pool, answer_style, target_tokens, max_tokens, seed)
    fillers = _first_fill(f, list(range(len(golds))), target_tokens)
    docs, slots, messages, n_tokens = _fit(f, fillers, positions or PositionSpec(), gold_position, seed)
    if answer_style != f.budget_style:  # else already rendered and counted: tokenising 32k tokens is the cost
        messages = f.render(docs, slots, answer_style)
        n_tokens = chat_tokens(tokenizer, messages)
    if not docs:  # unanswerable with no distractor that fits: a context of nothing is not a sample
        raise ComposeError(
            "empty_context", f"no distractor fits beside the turns ({n_tokens} of {f.cap} tokens)"
        )
    # plain and quote twins are shorter than the paraphrase answers the context was sized for: no floor
    if n_tokens > f.cap or (answer_style == f.budget_style and n_tokens < f.floor):
        raise ComposeError("token_target_missed", f"{n_tokens} tokens for target {target_tokens}")
    return _sample(f, sample_id, messages, n_tokens, docs, slots, answer_style, target_tokens, seed, run_seed)


def _check_request(records: Sequence[QARecord], gold_position) -> str:
    """The sample's language (its first record's); raises ValueError for a request no sample can meet."""
    if not records:
        raise ValueError("compose_sample needs at least one record")
    if any(not 0.0 <= f <= 1.0 for f in pinned_fractions(gold_position)):
        raise ValueError(f"gold_position must be in [0, 1], got {gold_position}")
    return records[0].lang


@dataclass
class _Frame:
    """What the steps of one sample's composition share."""

    tokenizer: Any
    lang: str
    turns: list[_Turn]
    golds: list[Document]  # the sample's gold documents: none in an unanswerable sample
    # The context budget is computed with paraphrase answers for every answerable style, so twins match.
    budget_style: str
    cap: int  # the most tokens: min(target, max_tokens)
    floor: int  # the fewest: target - token_tolerance(target)
    filler: _Filler

    @staticmethod
    def of(tokenizer, records, turns, golds, pool, answer_style, target_tokens, max_tokens, seed) -> _Frame:
        answerable = answer_style != "unanswerable"
        lang = records[0].lang
        needles = [a.casefold() for r in records for a in r.answers]
        return _Frame(
            tokenizer,
            lang,
            turns,
            golds if answerable else [],
            "paraphrase" if answerable else "unanswerable",
            min(target_tokens, max_tokens or target_tokens),
            target_tokens - token_tolerance(target_tokens),
            _Filler(pool, lang, golds, needles, rng_for(seed, "context")),
        )

    def render(self, docs: list[Document], slots: list[int], style: str) -> list[dict[str, str]]:
        return _render_messages(self.lang, self.turns, docs, slots, style)


def _first_fill(f: _Frame, gold_slots: list[int], target_tokens: int) -> list[Document]:
    """The distractors chosen by estimate: whole pool documents by their token counts into the room the
    golds and turns leave (less head room for estimation error), then a truncated one for the last gap.
    Raises ComposeError `document_too_long` when the golds and turns alone exceed the cap."""
    base = chat_tokens(f.tokenizer, f.render(f.golds, gold_slots, f.budget_style))
    if base > f.cap:
        raise ComposeError(
            "document_too_long", f"gold documents and turns take {base} tokens > target {f.cap}"
        )
    aim = f.cap - max(8, token_tolerance(target_tokens) // 4)  # head room for estimation error
    pool = f.filler.pool
    drawn = f.filler.draw(aim - base)
    spent = sum(pool.counts[j] + _SEP_TOKENS + 1 for j in drawn)
    cut = f.filler.truncated(f.tokenizer, aim - base - spent, f.lang)
    return [pool.docs[j] for j in drawn] + ([cut] if cut is not None else [])


def _fit(f: _Frame, fillers: list[Document], spec: PositionSpec, gold_position, seed: int):
    """Place the golds among `fillers` and count the rendered chat exactly, for up to MAX_ROUNDS rounds:
    over the cap drops the last-added distractor (an estimation error), under the floor adds a truncated
    one. Returns the last round's (docs, slots, messages, n_tokens), in the budget style."""
    for _ in range(MAX_ROUNDS):
        n_docs = len(f.golds) + len(fillers)
        slots = place_golds(n_docs, len(f.golds), spec, gold_position, rng_for(seed, "positions"))
        docs = _interleave(f.golds, slots, fillers)
        messages = f.render(docs, slots, f.budget_style)
        n_tokens = chat_tokens(f.tokenizer, messages)
        if n_tokens > f.cap and fillers:
            fillers = fillers[:-1]
            continue
        if n_tokens < f.floor:
            more = f.filler.truncated(f.tokenizer, f.cap - n_tokens - 4, f.lang)
            if more is not None:
                fillers = fillers + [more]
                continue
        break
    return docs, slots, messages, n_tokens


def _answers_of(turn: _Turn) -> list[str]:
    """The turn's accepted answers, the stated one first (as the document writes it)."""
    stated = turn.evidence.answer or turn.record.answers[0]
    return list(dict.fromkeys([stated, *turn.record.answers]))


def _sample(
    f: _Frame, sample_id, messages, n_tokens, docs, slots, style, target, seed, run_seed
) -> LongSample:
    """The LongSample row with its metadata."""
    turns, lang = f.turns, f.lang
    truncated = sum(1 for d in docs if any(d is c for c in f.filler.cuts))
    answerable = style != "unanswerable"
    per_turn_pos = [[slots[g] for g in t.gold_ids] if answerable else [] for t in turns]
    evidence_docs = [
        [slots[t.gold_ids[d]] for d, _ in t.evidence.quotes] if answerable else [] for t in turns
    ]
    meta = {
        "questions": [t.record.question for t in turns],
        "answers": [_answers_of(t) for t in turns],
        "evidence": [[s for _, s in t.evidence.quotes] for t in turns],
        "evidence_docs": evidence_docs,
        "evidence_fallback": [t.evidence.fallback for t in turns],
        "record_ids": [t.record.id for t in turns],
        "turn_gold_positions": per_turn_pos,
        "target_tokens": int(target),
        "truncated_docs": int(truncated),
        "sample_seed": int(seed % (1 << 63)),
        "titles": [d.title for d in docs],
    }
    return LongSample(
        id=sample_id,
        messages=messages,
        n_tokens=int(n_tokens),
        n_docs=len(docs),
        gold_positions=list(slots) if answerable else [],
        answer_style=style,
        source=turns[0].record.source,
        lang=lang,
        seed=int(run_seed),
        meta=meta,
    )
