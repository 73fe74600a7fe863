#!/usr/bin/env bash
# `make run`: the main job on the embedded default. Assumes `make build
# dev-up` ran. Migrates, adds demo data if the live tables are empty, starts
# a worker, runs one archive of every built table, prints the summary with
# the Web UI link, stops the worker. The dev stack stays up (Web UI browsable)
# until `make dev-down`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEV=${ARCHIVER_DEV_DIR:-$ROOT/.dev}
set -a; . "$DEV/env"; set +a

"$ROOT/bin/starter" migrate
# The dev bucket exists (stack.sh made its folder); set its lifecycle where
# the server supports it (versitygw does not, and says so).
"$ROOT/bin/starter" bucket apply || echo "(bucket lifecycle not applied; see above)"
"$ROOT/bin/starter" demo --logs "${DEMO_LOGS:-300000}" --metrics-per-day "${DEMO_METRICS_PER_DAY:-300}" \
  --reports "${DEMO_REPORTS:-30}" --report-kb "${DEMO_REPORT_KB:-4096}" --years 3

"$ROOT/bin/worker" >"$DEV/logs/worker.log" 2>&1 &
worker=$!
echo "$worker" > "$DEV/worker.pid"
stop_worker() { kill "$worker" 2>/dev/null && wait "$worker" 2>/dev/null; rm -f "$DEV/worker.pid"; }
trap stop_worker EXIT

status=0
"$ROOT/bin/starter" run --all --wait ${RUN_FLAGS:-} || status=$?
echo
echo "worker log: $DEV/logs/worker.log    stop the dev stack: make dev-down"
exit $status
