# Shared by up.sh / down.sh / submit.sh (sourced, not run). Resolves the tools and the head's identity.
#   REPO      the repository root (the job's working dir)
#   RAY, PY   .venv/bin/ray and .venv/bin/python when the venv exists, else what is on PATH
#   TEMP_DIR  the head's --temp-dir: LONGCTX_RAY_TEMP_DIR, else <repo>/.cache/ray (ignored by git and by
#             the job upload). Ray puts Unix sockets below it and a socket path must stay under 108 bytes,
#             so a deep checkout falls back to /tmp/longctx-ray-<uid>.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ -x "$REPO/.venv/bin/ray" ]]; then
  VENV_BIN="$REPO/.venv/bin"
  RAY="$VENV_BIN/ray"
  PY="$VENV_BIN/python"
else
  VENV_BIN=""
  RAY="$(command -v ray || true)"
  PY="$(command -v python3 || command -v python || true)"
fi
if [[ -z "$RAY" || -z "$PY" ]]; then
  echo "longctx cluster: error: no 'ray' found (run 'make setup' or install ray[default])" >&2
  exit 2
fi
if [[ -n "${LONGCTX_RAY_TEMP_DIR:-}" ]]; then
  TEMP_DIR="$LONGCTX_RAY_TEMP_DIR"
elif (( ${#REPO} <= 40 )); then
  TEMP_DIR="$REPO/.cache/ray"
else
  TEMP_DIR="/tmp/longctx-ray-$(id -u)"
fi
mkdir -p "$TEMP_DIR"
TEMP_DIR="$(cd "$TEMP_DIR" && pwd -P)"
HEADCTL=("$PY" "$REPO/cluster/local/headctl.py")
