"""Scoring replies: the Lost-in-the-Middle exact match, final-answer extraction, quote faithfulness,
and LongBench's metrics (QA F1, Rouge-L, passage-retrieval exact match).

Definitions follow the published evaluation code so numbers compare with papers:

- `normalize_answer` / `best_subspan_em`: nelson-liu/lost-in-the-middle `metrics.py` (SQuAD normalisation:
  lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace; a prediction is correct
  when some normalised gold answer is a substring of the normalised prediction). Its evaluation script scores
  only the reply's first line (`first_line`), so copying the whole context cannot game the metric.
- `qa_f1`, `qa_f1_zh`, `rouge_l`, `rouge_l_zh`, `retrieval_score`: THUDM/LongBench `metrics.py`, the
  per-sample maximum over the gold answers (`longbench_score`). Chinese tokenisation uses `jieba` as
  LongBench does when it is installed; without it each CJK character is a token (scores then differ
  slightly from published ones, and `zh_tokenizer()` says which one was used).

    >>> best_subspan_em("The answer is: Wilhelm Conrad Röntgen.", ["Wilhelm Conrad Röntgen"])
    1.0
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Sequence

from longctx_core.data.styles import split_reply

logger = logging.getLogger(__name__)

_ASCII_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# LongBench's normalize_zh_answer removes ASCII punctuation plus this set of CJK punctuation.
_ZH_PUNCT = (
    set(
        "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
    )
    | _ASCII_PUNCT
)
_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_ZH_TOKEN = re.compile(f"[{_CJK_CLASS}]|[^\\s{_CJK_CLASS}]+")


# ---- Lost in the Middle ---------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD normalisation as in Lost in the Middle: lower, strip punctuation and articles, squash spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def best_subspan_em(prediction: str, ground_truths: Sequence[str]) -> float:
    """1.0 when any normalised gold answer is a substring of the normalised prediction, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(gt) in pred for gt in ground_truths))


def exact_match(answer: str, ground_truths: Sequence[str]) -> float:
    """1.0 when the normalised `answer` equals some normalised gold answer (SQuAD's exact match), else 0.0;
    an answer that is empty after normalisation never matches."""
    pred = normalize_answer(answer)
    return float(bool(pred) and any(pred == normalize_answer(gt) for gt in ground_truths))


def first_line(reply: str) -> str:
    """The reply up to its first newline, stripped: what the Lost-in-the-Middle script scores (a reply
    that starts with a newline scores its empty first line, as there)."""
    return reply.split("\n")[0].strip()


def final_answer(reply: str, lang: str = "en") -> str:
    """The answer part of a reply: after the last "answer is:" / "答案是：" marker (paraphrase, quote and
    plain styles), else the reply minus its quote lines (see `longctx_core.data.styles.split_reply`)."""
    return split_reply(reply, lang)[1]


def answer_em(reply: str, answers: Sequence[str], lang: str = "en") -> tuple[str, float]:
    """(parsed final answer, best sub-span EM of it). An empty final answer never matches: the empty
    string is a substring of everything, and a reply that only quotes has not answered."""
    parsed = final_answer(reply, lang)
    if not normalize_answer(parsed):
        return parsed, 0.0
    return parsed, best_subspan_em(parsed, answers)


# ---- quote faithfulness ---------------------------------------------------------------------------------


def _loose(text: str) -> str:
    """Case-, space- and punctuation-insensitive form, to recognise near-miss quotes."""
    return "".join(ch for ch in text.lower() if not ch.isspace() and ch not in _ZH_PUNCT)


def quote_faithfulness(reply: str, documents: Sequence[str], gold: Sequence[int], lang: str = "en") -> dict:
    """How a reply's quotations relate to the documents it was given.

    Returns `{"n_quotes", "quoted", "faithful_any", "faithful_gold", "near_miss"}`:
    `quoted` — the reply has at least one quotation; `faithful_any` — it has one and every quote is a
    verbatim substring of some provided document; `faithful_gold` — every quote is verbatim in a gold
    document (`gold` are 0-based indices into `documents`); `near_miss` — some quote is not verbatim
    anywhere but matches a document once case, spacing and punctuation are ignored (a paraphrased or
    mis-copied quote). Quotes must be verbatim (the data contract), so near misses are not faithful.
    """
    quotes = [q.strip() for q in split_reply(reply, lang)[0] if q.strip()]
    gold_docs = [documents[i] for i in gold if 0 <= i < len(documents)]
    in_any = [any(q in d for d in documents) for q in quotes]
    in_gold = [any(q in d for d in gold_docs) for q in quotes]
    loose_docs = [_loose(d) for d in documents]
    near = [
        not ok and bool(_loose(q)) and any(_loose(q) in d for d in loose_docs)
        for q, ok in zip(quotes, in_any, strict=True)
    ]
    return {
        "n_quotes": len(quotes),
        "quoted": bool(quotes),
        "faithful_any": bool(quotes) and all(in_any),
        "faithful_gold": bool(quotes) and all(in_gold),
        "near_miss": any(near),
    }


# ---- LongBench ------------------------------------------------------------------------------------------


def _jieba():
    try:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        return jieba
    except ImportError:
        return None


def zh_tokenizer() -> str:
    """Which Chinese tokeniser the zh metrics use: 'jieba' (as LongBench) or 'char' (fallback)."""
    return "jieba" if _jieba() is not None else "char"


def zh_tokens(text: str) -> list[str]:
    """Chinese word tokens: jieba's precise mode when available, else CJK characters one by one with
    runs of other non-space characters kept together."""
    jb = _jieba()
    if jb is not None:
        return list(jb.cut(text, cut_all=False))
    return _ZH_TOKEN.findall(text)


def _f1(pred: Sequence[str], gold: Sequence[str]) -> float:
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, ground_truth: str) -> float:
    """Token F1 after SQuAD normalisation (LongBench `qa_f1_score`)."""
    return _f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def normalize_zh_answer(text: str) -> str:
    """LongBench's Chinese normalisation: lower, drop ASCII + CJK punctuation, remove all whitespace."""
    return "".join(ch for ch in text.lower() if ch not in _ZH_PUNCT and not ch.isspace())


def qa_f1_zh(prediction: str, ground_truth: str) -> float:
    """Word F1 over Chinese tokens (LongBench `qa_f1_zh_score`)."""
    pred = [t for t in (normalize_zh_answer(t) for t in zh_tokens(prediction)) if t]
    gold = [t for t in (normalize_zh_answer(t) for t in zh_tokens(ground_truth)) if t]
    return _f1(pred, gold)


def _lcs_words(x: Sequence[str], y: Sequence[str]) -> set[str]:
    """The set of words on one longest common subsequence of x and y (backtracking like `rouge`)."""
    n, m = len(x), len(y)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i][j] = (
                table[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(table[i - 1][j], table[i][j - 1])
            )
    words: set[str] = set()
    i, j = n, m
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            words.add(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return words


def rouge_l(prediction: str, ground_truth: str) -> float:
    """Summary-level Rouge-L F as computed by the `rouge` package LongBench calls.

    Both texts are split into sentences at '.', words at spaces; the union of LCS words between each
    reference sentence and every candidate sentence is counted over unique words (the package's default
    `exclusive=True`), and F = 2PR/(P+R). An empty side scores 0 (LongBench catches the package's error).
    """
    hyp = [" ".join(s.split()) for s in prediction.split(".") if s]
    ref = [" ".join(s.split()) for s in ground_truth.split(".") if s]
    if not hyp or not ref:
        return 0.0
    hyp_words = [s.split(" ") for s in hyp]
    ref_words = [s.split(" ") for s in ref]
    m = len({w for s in ref_words for w in s})
    n = len({w for s in hyp_words for w in s})
    union: set[str] = set()
    for r in ref_words:
        for h in hyp_words:
            union |= _lcs_words(r, h)
    llcs = len(union)
    recall, precision = llcs / m, llcs / n
    return 2.0 * precision * recall / (precision + recall + 1e-8)


def rouge_l_zh(prediction: str, ground_truth: str) -> float:
    """Rouge-L over Chinese tokens joined by spaces (LongBench `rouge_zh_score`)."""
    return rouge_l(" ".join(zh_tokens(prediction)), " ".join(zh_tokens(ground_truth)))


def retrieval_score(prediction: str, ground_truth: str, zh: bool = False) -> float:
    """LongBench passage retrieval: the share of numbers in the prediction equal to the gold paragraph
    number ("Paragraph 7" / "段落7"); 0 when the prediction holds no number."""
    found = re.findall(r"段落(\d+)" if zh else r"Paragraph (\d+)", ground_truth)
    if not found:
        return 0.0
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return sum(n == found[0] for n in numbers) / len(numbers)


LONGBENCH_METRICS = {
    "hotpotqa": ("qa_f1", qa_f1),
    "2wikimqa": ("qa_f1", qa_f1),
    "musique": ("qa_f1", qa_f1),
    "multifieldqa_en": ("qa_f1", qa_f1),
    "multifieldqa_zh": ("qa_f1_zh", qa_f1_zh),
    "dureader": ("rouge_l_zh", rouge_l_zh),
    "passage_retrieval_en": ("retrieval_em", retrieval_score),
    "passage_retrieval_zh": ("retrieval_em_zh", lambda p, g: retrieval_score(p, g, zh=True)),
}


def longbench_score(subset: str, prediction: str, answers: Sequence[str]) -> float:
    """One sample's LongBench score in [0, 1]: the subset's metric, maximised over the gold answers."""
    if subset not in LONGBENCH_METRICS:
        raise ValueError(f"no LongBench metric for subset {subset!r}; known: {sorted(LONGBENCH_METRICS)}")
    metric = LONGBENCH_METRICS[subset][1]
    return max((metric(prediction, gt) for gt in answers), default=0.0)


# ---- passkey --------------------------------------------------------------------------------------------


def passkey_correct(reply: str, key: str) -> float:
    """1.0 when the first number in the reply is the key (a reply listing many numbers is not rewarded)."""
    numbers = re.findall(r"\d+", reply)
    return float(bool(numbers) and numbers[0] == key)
