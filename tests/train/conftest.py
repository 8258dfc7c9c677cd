"""Fixtures for the training tests: a small tiny-Qwen2 checkpoint with its own tokenizer corpus, a folder of
sample-row Parquet written here (the data stage's columns), and a config builder for short CPU runs.

The samples are multi-document QA chats in the project's format (documents in the user turn, an answer that
quotes its evidence sentence, sometimes a second turn), built from a fixed template world so the tests do
not depend on the synthesis code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from longctx_core.config import TinyModelConfig, config_from_dict

NAMES = ["Alma Vesk", "Tor Elin", "Mira Sand", "Oskar Bray", "Lena Holt", "Ivo Marsh", "林小雨", "王大山"]
CITIES = ["Orlen", "Kessa", "Dravik", "Tessel", "青石镇", "白沙城"]
JOBS = ["cartographer", "baker", "pilot", "doctor", "医生", "教师"]

# Own tokenizer corpus: the fixed template world below, so every sample tokenises compactly.
TEXTS = [
    f"Document {i}: {n} lives in {c} and works as a {j} since {1900 + i}. The river floods every spring. "
    f'{n}住在{c}，是一名{j}。Question: where does {n} live? Answer: "{n} lives in {c}", so {c}.'
    for i, (n, c, j) in enumerate(
        (NAMES[k % len(NAMES)], CITIES[k % len(CITIES)], JOBS[k % len(JOBS)]) for k in range(240)
    )
]
SMALL = TinyModelConfig(
    vocab_size=600,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=512,
)
MAX_SEQ_LEN = 512


def make_sample(i: int, rng: random.Random) -> dict:
    """One sample row with the contract columns: 1-4 documents, 1-2 QA turns, a quoting answer."""
    n_docs = rng.randint(1, 4)
    people = rng.sample(range(len(NAMES)), n_docs)
    docs = []
    for k, p in enumerate(people):
        city, job = CITIES[(p + i) % len(CITIES)], JOBS[(p * 3 + i) % len(JOBS)]
        docs.append((NAMES[p], city, f"Document [{k + 1}] {NAMES[p]} lives in {city} and works as a {job}."))
    gold = rng.randrange(n_docs)
    name, city, sentence = docs[gold]
    evidence = sentence.split("] ", 1)[1]
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "\n".join(d[2] for d in docs) + f"\nQuestion: where does {name} live?"},
        {"role": "assistant", "content": f'The document says "{evidence}" So the answer is {city}.'},
    ]
    if rng.random() < 0.4:
        messages += [
            {"role": "user", "content": f"Question: who lives in {city}?"},
            {"role": "assistant", "content": f'"{evidence}" So it is {name}.'},
        ]
    return {
        "id": f"s{i:04d}",
        "messages": messages,
        "n_tokens": 0,  # filled in by write_samples with the real tokenizer
        "n_docs": n_docs,
        "gold_positions": [gold],
        "answer_style": "paraphrase",
        "source": "test",
        "lang": "zh" if any(ord(ch) > 0x3000 for ch in name) else "en",
    }


def write_samples(folder: Path, tokenizer, n: int, seed: int = 0, per_file: int = 24) -> Path:
    """Write `n` sample rows as Parquet shards under `folder` (n_tokens counted with `tokenizer`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    rows = [make_sample(i, rng) for i in range(n)]
    for r in rows:
        text = tokenizer.apply_chat_template(r["messages"], tokenize=False)
        r["n_tokens"] = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    folder.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, n, per_file)):
        pq.write_table(pa.Table.from_pylist(rows[start : start + per_file]), folder / f"part-{k:05d}.parquet")
    return folder


@pytest.fixture(scope="session")
def train_model_dir(tmp_path_factory) -> Path:
    from longctx_core.model.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(SMALL, tmp_path_factory.getbasetemp() / "train-tiny", TEXTS)


@pytest.fixture(scope="session")
def train_tokenizer(train_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(train_model_dir)


@pytest.fixture(scope="session")
def train_data_dir(tmp_path_factory, train_tokenizer) -> Path:
    """96 sample rows in 4 Parquet shards."""
    return write_samples(tmp_path_factory.mktemp("train-data"), train_tokenizer, 96)


@pytest.fixture(scope="session")
def make_train_cfg(train_model_dir, train_data_dir):
    """Build a validated Config for a short CPU run: make_train_cfg(tmp_path, **{"train.zero_stage": 3})."""

    def build(storage: Path, name: str = "t", **overrides: Any):
        tree: dict[str, Any] = {
            "run": {"name": name, "storage_path": str(storage), "seed": 0},
            "model": {
                "name_or_path": str(train_model_dir),
                "torch_dtype": "float32",
                "attn_implementation": "sdpa",
                "gradient_checkpointing": False,
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
            },
            "data": {"target_tokens": [256]},  # the data stage's targets must fit max_seq_len
            "train": {
                "num_workers": 2,
                "data_path": str(train_data_dir),
                "max_seq_len": MAX_SEQ_LEN,
                "max_steps": 6,
                "lr": 5e-3,
                "lr_schedule": "constant",
                "pack_window": 32,
                "checkpoint_every": 3,
                "max_failures": 0,
            },
        }
        for dotted, value in overrides.items():
            node = tree
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return config_from_dict(tree)

    return build
