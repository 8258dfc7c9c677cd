"""longctx core library: config schema, RoPE scaling, model loading, packing, training loop, evaluation.

No Ray-job glue lives here; `ray_jobs/` holds the thin entrypoints.
"""

__version__ = "0.1.0"
