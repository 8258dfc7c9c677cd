"""Text helpers: a sentence splitter for English and Chinese, language detection, overlap scores.

The splitter returns *spans* of the original text, so every sentence it yields is verbatim text of the
document (the composer quotes them and readers check quotes by substring match):

    >>> split_sentences("Dr. Lee moved to St. Louis in 1990. He left in 2001! 他回来了。然后呢？")
    ['Dr. Lee moved to St. Louis in 1990.', 'He left in 2001!', '他回来了。', '然后呢？']

Boundaries: `.`, `!`, `?` (and runs like `?!` or `...`) followed by whitespace and then something that
does not start in lower case, except after a known abbreviation or a single capital initial; Chinese
`。！？` and `……` anywhere (closing quotes and brackets stay with their sentence); and every newline.
"""

from __future__ import annotations

import re
import unicodedata

_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof st jr sr vs etc e.g i.e no nos inc ltd co corp mt ft ave blvd rd gen col lt sgt capt
    rev hon gov sen rep pres jan feb mar apr jun jul aug sep sept oct nov dec approx fig figs vol vols pp ed
    eds est dept univ u.s u.k u.n a.m p.m ca cf al op""".split()
)
_CLOSERS = "\"'”’」』）)]》"
# A Western boundary candidate: terminal punctuation, optional closers, then whitespace.
_EN_END = re.compile(r"[.!?]+[" + re.escape(_CLOSERS) + r"]*(?=\s)")
# A Chinese boundary: terminal punctuation (or an ellipsis) and any closers right after it.
_ZH_END = re.compile(r"(?:[。！？]+|……|\.\.\.(?=[\u4e00-\u9fff]))[" + re.escape(_CLOSERS) + r"]*")
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the `.` at `dot` ends an abbreviation or an initial rather than a sentence."""
    if text[dot] != ".":
        return False
    m = _WORD_BEFORE.search(text[max(0, dot - 40) : dot])  # a window: abbreviations are short
    if not m:
        return False
    word = m.group(1).lower().strip(".")
    if word in _ABBREVIATIONS:
        return True
    # "J. K. Rowling", "U.S.": a single letter (possibly after other dotted letters) is an initial.
    last = word.rsplit(".", 1)[-1]
    return len(last) == 1 and last.isalpha()


def _boundaries(text: str) -> list[int]:
    """Sorted end offsets (exclusive) of sentences in `text`, excluding the text's own end."""
    ends: set[int] = set()
    for m in _EN_END.finditer(text):
        rest = text[m.end() :].lstrip()
        first_dot = m.start() if text[m.start()] == "." and m.group().count(".") == 1 else -1
        if not rest or rest[0].islower():
            continue
        if first_dot >= 0 and _is_abbreviation(text, first_dot):
            continue
        ends.add(m.end())
    for m in _ZH_END.finditer(text):
        ends.add(m.end())
    for m in re.finditer(r"\n", text):
        ends.add(m.start())
    return sorted(e for e in ends if 0 < e < len(text))


def sentence_spans(text: str, lang: str | None = None) -> list[tuple[int, int]]:
    """(start, end) offsets of each sentence, whitespace trimmed, empty pieces dropped. `lang` is a hint
    only: both English and Chinese rules always apply, since real documents mix them."""
    spans = []
    start = 0
    for end in [*_boundaries(text), len(text)]:
        s, e = start, end
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
        start = end
    return spans


def split_sentences(text: str, lang: str | None = None) -> list[str]:
    """The sentences of `text`, each a verbatim substring of it."""
    return [text[s:e] for s, e in sentence_spans(text, lang)]


def detect_lang(text: str) -> str:
    """'zh' when at least 20% of the letters are CJK ideographs, else 'en'."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en"
    cjk = sum(1 for ch in letters if _CJK.match(ch))
    return "zh" if cjk / len(letters) >= 0.2 else "en"


def normalize(text: str) -> str:
    """Case-folded, NFKC-normalised text with runs of whitespace collapsed (for matching, not quoting)."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def tokens(text: str) -> list[str]:
    """Matching units: single CJK characters and alphanumeric words (digit groups joined: 1,000 -> 1000)."""
    flat = re.sub(r"(?<=\d)[,，](?=\d{3})", "", normalize(text))
    return _TOKEN.findall(flat)


def overlap(needle: str, hay: str) -> float:
    """Share of `needle`'s tokens (with multiplicity) that also occur in `hay`, in [0, 1]."""
    want = tokens(needle)
    if not want:
        return 0.0
    have: dict[str, int] = {}
    for t in tokens(hay):
        have[t] = have.get(t, 0) + 1
    hit = 0
    for t in want:
        if have.get(t, 0) > 0:
            have[t] -= 1
            hit += 1
    return hit / len(want)
