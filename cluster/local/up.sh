#!/usr/bin/env bash
# Start a real local Ray head for `make submit`: dashboard + job API on 127.0.0.1 only, token auth ON.
#
#   bash cluster/local/up.sh [extra `ray start` flags]      (= make cluster-up; stop with make cluster-down)
#
# Knobs (environment): LONGCTX_RAY_PORT (GCS, 6379), LONGCTX_DASHBOARD_PORT (8265),
# LONGCTX_RAY_CLIENT_PORT (10001), LONGCTX_RAY_TEMP_DIR (see common.sh), LONGCTX_RAY_NUM_CPUS (auto).
# The token: RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (created here when none
# exists). Clients (ray job submit / logs / list, the browser) need the same token and RAY_AUTH_MODE=token.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PORT="${LONGCTX_RAY_PORT:-6379}"
DASHBOARD_PORT="${LONGCTX_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${LONGCTX_RAY_CLIENT_PORT:-10001}"
DASHBOARD_URL="http://127.0.0.1:${DASHBOARD_PORT}"

if [[ "${RAY_AUTH_MODE:-token}" != "token" ]]; then
  echo "longctx cluster-up: error: this head always runs with token auth; unset RAY_AUTH_MODE (it is '${RAY_AUTH_MODE}')" >&2
  exit 2
fi
export RAY_AUTH_MODE=token

# Make sure a token exists, without ever printing it.
if [[ -z "${RAY_AUTH_TOKEN:-}" ]]; then
  if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
      (umask 077 && mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")" &&
        "$PY" -c 'import secrets, sys; open(sys.argv[1], "w").write(secrets.token_hex(32))' "$RAY_AUTH_TOKEN_PATH")
      echo "created a new auth token in $RAY_AUTH_TOKEN_PATH"
    fi
  elif [[ ! -s "$HOME/.ray/auth_token" ]]; then
    "$RAY" get-auth-token --generate >/dev/null 2>&1
    echo "created a new auth token in ~/.ray/auth_token"
  fi
fi

if "${HEADCTL[@]}" status --temp-dir "$TEMP_DIR" >/dev/null 2>&1; then
  "${HEADCTL[@]}" status --temp-dir "$TEMP_DIR"  # already up: say where, change nothing
  exit 0
fi

# Job entrypoints run `python ...`: put the project's venv first so the head's workers and jobs use it.
if [[ -n "$VENV_BIN" ]]; then
  export PATH="$VENV_BIN:$PATH"
fi
# LONGCTX_RAY_HEAD tags every process of this head so down.sh stops exactly this one (never `ray stop`).
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's single-node switch: the node IP stays 127.0.0.1 (Ray otherwise
# swaps a loopback --node-ip-address for the LAN address) and its gRPC servers bind to loopback, not 0.0.0.0.
export LONGCTX_RAY_HEAD="$TEMP_DIR" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Workers at the niceness of everything else on this machine (Ray's default 15 makes them yield the cores to
# any other program; see longctx_core/infra/runtime.py). LONGCTX_WORKER_NICENESS changes it.
export RAY_worker_niceness="${LONGCTX_WORKER_NICENESS:-0}"
START=("$RAY" start --head
  --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --include-dashboard=true
  --port="$PORT" --dashboard-port="$DASHBOARD_PORT" --ray-client-server-port="$CLIENT_PORT"
  --temp-dir="$TEMP_DIR" --disable-usage-stats)
if [[ -n "${LONGCTX_RAY_NUM_CPUS:-}" ]]; then
  START+=(--num-cpus="$LONGCTX_RAY_NUM_CPUS")
fi
START+=("$@")
echo "+ RAY_AUTH_MODE=token ${START[*]}"
# setsid: the head outlives this shell and its terminal (no SIGHUP when the terminal closes).
SETSID=()
if command -v setsid >/dev/null 2>&1; then
  SETSID=(setsid --wait)
fi
if ! "${SETSID[@]}" "${START[@]}"; then
  echo "longctx cluster-up: error: 'ray start' failed (port in use? see the lines above); cleaning up" >&2
  "${HEADCTL[@]}" stop --temp-dir "$TEMP_DIR" || true
  exit 1
fi

if ! "${HEADCTL[@]}" check-bind --temp-dir "$TEMP_DIR"; then
  echo "longctx cluster-up: error: the head listens beyond 127.0.0.1 (listed above); stopping it" >&2
  "${HEADCTL[@]}" stop --temp-dir "$TEMP_DIR" || true
  exit 1
fi

cat >"$TEMP_DIR/longctx-head.env" <<EOF
DASHBOARD_URL=${DASHBOARD_URL}
GCS_ADDRESS=127.0.0.1:${PORT}
TEMP_DIR=${TEMP_DIR}
EOF

RAYCMD="RAY_AUTH_MODE=token ${RAY#"$REPO"/}"
cat <<EOF

longctx: Ray head is up (token auth on; every port bound to 127.0.0.1).
  dashboard   ${DASHBOARD_URL}   (Jobs, Train, Data and Metrics views; paste the token: ${RAY#"$REPO"/} get-auth-token)
  submit      make submit CONFIG=ray_jobs/configs/demo_cpu.yaml            (STAGE=pipeline by default)
  watch       ${RAYCMD} job list --address ${DASHBOARD_URL}
              ${RAYCMD} job logs -f <submission-id> --address ${DASHBOARD_URL}
  stop        make cluster-down
EOF
