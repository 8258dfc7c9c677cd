#!/usr/bin/env bash
# GPU throughput benchmark (make bench-gpu): QLoRA r16 on Qwen2.5-7B and -14B shapes at 32k tokens per row.
#
#   bash bench/gpu/run.sh                       # any CUDA machine with torch, transformers, peft, bitsandbytes
#   MODELS="7b" SEQ_LEN=16384 PRODUCT=0 bash bench/gpu/run.sh
#   DRY_RUN=1 MODELS=tiny OUT=/tmp/x bash bench/gpu/run.sh     # CPU smoke: tiny shapes, same code path
#
# Then the product path (PRODUCT=1, the default; needs ray[train,data] and deepspeed too): ray_jobs.synthesize
# and ray_jobs.train on bench/gpu/product_gpu.yaml (one Ray Train worker on the GPU, a Qwen2.5-0.5B shape at
# 32k), summarised by bench/gpu/product.py beside the bare step of the same shape (MODELS includes 0.5b).
#
# Wheels in .whl/ (bitsandbytes, flash-attn, liger-kernel for the machine's Python/CUDA) are installed first,
# without network, into /tmp/site. Without flash-attn it falls back to sdpa and says so in each JSON's
# `note`. Results: $OUT/gpu_throughput_<model>.json (or bench/results/gpu/ when $OUT is unset) + one log each.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-bench/results/gpu}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"

if compgen -G ".whl/*.whl" > /dev/null; then
  echo "installing carried wheels: $(ls .whl | tr '\n' ' ')"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'PYEOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("transformers", "peft", "bitsandbytes", "flash_attn", "liger_kernel"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as exc:  # report, the benchmark decides what it needs
        print(name, "MISSING:", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
PYEOF

status=0
for model in ${MODELS:-0.5b 7b 14b}; do
  # Each model gets its own process and time limit, so one slow or failing shape still leaves the other.
  timeout "${PER_MODEL_TIMEOUT:-200}" "$PY" -m bench.gpu.gpu_throughput --model "$model" \
    --seq-len "${SEQ_LEN:-32768}" --steps "${STEPS:-3}" --out "$OUT_DIR" ${DRY_RUN:+--dry-run} 2>&1 | tee "$OUT_DIR/log-$model.txt"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then echo "model $model failed (exit $rc)"; status=1; fi
done
if [ "${PRODUCT:-1}" = 1 ]; then
  if ! "$PY" -c "import ray.train, deepspeed" 2>/dev/null; then
    echo "product path skipped: ray[train] or deepspeed is not installed for $PY"; status=1
  else
    run_root="$OUT_DIR/runs"
    product=(--config bench/gpu/product_gpu.yaml "run.storage_path=$run_root")
    if [ -n "${DRY_RUN:-}" ]; then  # CPU: the demo's sizes, same stages
      product+=(model.tiny.vocab=bpe model.tiny.num_hidden_layers=2 model.torch_dtype=float32
        model.quantization.compute_dtype=float32 train.use_gpu=false train.max_seq_len=2048 train.max_steps=4
        "data.target_tokens={min: 512, max: 2048}" data.num_samples=16 data.num_workers=2)
    fi
    limit="${PRODUCT_TIMEOUT:-420}"
    { timeout "$limit" "$PY" -m ray_jobs.synthesize "${product[@]}" \
        && timeout "$limit" "$PY" -m ray_jobs.train "${product[@]}" \
        && "$PY" -m bench.gpu.product --run "$run_root/gpu-product" \
             --bare "$OUT_DIR/gpu_throughput_0.5b.json" --out "$OUT_DIR"; } 2>&1 | tee "$OUT_DIR/log-product.txt"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then echo "product path failed (exit $rc)"; status=1; fi
  fi
fi
exit $status
