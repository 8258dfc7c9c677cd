"""Every source kind on a small hand-made fixture in its own format; bad rows and unreadable sources."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from longctx_core.config import SourceConfig
from longctx_core.data.evidence import locate_evidence
from longctx_core.data.records import Malformed, QARecord
from longctx_core.data.sources import iter_records
from longctx_core.errors import LongctxError

FIX = Path(__file__).parent / "fixtures"


def read(**kw) -> tuple[list[QARecord], Counter]:
    good, bad = [], Counter()
    for item in iter_records(SourceConfig(**kw), seed=0):
        if isinstance(item, Malformed):
            bad[item.reason] += 1
            assert item.location and item.source == kw["kind"]
        else:
            good.append(item)
    return good, bad


def test_litm_jsonl_gz_with_bad_rows():
    good, bad = read(kind="litm", path=str(FIX / "litm_small.jsonl.gz"))
    assert len(good) == 14
    assert bad == Counter(missing_field=1, empty_text=1, bad_json=1, bad_encoding=1, empty_answer=1)
    rec = good[0]
    assert rec.evidence_docs[0].title == "Lake Baikal" and rec.answers == ("1,642 metres", "1642 m")
    assert rec.id.startswith("litm-") and rec.lang == "en"
    # evidence: exact matches, one paraphrased answer falls back, one answer is nowhere
    outcomes = Counter()
    for r in good:
        try:
            outcomes["fallback" if locate_evidence(r).fallback else "exact"] += 1
        except ValueError as exc:
            outcomes[exc.reason] += 1
    assert outcomes == Counter(exact=12, fallback=1, answer_not_found=1)


def test_litm_limit_and_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "part.jsonl.gz").write_bytes((FIX / "litm_small.jsonl.gz").read_bytes())
    good, bad = read(kind="litm", path=str(tmp_path), limit=3)
    assert len(good) + sum(bad.values()) == 3


def test_squad_v2_nested():
    good, bad = read(kind="squad", path=str(FIX / "squad_v2_small.json"))
    assert [r.id for r in good] == ["sq1", "sq2", "sq4", "sq5", "sq6"]
    assert bad == Counter(no_answer=1)
    sq2 = good[1]
    # the answer span's sentence is the annotated evidence
    assert sq2.evidence_sentences == ("Their leader was called Rollo.",)
    assert good[3].evidence_sentences == ()  # sq5's answer_start does not match its text: no span evidence


def test_cmrc2018_chinese_squad():
    good, bad = read(kind="squad", path=str(FIX / "cmrc2018_small.json"))
    assert len(good) == 6 and not bad
    assert {r.lang for r in good} == {"zh"}
    assert good[2].evidence_sentences == ("它流经十一个省级行政区，最后注入东海。",)


def test_squad_flattened_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ctx = "Oxygen is a chemical element. Its atomic number is 8. It is abundant."
    rows = [
        {
            "id": "p1",
            "title": "Oxygen",
            "context": ctx,
            "question": "Atomic number of oxygen?",
            "answers": {"text": ["8"], "answer_start": [ctx.index("8")]},
        }
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    good, bad = read(kind="squad", path=str(tmp_path / "train.parquet"))
    assert good[0].evidence_sentences == ("Its atomic number is 8.",) and not bad


@pytest.mark.parametrize("name", ["hotpotqa_small.json", "hotpotqa_hf_small.jsonl"])
def test_hotpotqa_two_gold_docs_and_supporting_facts(name):
    good, bad = read(kind="hotpotqa", path=str(FIX / name))
    assert [r.id for r in good] == ["hp1", "hp2", "hp3"]
    hp3 = good[2]
    assert [d.title for d in hp3.evidence_docs] == ["Big Stone Gap (film)", "Adriana Trigiani"]
    assert len(hp3.evidence_sentences) == 3
    ev = locate_evidence(hp3)
    assert [i for i, _ in ev.quotes] == [0, 1, 1] and not ev.fallback
    assert bad == (Counter(evidence_not_in_document=1) if name.endswith(".json") else Counter())


def test_generic_jsonl_field_map():
    fm = {"id": "qid", "question": "q", "answers": "ans", "text": "passage", "title": "heading"}
    good, bad = read(kind="jsonl", path=str(FIX / "generic_small.jsonl"), field_map=fm)
    assert [r.id for r in good] == ["g1", "g2", "g3"] and good[1].answers == ("Marta Kell",)
    assert good[0].evidence_docs[0].title == "Old mill"
    assert bad == Counter(empty_text=2)
    _, bad = read(kind="jsonl", path=str(FIX / "generic_small.jsonl"))  # unmapped: columns missing
    assert bad == Counter(missing_field=5)


def test_generic_parquet_and_hf_local_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIX / "generic_small.jsonl").read_text().splitlines()]
    for r in rows:  # one Arrow type per column: answers as lists
        r["ans"] = r["ans"] if isinstance(r["ans"], list) else [r["ans"]]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "g.parquet")
    fm = {"id": "qid", "question": "q", "answers": "ans", "text": "passage"}
    good, _ = read(kind="parquet", path=str(tmp_path / "g.parquet"), field_map=fm)
    assert [r.id for r in good] == ["g1", "g2", "g3"]
    good, bad = read(kind="hf", path=str(FIX / "hf_local"), field_map={"text": "context"}, split="train")
    assert len(good) == 3 and not bad and good[1].answers == ("Marta Kell",)


def test_builtin_source_respects_world_config():
    good, bad = read(kind="builtin", builtin={"num_records": 30, "zh_fraction": 0.0})
    assert len(good) == 30 and not bad and {r.lang for r in good} == {"en"}


@pytest.mark.parametrize(
    ("kind", "make", "match"),
    [
        ("litm", lambda p: p / "missing.jsonl", "does not exist"),
        ("litm", lambda p: p, "no .jsonl"),
        (
            "litm",
            lambda p: (p / "x.jsonl.gz").write_bytes(b"not gzip at all") and p / "x.jsonl.gz",
            "cannot read",
        ),
        ("squad", lambda p: (p / "s.json").write_text("{broken") and p / "s.json", "cannot read"),
        ("parquet", lambda p: (p / "x.parquet").write_text("nope") and p / "x.parquet", "cannot read"),
        ("hf", lambda p: p / "nothing_here", "cannot load"),
    ],
)
def test_unreadable_source_is_a_clear_error(tmp_path, kind, make, match):
    path = make(tmp_path)
    with pytest.raises(LongctxError, match=match):
        list(iter_records(SourceConfig(kind=kind, path=str(path)), seed=0))


def test_gzip_roundtrip_of_plain_jsonl(tmp_path):
    raw = gzip.decompress((FIX / "litm_small.jsonl.gz").read_bytes())
    (tmp_path / "plain.jsonl").write_bytes(raw)
    good, bad = read(kind="litm", path=str(tmp_path / "plain.jsonl"))
    assert len(good) == 14 and sum(bad.values()) == 5
