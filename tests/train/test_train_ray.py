"""Training on a real local Ray (2 CPUs): TorchTrainer with 2 workers, DeepSpeed ZeRO-2/3, 4-bit QLoRA on the
small tiny model, packed rows streamed from Parquet through Ray Data.

One fit per scenario (each costs ~30-60 s here), shared by the assertions on it:
- `zero2_run`: the CPU demo preset with overrides, through the `ray_jobs.train` entrypoint (ZeRO-2, 4-bit).
- `zero3_killed_run`: ZeRO-3 + 4-bit (quant storage = fp32), cosine LR with warm-up, one worker SIGKILLed
  mid-run; the run resumes from its last checkpoint, on the schedule where it stopped. Its workers run `probe_worker`: after training, the trained engine's
  logits on a fixed batch are saved for comparison with the reloaded adapter.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from longctx_core.infra.metrics import read_jsonl

CHECKPOINT_EVERY = 4
MAX_STEPS = 16
WARMUP_STEPS = 3
PROBE_FILE = "probe_logits.pt"


def _steps(rows):
    return [r for r in rows if "loss" in r and "step" in r]


def _attempts(rows) -> list[tuple[int, list[dict]]]:
    """Split metrics rows into worker-group attempts: (resumed_from_step, step rows) each.

    A run on this shared machine can restart more than once: besides the test's own kill, Ray Train's
    placement-group cleaner may take a live run for dead when the state API answers from another Ray
    instance on the host. Every restart must obey the same resume rules, so the checks cover all of them.
    """
    out: list[tuple[int, list[dict]]] = []
    for r in rows:
        if r.get("event") == "start":
            out.append((r["resumed_from_step"], []))
        elif "loss" in r:
            out[-1][1].append(r)
    return out


def _history(rows) -> dict[int, dict]:
    """The step rows that count: the last attempt's row for each step."""
    return {r["step"]: r for r in _steps(rows)}


def _adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _probe_ids():
    import torch

    return torch.randint(5, 500, (2, 48), generator=torch.Generator().manual_seed(7))


def probe_worker(loop_config: dict) -> None:
    """Ray Train worker: train as usual, then the trained engine's logits on `_probe_ids()` in eval mode
    (every rank runs the forward: under ZeRO-3 it gathers the shards); rank 0 saves them."""
    import torch

    from longctx_core.train.worker import train_loop_per_worker

    run, built = train_loop_per_worker(loop_config)
    built.engine.eval()
    with torch.no_grad():
        logits = built.peft(input_ids=_probe_ids(), use_cache=False).logits.float().cpu()
    if run.rank == 0:
        torch.save(logits, run.run_dir / "train" / PROBE_FILE)


# ---- fits -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zero2_run(ray_local, make_train_cfg, tmp_path_factory, train_model_dir, train_data_dir):
    """The demo preset (ZeRO-2, 4-bit QLoRA, 2 workers) through the entrypoint, on the test data."""
    from longctx_core.config import load_config
    from ray_jobs import train as train_job

    storage = tmp_path_factory.mktemp("runs-z2")
    cfg = load_config(
        "ray_jobs/configs/tiny_cpu.yaml",
        [
            f"run.storage_path={storage}",
            "run.name=z2",
            f"model.name_or_path={train_model_dir}",
            "model.rope.original_max_position_embeddings=512",  # the preset's YaRN x4, on the small model
            "model.gradient_checkpointing=false",
            "model.lora.r=8",  # the same adapter shape as the other runs (compared below)
            "model.lora.alpha=16",
            "model.lora.dropout=0.0",
            "data.target_tokens=[256]",
            f"train.data_path={train_data_dir}",
            "train.max_seq_len=512",
            "train.max_steps=6",
            "train.lr=5e-3",
            "train.lr_schedule=constant",
            "train.pack_window=32",
            "train.checkpoint_every=3",
        ],
    )
    assert cfg.train.zero_stage == 2 and cfg.model.quantization.load_in_4bit
    summary = train_job.run(cfg)
    return {"cfg": cfg, "summary": summary, "root": storage / "z2"}


def _registered_checkpoint_step(run_folder: Path) -> int:
    """The step of the latest checkpoint Ray Train has registered (what a restart resumes from), else 0."""
    snapshot = run_folder / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
    except (OSError, ValueError):  # absent, or being rewritten right now
        return 0
    return int((latest.get("metrics") or {}).get("step", 0))


def _kill_rank_mid_run(root: Path, rank: int, report: dict, timeout: float = 600) -> None:
    """Background: once Ray Train has registered a checkpoint and a later step is logged, SIGKILL the
    process of `rank` (found through its breadcrumb file); records the pid and the steps in `report`."""
    metrics, crumb = root / "train" / "metrics.jsonl", root / "train" / "workers" / f"rank-{rank}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ckpt = _registered_checkpoint_step(root / "train" / "ray" / "ray-train")
        logged = [r["step"] for r in _steps(read_jsonl(metrics))] if ckpt else []
        if ckpt and logged and max(logged) > ckpt:
            pid = json.loads(crumb.read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            report.update(pid=pid, step_at_kill=max(logged), registered_checkpoint=ckpt)
            return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def zero3_killed_run(ray_local, make_train_cfg, tmp_path_factory):
    """ZeRO-3 + 4-bit, checkpoint every 4 steps, cosine LR after a warm-up; rank 1 SIGKILLed after the first
    registered checkpoint."""
    from longctx_core.config import run_dir
    from longctx_core.infra.runs import prepare_run_dir
    from longctx_core.train.driver import train

    storage = tmp_path_factory.mktemp("runs-z3")
    cfg = make_train_cfg(
        storage,
        name="z3",
        **{
            "train.zero_stage": 3,
            "train.max_steps": MAX_STEPS,
            "train.checkpoint_every": CHECKPOINT_EVERY,
            "train.max_failures": 3,
            "model.lora.dropout": 0.1,  # RNG state must be restored for the resumed losses to match
            # A rate that changes every step (a constant one would hide a schedule restarted from step 0)
            "train.lr_schedule": "cosine",
            "train.warmup_steps": WARMUP_STEPS,
        },
    )
    root = prepare_run_dir(cfg, "train")
    assert root == run_dir(cfg)
    killed: dict = {}
    killer = threading.Thread(target=_kill_rank_mid_run, args=(root, 1, killed), daemon=True)
    # The controller registers reported checkpoints when it polls the workers (every 2 s by default);
    # polling faster lets the kill land soon after the first checkpoint, well before the run ends.
    poll = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    saved, os.environ[poll] = os.environ.get(poll), "0.2"
    # Ray pickles functions of importable modules by reference; this test module is not importable on
    # the workers, so `probe_worker` travels by value.
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        killer.start()
        summary = train(cfg, root, worker_fn=probe_worker)
    finally:
        if saved is None:
            del os.environ[poll]
        else:
            os.environ[poll] = saved
    killer.join(timeout=1)
    return {"cfg": cfg, "summary": summary, "root": root, "killed": killed}


# ---- ZeRO-2, 4-bit QLoRA: the demo preset through the entrypoint -----------------------------------------------


@pytest.mark.e2e
def test_zero2_qlora_trains_and_writes_a_loadable_adapter(zero2_run, train_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    summary, root = zero2_run["summary"], zero2_run["root"]
    assert summary["steps"] == 6
    history = _history(read_jsonl(root / "train" / "metrics.jsonl"))
    assert sorted(history) == [1, 2, 3, 4, 5, 6]
    losses = [history[s]["loss"] for s in sorted(history)]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05, losses  # loss falls

    adapter = Path(summary["adapter"])
    assert adapter == root / "train" / "adapter" and (adapter / "adapter_config.json").is_file()
    tensors = _adapter_tensors(adapter)
    assert tensors and all("lora_" in k for k in tensors)  # only adapters trained: the base stayed frozen
    assert all(t.abs().max() > 0 for k, t in tensors.items() if "lora_B" in k)  # B starts at exactly 0

    base = AutoModelForCausalLM.from_pretrained(train_model_dir).eval()
    ids = torch.randint(5, 500, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter)).eval()
        after = tuned(input_ids=ids).logits
    assert (after - before).abs().max().item() > 1e-3


def _trained_tokens(cfg, history: dict[int, dict]) -> dict[int, int]:
    """Independently of the loop's counters: the non-padding tokens of the samples trained on in each step.

    The packed stream is rebuilt from the Parquet input; each rank's logged `data_digest` names the rows it
    trained on (it hashes their sample ids), and the tokens are the samples' `n_tokens` from the Parquet
    rows. Returns {step: tokens over all ranks}."""
    import pyarrow.parquet as pq

    from longctx_core.train.packing import packed_dataset, parquet_files
    from longctx_core.train.state import sample_digest

    files = parquet_files(cfg.train.data_path)
    n_tokens = {}
    for f in files:
        table = pq.read_table(f, columns=["id", "n_tokens"]).to_pylist()
        n_tokens.update({r["id"]: r["n_tokens"] for r in table})
    import ray.data

    options = ray.data.DataContext.get_current().execution_options
    saved, options.preserve_order = options.preserve_order, True  # as the trainer reads it
    try:
        rows = packed_dataset(files, cfg.model.name_or_path, cfg.train, cfg.run.seed, 0.25).take_all()
    finally:
        options.preserve_order = saved
    per_rank_step = cfg.train.micro_batch_size * cfg.train.grad_accum_steps
    by_digest = {}
    for group in itertools.permutations(rows, per_rank_step):  # a rank's rows of one step, in order
        ids = [s for r in group for s in r["sample_ids"]]
        by_digest[sample_digest(ids)] = sum(n_tokens[s] for s in ids)
    return {step: sum(by_digest[d] for d in r["data_digest"]) for step, r in history.items()}


@pytest.mark.e2e
def test_zero2_metrics_carry_every_figure(zero2_run):
    history = _history(read_jsonl(zero2_run["root"] / "train" / "metrics.jsonl"))
    rows = [history[s] for s in sorted(history)]
    for r in rows:
        for key in ("loss", "lr", "tokens_per_s", "packing_efficiency", "step_time_s", "peak_mem_gb"):
            assert isinstance(r[key], float) and r[key] > 0, (key, r)
        assert 0.3 < r["packing_efficiency"] <= 1.0
        assert r["lr"] == pytest.approx(5e-3)
        assert "mfu" not in r  # CPU: no MFU
    assert len({tuple(r["data_digest"]) for r in rows}) == len(rows)  # a new micro-batch every step
    # tokens_seen counts exactly the real (non-padding) tokens of the samples trained on, all ranks.
    tokens = _trained_tokens(zero2_run["cfg"], history)
    assert [r["tokens_seen"] for r in rows] == list(itertools.accumulate(tokens[s] for s in sorted(history)))
    # Each rank draws its own dropout / NEFTune noise: the ranks' RNG states differ at every step.
    assert all(len(set(r["rng_digest"])) == len(r["rng_digest"]) == 2 for r in rows)


@pytest.mark.e2e
def test_zero2_checkpoints_hold_engine_adapter_and_data_position(zero2_run):
    from longctx_core.train.state import TrainState

    root = zero2_run["root"]
    folders = sorted((root / "train" / "ray" / "ray-train").glob("checkpoint-step*"))
    assert [f.name for f in folders] == ["checkpoint-step0000003", "checkpoint-step0000006"]
    last = folders[-1]
    state = TrainState.from_file(last / "trainer_state.json")
    assert (state.step, state.epoch, state.batches_in_epoch, state.world_size) == (6, 0, 6, 2)
    assert {p.name for p in (last / "engine").iterdir()} >= {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    }
    assert (last / "rng-rank0.pt").is_file() and (last / "rng-rank1.pt").is_file()
    # Adapters keep changing between checkpoints; the final adapter is the last checkpoint's.
    mid, end = _adapter_tensors(folders[0] / "adapter"), _adapter_tensors(last / "adapter")
    assert all((mid[k] - end[k]).abs().max() > 0 for k in end)
    final = _adapter_tensors(root / "train" / "adapter")
    assert all((final[k] == end[k]).all() for k in end)


# ---- ZeRO-3, 4-bit, a worker killed mid-run ----------------------------------------------------------------


@pytest.mark.e2e
def test_zero3_qlora_adapter_reloads_to_the_trained_engines_logits(zero3_killed_run, zero2_run):
    """Under ZeRO-3 every rank holds a slice of each LoRA matrix; the adapter gathered from them and
    reloaded onto a fresh 4-bit base gives the trained engine's logits on the same batch."""
    import torch

    from longctx_core.model.lora import load_model_with_adapter

    run = zero3_killed_run
    adapter = Path(run["summary"]["adapter"])
    z3, z2 = _adapter_tensors(adapter), _adapter_tensors(Path(zero2_run["summary"]["adapter"]))
    assert {k: tuple(v.shape) for k, v in z3.items()} == {k: tuple(v.shape) for k, v in z2.items()}
    assert all(v.abs().max() > 0 for k, v in z3.items() if "lora_B" in k)
    trained = torch.load(run["root"] / "train" / PROBE_FILE)
    model = load_model_with_adapter(run["cfg"].model, adapter)
    with torch.no_grad():
        reloaded = model(input_ids=_probe_ids(), use_cache=False).logits.float()
        base = model.get_base_model()
        with model.disable_adapter():
            untuned = base(input_ids=_probe_ids(), use_cache=False).logits.float()
    assert reloaded.shape == trained.shape
    assert (reloaded - trained).abs().max().item() < 1e-5
    assert (untuned - trained).abs().max().item() > 1e-3  # the comparison can tell the adapter apart


@pytest.mark.e2e
def test_killed_worker_resumes_from_last_checkpoint(zero3_killed_run):
    run, root = zero3_killed_run, zero3_killed_run["root"]
    assert run["killed"], "the run finished before the worker could be killed"
    assert run["summary"]["steps"] == MAX_STEPS

    rows = read_jsonl(root / "train" / "metrics.jsonl")
    attempts = _attempts(rows)
    assert len(attempts) >= 2 and attempts[0][0] == 0  # the kill caused a restart
    assert any(resumed_from > 0 for resumed_from, _ in attempts[1:])  # from a checkpoint, not from 0
    first_seen: dict[int, dict] = {}
    for i, (resumed_from, steps) in enumerate(attempts):
        # Each attempt continues right after the checkpoint it resumed from ...
        assert [r["step"] for r in steps] == list(range(resumed_from + 1, resumed_from + 1 + len(steps)))
        if i:
            prev_last = attempts[i - 1][1][-1]["step"] if attempts[i - 1][1] else attempts[i - 1][0]
            assert resumed_from % CHECKPOINT_EVERY == 0
            # ... which is never ahead of the work done (nothing skipped) and at most one checkpoint
            # interval behind it (redone steps are bounded).
            assert prev_last - CHECKPOINT_EVERY <= resumed_from <= prev_last
        for r in steps:
            seen = first_seen.setdefault(r["step"], r)
            # A redone step saw the same data and, with engine, optimizer and RNG state restored, gave the
            # same loss.
            assert r["data_digest"] == seen["data_digest"], r["step"]
            assert r["rng_digest"] == seen["rng_digest"], r["step"]  # the same dropout draws
            assert r["loss"] == pytest.approx(seen["loss"], rel=1e-4, abs=1e-5), r["step"]
    assert attempts[-1][1][-1]["step"] == MAX_STEPS
    history = _history(rows)
    assert sorted(history) == list(range(1, MAX_STEPS + 1))  # nothing lost
    assert all(len(set(r["rng_digest"])) == 2 for r in history.values())  # ranks draw their own noise
    # No micro-batch trained twice within an epoch of the final history.
    for epoch in {r["epoch"] for r in history.values()}:
        digests = [tuple(r["data_digest"]) for r in history.values() if r["epoch"] == epoch]
        assert len(set(digests)) == len(digests)


@pytest.mark.e2e
def test_killed_worker_resumes_the_lr_schedule(zero3_killed_run):
    """The learning rate logged at every step, before the kill and after the resume, is the one an
    uninterrupted run of the same schedule (cosine after a linear warm-up, over the run's planned steps)
    has at that step: a scheduler begun again from step 0 on resume would log warm-up rates instead."""
    import torch

    from longctx_core.train.schedule import lr_lambda

    run, cfg = zero3_killed_run, zero3_killed_run["cfg"]
    assert run["killed"], "the run finished before the worker could be killed"
    assert run["summary"]["steps"] == MAX_STEPS and run["summary"]["total_steps_planned"] == MAX_STEPS
    # the uninterrupted run of the schedule: one scheduler step per optimizer step, rate after each
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=cfg.train.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.train, MAX_STEPS))
    uninterrupted = {}
    for step in range(1, MAX_STEPS + 1):
        opt.step()
        sched.step()
        uninterrupted[step] = sched.get_last_lr()[0]
    rates = [uninterrupted[s] for s in range(1, MAX_STEPS + 1)]
    assert max(rates) == pytest.approx(cfg.train.lr) and rates[0] < rates[WARMUP_STEPS - 1]  # warm-up
    assert (
        rates[WARMUP_STEPS:] == sorted(rates[WARMUP_STEPS:], reverse=True) and rates[-1] < rates[0]
    )  # decay

    rows = read_jsonl(run["root"] / "train" / "metrics.jsonl")
    attempts = _attempts(rows)
    resumed = [(start, steps) for start, steps in attempts[1:] if start > 0 and steps]
    assert resumed, attempts  # a restart from a checkpoint logged steps
    for _, steps in attempts:
        for r in steps:
            assert r["lr"] == pytest.approx(uninterrupted[r["step"]], rel=1e-6), (r["step"], r["lr"])
    start, steps = resumed[0]
    assert steps[0]["step"] == start + 1 and steps[0]["lr"] != pytest.approx(uninterrupted[1], rel=1e-3)
    history = _history(rows)
    assert sorted(history) == list(range(1, MAX_STEPS + 1))
    assert [history[s]["lr"] for s in sorted(history)] == pytest.approx(rates, rel=1e-6)


@pytest.mark.e2e
def test_killed_worker_was_a_real_process_and_was_replaced(zero3_killed_run):
    root, killed = zero3_killed_run["root"], zero3_killed_run["killed"]
    crumb = json.loads((root / "train" / "workers" / "rank-1.json").read_text())
    assert crumb["pid"] != killed["pid"]  # the restarted group has a new rank-1 process
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
