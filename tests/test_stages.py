"""The stage registry and its runner: one table of stages serves every `ray_jobs.<stage>` entrypoint, the
pipeline, the repro and `make submit`, and the runner starts Ray only after a stage's checks passed."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from longctx_core.runner.stages import CORE_STAGES, Stage, all_stages, call, get

REPO = Path(__file__).resolve().parents[1]


def test_every_stage_has_an_entrypoint_and_importable_functions():
    stages = all_stages()
    # the library's own, then the installed entry points (data_gen's synthesis, the reproduction)
    assert list(CORE_STAGES) == ["train", "evaluate", "pipeline"]
    assert sorted(stages) == ["evaluate", "pipeline", "repro", "synthesize", "train"]
    for name, stage in stages.items():
        assert callable(stage.function("check")) and callable(stage.function("run")), name
        assert isinstance(stage.config_class(), type)
        # ray_jobs/<name>.py is a thin entrypoint over the runner, naming its own stage
        tree = ast.parse((REPO / "ray_jobs" / f"{name}.py").read_text())
        called = [
            n.args[0].value
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "entrypoint"
        ]
        assert called == [name], (name, called)
        module = importlib.import_module(f"ray_jobs.{name}")
        assert module.run.__name__ == f"run_{name}" and module.main.__name__ == f"main_{name}"
    with pytest.raises(KeyError, match="no stage 'nope'"):
        get("nope")


def test_a_bad_entry_point_is_refused(monkeypatch):
    """An entry point that is not a `Stage` of its own name fails loudly rather than shadowing a stage."""
    import importlib.metadata as md

    class FakeEP:
        name, value = "train", "x:y"

        def load(self):
            return Stage("synthesize", "a:b", "c:d")

    monkeypatch.setattr(md, "entry_points", lambda group: [FakeEP()])
    all_stages.cache_clear()
    try:
        with pytest.raises(TypeError, match="is not a Stage named 'train'"):
            all_stages()
    finally:
        monkeypatch.undo()
        all_stages.cache_clear()
    assert "synthesize" in all_stages()


def test_ray_is_initialised_in_the_runner_only():
    """No library module starts Ray: `ensure_ray` is called by the stage runner alone, and `ray.init` only
    inside `ensure_ray` (benchmarks, which are their own programs, and tests aside)."""
    calls: dict[str, list[str]] = {"ensure_ray": [], "ray.init": []}
    for folder in ("longctx_core", "data_gen", "repro", "ray_jobs"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if getattr(func, "id", None) == "ensure_ray":
                    calls["ensure_ray"].append(str(path.relative_to(REPO)))
                if getattr(func, "attr", None) == "init" and getattr(func.value, "id", None) == "ray":
                    calls["ray.init"].append(str(path.relative_to(REPO)))
    assert calls["ensure_ray"] == ["longctx_core/runner/cli.py"], calls
    assert set(calls["ray.init"]) == {"longctx_core/infra/runtime.py"}, calls


@pytest.mark.parametrize("name", ["synthesize", "train", "evaluate", "pipeline"])
def test_a_failed_check_exits_2_before_ray_starts(name, tmp_path, monkeypatch, capsys):
    """Each stage's check fails on a source that does not exist (synthesize, pipeline), training data that
    does not exist (train), a fine-tuned model that was never trained (evaluate): one line, exit 2, and the
    runner never reaches `ensure_ray`."""
    import longctx_core.infra.runtime as runtime
    from longctx_core.runner.cli import run_stage

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start before the stage's checks pass")

    monkeypatch.setattr(runtime, "ensure_ray", no_ray)
    overrides = [f"run.storage_path={tmp_path}", "model.name_or_path=tiny", "data.source.kind=litm"]
    overrides.append(f"data.source.path={tmp_path / 'missing.jsonl'}")
    if name == "train":
        overrides.append(f"train.data_path={tmp_path / 'none'}")
    with pytest.raises(SystemExit) as exit_:
        run_stage(name, overrides)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # (library warnings may come before it)
    assert [line for line in err if line.startswith("longctx ")] == err[-1:], err
    assert err[-1].startswith(f"longctx {name}: error: "), err


def test_call_checks_then_runs_on_the_connected_ray(ray_local, tiny_model_dir, tmp_path):
    """`call` is what the pipeline and the repro use inside one process: the stage's check, then its run,
    on the Ray that is already up (the session's runtime here)."""
    from longctx_core.config import load_config

    cfg = load_config(
        str(REPO / "ray_jobs/configs/tiny_cpu.yaml"),
        [f"run.storage_path={tmp_path}", "run.name=reg", "data.num_samples=4", "data.eval_samples=0"],
    )
    summary = call("synthesize", cfg)
    assert summary["num_samples"] == 4
    assert (tmp_path / "reg" / "data" / "stats.json").is_file()
    assert list((tmp_path / "reg" / "data" / "train").glob("*.parquet"))


def test_pipeline_refuses_qa_evaluation_of_a_chat_source_before_ray(tmp_path, monkeypatch, capsys):
    """Chat data has no questions to hold out: a pipeline whose QA evaluation would draw on it fails at the
    start with one line naming the key, not after synthesis and training; with eval.qa.source set (or the
    task off) it passes."""
    import json

    import longctx_core.infra.runtime as runtime
    from longctx_core.config import load_config
    from longctx_core.runner.chain import check
    from longctx_core.runner.cli import run_stage

    monkeypatch.setattr(runtime, "ensure_ray", lambda *a, **k: pytest.fail("Ray started"))
    chat = tmp_path / "chat.jsonl"
    turns = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    chat.write_text(json.dumps({"messages": turns}) + "\n")
    base = [f"run.storage_path={tmp_path}", "data.source.kind=chat", f"data.source.path={chat}"]
    with pytest.raises(SystemExit) as exit_:
        run_stage("pipeline", base)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("longctx pipeline: error: data.source.kind: the qa evaluation needs a QA source")
    check(load_config(None, [*base, "eval.qa.source={kind: builtin}"]))
    check(load_config(None, [*base, "eval.qa.enabled=false"]))
