"""longctx core library, in two parts.

- The library: `config` (schema), `rope`, `modeling` (model and tokenizer loading, LoRA, merge), `packing`,
  `losses`, `train/` (the Ray Train driver and worker phases), `eval/` (tasks, scoring, report), and the small
  helpers they share (`errors`, `fsio`, `memory`, `metrics`, `plotting`, `resources`, `runtime`).
- The stage runner that the `ray_jobs/` entrypoints call: `cli` (arguments, config, exit codes), `stages`
  (stage name -> check and run functions), `pipeline` (chaining stages, skipping finished ones), `runs` (the
  run folder a stage starts in) and `layout` (`RunLayout`, the run folder's paths).

The one thing most users import is how to use a trained model with the RoPE extension it was trained with:

    from longctx_core import load_finetuned, merge_finetuned
    model, tokenizer = load_finetuned("<run>/train/adapter")
    merge_finetuned("<run>/train/adapter", "<run>/train/merged")   # plain HF folder, for vLLM too
"""

import importlib

__version__ = "0.1.0"

# Loaded on first use, so `import longctx_core` (done by every subpackage) stays free of pydantic/torch.
_EXPORTS = {
    "load_finetuned": "longctx_core.modeling",
    "merge_finetuned": "longctx_core.modeling",
    "vllm_serve_commands": "longctx_core.modeling",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'longctx_core' has no attribute {name!r}")
