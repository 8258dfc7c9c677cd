"""Long-context cost curve: tokens/s and peak memory of a training step at 1x, 2x, 4x, 8x the original context.

    python -m bench.bench_longctx [--multiples 1 2 4 8] [--steps 2] [--warmup 1] [--threads 2]

The tiny demo model (4-bit QLoRA, original context `model.tiny.max_position_embeddings` = 512) is extended
with YaRN to 8x its context once, then trains on one row of L = m x 512 tokens per step for each multiple m
(random token ids, every token labelled: the worst case for the loss), two ways:
- chunked: the project's `PackedCausalLM` (labelled positions only, fp32 logits one
  `train.loss_chunk_size` chunk at a time, recomputed in backward);
- full logits: the stock `*ForCausalLM(labels=...)` loss, which materialises the whole [L, vocab] logits.
Each way runs in its own spawned process, lengths in increasing order, so the process's peak RSS after the
steps at length L is the peak of that length (step memory only grows with L). `step_gb` is that peak minus
the RSS with the model loaded.

Writes bench/results/longctx.json: `value` tokens/s at the longest multiple (chunked), `baseline` tokens/s
at 1x (chunked), `ratio` their quotient (how much per-token speed the longest context keeps); the whole
curve is in `curve`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from bench.common import command_line, print_table, write_result
from bench.fixtures import demo_config
from longctx_core.train.memory import peak_rss_gb

logger = logging.getLogger(__name__)


def current_rss_gb() -> float:
    """Resident set size of this process now (Linux /proc), GiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def _step(wrapper, batch: dict, chunked: bool):
    """Forward + backward of one batch; returns the mean loss over labelled tokens (a float)."""
    if chunked:
        loss_sum, n = wrapper(**batch)
        loss = loss_sum / n.clamp(min=1)
    else:
        loss = wrapper.causal_lm()(**batch, use_cache=False).loss
    loss.backward()
    return float(loss.detach())


def measure_curve(cfg_dict: dict, lengths: list[int], chunked: bool, steps: int, warmup: int, threads: int):
    """Spawned-process entry: build the model once, then for each length (increasing) run `warmup` + `steps`
    optimizer steps on one random row; returns [{length, tokens_per_s, peak_rss_gb, step_gb, loss}]."""
    import torch

    from longctx_core.config import config_from_dict
    from longctx_core.train.engine import build_engine

    torch.set_num_threads(threads)
    cfg = config_from_dict(cfg_dict)
    built = build_engine(cfg, total_steps=None, use_deepspeed=False)  # no schedule: a constant LR
    wrapper, opt = built.loss_model, built.optimizer
    wrapper.train()
    loaded = current_rss_gb()
    vocab = wrapper.causal_lm().config.vocab_size
    gen = torch.Generator().manual_seed(cfg.run.seed)
    out = []
    for length in sorted(lengths):
        ids = torch.randint(0, vocab, (1, length), generator=gen)
        batch = {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.arange(length).unsqueeze(0)}
        seconds, loss = 0.0, float("nan")
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            loss = _step(wrapper, batch, chunked)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warmup:
                seconds += time.perf_counter() - t0
        peak = peak_rss_gb()
        out.append(
            {
                "length": length,
                "tokens_per_s": steps * length / seconds,
                "peak_rss_gb": peak,
                "step_gb": peak - loaded,
                "loss": loss,
            }
        )
    return out


def long_config(multiples: list[int]):
    """The demo config with the tiny model YaRN-extended to max(multiples) x its original context."""
    base = demo_config()
    original = base.model.tiny.max_position_embeddings
    top = max(multiples)
    overrides = [
        "model.lora.dropout=0.0",
        # The preset's own extension is replaced by exactly max(multiples) x the original context.
        f"model.rope.target_max_position_embeddings={original * top}",
        f"model.rope.type={'yarn' if top > 1 else 'none'}",
    ]
    if top > 1:
        overrides.append(f"model.rope.factor={top}")
    return demo_config(overrides), original


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_longctx", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 2, 4, 8], help="x original context")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per length")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per length")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import concurrent.futures
    import multiprocessing

    cfg, original = long_config(args.multiples)
    lengths = [original * m for m in sorted(args.multiples)]
    curves = {}
    for mode in ("chunked", "full_logits"):
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            job = pool.submit(
                measure_curve,
                cfg.model_dump(mode="json"),
                lengths,
                mode == "chunked",
                args.steps,
                args.warmup,
                args.threads,
            )
            curves[mode] = job.result()
    rows = []
    for c, f in zip(curves["chunked"], curves["full_logits"], strict=True):
        m = c["length"] // original
        rows.append((f"{m}x", c["length"], c["tokens_per_s"], c["step_gb"], f["tokens_per_s"], f["step_gb"]))
    print_table(
        f"long-context cost: tiny demo model (4-bit QLoRA, YaRN x{max(args.multiples)}), 1 row per step, "
        f"all tokens labelled, {args.threads} threads",
        rows,
        (
            "context",
            "tokens",
            "chunked tok/s",
            "chunked step GiB",
            "full-logits tok/s",
            "full-logits step GiB",
        ),
    )
    first, last = curves["chunked"][0], curves["chunked"][-1]
    full_last = curves["full_logits"][-1]
    command = command_line("bench.bench_longctx", argv)
    return write_result(
        "longctx",
        value=last["tokens_per_s"],
        unit=f"training tokens/s at {last['length']} tokens (chunked loss) vs at {first['length']}",
        baseline=first["tokens_per_s"],
        command=command,
        original_context=original,
        curve=curves,
        chunked_vs_full_at_longest={
            "tokens_per_s_ratio": last["tokens_per_s"] / full_last["tokens_per_s"],
            "step_gb_chunked": last["step_gb"],
            "step_gb_full_logits": full_last["step_gb"],
        },
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
