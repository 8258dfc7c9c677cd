#!/usr/bin/env bash
# Submit one stage (or the whole pipeline) to a Ray cluster with the `ray job submit` CLI (= make submit).
#
#   bash cluster/local/submit.sh STAGE CONFIG [dotted.key=value ...] [--address URL] [--no-wait] [--dry-run]
#   make submit CONFIG=ray_jobs/configs/demo_cpu.yaml [STAGE=train]
#
# It runs: ray job submit --address <head> --working-dir . --runtime-env cluster/runtime_env.yaml
#            -- python -m ray_jobs.<STAGE> --config CONFIG [overrides]
# after validating the config here (a bad key fails before anything reaches the cluster). The address is
# --address, else RAY_API_SERVER_ADDRESS, else the head that up.sh started, else http://127.0.0.1:8265.
# Secrets (HF_TOKEN, ...) are never read from files: set in your environment, they are forwarded as
# runtime-env env_vars (names printed, values never).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO"
exec "$PY" "$REPO/cluster/local/submit.py" --temp-dir "$TEMP_DIR" "$@"
