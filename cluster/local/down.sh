#!/usr/bin/env bash
# Stop the local Ray head that up.sh started (= make cluster-down), and only that one.
#
#   bash cluster/local/down.sh
#
# Not `ray stop`: that kills every Ray process of this user on the machine, including other programs'
# `ray.init()` runtimes. headctl.py finds this head by the LONGCTX_RAY_HEAD tag up.sh gave it, stops it in
# Ray's order and removes its stale ray_current_cluster file. Logs stay under the temp dir (make clean).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "${HEADCTL[@]}" stop --temp-dir "$TEMP_DIR"
