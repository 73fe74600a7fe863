#!/usr/bin/env bash
# `make run`: the main job on the embedded default. Assumes `make build
# dev-up` ran. Migrates, adds demo data if the live tables are empty, starts
# a worker (unless one is running), runs one archive of every built table and
# prints the summary with the Web UI link. The worker stays up, serving
# /metrics on METRICS_ADDR, and so does the dev stack (Web UI browsable),
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

# A worker left by an earlier `make run` may be an older build: replace it.
if [ -f "$DEV/worker.pid" ] && kill -0 "$(cat "$DEV/worker.pid")" 2>/dev/null; then
  kill "$(cat "$DEV/worker.pid")"
  while kill -0 "$(cat "$DEV/worker.pid")" 2>/dev/null; do sleep 0.1; done
fi
setsid "$ROOT/bin/worker" </dev/null >>"$DEV/logs/worker.log" 2>&1 &
echo $! > "$DEV/worker.pid"

# With TEMPORAL_PAYLOAD_KEY set the histories hold ciphertext: a codec server
# holding the key (and TEMPORAL_PAYLOAD_KEYS) lets the Web UI and the CLI
# show plaintext. One left by an earlier `make run` is replaced (or stopped,
# when the key is gone).
CODEC_ADDR=${CODEC_ADDR:-127.0.0.1:8081}
if [ -f "$DEV/codec.pid" ] && kill -0 "$(cat "$DEV/codec.pid")" 2>/dev/null; then
  kill "$(cat "$DEV/codec.pid")"
  while kill -0 "$(cat "$DEV/codec.pid")" 2>/dev/null; do sleep 0.1; done
fi
rm -f "$DEV/codec.pid"
if [ -n "${TEMPORAL_PAYLOAD_KEY:-}" ]; then
  : >"$DEV/logs/codec.log"
  setsid "$ROOT/bin/starter" codec-server --listen "$CODEC_ADDR" --ui-origin "$TEMPORAL_UI_URL" \
    </dev/null >>"$DEV/logs/codec.log" 2>&1 &
  echo $! > "$DEV/codec.pid"
  for _ in $(seq 50); do
    grep -q '^codec server on' "$DEV/logs/codec.log" && break
    kill -0 "$(cat "$DEV/codec.pid")" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q '^codec server on' "$DEV/logs/codec.log"; then
    cat "$DEV/logs/codec.log" >&2
    echo "the codec server did not start (see above; CODEC_ADDR=$CODEC_ADDR)" >&2
    exit 1
  fi
fi

status=0
"$ROOT/bin/starter" run --all --wait ${RUN_FLAGS:-} || status=$?
echo
echo "worker (pid $(cat "$DEV/worker.pid")) still running: metrics at http://$METRICS_ADDR/metrics, log $DEV/logs/worker.log"
if [ -f "$DEV/codec.pid" ]; then
  echo "codec server (pid $(cat "$DEV/codec.pid")) at http://$CODEC_ADDR, log $DEV/logs/codec.log:"
  echo "  Web UI: set the codec server endpoint http://$CODEC_ADDR (the UI's codec server settings), or start"
  echo "    the dev server with --ui-codec-endpoint http://$CODEC_ADDR"
  echo "  CLI: temporal workflow show -w <id> --codec-endpoint 'http://$CODEC_ADDR/{namespace}'"
  echo "  stop it: kill \$(cat $DEV/codec.pid)"
fi
echo "stop the worker and the dev stack: make dev-down"
exit $status
