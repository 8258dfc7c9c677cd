"""RoPE extension: the model's rotary frequencies and attention scaling against an independent implementation
of the published formulas, config round trips, long-context forwards, and the validation errors.

The reference formulas below are written from the papers, in float64 numpy, sharing no code with
transformers or longctx:
- default RoPE (Su et al. 2021): theta_i = b^(-2i/d), i = 0 .. d/2-1.
- linear / position interpolation (Chen et al. 2023): positions / s, i.e. theta_i / s.
- dynamic NTK (bloc97, emozilla 2023): for a sequence of L > L0 tokens the base becomes
  b' = b * (s*L/L0 - (s-1))^(d/(d-2)); for L <= L0 the original base.
- YaRN (Peng et al. 2023): pair i makes r_i = L0 * theta_i / (2*pi) turns over the original context. Pairs
  turning more than beta_fast times keep theta_i (extrapolation), fewer than beta_slow get theta_i / s
  (interpolation), and a linear ramp blends the two in between. As in the authors' reference code (which
  every implementation follows), the ramp runs over the pair index between the pairs where r_i equals
  beta_fast and beta_slow, floored and ceiled: i(beta) = d * ln(L0 / (2*pi*beta)) / (2 * ln b). The attention
  temperature is sqrt(1/t) = 0.1 * ln(s) + 1, applied to cos and sin.
"""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from longctx_core.config import ConfigError, RopeConfig, load_config
from longctx_core.errors import LongctxError
from longctx_core.model.loading import check_model_config, load_model, resolve_model_path
from longctx_core.model.rope import apply_rope_extension, current_rope, max_context, rope_parameters

ORIGINAL = 128  # the small checkpoint's original context (conftest.SMALL)
HEAD_DIM = 32  # the small checkpoint's head_dim (conftest.SMALL: hidden 64 / 2 heads)
BASE = 10000.0


# ---- independent reference formulas (float64) --------------------------------------------------------------


def ref_default(d: int, base: float) -> np.ndarray:
    return base ** (-np.arange(0, d, 2, dtype=np.float64) / d)


def ref_linear(d: int, base: float, s: float) -> np.ndarray:
    return ref_default(d, base) / s


def ref_dynamic(d: int, base: float, s: float, seq_len: int, original: int) -> np.ndarray:
    if seq_len <= original:
        return ref_default(d, base)
    new_base = base * (s * seq_len / original - (s - 1)) ** (d / (d - 2))
    return ref_default(d, new_base)


def ref_yarn(
    d: int, base: float, s: float, original: int, beta_fast: float = 32, beta_slow: float = 1
) -> tuple[np.ndarray, float]:
    theta = ref_default(d, base)

    def pair_where_turns_equal(beta: float) -> float:
        return d * math.log(original / (2 * math.pi * beta)) / (2 * math.log(base))

    low = max(math.floor(pair_where_turns_equal(beta_fast)), 0)
    high = min(math.ceil(pair_where_turns_equal(beta_slow)), d - 1)
    if high == low:
        high += 0.001
    ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrapolation = 1.0 - ramp
    inv_freq = theta * extrapolation + theta / s * (1.0 - extrapolation)
    mscale = 0.1 * math.log(s) + 1.0 if s > 1 else 1.0
    return inv_freq, mscale


# ---- helpers -----------------------------------------------------------------------------------------------


def rotary(model):
    return model.model.rotary_emb


def assert_inv_freq(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=1e-6, atol=0)


def load_scaled(make_cfg, **rope):
    cfg = make_cfg(rope=rope)
    return load_model(cfg, quantize=False).eval()


# ---- parity ------------------------------------------------------------------------------------------------


def test_linear_matches_position_interpolation(make_cfg):
    model = load_scaled(make_cfg, type="linear", target_max_position_embeddings=4 * ORIGINAL)
    assert model.config.rope_parameters["rope_type"] == "linear"
    assert model.config.rope_parameters["factor"] == 4.0
    assert_inv_freq(rotary(model).inv_freq, ref_linear(HEAD_DIM, BASE, 4.0))
    assert rotary(model).attention_scaling == 1.0
    assert max_context(model.config) == 4 * ORIGINAL


@pytest.mark.parametrize("factor, beta_fast, beta_slow", [(4.0, None, None), (2.5, 16.0, 2.0)])
def test_yarn_matches_paper(make_cfg, factor, beta_fast, beta_slow):
    rope = {"type": "yarn", "factor": factor, "original_max_position_embeddings": ORIGINAL}
    betas = {}
    if beta_fast is not None:
        rope.update(beta_fast=beta_fast, beta_slow=beta_slow)
        betas = {"beta_fast": beta_fast, "beta_slow": beta_slow}
    model = load_scaled(make_cfg, **rope)
    expected, mscale = ref_yarn(HEAD_DIM, BASE, factor, ORIGINAL, **betas)
    assert_inv_freq(rotary(model).inv_freq, expected)
    assert rotary(model).attention_scaling == pytest.approx(mscale, abs=1e-6)
    # The temperature is really applied: cos/sin come out scaled by it.
    positions = torch.arange(64)[None]
    cos, sin = rotary(model)(torch.zeros(1, 64, 8), positions)
    angles = np.arange(64, dtype=np.float64)[:, None] * np.concatenate([expected, expected])[None]
    np.testing.assert_allclose(cos[0].double().numpy(), mscale * np.cos(angles), atol=1e-5)
    np.testing.assert_allclose(sin[0].double().numpy(), mscale * np.sin(angles), atol=1e-5)
    assert max_context(model.config) == int(factor * ORIGINAL)


def test_dynamic_ntk_matches_formula_before_and_after_a_long_forward(make_cfg):
    model = load_scaled(make_cfg, type="dynamic", factor=4.0)
    assert model.config.max_position_embeddings == ORIGINAL  # dynamic measures growth against it
    assert_inv_freq(rotary(model).inv_freq, ref_default(HEAD_DIM, BASE))  # unchanged up to L0
    long_len = 3 * ORIGINAL + 17
    with torch.no_grad():
        model(torch.randint(3, 500, (1, long_len)))
    assert_inv_freq(rotary(model).inv_freq, ref_dynamic(HEAD_DIM, BASE, 4.0, long_len, ORIGINAL))
    assert rotary(model).attention_scaling == 1.0
    with torch.no_grad():  # back within the original context: the original frequencies return
        model(torch.randint(3, 500, (1, ORIGINAL // 2)))
    assert_inv_freq(rotary(model).inv_freq, ref_default(HEAD_DIM, BASE))


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_yarn_parity_at_real_model_sizes(arch):
    """Qwen2.5-7B / Qwen3 shapes (head_dim 128, base 1e6, 32k native) extended 4x, config only (no weights)."""
    if arch == "qwen2":
        from transformers import Qwen2Config as Cfg
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding as Rotary

        hf_config = Cfg(
            hidden_size=3584,
            num_attention_heads=28,
            num_key_value_heads=4,
            num_hidden_layers=1,
            intermediate_size=64,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        )
    else:
        from transformers import Qwen3Config as Cfg
        from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding as Rotary

        hf_config = Cfg(
            hidden_size=1024,
            head_dim=128,
            num_attention_heads=16,
            num_key_value_heads=8,
            num_hidden_layers=1,
            intermediate_size=64,
            max_position_embeddings=40960,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        )
    rope = RopeConfig(
        type="yarn", target_max_position_embeddings=131072, original_max_position_embeddings=32768
    )
    apply_rope_extension(hf_config, rope)
    assert hf_config.rope_parameters == {
        "rope_type": "yarn",
        "factor": 4.0,
        "rope_theta": 1e6,
        "original_max_position_embeddings": 32768,
    }
    assert hf_config.max_position_embeddings == 32768 and max_context(hf_config) == 131072
    emb = Rotary(hf_config)
    expected, mscale = ref_yarn(128, 1e6, 4.0, 32768)
    assert_inv_freq(emb.inv_freq, expected)
    assert emb.attention_scaling == pytest.approx(mscale, abs=1e-6)
    # Formula-free sanity of the three regions: fast pairs untouched, slow pairs fully interpolated.
    theta = ref_default(128, 1e6)
    turns = 32768 * theta / (2 * math.pi)
    inv = emb.inv_freq.double().numpy()
    assert np.allclose(inv[turns > 32], theta[turns > 32], rtol=1e-6)
    assert np.allclose(inv[turns < 1], theta[turns < 1] / 4, rtol=1e-6)
    assert ((turns >= 1) & (turns <= 32)).sum() >= 4  # a real ramp region exists at this size


# ---- config on record --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn"])
def test_scaled_config_round_trips_through_save_and_from_pretrained(make_cfg, tmp_path, kind):
    rope = {"type": kind, "target_max_position_embeddings": 4 * ORIGINAL}
    if kind == "yarn":
        rope["original_max_position_embeddings"] = ORIGINAL
    cfg = make_cfg(rope=rope)
    hf_config = check_model_config(cfg)
    hf_config.save_pretrained(tmp_path / "cfg")
    again = AutoConfig.from_pretrained(tmp_path / "cfg")
    assert current_rope(again) == current_rope(hf_config)
    assert again.max_position_embeddings == ORIGINAL and max_context(again) == 4 * ORIGINAL

    model = load_model(cfg, quantize=False)
    model.save_pretrained(tmp_path / "model")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # plain transformers, no longctx
    assert current_rope(reloaded.config) == current_rope(hf_config)
    assert torch.equal(rotary(reloaded).inv_freq, rotary(model).inv_freq)
    assert rotary(reloaded).attention_scaling == rotary(model).attention_scaling


def test_legacy_rope_scaling_in_a_checkpoint_is_read(small_dir, make_cfg, tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(small_dir, legacy)
    raw = json.loads((legacy / "config.json").read_text())
    raw.pop("rope_parameters")
    raw["rope_theta"] = BASE
    raw["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL}
    (legacy / "config.json").write_text(json.dumps(raw))

    cfg = make_cfg(name_or_path=str(legacy))  # model.rope unset: the checkpoint's own scaling is kept
    model = load_model(cfg, quantize=False)
    assert current_rope(model.config)["rope_type"] == "yarn"
    assert max_context(model.config) == 4 * ORIGINAL
    assert_inv_freq(rotary(model).inv_freq, ref_yarn(HEAD_DIM, BASE, 4.0, ORIGINAL)[0])
    # Re-extending it reads the original context from the legacy record, not max_position_embeddings.
    params = rope_parameters(
        RopeConfig(type="linear", target_max_position_embeddings=8 * ORIGINAL), model.config
    )
    assert params == {"rope_type": "linear", "factor": 8.0, "rope_theta": BASE}


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn"])
def test_logits_finite_and_deterministic_at_4x_the_original_length(make_cfg, kind):
    rope = {"type": kind, "factor": 4.0}
    if kind == "yarn":
        rope["original_max_position_embeddings"] = ORIGINAL
    model = load_scaled(make_cfg, **rope)
    ids = torch.randint(3, 500, (1, 4 * ORIGINAL), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = model(ids).logits
        second = model(ids).logits
    assert first.shape[1] == 4 * ORIGINAL
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


# ---- loading paths -----------------------------------------------------------------------------------------


def test_resolve_model_path(small_dir, small_tiny, tiny_texts, monkeypatch, tmp_path):
    from longctx_core.config import ModelConfig
    from longctx_core.model.tiny import ensure_tiny_checkpoint

    local = ModelConfig(name_or_path=str(small_dir))
    assert resolve_model_path(local) == str(small_dir.resolve())
    assert (
        resolve_model_path(ModelConfig(name_or_path="Qwen/Qwen2.5-0.5B-Instruct"))
        == "Qwen/Qwen2.5-0.5B-Instruct"
    )
    # 'tiny' resolves to the cached tiny checkpoint for model.tiny (built here with our own corpus).
    monkeypatch.setenv("LONGCTX_CACHE_DIR", str(tmp_path / "cache"))
    built = ensure_tiny_checkpoint(small_tiny, tmp_path / "cache", tiny_texts)
    tiny = ModelConfig(name_or_path="tiny", tiny=small_tiny)
    assert resolve_model_path(tiny) == str(built)
    assert check_model_config(tiny).max_position_embeddings == ORIGINAL


def test_check_model_config_reads_no_weights(small_dir, make_cfg, tmp_path):
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    shutil.copy(small_dir / "config.json", only_config / "config.json")
    cfg = make_cfg(name_or_path=str(only_config), rope={"type": "linear", "factor": 2.0})
    assert max_context(check_model_config(cfg)) == 2 * ORIGINAL


# ---- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.rope.type=linear", "model.rope.factor=0.5"], "model.rope.factor: must be >= 1"),
        (
            ["model.rope.target_max_position_embeddings=2048"],
            "model.rope.type: target_max_position_embeddings=2048 exceeds the original context 512 but no RoPE "
            "scaling is set",
        ),
        (
            ["model.rope.type=yarn", "model.rope.factor=4", "model.name_or_path=Qwen/Qwen2.5-7B-Instruct"],
            "model.rope.original_max_position_embeddings: required with rope.type=yarn on a real checkpoint",
        ),
        (
            ["model.rope.type=yarn", "model.rope.factor=2", "model.rope.target_max_position_embeddings=4096"],
            "model.rope.factor: 2 x original context 512 = 1024 does not reach target_max_position_embeddings=4096",
        ),
        (
            ["model.rope.type=dynamic"],
            "model.rope.factor: type=dynamic needs factor or target_max_position_embeddings",
        ),
        (["model.rope.factor=2"], "model.rope.factor: is set but type is 'none'"),
        (
            ["model.rope.type=linear", "model.rope.beta_fast=8"],
            "model.rope.beta_fast: only used with type=yarn",
        ),
        (
            ["model.rope.type=linear", "model.rope.target_max_position_embeddings=256"],
            "model.rope.target_max_position_embeddings: 256 is shorter than the original context 512",
        ),
    ],
)
def test_invalid_rope_configs_fail_at_config_time(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "rope, message",
    [
        (
            {"target_max_position_embeddings": 1024},
            "model.rope.type: target_max_position_embeddings=1024 exceeds the original context 128",
        ),
        (
            {"type": "linear", "factor": 2.0, "target_max_position_embeddings": 1024},
            "model.rope.factor: 2 x original context 128 = 256 does not reach target_max_position_embeddings=1024",
        ),
        (
            {"type": "dynamic", "target_max_position_embeddings": 64},
            "model.rope.target_max_position_embeddings: 64 is shorter than the original context 128",
        ),
    ],
)
def test_rope_misfits_for_the_checkpoint_raise_longctx_error(make_cfg, rope, message):
    """A local folder's original context is only known from its config.json: checked when it is read."""
    cfg = make_cfg(rope=rope)  # valid on its own
    with pytest.raises(LongctxError) as err:
        check_model_config(cfg)
    assert str(err.value).startswith(message)


def test_checkpoint_without_a_length_needs_the_original_set():
    no_length = SimpleNamespace(
        rope_parameters={"rope_type": "default", "rope_theta": BASE}, max_position_embeddings=None
    )
    with pytest.raises(
        LongctxError, match="model.rope.original_max_position_embeddings: unset and the checkpoint"
    ):
        rope_parameters(RopeConfig(type="yarn", factor=4.0), no_length)
    params = rope_parameters(
        RopeConfig(type="yarn", factor=4.0, original_max_position_embeddings=4096), no_length
    )
    assert params["original_max_position_embeddings"] == 4096


def test_unreadable_checkpoint_is_a_longctx_error(make_cfg, tmp_path):
    with pytest.raises(LongctxError, match="model.name_or_path: cannot read a model config from"):
        check_model_config(make_cfg(name_or_path=str(tmp_path / "missing-but-hub-like")))
