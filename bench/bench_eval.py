"""Evaluation throughput on a real model: the evaluate stage's path against a plain `generate` loop.

    python -m bench.bench_eval [--lengths 1024 4096] [--questions 4 2] [--new-tokens 64]

Both sides answer the same prompts: the QA prompts the evaluate stage builds with `demo_cpu.yaml` (the
built-in world, one gold position per question) on SmolLM2-135M-Instruct, both in `--dtype` (float32;
`auto` is what make demo uses: bf16 on a CPU with native bf16 matmuls).
- value: the stage's path, `eval.generate.run_prompts` on a local Ray runtime (one model actor, its torch
  threads set from the node's cores, prompts prefilled alone and decoded in batches of `eval.batch_size`),
  prompts per second over the whole call, actor start and model load included.
- baseline: one process, the model loaded once, then `model.generate` greedily on each prompt in turn (the
  default torch threads), prompts per second, model load included.
Greedy decoding on the same weights must give the same replies on both sides: `same_replies` counts them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from bench.common import print_table, write_result

logger = logging.getLogger(__name__)

DEMO = "ray_jobs/configs/demo_cpu.yaml"


def _config(lengths: list[int], questions: int, new_tokens: int, batch: int, dtype: str, smoke: bool):
    from longctx_core.config import load_config

    overrides = [
        "run.storage_path=/tmp/longctx-bench-eval",
        "run.name=bench-eval",
        "eval.models=[{name: base, kind: base}]",
        f"eval.qa.lengths={lengths}",
        f"eval.qa.num_questions={questions}",
        "eval.qa.positions=[0.5]",
        f"eval.max_new_tokens={new_tokens}",
        f"eval.batch_size={batch}",
        f"eval.dtype={dtype}",
        "eval.qa.pool_records=400",
        "data.source.builtin.num_records=400",
    ]
    if smoke:  # the tiny random model: checks that the benchmark runs, the figures mean nothing
        overrides += ["model.name_or_path=tiny"]
    return load_config(DEMO, overrides)


def _plain_loop(cfg, prompts) -> tuple[float, dict[str, str]]:
    """(seconds, {prompt id: reply}) of one process loading the model and calling `generate` per prompt."""
    import torch

    from longctx_core.model.loading import load_model, load_tokenizer

    t0 = time.perf_counter()
    from longctx_core.eval.models import eval_dtype

    dtype = eval_dtype(cfg.eval.dtype, cfg.model.torch_dtype)  # the stage's dtype: a like-for-like baseline
    model = load_model(cfg.model.model_copy(update={"torch_dtype": dtype}), quantize=False).eval()
    tok = load_tokenizer(cfg.model)
    eos = model.generation_config.eos_token_id
    replies = {}
    with torch.inference_mode():
        for p in prompts:
            out = model.generate(
                input_ids=torch.tensor([p.input_ids]),
                max_new_tokens=cfg.eval.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos,
            )
            replies[p.prompt_id] = tok.decode(out[0, p.n_tokens :], skip_special_tokens=True)
    return time.perf_counter() - t0, replies


def _stage_path(cfg, spec, prompts) -> tuple[float, dict[str, str]]:
    """(seconds, {prompt id: reply}) of the evaluate stage's `run_prompts` on a fresh local Ray runtime."""
    import ray

    from longctx_core.eval.generate import run_prompts
    from longctx_core.infra.runtime import ensure_ray

    started = not ray.is_initialized()
    ensure_ray(local=True, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        t0 = time.perf_counter()
        outputs = run_prompts(cfg, spec, prompts)
        return time.perf_counter() - t0, {pid: o["reply"] for pid, o in outputs.items()}
    finally:
        if started:  # never shut down a runtime this benchmark did not start
            ray.shutdown()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--questions", type=int, nargs="+", default=[6, 3], help="prompts per length")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="eval.batch_size of the stage's path")
    parser.add_argument("--dtype", default="float32", help="eval.dtype of both sides (auto: as make demo)")
    parser.add_argument("--smoke", action="store_true", help="the tiny random model (figures meaningless)")
    args = parser.parse_args(argv)
    if len(args.questions) != len(args.lengths):
        parser.error("--questions needs one count per --lengths value")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from longctx_core.eval.runner import check

    rows, per_length = [], {}
    for length, n in zip(args.lengths, args.questions, strict=True):
        cfg = _config([length], n, args.new_tokens, args.batch, args.dtype, args.smoke)
        specs, prompts = check(cfg)
        plain_s, plain = _plain_loop(cfg, prompts)
        stage_s, stage = _stage_path(cfg, specs[0], prompts)
        same = sum(plain[p] == stage[p] for p in plain)
        per_length[length] = {
            "prompts": len(prompts),
            "prompt_tokens_mean": sum(p.n_tokens for p in prompts) / len(prompts),
            "stage_s": stage_s,
            "plain_s": plain_s,
            "stage_prompts_per_s": len(prompts) / stage_s,
            "plain_prompts_per_s": len(prompts) / plain_s,
            "ratio": plain_s / stage_s,
            "same_replies": same,
        }
        rows.append((length, len(prompts), stage_s, plain_s, plain_s / stage_s, f"{same}/{len(prompts)}"))
    print_table(
        "evaluation: the stage's path vs a plain generate loop (seconds, model load included)",
        rows,
        ("length", "prompts", "stage s", "plain s", "speed-up", "same replies"),
    )
    total = sum(v["prompts"] for v in per_length.values())
    stage_total = sum(v["stage_s"] for v in per_length.values())
    plain_total = sum(v["plain_s"] for v in per_length.values())
    return write_result(
        "eval",
        total / stage_total,
        "prompts/s",
        total / plain_total,
        "python -m bench.bench_eval " + " ".join(argv if argv is not None else sys.argv[1:]),
        model="tiny" if args.smoke else "smollm2-135m-instruct",
        new_tokens=args.new_tokens,
        batch_size=args.batch,
        dtype=args.dtype,
        per_length=per_length,
    )


if __name__ == "__main__":
    main()
