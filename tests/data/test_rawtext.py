"""Raw text for continued pre-training (`data.source.kind: text`): the golden layout of the module
docstring, the packed layout of a piece, and the real Ray Data stage (pieces exact, bad documents counted)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_gen.rawtext import cut_pieces, piece_layout
from longctx_core.config import load_config
from longctx_core.train.packing import Sample, pack_samples

FIX = Path(__file__).parent / "fixtures" / "text"
M = -100
E = 99  # end-of-text in the toy example
A, B, C = [10, 11, 12], [20, 21, 22, 23, 24], [30]


def toy_docs():
    return [("A", A), ("B", B), ("C", C)]


def test_golden_pieces_across_documents():
    pieces = list(cut_pieces(toy_docs(), max_len=4, eot_id=E, cross_document=True))
    assert [(p.input_ids, p.doc_lens, p.doc_ids) for p in pieces] == [
        ([10, 11, 12, E], [4], ["A"]),
        ([20, 21, 22, 23], [4], ["B"]),
        ([24, E, 30, E], [2, 2], ["B", "C"]),
    ]
    assert [piece_layout(p.input_ids, p.doc_lens) for p in pieces] == [
        ([0, 1, 2, 3], [M, 11, 12, E]),
        ([0, 1, 2, 3], [M, 21, 22, 23]),
        ([0, 1, 0, 1], [M, E, M, E]),
    ]


def test_golden_pieces_within_documents():
    pieces = list(cut_pieces(toy_docs(), max_len=4, eot_id=E, cross_document=False))
    assert [(p.input_ids, p.doc_lens) for p in pieces] == [
        ([10, 11, 12, E], [4]),
        ([20, 21, 22, 23], [4]),
        ([24, E], [2]),
        ([30, E], [2]),
    ]


def test_no_token_is_dropped_or_duplicated():
    docs = [(str(i), list(range(i * 100, i * 100 + n))) for i, n in enumerate([7, 1, 30, 12, 5])]
    for cross in (True, False):
        pieces = list(cut_pieces(docs, max_len=8, eot_id=E, cross_document=cross))
        assert all(len(p) <= 8 for p in pieces)
        assert [t for p in pieces for t in p.input_ids] == [t for _, ids in docs for t in [*ids, E]]


def test_packed_piece_restarts_positions_per_document():
    """A piece packed for training gets exactly the docstring's layout (and stays one sample)."""
    piece = Sample("p2", [24, E, 30, E], [24, E, 30, E], segments=[2, 2])
    (row,) = pack_samples([piece], capacity=4)
    assert row.to_dict() == {
        "input_ids": [24, E, 30, E],
        "labels": [M, E, M, E],
        "position_ids": [0, 1, 0, 1],
        "seq_lens": [2, 2],
        "sample_ids": ["p2", "p2"],
    }


def _write_docs(folder: Path) -> list[str]:
    texts = [
        " ".join(f"Line {i} of the {name} notes: the tide rose at {i} past the hour." for i in range(n))
        for name, n in (("harbour", 9), ("mill", 2), ("lighthouse", 14))
    ]
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"doc{i}.txt").write_text(text)
    return texts


@pytest.mark.parametrize("cross", [True, False])
def test_text_pieces_through_ray_are_exact(ray_local, tmp_path, tiny_model_dir, cross):
    from transformers import AutoTokenizer

    from ray_jobs.synthesize import run

    texts = _write_docs(tmp_path / "docs")
    cfg = load_config(
        None,
        [
            f"run.storage_path={tmp_path}",
            "run.name=t",
            "data.source.kind=text",
            f"data.source.path={tmp_path / 'docs'}",
            f"data.source.text.cross_document={str(cross).lower()}",
            "train.max_seq_len=128",
            "data.num_workers=2",
        ],
    )
    run(cfg)
    rows = [
        r for f in sorted((tmp_path / "t/data/train").glob("*.parquet")) for r in pq.read_table(f).to_pylist()
    ]
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    docs = [tok(t, add_special_tokens=False)["input_ids"] + [eot] for t in texts]
    expected = []  # written out independently of cut_pieces
    if cross:
        stream = [t for d in docs for t in d]
        expected = [stream[i : i + 128] for i in range(0, len(stream), 128)]
    else:
        expected = [d[i : i + 128] for d in docs for i in range(0, len(d), 128)]
    assert [r["input_ids"] for r in rows] == expected
    assert all(sum(r["doc_lens"]) == r["n_tokens"] == len(r["input_ids"]) for r in rows)
    assert all(r["messages"] == [] and r["source"] == "text" for r in rows)
    assert [r["id"] for r in rows] == [f"text-{i:07d}" for i in range(len(rows))]
    if cross:  # pieces end one document and start the next
        assert any(len(r["doc_lens"]) >= 2 for r in rows)
    else:
        assert all(len(r["doc_lens"]) == 1 for r in rows)


def test_bad_documents_are_counted_by_reason(ray_local, tmp_path):
    from ray_jobs.synthesize import run

    cfg = load_config(
        None,
        [
            f"run.storage_path={tmp_path}",
            "run.name=f",
            "data.source.kind=text",
            f"data.source.path={FIX}",
            "data.source.field_map={text: body}",
            "train.max_seq_len=128",
            "data.max_bad_fraction=1",
        ],
    )
    run(cfg)
    stats = json.loads((tmp_path / "f/data/stats.json").read_text())
    assert stats["quarantined"] == {"bad_content": 2, "bad_encoding": 1, "missing_field": 1}
    assert stats["sources"]["text"]["rows_read"] == 7
    rows = pq.read_table(tmp_path / "f/data/train/part-00000.parquet").to_pylist()
    assert len(rows) == 1 and len(rows[0]["doc_lens"]) == 3  # tides, winds, lanterns in one piece


def test_text_suffixes_choose_which_files_are_documents(tmp_path):
    """`data.source.text.suffixes`: files with those endings are read whole as one document each, row files
    (jsonl/json/parquet) as rows with a text column, and every other file is not read at all."""
    from data_gen.importing import iter_unit, read_units
    from longctx_core.errors import LongctxError

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for name, text in {
        "a.txt": "Tides come twice a day.",
        "b.md": "# Winds\nThey blow.",
        "sub/c.rst": "Lanterns glow.",
        "notes.log": "not a document",
        "rows.jsonl": json.dumps({"text": "A row of text."}),
    }.items():
        (folder / name).write_text(text)

    def read(*overrides):
        src = load_config(
            None, ["data.source.kind=text", f"data.source.path={folder}", *overrides]
        ).data.source
        units = read_units(src)
        return {Path(u["path"]).relative_to(folder).as_posix(): list(iter_unit(u, src)) for u in units}

    default = read()
    assert sorted(default) == ["a.txt", "b.md", "rows.jsonl"]
    assert default["a.txt"] == [("a.txt", b"Tides come twice a day.", True)]  # the whole file, one document
    assert default["rows.jsonl"][0][2] is False  # a row, parsed later for its text column
    rst = read("data.source.text.suffixes=[.rst]")
    assert sorted(rst) == ["rows.jsonl", "sub/c.rst"]
    assert rst["sub/c.rst"] == [("c.rst", b"Lanterns glow.", True)]
    assert sorted(read("data.source.text.suffixes=[.log, .md]")) == ["b.md", "notes.log", "rows.jsonl"]
    only_logs = tmp_path / "logs"
    only_logs.mkdir()
    (only_logs / "x.log").write_text("not a document")
    src = load_config(None, ["data.source.kind=text", f"data.source.path={only_logs}"]).data.source
    with pytest.raises(
        LongctxError, match=r"^data.source.path: no \.jsonl/.*/\.parquet/\.txt/\.md files under"
    ):
        read_units(src)


def test_text_source_without_documents_fails_before_ray(tmp_path, capsys):
    from ray_jobs.synthesize import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(
            [
                f"run.storage_path={tmp_path}",
                "data.source.kind=text",
                f"data.source.path={tmp_path / 'empty'}",
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.source" in err[0] and "no " in err[0]
