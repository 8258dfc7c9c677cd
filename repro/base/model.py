"""The toy base's tokenizer corpus and model shape (the library's tiny-model kit builds both)."""

from __future__ import annotations

import logging

from longctx_core.config import TinyModelConfig
from longctx_core.config.model import SHAPE_FIELDS
from longctx_core.eval.contexts import question_key
from repro.base.worlds import training_world_records
from repro.config import ReproConfig, ToyBaseConfig

logger = logging.getLogger(__name__)


def tokenizer_texts(cfg: ReproConfig, excluded: set[str] = frozenset()) -> list[str]:
    """Texts the toy BPE learns from: the records of a few training worlds (minus `excluded` questions)
    rendered as one-document prompts with both answer styles, so names, headers and answer markers become
    whole tokens."""
    from longctx_core.data import styles

    texts = [styles.SYSTEM_PROMPT["en"]]
    for k in range(min(4, cfg.repro.base.worlds)):  # a few worlds: the BPE needs the words, not every fact
        for rec in training_world_records(cfg, k):
            if question_key(rec.question) in excluded:
                continue
            doc = rec.evidence_docs[0]
            quotes = [(1, s) for s in rec.evidence_sentences]
            texts.append(
                "\n".join(
                    [
                        styles.render_first_user([doc], rec.question, "en"),
                        styles.render_answer("paraphrase", "en", rec.answers[0], quotes),
                        styles.render_answer("plain", "en", rec.answers[0]),
                    ]
                )
            )
    return texts


def model_shape(b: ToyBaseConfig) -> TinyModelConfig:
    """The toy base's shape as the tiny-model kit's config (max_position_embeddings = L0)."""
    return TinyModelConfig(
        vocab_size=b.vocab_size,
        **{field: getattr(b, field) for field in SHAPE_FIELDS},
        max_position_embeddings=b.context,
        seed=b.seed,
    )
