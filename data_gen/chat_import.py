"""Chat data users bring: read raw rows, sniff the format, normalise roles, validate each row.

    fmt = sniff_format(first_rows, field_map)              # 'messages' | 'sharegpt' | 'prompt_response'
    row = chat_row(parse_raw(raw), fmt, field_map, "mine")  # {id, messages, lang, source} or raises BadRow

Formats (what LLaMA-Factory, axolotl and torchtune call openai / sharegpt / alpaca):

    messages          {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}
    sharegpt          {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}]}
                      ("user"/"assistant" are accepted as `from` too: many ShareGPT dumps mix them)
    prompt_response   {"instruction": "...", "input": "...", "output": "..."} through data.source.field_map:
                      {prompt: instruction, query: input, response: output, system: ...}; a non-empty query
                      is appended to the prompt after a blank line (the alpaca convention)

`field_map` can also rename the conversation column ({messages: dialog} or {conversations: turns}) and name
the `id` and `lang` columns. A normalised conversation is an optional system turn first, then user and
assistant turns alternating, starting with user and ending with assistant. Nothing is repaired silently: a
row that breaks a rule is quarantined with its reason (the keys counted in stats.json):

    bad_encoding       the line is not UTF-8
    bad_json           the line is not JSON
    bad_type           the row is not an object, or the conversation is not a list of objects
    missing_field      no conversation column (or no prompt/response column)
    unknown_role       a role outside the format's set (tool and function turns included)
    bad_content        a turn's content is not a string, or is empty or whitespace only
    no_assistant_turn  nothing to train on (labels are on assistant turns only)
    role_order         system not first, two turns of one role in a row, a first turn that is not user,
                       or a last turn that is not assistant
    overlong           more tokens than train.max_seq_len with train.overlong=error (checked after
                       tokenising, in `data_gen.importing.rows`)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any

from longctx_core.data.sources import BadRow
from longctx_core.data.text import detect_lang

logger = logging.getLogger(__name__)

FORMATS = ("messages", "sharegpt", "prompt_response")
# Accepted role names per format -> the normalised role.
ROLE_MAPS = {
    "messages": {"system": "system", "user": "user", "assistant": "assistant"},
    "sharegpt": {
        "system": "system",
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
    },
}
# Per format: (default conversation column, role key, content key).
_TURN_KEYS = {"messages": ("messages", "role", "content"), "sharegpt": ("conversations", "from", "value")}
SNIFF_ROWS = 20  # rows looked at by `sniff_format`: enough to skip a few bad lines at a file's start


def parse_raw(raw: bytes | str | dict) -> dict:
    """A raw row (bytes of a JSON line, a JSON string, or an already parsed object) as a dict; raises
    BadRow bad_encoding / bad_json / bad_type."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRow("bad_encoding", f"{exc.reason} at byte {exc.start}") from None
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRow("bad_json", f"{exc.msg} at column {exc.colno}") from None
    if not isinstance(row, dict):
        raise BadRow("bad_type", f"row is {type(row).__name__}, expected an object")
    return row


def column(field_map: dict[str, str], field: str) -> str:
    """The user's column for `field` (`field_map`, else the field's own name)."""
    return field_map.get(field, field)


def sniff_format(rows: Iterable[Any], field_map: dict[str, str]) -> str:
    """The format of a source from its first rows: the first parseable object with a conversation column
    decides; raises ValueError naming the columns seen when none matches."""
    seen: set[str] = set()
    for i, raw in enumerate(rows):
        if i >= SNIFF_ROWS:
            break
        try:
            row = parse_raw(raw)
        except BadRow:
            continue
        seen.update(row)
        if column(field_map, "messages") in row and isinstance(row[column(field_map, "messages")], list):
            return "messages"
        if column(field_map, "conversations") in row:
            return "sharegpt"
        if column(field_map, "prompt") in row and column(field_map, "response") in row:
            return "prompt_response"
    cols = ", ".join(sorted(seen)[:12]) or "none"
    raise ValueError(
        "cannot tell the chat format: no 'messages' or 'conversations' list and no prompt/response "
        f"columns (columns seen: {cols}); set data.source.format or data.source.field_map"
    )


def _turns(row: dict, fmt: str, field_map: dict[str, str]) -> list[tuple[Any, Any]]:
    """The (role, content) pairs of a row as written (not yet validated)."""
    if fmt == "prompt_response":
        p, r = column(field_map, "prompt"), column(field_map, "response")
        if p not in row or r not in row:
            raise BadRow("missing_field", f"{p!r} and {r!r} columns")
        prompt, query = row[p], row.get(column(field_map, "query"))
        if isinstance(prompt, str) and isinstance(query, str) and query.strip():
            prompt = f"{prompt}\n\n{query}"
        system = row.get(column(field_map, "system"))
        turns = [("system", system)] if system not in (None, "") else []
        return turns + [("user", prompt), ("assistant", row[r])]
    default, role_key, content_key = _TURN_KEYS[fmt]
    col = column(field_map, default)
    conv = row.get(col)
    if conv is None:
        raise BadRow("missing_field", f"{col!r}")
    if not isinstance(conv, list) or not all(isinstance(t, dict) for t in conv):
        raise BadRow("bad_type", f"{col!r} is not a list of objects")
    return [(t.get(role_key), t.get(content_key)) for t in conv]


def normalise(turns: list[tuple[Any, Any]], fmt: str) -> list[dict[str, str]]:
    """Validated `[{role, content}]` with roles mapped to system/user/assistant; raises BadRow with the
    quarantine reason (module docstring) of the first rule broken. Content is kept byte for byte."""
    roles = ROLE_MAPS.get(fmt, ROLE_MAPS["messages"])
    out = []
    for i, (role, content) in enumerate(turns):
        if role not in roles:
            raise BadRow("unknown_role", f"turn {i}: {role!r} (expected one of {', '.join(roles)})")
        if not isinstance(content, str):
            raise BadRow("bad_content", f"turn {i}: content is {type(content).__name__}, not a string")
        if not content.strip():
            raise BadRow("bad_content", f"turn {i}: empty content")
        out.append({"role": roles[role], "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise BadRow("no_assistant_turn", f"roles {[m['role'] for m in out]}")
    body = out[1:] if out[0]["role"] == "system" else out
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    got = [m["role"] for m in body]
    if got != expected[: len(got)] or got[-1] != "assistant":
        raise BadRow("role_order", f"roles {[m['role'] for m in out]}")
    return out


def conversation_id(source: str, messages: list[dict[str, str]]) -> str:
    """A stable id for rows without one: the source label and a hash of the conversation."""
    blob = json.dumps(messages, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return f"{source}-{hashlib.sha1(blob).hexdigest()[:16]}"


def chat_row(row: dict, fmt: str, field_map: dict[str, str], source: str, lang: str | None = None) -> dict:
    """One user row as {id, messages, lang, source}; raises BadRow (see the module docstring)."""
    messages = normalise(_turns(row, fmt, field_map), fmt)
    rid = row.get(column(field_map, "id"))
    row_lang = row.get(column(field_map, "lang"))
    if lang is None:
        lang = (
            row_lang
            if row_lang in ("en", "zh")
            else detect_lang(" ".join(m["content"] for m in messages)[:4000])
        )
    return {
        "id": str(rid) if rid not in (None, "") else conversation_id(source, messages),
        "messages": messages,
        "lang": lang,
        "source": source,
    }
