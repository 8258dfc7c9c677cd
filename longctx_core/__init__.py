"""longctx core library. Its layers, top to bottom (a layer imports only the ones below it; `make lint`
checks it with import-linter):

    runner/   the stage runner the `ray_jobs/` entrypoints call: cli, the stage table (`stages`), the
              pipeline's chain of stages (`chain`, `markers`, `two_stage`), the run's top report
    train/    fine-tuning on Ray Train + DeepSpeed: driver, worker, engine, packing, losses, LR schedule
    eval/     evaluation tasks, generation on Ray Data, scoring, reports
    model/    loading (4-bit or not), RoPE extension, LoRA, fine-tuned use, model families, GGUF, tiny model
    infra/    run folders (`layout`, `runs`), the local Ray runtime, resources, metrics, plots
    config/   the config schema and its checks
    data/     sample records, QA sources, the built-in world, context composition, answer styles, chat
    fsio, errors

`data_gen` (synthesis and import on Ray Data) sits above this library and registers its stage through an
entry point; the library never imports it.

The one thing most users import is how to use a trained model with the RoPE extension it was trained with:

    from longctx_core import load_finetuned, merge_finetuned
    model, tokenizer = load_finetuned("<run>/train/adapter")
    merge_finetuned("<run>/train/adapter", "<run>/train/merged")   # plain HF folder, for vLLM too
"""

import importlib

__version__ = "0.1.0"

# Loaded on first use, so `import longctx_core` (done by every subpackage) stays free of pydantic/torch.
_EXPORTS = {
    "load_finetuned": "longctx_core.model.finetuned",
    "merge_finetuned": "longctx_core.model.finetuned",
    "vllm_serve_commands": "longctx_core.model.finetuned",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'longctx_core' has no attribute {name!r}")
