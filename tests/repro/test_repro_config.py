"""The repro preset and the `repro:` section: loads (through the repro's own config class only), fails fast
with the key path, arm configs."""

from __future__ import annotations

from pathlib import Path

import pytest

PRESET = "ray_jobs/configs/repro_cpu.yaml"


def test_preset_loads_and_first_line_is_its_command():
    from repro.config import check_repro_config, load_repro_config

    cfg = load_repro_config(PRESET)
    check_repro_config(cfg)
    first = open(PRESET).readline()
    assert "python -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml" in first
    assert cfg.model.rope.original_max_position_embeddings == cfg.repro.base.context
    assert set(cfg.repro.arms) == {"paraphrase", "plain", "quote"}  # issue #20's three arms
    assert (
        cfg.repro.long_pretrain.steps > 0 and cfg.repro.long_pretrain.gold_beta
    )  # the base loses the middle


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.rope.original_max_position_embeddings=512"], "model.rope.original_max_position_embeddings"),
        (["data.target_tokens=[2048]"], "data.target_tokens"),
        (["eval.length_factors=[1.0, 2.0]"], "eval.length_factors"),
        (["eval.qa.num_questions=600"], "eval.qa.num_questions"),
        (["model.rope.factor=2.0"], "model.rope.factor"),
        (["repro.skip_weak_bases=true", "repro.allow_weak_base=true"], "repro.skip_weak_bases"),
        (["repro.skip_weak_bases=true", "repro.base_per_seed=false"], "repro.skip_weak_bases"),
    ],
)
def test_contradictions_name_the_key(overrides, key):
    from longctx_core.config import ConfigError
    from repro.config import check_repro_config, load_repro_config

    with pytest.raises(ConfigError) as err:
        check_repro_config(load_repro_config(PRESET, overrides))
    assert str(err.value).startswith(key)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("repro.arms={base: {plain: 1.0}}", "repro.arms.base:"),
        ("repro.arms={a: {quoted: 1.0}}", "repro.arms.a.quoted: unknown style"),
        ("repro.seeds=[]", "repro.seeds:"),
        ("repro.base.min_tokens=4096", "repro.base.min_tokens:"),
        ("repro.base.answer_styles={unanswerable: 1.0}", "repro.base.answer_styles.unanswerable:"),
        ("repro.base.colour=1", "unknown config key 'repro.base.colour'"),
        ("data.source.builtin.facts=[colour, logo]", "facts: unknown for kinds ('person',): ['logo']"),
    ],
)
def test_bad_repro_values_are_one_line_errors(override, message):
    from longctx_core.config import ConfigError
    from repro.config import load_repro_config

    with pytest.raises(ConfigError) as err:
        load_repro_config(PRESET, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_arm_and_eval_configs(tmp_path):
    from longctx_core.config import Config, run_dir
    from repro.arms import arm_config, eval_config
    from repro.config import load_repro_config

    cfg = load_repro_config(PRESET, [f"run.storage_path={tmp_path}", "repro.seeds=[3, 4]"])
    base = tmp_path / "base"
    para = arm_config(cfg, base, "paraphrase", 3)
    plain = arm_config(cfg, base, "plain", 3)
    assert run_dir(para) == tmp_path / "repro" / "arms" / "base" / "paraphrase-s3"
    assert para.data.answer_styles == {"paraphrase": 1.0} and plain.data.answer_styles == {"plain": 1.0}
    # The twins differ only in the answer style (and their folder).
    a, b = para.model_dump(), plain.model_dump()
    assert {k for k in a if a[k] != b[k]} == {"run", "data"}
    # The stages get product configs: the Ray Train workers re-validate them without a `repro:` section.
    assert type(para) is Config and "repro" not in a
    assert a["run"]["seed"] == b["run"]["seed"] == 3 and a["model"]["name_or_path"] == str(base)
    ev = eval_config(cfg, base, 3, {"paraphrase": tmp_path / "p", "plain": tmp_path / "q"})
    assert type(ev) is Config
    assert [(m.name, m.kind) for m in ev.eval.models] == [
        ("base", "base"),
        ("paraphrase", "adapter"),
        ("plain", "adapter"),
    ]


def test_entrypoint_rejects_a_bad_config_before_any_work(capsys):
    from ray_jobs.repro import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--config", PRESET, "model.rope.original_max_position_embeddings=512"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("longctx repro: error: model.rope.original_max_position_embeddings:")


def test_product_config_rejects_the_repro_section(tmp_path):
    """The reproduction is not part of the product: its section is an unknown key there, and no product
    preset carries it."""
    import yaml

    from longctx_core.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(PRESET)
    assert str(err.value) == "unknown config key 'repro'"
    with pytest.raises(ConfigError, match=r"^unknown config key 'repro'$"):
        load_config("ray_jobs/configs/tiny_cpu.yaml", ["repro.seeds=[0]"])
    for preset in Path("ray_jobs/configs").glob("*.yaml"):
        if preset.name != Path(PRESET).name:
            assert "repro" not in yaml.safe_load(preset.read_text()), preset


def test_three_arms_with_the_uncited_quote_and_three_seeds(tmp_path):
    """The comparison the claim needs: plain, quote (no document number) and paraphrase (cited) arms, with
    the same records, steps and seed per arm; each arm's product config asks for its one answer style."""
    from repro.arms import arm_config
    from repro.config import load_repro_config

    arms = "{plain: {plain: 1}, quote: {quote: 1}, paraphrase: {paraphrase: 1}}"
    cfg = load_repro_config(PRESET, [f"repro.arms={arms}", "repro.seeds=[0, 1, 2]"])
    made = {arm: arm_config(cfg, tmp_path / "base", arm, 2) for arm in cfg.repro.arms}
    assert {arm: c.data.answer_styles for arm, c in made.items()} == {
        "plain": {"plain": 1.0},
        "quote": {"quote": 1.0},
        "paraphrase": {"paraphrase": 1.0},
    }
    assert len({(c.run.seed, c.data.num_samples, c.train.max_steps, c.train.lr) for c in made.values()}) == 1
