"""Loss memory at Qwen's vocabulary: peak memory and tokens/s of the chunked cross-entropy vs full logits.

    python -m bench.bench_loss_memory [--lengths 4096 8192 16384 32768] [--vocab 151936] [--hidden 896]
                                      [--chunk-size 1024] [--threads 2] [--budget-fraction 0.6]

One row of L tokens with every position labelled (the worst case: in long-context QA only the answer is
labelled, and the chunked loss then skips the rest), hidden states [L, 896] that require grad, and the LM
head a frozen fp32 `Linear(896 -> 151,936)` as under (Q)LoRA (Qwen2.5-0.5B's width and embedding rows).
Forward + backward of the summed loss, two ways:
- chunked: `longctx_core.train.losses.chunked_cross_entropy` (fp32 logits for `--chunk-size` rows at a time,
  recomputed in backward), as the training loop runs it;
- full logits: `F.cross_entropy(head(h).float(), y)`, what a stock `*ForCausalLM(labels=...)` does.

Memory is the peak RSS delta, each (way, length) in a fresh spawned process: RSS is read once the head and
inputs exist and a small untimed step of the same way has run (the path's one-off set-up is not the step's),
then one step runs, and the kernel's high-water mark (`getrusage` ru_maxrss) minus that RSS is the step's
memory. RSS because it counts every byte the process holds, torch's C++ allocator included, and
it is what an OOM kill is decided on. Not tracemalloc: it sees only Python's allocator, and torch tensors are
allocated in C++, invisible to it. Not the torch profiler: CPU memory events carry no peak, reconstructing
one means replaying every allocation, and recording them slows every op. A fresh process per measurement
keeps memory that an earlier step left in the allocator's free lists from hiding this step's needs.

Full logits need about three [L, V] fp32 buffers at once (logits, log-softmax, their gradient in backward):
19.9 GB each at 32k x 152k. A length whose prediction exceeds `--budget-fraction` of the machine's available
memory is not run (it would OOM a shared machine) and is reported as skipped with its predicted GiB.

Writes bench/results/loss_memory.json: `value` the chunked step GiB and `baseline` the full-logits step GiB
at the longest length where both ran, `ratio` their quotient (the share of memory the chunked loss needs);
every measurement is in `rows`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import time

from bench.common import command_line, parse_args, print_table, write_result
from longctx_core.train.memory import peak_rss_gb

logger = logging.getLogger(__name__)

GIB = 2**30
FULL_LOGITS_COPIES = 3  # logits, log-softmax output, and a gradient of the same shape in backward


def rss_gib() -> float:
    """Resident set size of this process now (Linux /proc), GiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / GIB


def available_gib() -> float:
    """MemAvailable from /proc/meminfo, GiB (memory the kernel can give without swapping)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def predicted_full_gib(length: int, vocab: int) -> float:
    """Predicted step memory of the full-logits loss: FULL_LOGITS_COPIES fp32 [length, vocab] buffers."""
    return FULL_LOGITS_COPIES * length * vocab * 4 / GIB


def measure(way: str, length: int, vocab: int, hidden: int, chunk_size: int, threads: int, seed: int) -> dict:
    """Spawned-process entry: one forward + backward of the loss `way` ('chunked' | 'full') on one row of
    `length` labelled tokens; returns {way, length, seconds, tokens_per_s, step_gib, loss, grad_norm}."""
    import torch
    import torch.nn.functional as F

    from longctx_core.train.losses import chunked_cross_entropy

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        head.weight.normal_(0, 0.02, generator=gen)
    head.weight.requires_grad_(False)  # frozen as under (Q)LoRA: only the hidden states get a gradient
    h = torch.randn(length, hidden, generator=gen).requires_grad_(True)
    y = torch.randint(0, vocab, (length,), generator=gen)

    def loss_of(hs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        if way == "chunked":
            return chunked_cross_entropy(hs, head, ys, chunk_size)
        return F.cross_entropy(head(hs).float(), ys, reduction="sum")

    # One small untimed step first, so the path's one-off set-up (lazy imports, autograd's and activation
    # checkpointing's first use) counts neither as the step's memory nor its time: chunked on chunk_size + 1
    # rows (two chunks, none larger than the step's own), full logits on 2 rows.
    n = min(length, chunk_size + 1) if way == "chunked" else 2
    loss_of(torch.zeros(n, hidden, requires_grad=True), torch.zeros(n, dtype=torch.long)).backward()
    before = rss_gib()
    t0 = time.perf_counter()
    loss = loss_of(h, y)
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = peak_rss_gb()
    return {
        "way": way,
        "length": length,
        "seconds": seconds,
        "tokens_per_s": length / seconds,
        "step_gib": peak - before,
        "loss": loss.item() / length,
        "grad_norm": float(h.grad.norm()),
    }


def run_isolated(way: str, length: int, args) -> dict:
    """`measure` in a fresh spawned process (its own peak RSS); returns its record."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        job = pool.submit(
            measure, way, length, args.vocab, args.hidden, args.chunk_size, args.threads, args.seed
        )
        return job.result()


OPTIONS = {
    "--lengths": {"type": int, "nargs": "+", "default": [4096, 8192, 16384, 32768], "help": "tokens/row"},
    "--vocab": (151_936, "LM-head rows (Qwen2.5's embedding)"),
    "--hidden": (896, "hidden size (Qwen2.5-0.5B)"),
    "--chunk-size": (1024, "train.loss_chunk_size"),
    "--threads": (2, "torch threads"),
    "--seed": (0, None),
    "--budget-fraction": {
        "type": float,
        "default": 0.6,
        "help": "skip full logits where their predicted memory exceeds this share of available memory",
    },
}


def run_logged(way: str, length: int, args) -> dict:
    """`run_isolated`, its seconds and step memory logged."""
    record = run_isolated(way, length, args)
    logger.info("%-9sL=%d: %.2f s, %.3f GiB", way, length, record["seconds"], record["step_gib"])
    return record


def measure_lengths(args) -> tuple[list[dict], list[dict]]:
    """Both ways at each length, shortest first; full logits only where their predicted memory fits the
    budget. Returns the measurements and the full-logits runs skipped."""
    records, skipped = [], []
    for length in sorted(args.lengths):
        records.append(run_logged("chunked", length, args))
        need, have = predicted_full_gib(length, args.vocab), available_gib()
        if need > args.budget_fraction * have:
            logger.warning(
                "full logits L=%d skipped: predicted %.1f GiB > %.0f%% of %.1f GiB available",
                length,
                need,
                100 * args.budget_fraction,
                have,
            )
            skipped.append({"length": length, "predicted_gib": need, "available_gib": have})
            continue
        records.append(run_logged("full", length, args) | {"predicted_gib": need})
    return records, skipped


def report(args, by: dict) -> None:
    """The table: both ways' step memory and tokens/s at each length (full logits maybe skipped)."""
    rows = []
    for length in sorted(args.lengths):
        c, f = by[("chunked", length)], by.get(("full", length))
        rows.append(
            (
                length,
                c["step_gib"],
                c["tokens_per_s"],
                f["step_gib"] if f else "skipped",
                f["tokens_per_s"] if f else "-",
                predicted_full_gib(length, args.vocab),
                (c["step_gib"] / f["step_gib"]) if f else "-",
            )
        )
    print_table(
        f"loss memory: vocab {args.vocab}, hidden {args.hidden}, chunk {args.chunk_size}, all tokens labelled, "
        f"frozen fp32 head, {args.threads} threads, peak RSS delta per step",
        rows,
        (
            "tokens",
            "chunked GiB",
            "chunked tok/s",
            "full GiB",
            "full tok/s",
            "full predicted GiB",
            "memory ratio",
        ),
    )


def main(argv=None) -> dict:
    args = parse_args("bench.bench_loss_memory", __doc__, argv, OPTIONS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    records, skipped = measure_lengths(args)
    by = {(r["way"], r["length"]): r for r in records}
    report(args, by)
    both = [length for length in sorted(args.lengths) if ("full", length) in by]
    if not both:
        raise RuntimeError("full logits fit in memory at none of the lengths; add a shorter one to compare")
    at = both[-1]
    c, f = by[("chunked", at)], by[("full", at)]
    return write_result(
        "loss_memory",
        value=c["step_gib"],
        unit=f"GiB peak RSS delta of one loss forward+backward at {at} tokens, chunked (baseline: full logits)",
        baseline=f["step_gib"],
        command=command_line("bench.bench_loss_memory", argv),
        compared_at=at,
        tokens_per_s_ratio=c["tokens_per_s"] / f["tokens_per_s"],
        rows=records,
        skipped_full_logits=skipped,
        vocab=args.vocab,
        hidden=args.hidden,
        chunk_size=args.chunk_size,
        threads=args.threads,
        memory_measure="peak RSS delta (getrusage ru_maxrss minus RSS before the step), fresh process per row",
    )


if __name__ == "__main__":
    main()
