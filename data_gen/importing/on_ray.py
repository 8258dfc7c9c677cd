"""The Ray Data pipeline for one source: read tasks stream raw rows to an actor pool doing the per-row
work, results come back in source order (or the same work in this process)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyarrow as pa

from data_gen.importing.reading import READ_BLOCK_ROWS, read_blocks
from data_gen.importing.rows import ImportActor, ImportSettings, process_table


@contextlib.contextmanager
def _ordered_execution():
    """Ray Data executes with preserve_order inside (restored after): results come in source order."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = before


def process_on_ray(units: list[dict], src, settings: ImportSettings, tok_path: str, num_workers: int):
    """Yield result rows (dicts, `RESULT_SCHEMA`'s columns) of every raw row of `units`, in source order."""
    import ray

    from longctx_core.infra.resources import cpus_per_actor

    read_cpus = cpus_per_actor(max(1, min(len(units), num_workers)), share=0.25)
    last = (-1, -1)
    with _ordered_execution():  # set before the dataset is built: it keeps a copy of the context
        ds = ray.data.from_items(units, override_num_blocks=max(1, len(units)))
        ds = ds.map_batches(
            read_blocks, fn_kwargs={"src": src}, batch_size=1, batch_format="pyarrow", num_cpus=read_cpus
        )
        ds = ds.map_batches(
            ImportActor,
            fn_constructor_args=(tok_path, settings),
            batch_size=READ_BLOCK_ROWS,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=num_workers),
            num_cpus=cpus_per_actor(num_workers),
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for r in batch.to_pylist():
                key = (r["unit"], r["row"])
                if key <= last:  # preserve_order is what makes the output independent of worker count
                    raise RuntimeError(f"import results out of order: {key} after {last}")
                last = key
                yield r


def process_locally(units: list[dict], src, settings: ImportSettings, tok) -> Iterator[dict]:
    """The same work in this process (the benchmark's baseline; tests of the per-row logic)."""
    for unit in units:
        for block in read_blocks(pa.Table.from_pylist([unit]), src):
            yield from process_table(tok, settings, block).to_pylist()
