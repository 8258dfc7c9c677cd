"""Running prompts through a model: batched greedy generation with the KV cache, per-position loss, and the
Ray Data actor pool that spreads both over model replicas.

    outputs = run_prompts(cfg, spec, prompts)   # {prompt_id: {"reply": str, "new_tokens": int, "nll": ...}}

Each actor holds one model replica (`ModelWorker`; one GPU each on a cluster, a fractional CPU share
locally). Prompts go in sorted by length, so a batch pads little and the longest batch (the one that would
run out of memory) comes first. Batches are left-padded: every row's last prompt token sits in the same
column, where generation continues.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np

from longctx_core.eval.models import ModelSpec
from longctx_core.eval.prompts import Prompt

logger = logging.getLogger(__name__)

NLL_CHUNK = 1024  # positions per lm_head call: full-vocabulary logits of a 32k sequence would not fit


def _stop_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def _prefill(model, seq: list[int], device):
    """One prompt through the model alone, no padding and no mask (the causal kernel's fast path): returns
    (per-layer (keys, values) of its cache, the id of its first new token)."""
    import torch

    out = model(input_ids=torch.tensor([seq], device=device), use_cache=True, logits_to_keep=1)
    first = int(out.logits[0, -1].argmax())
    return [(layer.keys, layer.values) for layer in out.cache.layers], first


def _left_padded_cache(model, caches: list, width: int):
    """One batched cache from single-prompt caches (lists of per-layer (keys, values)), each right-aligned
    in `width` positions: zeros on the left, which the attention mask hides."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for layer in range(len(caches[0])):
        keys = [
            torch.nn.functional.pad(kv[layer][0], (0, 0, width - kv[layer][0].shape[-2], 0)) for kv in caches
        ]
        values = [
            torch.nn.functional.pad(kv[layer][1], (0, 0, width - kv[layer][1].shape[-2], 0)) for kv in caches
        ]
        cache.update(torch.cat(keys), torch.cat(values), layer)
    return cache


def greedy_generate(model, seqs: list[list[int]], budgets: list[int], pad_id: int) -> list[list[int]]:
    """New token ids for each prompt: greedy and KV-cached, each row cut at its first stop token and at its
    own budget.

    Each prompt is prefilled alone: a left-padded batch takes the masked attention path, which on CPU costs
    more per row than one prompt unmasked. The rows then decode together: their caches are left-padded into
    one, and each step is one batched forward of one token per row, where the padding mask is cheap (one
    query per row). Greedy decoding gives each row what its own `generate` call would; finished rows are fed
    `pad_id` until the longest budget is spent or every row has stopped.
    """
    import torch

    device = next(model.parameters()).device
    stops = set(_stop_ids(model))
    width = max(len(s) for s in seqs)
    with torch.inference_mode():
        prefilled = [_prefill(model, s, device) for s in seqs]
        cache = _left_padded_cache(model, [kv for kv, _ in prefilled], width)
        token = torch.tensor([first for _, first in prefilled], device=device)
        del prefilled
        lengths = torch.tensor([len(s) for s in seqs], device=device)
        mask = (torch.arange(width, device=device)[None, :] >= (width - lengths)[:, None]).long()
        rows: list[list[int]] = [[] for _ in seqs]
        done = [False] * len(seqs)
        for step in range(max(budgets)):
            for i, t in enumerate(token.tolist()):
                if not done[i]:
                    rows[i].append(t)
                    done[i] = t in stops or len(rows[i]) >= budgets[i]
            if all(done) or step == max(budgets) - 1:
                break
            feed = torch.where(torch.tensor(done, device=device), torch.full_like(token, pad_id), token)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(
                input_ids=feed[:, None],
                attention_mask=mask,
                position_ids=(lengths + step)[:, None],
                cache=cache,
                use_cache=True,
            )
            token = out.logits[:, -1].argmax(dim=-1)
    return [[t for t in row if t not in stops] for row in rows]


def token_nll(model, ids: list[int]) -> list[float]:
    """Loss (nats) of each target token 1..L-1 of `ids` given the tokens before it, computed from the final
    hidden states in chunks so the full logits never exist at once."""
    import torch
    import torch.nn.functional as F

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    losses = []
    with torch.inference_mode():
        hidden = causal.model(input_ids=x, use_cache=False).last_hidden_state[0]
        for start in range(0, len(ids) - 1, NLL_CHUNK):
            end = min(len(ids) - 1, start + NLL_CHUNK)
            logits = causal.lm_head(hidden[start:end]).float()
            losses.append(F.cross_entropy(logits, x[0, start + 1 : end + 1], reduction="none"))
    return torch.cat(losses).tolist() if losses else []


class ModelWorker:
    """A Ray Data callable class: loads one model replica, then turns batches of prompt rows into outputs.

    Output columns: `prompt_id`, `reply` (decoded, special tokens dropped), `new_tokens`, `nll` (JSON
    `[bucket sums, bucket counts]` for `kind="nll"` rows, else ""), `seconds` (batch wall time, per row).
    """

    def __init__(
        self,
        model_cfg: dict,
        spec: dict,
        quantize: bool | None,
        cpu_threads: int = 0,
        dtype: str | None = None,
    ) -> None:
        import torch

        from longctx_core.config import ModelConfig
        from longctx_core.eval.models import load_for_eval

        self.threads = cpu_threads if not torch.cuda.is_available() else 0
        self._set_threads()
        self.spec = ModelSpec(**spec)
        self.model, self.tokenizer = load_for_eval(
            ModelConfig.model_validate(model_cfg), self.spec, quantize, dtype
        )
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else _stop_ids(self.model)[0]

    def _set_threads(self) -> None:
        """Torch's intra-op threads, set in the calling thread: OpenMP keeps the count per thread, and Ray Data
        may call a batch from another thread than the constructor's (which then runs on OMP_NUM_THREADS=1)."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from longctx_core.eval.perplexity import bucket_sums

        self._set_threads()
        t0 = time.perf_counter()
        n = len(batch["prompt_id"])
        replies, new_tokens, nll = [""] * n, [0] * n, [""] * n
        seqs = [list(map(int, batch["input_ids"][i])) for i in range(n)]
        gen = [i for i in range(n) if batch["kind"][i] == "generate"]
        if gen:
            outs = greedy_generate(
                self.model,
                [seqs[i] for i in gen],
                [int(batch["max_new_tokens"][i]) for i in gen],
                self.pad_id,
            )
            for i, toks in zip(gen, outs, strict=True):
                replies[i] = self.tokenizer.decode(toks, skip_special_tokens=True)
                new_tokens[i] = len(toks)
        for i in (i for i in range(n) if batch["kind"][i] == "nll"):
            sums, counts = bucket_sums(token_nll(self.model, seqs[i]), len(seqs[i]), int(batch["buckets"][i]))
            nll[i] = json.dumps([sums, counts])
        seconds = (time.perf_counter() - t0) / max(1, n)
        return {
            "prompt_id": np.array(batch["prompt_id"], dtype=object),
            "reply": np.array(replies, dtype=object),
            "new_tokens": np.array(new_tokens, dtype=np.int64),
            "nll": np.array(nll, dtype=object),
            "seconds": np.full(n, seconds),
        }


def output_of_row(row: dict) -> dict[str, Any]:
    """One `ModelWorker` output row as the scorer takes it: {"reply", "new_tokens", "nll" ([bucket sums,
    bucket counts] or None), "seconds"}."""
    return {
        "reply": row["reply"],
        "new_tokens": int(row["new_tokens"]),
        "nll": json.loads(row["nll"]) if row["nll"] else None,
        "seconds": float(row["seconds"]),
    }


def actor_resources(num_workers: int, use_gpu: bool) -> dict[str, float]:
    """Per-actor resources: one GPU each on a cluster; on CPU a share that leaves room for Ray Data's own
    read tasks (a whole CPU per actor on a 2-CPU machine hangs the pipeline)."""
    from longctx_core.infra.resources import cpus_per_actor

    if use_gpu:
        return {"num_gpus": 1.0, "num_cpus": 1.0}
    return {"num_gpus": 0.0, "num_cpus": cpus_per_actor(num_workers)}


def cpu_threads(ev) -> int:
    """Torch threads for each CPU model actor: `eval.cpu_threads`, else this node's cores shared among the
    `eval.num_workers` actors. Ray starts an actor that asks for a fraction of a CPU with one thread, which
    leaves the rest of a laptop idle while one replica evaluates."""
    if ev.cpu_threads:
        return ev.cpu_threads
    return max(1, (os.cpu_count() or 1) // ev.num_workers)


def run_prompts(
    cfg, spec: ModelSpec, prompts: list[Prompt], progress_every_s: float = 15.0
) -> dict[str, dict]:
    """Run every prompt through `spec` on an actor pool of `eval.num_workers` replicas; returns outputs keyed
    by prompt id. Logs progress (done/total, prompts per second) while results stream back."""
    import ray

    ev = cfg.eval
    rows = [
        p.to_row(ev.max_new_tokens, ev.perplexity.buckets) for p in sorted(prompts, key=lambda p: -p.n_tokens)
    ]
    res = actor_resources(ev.num_workers, ev.use_gpu)
    ds = ray.data.from_items(rows).map_batches(
        ModelWorker,
        fn_constructor_kwargs={
            "model_cfg": cfg.model.model_dump(mode="json"),
            "spec": spec.__dict__,
            "quantize": ev.quantize,
            "cpu_threads": 0 if ev.use_gpu else cpu_threads(ev),
            "dtype": ev.dtype,
        },
        batch_size=ev.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ev.num_workers),
        **res,
    )
    outputs: dict[str, dict[str, Any]] = {}
    t0 = last = time.perf_counter()
    logger.info("model %s: %d prompts on %d actor(s) %s", spec.name, len(rows), ev.num_workers, res)
    for row in ds.iter_rows():
        outputs[row["prompt_id"]] = output_of_row(row)
        now = time.perf_counter()
        if now - last >= progress_every_s or len(outputs) == len(rows):
            last = now
            logger.info(
                "model %s: %d/%d prompts done (%.2f prompts/s)",
                spec.name,
                len(outputs),
                len(rows),
                len(outputs) / max(now - t0, 1e-9),
            )
    missing = {p.prompt_id for p in prompts} - set(outputs)
    if missing:
        raise RuntimeError(f"model {spec.name}: {len(missing)} prompts came back without output")
    return outputs
