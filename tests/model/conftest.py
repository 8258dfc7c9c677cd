"""Fixtures for the model tests: a small tiny-Qwen2 checkpoint (head_dim 32, original context 128) that
loads through the same local-folder path as a real checkpoint, and a `model:` config builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from longctx_core.config import ModelConfig, TinyModelConfig

# Own tokenizer corpus: these tests do not depend on the built-in synthetic corpus.
TEXTS = [
    f"Document {i}: Alma Vesk lives in Orlen and works as a cartographer since {1900 + i}. "
    "林小雨住在青石镇，是一名医生。The river Tessel floods every spring."
    for i in range(200)
]
# Smaller than the default tiny model for speed, but head_dim 32 (16 RoPE frequencies) so every YaRN
# region (extrapolated, ramped, interpolated) has several dimensions.
SMALL = TinyModelConfig(
    vocab_size=600,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=128,
)


@pytest.fixture(scope="session")
def small_tiny() -> TinyModelConfig:
    """The small tiny-model shape (original context 128)."""
    return SMALL


@pytest.fixture(scope="session")
def tiny_texts() -> list[str]:
    return TEXTS


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory) -> Path:
    from longctx_core.model.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(SMALL, tmp_path_factory.getbasetemp() / "model-tiny", TEXTS)


@pytest.fixture(scope="session")
def make_cfg(small_dir):
    """Build a validated `ModelConfig` for the small checkpoint folder: make_cfg(rope={...}, lora={...})."""

    def build(**sections: Any) -> ModelConfig:
        tree: dict[str, Any] = {
            "name_or_path": str(small_dir),
            "torch_dtype": "float32",
            "attn_implementation": "sdpa",
        }
        tree.update(sections)
        return ModelConfig.model_validate(tree)

    return build
