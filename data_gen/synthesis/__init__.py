"""The synthesis pipeline: read -> normalise -> split -> plan -> compose on Ray Data -> Parquet + stats.

    summary = synthesize(cfg)          # writes <run>/data/{train,eval}/*.parquet, stats.json, plots/, quarantine/

Driver side (cheap, deterministic): read the source, locate evidence, quarantine bad rows, hash-split the
questions, count each pool document's tokens once, and plan every sample (its records, target length,
answer style, seed) from (run.seed, split, sample index). Ray Data side (the heavy part): `map_batches`
over an actor pool, one tokenizer per actor, composes and tokenises the samples. The driver then writes
rows in sample-index order into fixed-size shards (`part-00000.parquet`, ...), so the output bytes do not
depend on the number of workers or on block boundaries.

The modules, each importing only the ones above it:

    planning   reading the source, evidence, the split, the pools, the plan of every sample
    composing  one planned sample composed and validated, in Ray actors or a plain loop
    stage      the stage: plan, compose, write shards, quarantine/, stats.json, plots/
"""

from data_gen.synthesis.composing import (
    ComposeActor,
    ComposeSettings,
    build_pools,
    compose_locally,
    compose_on_ray,
    compose_task,
)
from data_gen.synthesis.planning import (
    Prepared,
    base_overheads,
    plan_samples,
    prepare_records,
)
from data_gen.synthesis.stage import check_synthesis_inputs, synthesize

__all__ = [
    "ComposeActor",
    "ComposeSettings",
    "Prepared",
    "base_overheads",
    "build_pools",
    "check_synthesis_inputs",
    "compose_locally",
    "compose_on_ray",
    "compose_task",
    "plan_samples",
    "prepare_records",
    "synthesize",
]
