"""Bad evaluation input fails early with one line naming the key: config validators, grid lengths above the
scaled context, model folders that do not load, and the CLI's exit status."""

from __future__ import annotations

import json

import pytest

from longctx_core.config import ConfigError, load_config
from longctx_core.errors import LongctxError
from longctx_core.eval.models import resolve_models
from longctx_core.eval.runner import grid_lengths


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["eval.qa.positions=[0, 1.5]"], "eval.qa.positions: fractions must lie in [0, 1], got [1.5]"),
        (
            ["eval.qa.enabled=false", "eval.passkey.enabled=false", "eval.perplexity.enabled=false"],
            "eval.qa.enabled: no evaluation task is enabled",
        ),
        (["eval.models=[]"], "eval.models: list at least one model"),
        (
            ["eval.models=[{name: a, kind: base}, {name: a, kind: adapter}]"],
            "eval.models: duplicate model names ['a']",
        ),
        (["eval.models=[{name: m, kind: merged}]"], "eval.models.0.path: is required for a merged model"),
        (
            ["eval.models=[{name: b, kind: base, path: /x}]"],
            "eval.models.0.path: a base model takes its checkpoint",
        ),
        (["eval.litm.enabled=true"], "eval.litm.path: is required when litm.enabled is true"),
        (["eval.longbench.subsets=[gov_report]"], "eval.longbench.subsets: unknown subsets ['gov_report']"),
        (
            ["eval.passkey.lengths=[8]"],
            "eval.passkey.lengths: must be a non-empty list of token counts >= 16",
        ),
        (["eval.length_factors=[0]"], "eval.length_factors: must be a non-empty list of positive multiples"),
        (
            ["eval.qa.num_question=3"],
            "unknown config key 'eval.qa.num_question' (did you mean 'eval.qa.num_questions'?)",
        ),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_grid_lengths():
    assert grid_lengths(None, [1.0, 2.0, 4.0], 512, 1024, 64, "k") == [448, 960]  # 4x does not fit
    assert grid_lengths([300, 200, 300], [1.0], 512, 1024, 64, "k") == [200, 300]
    with pytest.raises(LongctxError, match=r"eval.qa.lengths: \[1000\] \(\+64 reply tokens\) exceed .* 1024"):
        grid_lengths([500, 1000], [1.0], 512, 1024, 64, "eval.qa.lengths")
    with pytest.raises(LongctxError, match="eval.length_factors: none of"):
        grid_lengths(None, [4.0], 512, 1024, 64, "k")


def _cfg(tmp_path, *overrides):
    return load_config(None, [f"run.storage_path={tmp_path}", "run.name=r", *overrides])


def test_model_folders_that_do_not_load(tmp_path):
    cfg = _cfg(tmp_path)  # default models: base + <run>/train/adapter, which does not exist yet
    with pytest.raises(LongctxError, match=r"eval.models.1.path \(adapter\): .* not a PEFT adapter folder"):
        resolve_models(cfg, tmp_path / "r")
    bad = tmp_path / "bad_adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    cfg = _cfg(tmp_path, f"eval.models=[{{name: tuned, kind: adapter, path: {bad}}}]")
    with pytest.raises(LongctxError, match=r"eval.models.0.path \(tuned\): .* no adapter weights"):
        resolve_models(cfg, tmp_path / "r")
    merged = tmp_path / "merged"
    merged.mkdir()
    cfg = _cfg(tmp_path, f"eval.models=[{{name: m, kind: merged, path: {merged}}}]")
    with pytest.raises(LongctxError, match=r"eval.models.0.path \(m\): cannot read a model config"):
        resolve_models(cfg, tmp_path / "r")
    cfg = _cfg(tmp_path, f"eval.models=[{{name: m, kind: merged, path: {tmp_path / 'nowhere'}}}]")
    with pytest.raises(LongctxError, match="does not exist"):
        resolve_models(cfg, tmp_path / "r")


def test_cli_rejects_a_length_above_the_scaled_limit(tmp_path, capsys):
    from ray_jobs.evaluate import main

    with pytest.raises(SystemExit) as exit_:
        main(
            [
                f"run.storage_path={tmp_path}",
                "run.name=r",
                "eval.models=[{name: base, kind: base}]",
                "eval.passkey.lengths=[4096]",
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "longctx evaluate: error: eval.passkey.lengths: [4096] (+64 reply tokens) exceed"
    )
    assert not (tmp_path / "r" / "eval").exists()  # failed before any work (no run folder output)
