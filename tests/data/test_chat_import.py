"""Chat data import (`data.source.kind: chat`): hand-written fixtures in each format with one bad row per
quarantine reason, through the real Ray Data stage; labels on assistant tokens only; config errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_gen.chat_import import chat_row, normalise, sniff_format
from longctx_core.config import ConfigError, load_config
from longctx_core.data.sources import BadRow
from longctx_core.errors import LongctxError

FIX = Path(__file__).parent / "fixtures" / "chat"
# Short rows: the fixtures' overlong row (~700 tokens) must exceed the training length.
SHORT = ["train.max_seq_len=256", "data.max_bad_fraction=1"]
ALL_REASONS = {
    "bad_encoding": 1,
    "bad_json": 1,
    "unknown_role": 1,
    "role_order": 1,
    "bad_content": 1,
    "no_assistant_turn": 1,
    "overlong": 1,
}


def run_import(base: Path, name: str, *overrides: str) -> Path:
    from ray_jobs.synthesize import run

    cfg = load_config(None, [f"run.storage_path={base}", f"run.name={name}", *SHORT, *overrides])
    run(cfg)
    return base / name / "data"


def rows_of(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]


def good_input_rows(path: Path, key: str, role_key: str, content_key: str, roles: dict) -> dict[str, list]:
    """The fixture rows a human marked good (id contains 'good', or no id), roles mapped by hand."""
    out = {}
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if "good" in row.get("id", "good"):
            msgs = [{"role": roles[t[role_key]], "content": t[content_key]} for t in row[key]]
            out[row.get("id")] = msgs
    return out


@pytest.fixture(scope="module")
def messages_runs(ray_local, tmp_path_factory):
    base = tmp_path_factory.mktemp("chat")
    src = ["data.source.kind=chat", f"data.source.path={FIX / 'messages.jsonl'}", "data.samples_per_shard=2"]
    one = run_import(base, "w1", *src, "data.num_workers=1")
    two = run_import(base, "w2", *src, "data.num_workers=2")
    return one, two


def test_messages_quarantine_counts_every_reason_once(messages_runs):
    out, _ = messages_runs
    stats = json.loads((out / "stats.json").read_text())
    assert stats["quarantined"] == ALL_REASONS
    assert stats["sources"]["chat"]["format"] == "messages"
    assert stats["sources"]["chat"]["rows_read"] == 10
    bad = [json.loads(line) for line in (out / "quarantine" / "rows.jsonl").read_text().splitlines()]
    assert sorted(b["reason"] for b in bad) == sorted(ALL_REASONS)
    by_reason = {b["reason"]: b for b in bad}
    assert "m-unknown-role" in by_reason["unknown_role"]["raw"]
    assert by_reason["bad_json"]["location"] == "messages.jsonl:4"
    assert "\\xe9" in by_reason["bad_encoding"]["raw"]  # the undecodable byte, kept visibly


def test_messages_rows_equal_the_good_input_rows(messages_runs):
    out, _ = messages_runs
    rows = rows_of(out / "train")
    roles = {"system": "system", "user": "user", "assistant": "assistant"}
    expected = good_input_rows(FIX / "messages.jsonl", "messages", "role", "content", roles)
    assert [r["messages"] for r in rows] == list(expected.values())
    assert rows[0]["id"] == "m-good-1" and rows[1]["id"] == "m-good-2"
    assert rows[2]["id"].startswith("chat-")  # no id in the row: a hash of the conversation
    assert [r["lang"] for r in rows] == ["en", "en", "zh"]
    for r in rows:  # QA-only columns empty, the raw-text columns unset
        assert r["source"] == "chat" and r["n_docs"] == 0 and r["gold_positions"] == []
        assert r["answer_style"] is None and r["meta"] is None and r["input_ids"] is None
        assert 0 < r["n_tokens"] <= 256


def test_same_parquet_bytes_with_one_and_two_workers(messages_runs):
    one, two = messages_runs
    files = sorted(p.name for p in (one / "train").glob("*.parquet"))
    assert files == ["part-00000.parquet", "part-00001.parquet"]
    for name in files:
        assert (one / "train" / name).read_bytes() == (two / "train" / name).read_bytes()


def test_sharegpt_roles_normalised_and_reasons_counted(ray_local, tmp_path):
    out = run_import(tmp_path, "sg", "data.source.kind=chat", f"data.source.path={FIX / 'sharegpt.jsonl'}")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["quarantined"] == ALL_REASONS
    assert stats["sources"]["chat"]["format"] == "sharegpt"
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    expected = good_input_rows(FIX / "sharegpt.jsonl", "conversations", "from", "value", roles)
    rows = rows_of(out / "train")
    assert {r["id"]: r["messages"] for r in rows} == expected


def test_prompt_response_columns_through_field_map(ray_local, tmp_path):
    fm = "{prompt: instruction, query: input, response: output, system: sys}"
    out = run_import(
        tmp_path,
        "alp",
        "data.source.kind=chat",
        f"data.source.path={FIX / 'alpaca.jsonl'}",
        f"data.source.field_map={fm}",
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sources"]["chat"]["format"] == "prompt_response"
    assert stats["quarantined"] == {"bad_content": 2, "bad_json": 1}
    rows = rows_of(out / "train")
    assert [r["messages"] for r in rows] == [
        [
            {"role": "system", "content": "You do arithmetic."},
            {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
            {"role": "assistant", "content": "5"},
        ],
        [{"role": "user", "content": "Give an antonym of 'hot'."}, {"role": "assistant", "content": "Cold."}],
    ]


def test_parquet_folder_and_datasets_path_read_the_same_rows(ray_local, tmp_path):
    good = [
        json.loads(line) for line in (FIX / "sharegpt.jsonl").read_text("utf-8", "replace").splitlines()[:2]
    ]
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(good[:1]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist(good[1:]), folder / "b.parquet")
    out = run_import(tmp_path, "pq", "data.source.kind=chat", f"data.source.path={folder}")
    via_parquet = rows_of(out / "train")
    assert [r["id"] for r in via_parquet] == ["s-good-1", "s-good-2"]
    # a `datasets` folder (save_to_disk), read through `datasets` in row ranges
    import datasets

    datasets.Dataset.from_list(good).save_to_disk(str(tmp_path / "hf"))
    out = run_import(tmp_path, "hf", "data.source.kind=chat", f"data.source.path={tmp_path / 'hf'}")
    assert [r["messages"] for r in rows_of(out / "train")] == [r["messages"] for r in via_parquet]
    assert json.loads((out / "stats.json").read_text())["sources"]["chat"]["rows_read"] == 2


def test_labels_on_assistant_tokens_only_golden(messages_runs, tiny_model_dir):
    """The imported row's labelled tokens are exactly the two replies and their end-of-turn tokens."""
    from longctx_core.data.chat import IGNORE_INDEX, labelled_text
    from longctx_core.train.packing import TokenizePack

    out, _ = messages_runs
    row = next(r for r in rows_of(out / "train") if r["id"] == "m-good-2")
    packer = TokenizePack(str(tiny_model_dir), 256, packing=True, overlong="error", seed=0)
    sample, _ = packer.tokenize(row["id"], row["messages"])
    from longctx_core.data.chat import tokenize_chat

    chat = tokenize_chat(packer.tokenizer, row["messages"])
    assert labelled_text(packer.tokenizer, chat) == ["Seven.<|im_end|>", "Eleven.<|im_end|>"]
    assert sample.labels == chat.labels and len(sample) == row["n_tokens"]
    n_labelled = sum(1 for x in sample.labels if x != IGNORE_INDEX)
    assert n_labelled == len(packer.tokenizer("Seven.<|im_end|>Eleven.<|im_end|>")["input_ids"])


# ---- units and config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("turns", "fmt", "reason"),
    [
        ([("user", "q"), ("assistant", "a"), ("assistant", "b")], "messages", "role_order"),
        ([("user", "q"), ("assistant", "a"), ("user", "again")], "messages", "role_order"),
        ([("user", "q"), ("system", "late"), ("assistant", "a")], "messages", "role_order"),
        ([("human", "q"), ("gpt", "a")], "messages", "unknown_role"),  # sharegpt roles in a messages row
        ([("user", "q"), ("assistant", None)], "messages", "bad_content"),
        ([], "sharegpt", "no_assistant_turn"),
    ],
)
def test_rule_violations_name_their_reason(turns, fmt, reason):
    with pytest.raises(BadRow) as err:
        normalise(turns, fmt)
    assert err.value.reason == reason


MSG = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
PR = {"prompt": "instruction", "response": "output"}


@pytest.mark.parametrize(
    ("raw", "fmt", "field_map", "reason", "detail"),
    [
        (b"[1, 2]", "messages", {}, "bad_type", "row is list, expected an object"),
        (b'"just text"', "messages", {}, "bad_type", "row is str, expected an object"),
        (b"42", "sharegpt", {}, "bad_type", "row is int, expected an object"),
        ({"messages": "hello"}, "messages", {}, "bad_type", "'messages' is not a list of objects"),
        ({"messages": [MSG[0], "a"]}, "messages", {}, "bad_type", "'messages' is not a list of objects"),
        (
            {"conversations": {"from": "human"}},
            "sharegpt",
            {},
            "bad_type",
            "'conversations' is not a list of objects",
        ),
        (
            {"dialog": "hi"},
            "messages",
            {"messages": "dialog"},
            "bad_type",
            "'dialog' is not a list of objects",
        ),
        ({"text": "no conversation"}, "messages", {}, "missing_field", "'messages'"),
        ({"messages": MSG}, "messages", {"messages": "dialog"}, "missing_field", "'dialog'"),
        ({"id": "x"}, "sharegpt", {}, "missing_field", "'conversations'"),
        ({"instruction": "q"}, "prompt_response", PR, "missing_field", "'instruction' and 'output' columns"),
        ({"output": "a"}, "prompt_response", PR, "missing_field", "'instruction' and 'output' columns"),
    ],
    ids=[
        "list-row",
        "string-row",
        "number-row",
        "conversation-a-string",
        "turn-not-an-object",
        "sharegpt-a-mapping",
        "renamed-column-a-string",
        "no-messages",
        "renamed-column-absent",
        "no-conversations",
        "no-response",
        "no-prompt",
    ],
)
def test_bad_type_and_missing_field_rows_are_quarantined_with_their_reason(
    raw, fmt, field_map, reason, detail
):
    """The two structural reasons, from the parser to the quarantine record the stage's actors write
    (`import_pipeline.process_row`: the row never reaches the tokenizer, so none is needed here)."""
    from data_gen.chat_import import parse_raw
    from data_gen.importing import ImportSettings, process_row

    with pytest.raises(BadRow) as err:
        chat_row(parse_raw(raw), fmt, field_map, "mine")
    assert (err.value.reason, err.value.detail) == (reason, detail)
    encoded = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    out = process_row(None, ImportSettings("chat", "mine", fmt, field_map), "f.jsonl:1", encoded, False)
    assert out["record"] is None and out["n_tokens"] == 0
    assert json.loads(out["error"]) == {"reason": reason, "detail": detail}


def test_content_is_kept_byte_for_byte():
    row = {"conversations": [{"from": "human", "value": "  hi \n"}, {"from": "gpt", "value": "yo\n\n"}]}
    got = chat_row(row, "sharegpt", {}, "x")
    assert got["messages"] == [
        {"role": "user", "content": "  hi \n"},
        {"role": "assistant", "content": "yo\n\n"},
    ]


def test_sniffing_skips_bad_lines_and_says_what_it_saw():
    lines = [b"not json", json.dumps({"conversations": []}).encode()]
    assert sniff_format(lines, {}) == "sharegpt"
    assert sniff_format([{"dialog": [{"role": "user"}]}], {"messages": "dialog"}) == "messages"
    with pytest.raises(ValueError, match="columns seen: answer, question"):
        sniff_format([{"question": "q", "answer": "a"}], {})


def test_auto_format_is_logged(caplog, tmp_path):
    from data_gen.importing.reading import read_units, resolve_format

    cfg = load_config(None, ["data.source.kind=chat", f"data.source.path={FIX / 'sharegpt.jsonl'}"])
    with caplog.at_level(logging.INFO, logger="data_gen.importing.reading"):
        assert resolve_format(cfg.data.source, read_units(cfg.data.source)) == "sharegpt"
    assert "reads as 'sharegpt'" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.source.kind=chat", "data.source.path=x", "data.source.format=alpaca"], "data.source.format"),
        (
            ["data.source.kind=chat", "data.source.path=x", "data.source.field_map={question: q}"],
            "data.source.field_map.question: unknown field for kind=chat",
        ),
        (
            ["data.source.kind=chat", "data.source.path=x", "data.source.field_map={prompt: q}"],
            "need both 'prompt' and 'response'",
        ),
        (
            [
                "data.mix=[{share: 0.6, source: {kind: chat, path: a}}, {share: 0.5, source: {kind: text, path: b}}]"
            ],
            "data.mix: shares sum to 1.1",
        ),
        (
            ["data.mix=[{share: 0.2, source: {kind: squad, path: a}}]"],
            "data.mix.0.source.kind: only chat and text",
        ),
        (
            ["data.mix=[{share: 0.2, name: builtin, source: {kind: chat, path: a}}]"],
            "'builtin' is used twice",
        ),
        (["pretrain.enabled=true", "pretrain.source={kind: chat, path: a}"], "pretrain.source.kind"),
        (
            [
                "pretrain.enabled=true",
                "pretrain.source={kind: text, path: a}",
                "data.source.kind=text",
                "data.source.path=b",
            ],
            "data.source.kind: the SFT stage after pretrain",
        ),
    ],
)
def test_config_errors_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unreadable_source_fails_before_ray(tmp_path, capsys):
    from ray_jobs.synthesize import main

    bad = tmp_path / "cols.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    args = [f"run.storage_path={tmp_path}", "data.source.kind=chat", f"data.source.path={bad}"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot tell the chat format" in err[0]


# ---- data.max_bad_fraction: one rule per source, the same as synthesis ----------------------------------


def _import_in_process(base: Path, *overrides: str) -> Path:
    from data_gen.importing import import_data

    cfg = load_config(None, [f"run.storage_path={base}", "run.name=bad", "train.max_seq_len=256", *overrides])
    import_data(cfg, base / "bad", in_process=True)
    return base / "bad" / "data"


def test_a_bad_source_fails_after_writing_quarantine_and_stats(tmp_path, tiny_model_dir):
    src = ["data.source.kind=chat", f"data.source.path={FIX / 'messages.jsonl'}"]
    with pytest.raises(LongctxError) as exc:
        _import_in_process(tmp_path, *src)
    msg = str(exc.value)
    assert "\n" not in msg and "data source 'chat'" in msg and "> data.max_bad_fraction 5.0%" in msg
    assert "source rows 6/10" in msg and "overlong" not in msg  # too long for the window: not bad data
    out = tmp_path / "bad" / "data"
    bad = json.loads((out / "stats.json").read_text())["bad"]
    assert bad["max_bad_fraction"] == 0.05 and bad["fraction"] == 0.6
    assert bad["sources"]["chat"]["rows"] == {"bad": 6, "of": 10}
    assert bad["sources"]["chat"]["samples"] == {"bad": 0, "of": 3}
    assert bad["sources"]["chat"]["not_counted"] == {"overlong": 1}
    assert len((out / "quarantine" / "rows.jsonl").read_text().splitlines()) == 7
    _import_in_process(tmp_path, *src, "data.max_bad_fraction=0.6")  # the same data passes a looser limit


def test_a_small_bad_source_is_not_hidden_by_a_big_clean_one(tmp_path, tiny_model_dir):
    main = tmp_path / "main.jsonl"
    turns = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]
    main.write_text("".join(json.dumps({"id": f"m{i}", "messages": turns}) + "\n" for i in range(200)))
    mix = f"[{{name: few, share: 0.1, source: {{kind: chat, path: {FIX / 'messages.jsonl'}}}}}]"
    with pytest.raises(LongctxError) as exc:
        _import_in_process(tmp_path, "data.source.kind=chat", f"data.source.path={main}", f"data.mix={mix}")
    assert "data source 'few'" in str(exc.value)  # 6 bad of 210 rows pooled would pass the 5% limit
    bad = json.loads((tmp_path / "bad" / "data" / "stats.json").read_text())["bad"]
    assert bad["sources"]["chat"]["fraction"] == 0.0 and bad["sources"]["few"]["rows"]["bad"] == 6
