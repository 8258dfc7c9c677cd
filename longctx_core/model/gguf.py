"""GGUF checkpoints in: a `.gguf` file (llama.cpp's format) dequantised once into a cached Hugging Face folder.

    check_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")           # 'llama'; LongctxError (one line) if unusable
    folder = ensure_gguf_folder("SmolLM2-135M-Instruct.Q4_1.gguf")   # converts the first time, then cached
    AutoModelForCausalLM.from_pretrained(folder)           # plain float32 weights, no gguf package needed

The cache, under `longctx_core.fsio.default_cache_dir()` ($LONGCTX_CACHE_DIR or ~/.cache/longctx):

    <cache>/gguf/<first 16 hex of the file's sha256>/   config.json (dtype float32), generation_config.json,
                                                        model.safetensors, tokenizer.json, tokenizer_config.json,
                                                        chat_template.jinja, longctx_gguf.json (provenance)
    <cache>/gguf/hashes.json                            sha256 of each file seen, by (path, size, mtime, inode)

The folder is named by the file's content: the same file under two paths converts once, a changed file gets
a folder of its own. It is written through `fsio.staged_dir`, so a crash leaves no half folder and two
processes converting at once (two Ray workers on one node) both end with the same complete folder.
transformers reads the GGUF (`from_pretrained(..., gguf_file=...)`, which needs the `gguf` package); its
loaded model refuses `save_pretrained`, so the weights are copied into a fresh model built from its config.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from longctx_core.errors import LongctxError, error_line
from longctx_core.fsio import recover, staged_dir

logger = logging.getLogger(__name__)

KEY = "model.name_or_path"  # the config key every error here names
MARKER = "longctx_gguf.json"  # written last into a converted folder: where it came from
_HASHES = "hashes.json"
# What gguf's reader raises on a file that is not GGUF, is cut short or has garbage in its header (seen on
# truncated and byte-flipped copies of a real file: ValueError, IndexError, UnicodeDecodeError).
_PARSE_ERRORS = (ValueError, IndexError, OverflowError)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else the project's cache folder ($LONGCTX_CACHE_DIR or ~/.cache/longctx)."""
    from longctx_core.fsio import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _gguf_file(gguf_path: str | Path) -> Path:
    """The absolute path of an existing file; LongctxError naming the key when there is none."""
    path = Path(gguf_path).expanduser()
    if not path.is_file():
        raise LongctxError(f"{KEY}: no GGUF file at '{path}'")
    return path.resolve()


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gguf_sha256(gguf_path: str | Path, cache_dir: str | Path | None = None) -> str:
    """The sha256 of the file at `gguf_path`, remembered in <cache>/gguf/hashes.json by (path, size, mtime,
    inode); returns the hex digest.

    Remembered because `resolve_model_path` runs several times in each process (config check, tokenizer,
    weights) and in every Ray worker, and a real GGUF is gigabytes (hashing reads all of it). A file
    rewritten in place gets a new mtime, a replaced one a new inode, so either is hashed again. Two processes
    writing the record at once may drop one entry: that file is hashed again next time, nothing worse.
    """
    path = _gguf_file(gguf_path)
    record = cache_root(cache_dir) / "gguf" / _HASHES
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(path))
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp and entry.get("sha256"):
        return entry["sha256"]
    sha = file_sha256(path)
    known = {p: e for p, e in known.items() if Path(p).is_file()}  # forget files that are gone
    known[str(path)] = {**stamp, "sha256": sha}
    record.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=f".{_HASHES}.")
    with os.fdopen(fd, "w") as f:
        json.dump(known, f, indent=1, sort_keys=True)
    os.replace(tmp, record)  # readers see the old record or the new one, never a half-written file
    return sha


def gguf_folder(sha256: str, cache_dir: str | Path | None = None) -> Path:
    """Where the converted folder of a GGUF with this content lives (it may not exist yet), recovered from an
    interrupted replacement (`fsio.recover`) so that a complete folder is at this path if one exists."""
    return recover(cache_root(cache_dir) / "gguf" / sha256[:16])


def is_converted(folder: Path) -> bool:
    """Whether `folder` holds a finished conversion (the marker is written last)."""
    return all((folder / name).is_file() for name in (MARKER, "config.json", "model.safetensors"))


def _supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    # The list is the keys of transformers' metadata mapping, which also has two non-architecture sections.
    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]


def _loader_supports(architecture: str, supported: list[str]) -> bool:
    """transformers' own test (`load_gguf_checkpoint`), after the renames it applies first: qwen2moe ->
    qwen2_moe, qwen3moe -> qwen3_moe, gpt-oss -> gpt_oss, minimax-m2 -> minimax_m2, t5encoder -> t5."""
    names = {architecture, architecture.replace("-", "_"), architecture.replace("moe", "_moe")}
    if "t5" in architecture:
        names.add("t5")
    return bool(names & set(supported))


def check_gguf(gguf_path: str | Path) -> str:
    """Validate a GGUF file without converting it; returns its architecture (e.g. 'llama').

    Raises LongctxError, one line naming `model.name_or_path` and the file, for a missing file, one the gguf
    reader cannot parse (not GGUF, truncated, corrupt header) and an architecture transformers' GGUF loader
    does not support. Reads the metadata and the tensor index, no weights: a small fraction of a conversion
    (what takes longest is the tokenizer's arrays in the metadata).
    """
    from gguf import GGUFReader

    path = _gguf_file(gguf_path)
    try:
        # Maps the file and places every tensor in it: a file cut short fails here, not midway through loading.
        reader = GGUFReader(path)
    except _PARSE_ERRORS as exc:
        raise LongctxError(
            f"{KEY}: '{path}' is not a readable GGUF file (truncated or corrupt: {error_line(exc)})"
        ) from None
    except OSError as exc:
        raise LongctxError(f"{KEY}: cannot read '{path}': {error_line(exc)}") from None
    field = reader.get_field("general.architecture")
    architecture = field.contents() if field is not None else None
    if not isinstance(architecture, str) or not reader.tensors:
        raise LongctxError(f"{KEY}: '{path}' is a GGUF file without a model (no architecture or no tensors)")
    supported = _supported_architectures()
    if not _loader_supports(architecture, supported):
        raise LongctxError(
            f"{KEY}: '{path}' holds a '{architecture}' model, which transformers' GGUF loader does not "
            f"support (it reads: {', '.join(supported)})"
        )
    return architecture


def _convert(path: Path, sha256: str, out: Path) -> None:
    """Dequantise the GGUF at `path` to float32 and write a Hugging Face folder (weights, config, generation
    config, tokenizer with its chat template) into the empty folder `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise LongctxError(f"{KEY}: transformers cannot load '{path}': {error_line(exc)}") from None
    config = copy.deepcopy(loaded.config)
    # The GgufConfig that marks the weights "quantized with gguf" is what makes save_pretrained refuse them;
    # they are already dequantised.
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # load_state_dict copies values into the fresh parameters, so a tied lm_head stays the embedding's tensor
    # (and save_pretrained writes it once, as tie_word_embeddings expects).
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(loaded.generation_config)
    del loaded
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)  # tokenizer.json, and the GGUF's chat template as chat_template.jinja
    (out / MARKER).write_text(json.dumps({"source": str(path), "sha256": sha256}, indent=2))


def ensure_gguf_folder(gguf_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The cached Hugging Face folder of the GGUF file at `gguf_path`, converted on first use (`check_gguf`
    first, so a bad file fails in seconds). Later calls hash the file (remembered: `gguf_sha256`) and return
    the folder without loading anything. Raises LongctxError (one line) for a file that cannot be used."""
    path = _gguf_file(gguf_path)
    root = cache_root(cache_dir)
    sha = gguf_sha256(path, root)
    out = gguf_folder(sha, root)
    if is_converted(out):
        return out
    architecture = check_gguf(path)
    logger.info(
        "converting %s (%s GGUF) to a float32 Hugging Face folder at %s, once", path, architecture, out
    )
    started = time.monotonic()
    with staged_dir(out, keep_existing=True) as tmp:
        _convert(path, sha, tmp)
    logger.info("converted %s in %.0f s", path.name, time.monotonic() - started)
    return out
