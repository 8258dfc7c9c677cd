#!/usr/bin/env bash
# GPU throughput benchmark (make bench-gpu): QLoRA r16 on Qwen2.5-7B and -14B shapes at 32k tokens per row.
#
#   bash bench/gpu/run.sh                       # any CUDA machine with torch, transformers, peft, bitsandbytes
#   MODELS="7b" SEQ_LEN=16384 bash bench/gpu/run.sh
#   DRY_RUN=1 MODELS=tiny OUT=/tmp/x bash bench/gpu/run.sh     # CPU smoke: tiny shapes, same code path
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
for model in ${MODELS:-7b 14b}; do
  # Each model gets its own process and time limit, so one slow or failing shape still leaves the other.
  timeout "${PER_MODEL_TIMEOUT:-200}" "$PY" -m bench.gpu.gpu_throughput --model "$model" \
    --seq-len "${SEQ_LEN:-32768}" --steps "${STEPS:-3}" --out "$OUT_DIR" ${DRY_RUN:+--dry-run} 2>&1 | tee "$OUT_DIR/log-$model.txt"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then echo "model $model failed (exit $rc)"; status=1; fi
done
exit $status
