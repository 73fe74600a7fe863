#!/usr/bin/env bash
# The archiver's local dev stack, on loopback, with all state under .dev/:
#   PostgreSQL  a private cluster made with initdb/pg_ctl from the machine's binaries
#   Temporal    the dev server with its Web UI (CLI pinned in temporal-dev.yaml)
#   S3          versitygw on a posix folder (real checksum verification)
# Tools are built from the Go module proxy, once per machine (see TOOLS).
#
# usage: stack.sh up | down | status | clean | replica-up | replica-down |
#        pg-restart | temporal-restart | s3-stop | s3-start | tools-dir
# After `up`, .dev/env holds the environment the worker, starter and tests use.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEV=${ARCHIVER_DEV_DIR:-$ROOT/.dev}
# The tools are built once per machine, into the user's cache folder beside
# Go's own build cache, so that a new clone (CI's, a second checkout) reuses
# them; each sits in a folder named by its version. ARCHIVER_TOOLS_DIR
# chooses another folder.
if [ -n "${ARCHIVER_TOOLS_DIR:-}" ]; then
  TOOLS=$ARCHIVER_TOOLS_DIR
elif [ -n "${XDG_CACHE_HOME:-}" ] || [ -n "${HOME:-}" ]; then
  TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/archiver-tools
else
  TOOLS=$ROOT/.cache/tools
fi
CONFIG=${TEMPORAL_DEV_CONFIG:-$ROOT/temporal-dev.yaml}

PG_PORT=${DEV_PG_PORT:-55432}
REPLICA_PORT=${DEV_REPLICA_PORT:-55433}
# The replica applies WAL this late, so tests see real replay lag.
REPLICA_APPLY_DELAY=${DEV_REPLICA_APPLY_DELAY:-3s}
S3_PORT=${DEV_S3_PORT:-7070}
VERSITYGW_VERSION=v1.8.0
S3_BUCKET=archiver-reports

log() { printf 'dev-stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# yaml_get KEY: a top-level "key: value" of temporal-dev.yaml.
yaml_get() { awk -v k="$1" -F': *' '$1 == k { sub(/ *#.*/, "", $2); print $2; exit }' "$CONFIG"; }
# yaml_list KEY: the "- item" lines under a top-level key.
yaml_list() {
  awk -v k="$1" '
    /^[^ #-]/ { inlist = ($0 ~ "^" k ":") ; next }
    inlist && /^ *- / { sub(/^ *- */, ""); sub(/ *#.*/, ""); print }' "$CONFIG"
}

TEMPORAL_VERSION=$(yaml_get cli_version)
T_IP=$(yaml_get ip); T_PORT=$(yaml_get port); T_UI_PORT=$(yaml_get ui_port)
T_NS=$(yaml_get namespace); T_DB=$(yaml_get db_filename); T_LOG=$(yaml_get log_level)
case "$T_DB" in /*) ;; *) T_DB="$ROOT/$T_DB" ;; esac

TEMPORAL_BIN=$TOOLS/temporal-$TEMPORAL_VERSION/temporal
VERSITYGW_BIN=$TOOLS/versitygw-$VERSITYGW_VERSION/versitygw
TEMPORAL_PKG=github.com/temporalio/cli/cmd/temporal
VERSITYGW_PKG=github.com/versity/versitygw/cmd/versitygw

# install NAME VERSION PACKAGE: go install into a versioned folder, once.
install_tool() {
  local name=$1 version=$2 pkg=$3 dir=$TOOLS/$1-$2
  [ -x "$dir/$name" ] && return 0
  command -v go >/dev/null || die "go is not on PATH; it is needed to build $name"
  log "building $name $version from the Go module proxy (first time only: minutes on empty Go caches, the Temporal CLI most)"
  mkdir -p "$TOOLS"
  local tmp; tmp=$(mktemp -d "$TOOLS/.$name-$version.XXXXXX")
  GOBIN="$tmp" GOFLAGS=-mod=mod go install "$pkg@$version" || { rm -rf "$tmp"; die "go install $pkg@$version failed"; }
  # Another clone may have finished first: its copy is as good as ours.
  [ -x "$dir/$name" ] || { rm -rf "$dir"; mv -T "$tmp" "$dir" 2>/dev/null || true; }
  rm -rf "$tmp"
}

# install_tools: the Temporal CLI and versitygw, built at once (each
# downloads its modules while the other compiles; both share the module
# cache). On a warm machine both are already there and this is a no-op.
install_tools() {
  local pids=() pid failed=0
  [ -x "$TEMPORAL_BIN" ] || { install_tool temporal "$TEMPORAL_VERSION" "$TEMPORAL_PKG" & pids+=($!); }
  [ -x "$VERSITYGW_BIN" ] || { install_tool versitygw "$VERSITYGW_VERSION" "$VERSITYGW_PKG" & pids+=($!); }
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "a tool did not build (see above)"
}

pg_bindir() {
  local d
  for d in "${PG_BINDIR:-}" "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  die "no PostgreSQL server binaries (initdb, pg_ctl) found. Install them with:
    apt-get install -y postgresql-15"
}

# as_pg CMD...: initdb and pg_ctl refuse root, so run them as postgres then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The cluster lives in .dev/pg when the postgres user can reach it (it cannot
# under a private home folder), else in a folder of its own under /tmp.
pg_datadir() {
  if [ -f "$DEV/pg.path" ]; then cat "$DEV/pg.path"; return; fi
  local d=$DEV/pg
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DEV" 2>/dev/null; then
    d=${TMPDIR:-/tmp}/archiver-dev-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)/pg
  fi
  echo "$d" > "$DEV/pg.path"
  echo "$d"
}

# pg_log NAME: the path a server of the cluster logs to. Beside the cluster
# when it lives outside .dev (the postgres user cannot write there), with
# .dev/logs/NAME a link to it, so that every log is found in .dev/logs.
pg_log() {
  local d; d=$(dirname "$(pg_datadir)")
  if [ "$d" = "$DEV" ]; then echo "$DEV/logs/$1"; return; fi
  ln -sfn "$d/$1" "$DEV/logs/$1"
  echo "$d/$1"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# port_free HOST PORT WHAT: refuse to start when another process holds the
# port: the tests would otherwise talk to somebody else's server.
port_free() {
  port_open "$1" "$2" && die "$3: $1:$2 is already in use by another process (stop it, or change the port in temporal-dev.yaml / DEV_PG_PORT / DEV_S3_PORT)"
  return 0
}

wait_port() { # host port seconds what
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$1" "$2" && return 0
    sleep 0.1
  done
  die "$4 did not open $1:$2 within $3 s (log: $DEV/logs)"
}

pg_up() {
  local bin data pw
  bin=$(pg_bindir)
  data=$(pg_datadir)
  if [ ! -s "$DEV/pg.password" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' 'xy' > "$DEV/pg.password")
  fi
  pw=$(cat "$DEV/pg.password")
  if [ ! -f "$data/PG_VERSION" ]; then
    log "creating PostgreSQL cluster in $data"
    mkdir -p "$data"
    local pwfile; pwfile=$(mktemp)
    printf '%s\n' "$pw" > "$pwfile"
    if [ "$(id -u)" = 0 ]; then chown postgres "$data" "$pwfile"; fi
    chmod 700 "$data"
    as_pg "$bin/initdb" -D "$data" -U archiver --pwfile="$pwfile" --auth=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$DEV/logs/initdb.log" 2>&1 || { rm -f "$pwfile"; die "initdb failed: see $DEV/logs/initdb.log"; }
    rm -f "$pwfile"
  fi
  if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
  else
    port_free 127.0.0.1 "$PG_PORT" PostgreSQL
    local logf; logf=$(pg_log postgres.log)
    touch "$logf"
    [ "$(id -u)" = 0 ] && chown postgres "$logf"
    as_pg "$bin/pg_ctl" -D "$data" -l "$logf" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='' -c max_connections=300 -c shared_buffers=256MB -c timezone=UTC -c wal_keep_size=2GB" \
      start >/dev/null || die "PostgreSQL did not start: see $DEV/logs/postgres.log"
    log "PostgreSQL on 127.0.0.1:$PG_PORT"
  fi
  local admin="postgres://archiver:$pw@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
  if ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = 'archiver'" | grep -q 1; then
    psql "$admin" -qc "CREATE DATABASE archiver" >/dev/null
  fi
}

temporal_up() {
  install_tool temporal "$TEMPORAL_VERSION" "$TEMPORAL_PKG"
  if alive "$DEV/temporal.pid"; then
    log "Temporal already running on $T_IP:$T_PORT"
    return
  fi
  port_free "$T_IP" "$T_PORT" Temporal
  port_free "$T_IP" "$T_UI_PORT" "Temporal Web UI"
  mkdir -p "$(dirname "$T_DB")"
  local args=(server start-dev --ip "$T_IP" --port "$T_PORT" --ui-port "$T_UI_PORT"
    --namespace "$T_NS" --db-filename "$T_DB" --log-level "${T_LOG:-warn}")
  # With payload encryption on, the Web UI decodes through the codec server
  # that `make run` starts (starter codec-server on CODEC_ADDR).
  if [ -n "${TEMPORAL_PAYLOAD_KEY:-}" ]; then
    args+=(--ui-codec-endpoint "http://${CODEC_ADDR:-127.0.0.1:8081}")
  fi
  local kv
  while read -r kv; do [ -n "$kv" ] && args+=(--search-attribute "$kv"); done < <(yaml_list search_attributes)
  while read -r kv; do [ -n "$kv" ] && args+=(--dynamic-config-value "$kv"); done < <(yaml_list dynamic_config)
  setsid "$TEMPORAL_BIN" "${args[@]}" </dev/null >"$DEV/logs/temporal.log" 2>&1 &
  echo $! > "$DEV/temporal.pid"
  wait_port "$T_IP" "$T_PORT" 60 "Temporal"
  alive "$DEV/temporal.pid" || die "Temporal exited at start: see $DEV/logs/temporal.log"
  local i
  for ((i = 0; i < 300; i++)); do
    "$TEMPORAL_BIN" operator namespace describe --address "$T_IP:$T_PORT" -n "$T_NS" >/dev/null 2>&1 && break
    sleep 0.2
  done
  log "Temporal on $T_IP:$T_PORT, Web UI http://$T_IP:$T_UI_PORT"
}

s3_up() {
  install_tool versitygw "$VERSITYGW_VERSION" "$VERSITYGW_PKG"
  if [ ! -s "$DEV/s3.credentials" ]; then
    (umask 077; printf '%s %s\n' "archiver$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
      "$(head -c 24 /dev/urandom | base64 | tr '+/' 'xy')" > "$DEV/s3.credentials")
  fi
  if alive "$DEV/s3.pid"; then
    log "S3 (versitygw) already running on 127.0.0.1:$S3_PORT"
    return
  fi
  local key secret
  read -r key secret < "$DEV/s3.credentials"
  port_free 127.0.0.1 "$S3_PORT" "S3 server"
  mkdir -p "$DEV/s3/$S3_BUCKET"
  ROOT_ACCESS_KEY="$key" ROOT_SECRET_KEY="$secret" \
    setsid "$VERSITYGW_BIN" --port "127.0.0.1:$S3_PORT" --quiet posix "$DEV/s3" \
    </dev/null >"$DEV/logs/s3.log" 2>&1 &
  echo $! > "$DEV/s3.pid"
  wait_port 127.0.0.1 "$S3_PORT" 30 "S3 server (versitygw)"
  alive "$DEV/s3.pid" || die "versitygw exited at start: see $DEV/logs/s3.log"
  log "S3 (versitygw) on 127.0.0.1:$S3_PORT, bucket $S3_BUCKET"
}

# A streaming replica of the dev cluster (pg_basebackup -R), for the test of
# replica-aware throttling, which starts it (`stack.sh replica-up`) and
# removes it (`stack.sh replica-down`) around itself: a replica running
# through all of make test replayed every test's WAL, a twentieth of the
# run's CPU, for one test.
replica_up() {
  local bin data pw
  bin=$(pg_bindir)
  data="$(dirname "$(pg_datadir)")/replica"
  pw=$(cat "$DEV/pg.password")
  # A replica left behind (stopped while the primary recycled the WAL it
  # needs) can never catch up: make it anew.
  if [ -f "$data/PG_VERSION" ] && tail -n 5 "$DEV/logs/replica.log" 2>/dev/null | grep -q "has already been removed"; then
    log "the replica cannot catch up (WAL it needs is gone): recreating it"
    as_pg "$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$data"
    : > "$DEV/logs/replica.log"
  fi
  # A base backup taken while tests create and drop their databases can
  # fail its recovery ("WAL contains references to invalid pages", PANIC
  # at the consistency point; seen once in a CI run): make it again, up to
  # three times.
  local attempt logf
  logf=$(pg_log replica.log)
  for attempt in 1 2 3; do
    [ -f "$data/PG_VERSION" ] || replica_make "$bin" "$data" "$pw"
    if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      log "replica already running on 127.0.0.1:$REPLICA_PORT"
      return
    fi
    port_free 127.0.0.1 "$REPLICA_PORT" "PostgreSQL replica"
    touch "$logf"; [ "$(id -u)" = 0 ] && chown postgres "$logf"
    if as_pg "$bin/pg_ctl" -D "$data" -l "$logf" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $REPLICA_PORT -c unix_socket_directories='' -c max_connections=300 -c recovery_min_apply_delay=$REPLICA_APPLY_DELAY -c hot_standby_feedback=on" \
      start >/dev/null; then
      log "replica on 127.0.0.1:$REPLICA_PORT (applies WAL $REPLICA_APPLY_DELAY late)"
      return
    fi
    grep -q "references to invalid pages" "$logf" || die "replica did not start: see $DEV/logs/replica.log"
    log "the replica's recovery failed on pages of a database dropped during its base backup (attempt $attempt): making it again"
    as_pg "$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    cp "$logf" "$DEV/logs/replica-failed-$attempt.log"
    rm -rf "$data"
    : > "$logf"
  done
  die "replica did not start after three base backups: see $DEV/logs/replica-failed-3.log"
}

# replica_make takes the replica's base backup into data.
replica_make() {
  local bin=$1 data=$2 pw=$3
  log "creating a streaming replica in $data"
  # -c fast: a spread checkpoint (the default) makes the backup wait
  # most of checkpoint_timeout, 4.5 minutes.
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres "$data"
  chmod 700 "$data"
  local pgpass; pgpass=$(mktemp)
  printf '127.0.0.1:%s:*:archiver:%s\n' "$PG_PORT" "$pw" > "$pgpass"
  chmod 600 "$pgpass"
  [ "$(id -u)" = 0 ] && chown postgres "$pgpass"
  as_pg env PGPASSFILE="$pgpass" "$bin/pg_basebackup" -D "$data" -h 127.0.0.1 -p "$PG_PORT" -U archiver -R -X stream -c fast \
    >"$DEV/logs/basebackup.log" 2>&1 || { rm -f "$pgpass"; die "pg_basebackup failed: see $DEV/logs/basebackup.log"; }
  rm -f "$pgpass"
  # The password for the replica's own connection to the primary.
  printf "primary_conninfo = 'host=127.0.0.1 port=%s user=archiver password=%s application_name=archiver_test_replica'\n" "$PG_PORT" "$pw" \
    | as_pg tee -a "$data/postgresql.auto.conf" >/dev/null
}

# replica_down stops the replica and removes it: once stopped it would have
# to replay all the WAL written since, and a new base backup is cheaper.
replica_down() {
  [ -f "$DEV/pg.path" ] || return 0
  local data; data="$(dirname "$(cat "$DEV/pg.path")")/replica"
  if [ -f "$data/PG_VERSION" ] && as_pg "$(pg_bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$(pg_bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null && log "replica stopped"
  fi
  rm -rf "$data"
}

write_env() {
  local pw key secret
  pw=$(cat "$DEV/pg.password")
  read -r key secret < "$DEV/s3.credentials"
  (umask 077; cat > "$DEV/env" <<ENV
DATABASE_URL=postgres://archiver:$pw@127.0.0.1:$PG_PORT/archiver?sslmode=disable
ARCHIVER_TEST_ADMIN_URL=postgres://archiver:$pw@127.0.0.1:$PG_PORT/postgres?sslmode=disable
TEMPORAL_ADDRESS=$T_IP:$T_PORT
TEMPORAL_NAMESPACE=$T_NS
TEMPORAL_UI_URL=http://$T_IP:$T_UI_PORT
ARCHIVE_TASK_QUEUE=archive
REPORTS_DIR=$DEV/reports
REPORTS_ARCHIVE_BUCKET=$S3_BUCKET
AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
AWS_ACCESS_KEY_ID=$key
AWS_SECRET_ACCESS_KEY=$secret
AWS_DEFAULT_REGION=us-east-1
METRICS_ADDR=127.0.0.1:9464
ARCHIVER_DEV_DIR=$DEV
ARCHIVER_TEMPORAL_BIN=$TEMPORAL_BIN
ENV
  )
  mkdir -p "$DEV/reports"
}

stop_pid() { # pidfile name
  if alive "$1"; then
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "$2 stopped"
  fi
  rm -f "$1"
}

pg_down() {
  [ -f "$DEV/pg.path" ] || return 0
  local data; data=$(cat "$DEV/pg.path")
  [ -f "$data/PG_VERSION" ] || return 0
  if as_pg "$(pg_bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$(pg_bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null && log "PostgreSQL stopped"
  fi
}

cmd=${1:-up}
mkdir -p "$DEV/logs"
case "$cmd" in
  up)
    install_tools
    pg_up
    temporal_up
    s3_up
    write_env
    log "environment: $DEV/env"
    ;;
  replica-up)
    replica_up
    ;;
  replica-down)
    replica_down
    ;;
  tools-dir)  # where the tools are built (the Makefile's lint tools too)
    echo "$TOOLS"
    ;;
  temporal-restart)  # fault tests: the server keeps its database file
    stop_pid "$DEV/temporal.pid" "Temporal"
    temporal_up
    ;;
  s3-stop)
    stop_pid "$DEV/s3.pid" "S3"
    ;;
  s3-start)
    s3_up
    ;;
  down)
    replica_down
    stop_pid "$DEV/worker.pid" "worker"
    stop_pid "$DEV/codec.pid" "codec server"
    stop_pid "$DEV/temporal.pid" "Temporal"
    stop_pid "$DEV/s3.pid" "S3"
    pg_down
    ;;
  pg-restart)
    data=$(cat "$DEV/pg.path")
    as_pg "$(pg_bindir)/pg_ctl" -D "$data" -m fast -w restart >/dev/null
    ;;
  status)
    alive "$DEV/temporal.pid" && echo "temporal: running" || echo "temporal: stopped"
    alive "$DEV/s3.pid" && echo "s3: running" || echo "s3: stopped"
    if [ -f "$DEV/pg.path" ] && as_pg "$(pg_bindir)/pg_ctl" -D "$(cat "$DEV/pg.path")" status >/dev/null 2>&1; then
      echo "postgres: running"; else echo "postgres: stopped"; fi
    ;;
  clean)
    "$0" down
    [ -f "$DEV/pg.path" ] && rm -rf "$(cat "$DEV/pg.path")"
    rm -rf "$DEV"
    ;;
  *) die "usage: stack.sh up | down | status | clean | replica-up | replica-down | pg-restart | temporal-restart | s3-stop | s3-start | tools-dir" ;;
esac
