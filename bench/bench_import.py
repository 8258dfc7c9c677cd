"""Chat-data import throughput: import + tokenise + pack on Ray Data vs a single-process loop.

    python -m bench.bench_import [--rows 4000] [--files 4] [--workers 2]

Both sides run the same functions over the same generated ShareGPT rows (multi-turn, a few hundred to a
few thousand tokens each, a few bad rows), with the tiny BPE tokenizer: the import stage
(`data_gen.importing.import_source`: parse, normalise roles, validate, tokenise with the chat template,
write Parquet), then the training stream's tokenise + label mask + first-fit-decreasing packing
(`longctx_core.train.packing.TokenizePack` over windows of `train.pack_window` rows). On Ray Data that is the
import's read tasks and actor pool, then `packed_dataset` with `train.data_workers` actors; the loop calls
the same code in this process. Both must give the same Parquet bytes and pack the same samples (the
packing windows may be cut differently: Ray Data batches the shards its own way).
Writes bench/results/import.json; `value` is Ray Data samples/s per core (end to end, actor start-up
included), `baseline` the loop's samples/s (one core), `ratio` value / baseline.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from pathlib import Path

from bench.common import command_line, parse_args, print_table, quiet_process, write_result

logger = logging.getLogger(__name__)

WORDS = (
    "the harbour keeper counted ships at dawn while lanterns burned over the quiet river and wind moved "
    "the mill sails past old stone walls 灯塔 守护者 每天 记录 船只 河流 风车"
).split()


def make_rows(folder: Path, rows: int, files: int, seed: int = 0) -> None:
    """`rows` ShareGPT rows over `files` jsonl files; about 1% are bad (a role out of order)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    handles = [(folder / f"part{i:02d}.jsonl").open("w") for i in range(files)]
    for i in range(rows):
        conv = []
        for _ in range(rng.randint(1, 4)):
            conv.append({"from": "human", "value": " ".join(rng.choices(WORDS, k=rng.randint(20, 400)))})
            conv.append({"from": "gpt", "value": " ".join(rng.choices(WORDS, k=rng.randint(5, 120)))})
        if rng.random() < 0.01:
            conv.reverse()
        handles[i * files // rows].write(json.dumps({"id": f"r{i:06d}", "conversations": conv}) + "\n")
    for h in handles:
        h.close()


def _config(src: Path, workers: int):
    from longctx_core.config import load_config

    return load_config(
        None,
        [
            "data.source.kind=chat",
            f"data.source.path={src}",
            f"data.num_workers={workers}",
            f"train.data_workers={workers}",
            "train.max_seq_len=4096",
            "train.overlong=truncate",
            "data.samples_per_shard=1000",
            "data.max_bad_fraction=1",
        ],
    )


def _pack_locally(files: list[Path], tok_path: str, cfg) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longctx_core.train.packing import TokenizePack, sample_columns

    packer = TokenizePack(tok_path, cfg.train.max_seq_len, True, cfg.train.overlong, cfg.run.seed)
    table = pa.concat_tables([pq.read_table(f, columns=sample_columns([str(f)])) for f in files])
    out = []
    for start in range(0, table.num_rows, cfg.train.pack_window):
        out += packer(table.slice(start, cfg.train.pack_window)).to_pylist()
    return out


def _pack_on_ray(files: list[Path], tok_path: str, cfg, cpus: float) -> list[dict]:
    from longctx_core.train.packing import packed_dataset

    tcfg = cfg.train.model_copy(update={"shuffle": False})
    ds = packed_dataset([str(f) for f in files], tok_path, tcfg, cfg.run.seed, cpus)
    return [r for b in ds.iter_batches(batch_size=None, batch_format="pyarrow") for r in b.to_pylist()]


OPTIONS = {
    "--rows": (4000, "chat rows"),
    "--files": (4, "jsonl files they are spread over"),
    "--workers": (2, "Ray Data actors (import and packing each)"),
}


def _packed(rows: list[dict]) -> tuple[list[str], int]:
    """The sample ids packed into `rows`, sorted, and their token count. Window boundaries may differ (Ray
    Data forms its own batches of pack_window rows from the shards), so the check is that both sides pack
    the same samples, each once, into the same number of tokens."""
    return sorted(s for r in rows for s in r["sample_ids"]), sum(len(r["input_ids"]) for r in rows)


def measure_loop(cfg, path: str, out: Path) -> dict:
    """Import into `out` and pack in this process, timed; returns {result (the import's), rows, seconds}."""
    from data_gen.importing import import_source
    from data_gen.tokenizer import chat_tokenizer

    tok = chat_tokenizer(path)
    t0 = time.perf_counter()
    loop = import_source(cfg.data.source, "chat", cfg, path, out, tok=tok)
    rows = _pack_locally(loop.writer.files, path, cfg)
    return {"result": loop, "rows": rows, "seconds": time.perf_counter() - t0}


def measure_ray(cfg, path: str, out: Path, workers: int) -> dict:
    """Import into `out` and pack on Ray Data (a runtime of `workers` CPUs unless one is up), timed; returns
    {result (the import's), rows, seconds, import_s (the import alone), cores (the actors occupy)}."""
    import ray

    from data_gen.importing import import_source
    from longctx_core.infra.resources import cpus_per_actor

    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cores = min(workers, int(ray.cluster_resources()["CPU"]))
    t0 = time.perf_counter()
    on_ray = import_source(cfg.data.source, "chat", cfg, path, out)
    t_import = time.perf_counter() - t0
    rows = _pack_on_ray(on_ray.writer.files, path, cfg, cpus_per_actor(workers, share=0.25))
    ray_s = time.perf_counter() - t0
    ray.shutdown()
    return {"result": on_ray, "rows": rows, "seconds": ray_s, "import_s": t_import, "cores": cores}


def report(args, loop: dict, on_ray: dict, same_parquet: bool, same_packed: bool) -> None:
    """The table of both sides' seconds and samples/s, and the checks' line."""
    n, cores = loop["result"].samples, on_ray["cores"]
    loop_rate, ray_rate = n / loop["seconds"], n / on_ray["seconds"]
    print_table(
        f"chat import + tokenise + pack: {args.rows} ShareGPT rows ({loop['result'].tokens} tokens kept), tiny tokenizer",
        [
            ("plain loop (1 process)", 1, loop["seconds"], loop_rate, loop_rate),
            (
                f"Ray Data, {args.workers} actors, end to end",
                cores,
                on_ray["seconds"],
                ray_rate,
                ray_rate / cores,
            ),
        ],
        ("path", "cores", "seconds", "samples/s", "samples/s/core"),
    )
    print(
        f"import alone on Ray: {on_ray['import_s']:.1f} s; quarantined {len(loop['result'].quarantine)}; identical "
        f"Parquet: {same_parquet}; same samples and tokens packed: {same_packed}"
    )


def main(argv=None) -> dict:
    args = parse_args("bench.bench_import", __doc__, argv, OPTIONS)
    quiet_process()
    from data_gen.tokenizer import tokenizer_path

    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        tmp = Path(tmp)
        make_rows(tmp / "src", args.rows, args.files)
        cfg = _config(tmp / "src", args.workers)
        path = tokenizer_path(cfg)
        loop = measure_loop(cfg, path, tmp / "loop")
        on_ray = measure_ray(cfg, path, tmp / "ray", args.workers)
        files = loop["result"].writer.files, on_ray["result"].writer.files
        same_parquet = [f.read_bytes() for f in files[0]] == [f.read_bytes() for f in files[1]]
    same_packed = _packed(loop["rows"]) == _packed(on_ray["rows"])
    report(args, loop, on_ray, same_parquet, same_packed)
    imported, n = loop["result"], loop["result"].samples
    return write_result(
        "import",
        value=n / on_ray["seconds"] / on_ray["cores"],
        unit="samples/s/core (chat import + tokenise + pack)",
        baseline=n / loop["seconds"],
        command=command_line("bench.bench_import", argv),
        speedup=loop["seconds"] / on_ray["seconds"],
        samples=n,
        tokens=imported.tokens,
        quarantined=len(imported.quarantine),
        workers=args.workers,
        ray_import_seconds=on_ray["import_s"],
        identical_parquet=same_parquet,
        same_samples_packed=same_packed,
        packed_rows={"loop": len(loop["rows"]), "ray": len(on_ray["rows"])},
    )


if __name__ == "__main__":
    main()
