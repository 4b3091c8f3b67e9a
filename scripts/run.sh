#!/usr/bin/env bash
# `make run`: the whole of loket on this machine, for a demo or a first
# purchase. Installs nats-server/PostgreSQL when missing, builds the release
# binaries, starts a private nats-server (JetStream) and a private PostgreSQL
# on loopback with their data in .run/ (git-ignored, kept across runs), applies
# the migrations, loads the product catalogue, creates a demo API client and
# the demo keys and secrets once (.run/keys/, .run/*-secret …), then starts
# the simulators (OkeBayar, SNAP QR CPM, Smilepayz) and every loket service
# (one connector per provider), waits until each one answers /readyz, and
# prints how to make a purchase, a QR payment, a pay-in and a pay-out. Ctrl-C
# (or SIGTERM) stops everything in order: services first, then nats-server and
# PostgreSQL.
#
# Ports are fixed so the printed commands stay valid across runs; override any
# of them in the environment (RUN_GRPC_PORT=60051 make run). Every other
# LOKET_… variable of your environment reaches every service, e.g.
# LOKET_LOG_JSON=true make run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# ---------------------------------------------------------------------------
# Settings. Named RUN_… rather than LOKET_… so they never land in a
# service's configuration by accident.
NATS_PORT=${RUN_NATS_PORT:-14222}
NATS_MONITOR_PORT=${RUN_NATS_MONITOR_PORT:-18222}
PG_PORT=${RUN_PG_PORT:-15432}
GRPC_PORT=${RUN_GRPC_PORT:-50051} # loketctl's default address: no LOKET_ADDR needed
CALLBACK_PORT=${RUN_CALLBACK_PORT:-18090}
SIM_PORT=${RUN_SIM_PORT:-18180}            # OkeBayar simulator
SMILEPAYZ_SIM_PORT=${RUN_SMILEPAYZ_SIM_PORT:-18181}
SNAPQR_SIM_PORT=${RUN_SNAPQR_SIM_PORT:-18183}
ADMIN_BASE=${RUN_ADMIN_BASE:-19100} # service admin ports: base+1 … base+7
READY_TIMEOUT=${RUN_READY_TIMEOUT:-90}  # seconds, for all services together
# Threads: this is a whole deployment on one machine, a dozen busy processes
# sharing its cores, so each loket service runs one tokio worker thread and
# nats-server one Go thread unless told otherwise. Measured on 2 cores under
# `make bench`: 21–23 context switches per purchase with the defaults (a thread
# per core in every process), 14 with these.
SERVICE_THREADS=${RUN_SERVICE_THREADS:-1} # TOKIO_WORKER_THREADS of every service
NATS_THREADS=${RUN_NATS_THREADS:-1}       # GOMAXPROCS of nats-server
STOP_TIMEOUT=${RUN_STOP_TIMEOUT:-20}    # seconds a service may take to drain
# PostgreSQL's synchronous_commit: on (its default, and production's) unless
# told otherwise. `off` acknowledges commits before the WAL flush, so a crash
# of PostgreSQL or of the machine may lose the commits of the last fraction of
# a second: a send journal entry, a result, a transaction the provider carried
# out. Kept as a switch only to compare benchmark figures (README, Benchmark).
PG_SYNCHRONOUS_COMMIT=${RUN_PG_SYNCHRONOUS_COMMIT:-on}
DB_NAME=loket
OKEBAYAR_USERID=loketdemo
# Demo identities shared by a simulator and its connector (not secrets).
SNAPQR_CLIENT_KEY=loket-demo-snap
SNAPQR_MERCHANT_ID=00007100010926
SMILEPAYZ_MERCHANT_ID=20001
# Test-like but sane timeouts for the two newer connectors: the provider
# HTTP timeout, and the JetStream ack wait (must exceed 2 × the timeout).
PROVIDER_TIMEOUT_MS=10000
PROVIDER_CONNECT_TIMEOUT_MS=2000
CONNECTOR_ACK_WAIT_MS=30000

RUN_DIR=$ROOT/.run
KEY_DIR=$RUN_DIR/keys
LOG_DIR=$RUN_DIR/logs
PID_DIR=$RUN_DIR/pids # what a run started, for the next run to stop if this one was killed
PG_DIR=$RUN_DIR/pg    # moved when PostgreSQL's user cannot reach it (see place_postgres)
PG_LOG=$LOG_DIR/postgres.log
NATS_DIR=$RUN_DIR/nats
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
# The services reach the private PostgreSQL through its Unix socket: on one
# machine that skips the TCP stack both ways for every statement. It still
# listens on 127.0.0.1:$PG_PORT for psql and other tools. The socket lives in
# a short folder of its own under /tmp, one per checkout: a socket path may
# not exceed 107 bytes, and a checkout's path may be long or hold spaces.
CHECKOUT_KEY=$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)
PG_SOCKET_DIR=/tmp/loket-run-$(id -u)-$CHECKOUT_KEY
DATABASE_URL="postgres://postgres@localhost:$PG_PORT/$DB_NAME?host=$PG_SOCKET_DIR"
NATS_URL="nats://127.0.0.1:$NATS_PORT"

# Services in start order: name, binary, admin port.
# `connector` is the OkeBayar one (its name kept so logs and ports stay
# where they were).
SERVICES=(sim callback reconciler connector snapqr smilepayz ingress)
declare -A SERVICE_BIN=(
  [sim]=loket-sim [callback]=loket-callback [reconciler]=loket-reconciler
  [connector]=loket-okebayar-connector [snapqr]=loket-snapqr-connector
  [smilepayz]=loket-smilepayz-connector [ingress]=loket-ingress
)
declare -A ADMIN_PORT=(
  [ingress]=$((ADMIN_BASE + 1)) [callback]=$((ADMIN_BASE + 2)) [reconciler]=$((ADMIN_BASE + 3))
  [connector]=$((ADMIN_BASE + 4)) [sim]=$((ADMIN_BASE + 5)) [snapqr]=$((ADMIN_BASE + 6))
  [smilepayz]=$((ADMIN_BASE + 7))
)
# Stop order: the edges first, so no new work comes in while the rest drain.
STOP_ORDER=(ingress callback connector snapqr smilepayz reconciler sim)
declare -A PIDS=() # what this run started, and only that is ever stopped
NATS_PID=""
PG_STARTED=""
LEFTOVERS_STOPPED=""
SLEEP_PID=""

# Never fails: a terminal that went away (SIGHUP, a `| tee` killed by the
# same Ctrl-C) must not stop the cleanup halfway.
say() { printf '\033[1m==> %s\033[0m\n' "$*" 2>/dev/null || true; }
fail() { printf '\033[31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }
case "$PG_SYNCHRONOUS_COMMIT" in
  on | off) ;;
  *) fail "RUN_PG_SYNCHRONOUS_COMMIT must be on or off, not '$PG_SYNCHRONOUS_COMMIT'" ;;
esac

# PostgreSQL refuses to run as root: as root, its commands run as the
# 'postgres' user (ensure-deps.sh makes sure it exists).
AS_PG=()
if [ "$(id -u)" -eq 0 ]; then AS_PG=(runuser -u postgres --); fi
as_pg() { "${AS_PG[@]}" "$@"; }
psql_loket() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

# True when something accepts TCP connections on the loopback port. Plain
# bash (/dev/tcp): a fresh Debian has neither curl nor python.
port_open() { timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# The HTTP status of GET http://127.0.0.1:<port><path>, or nothing.
http_status() {
  timeout 2 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$2" >&3
    read -r _ code _ <&3 && printf "%s" "$code"' _ "$1" "$2" 2>/dev/null || true
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------
# Setup

# One `make run` at a time: two would fight over the same ports and data.
take_lock() {
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  local other
  other=$(cat "$RUN_DIR/run.pid" 2>/dev/null || true)
  # A pid left by a run that was killed may belong to another process by
  # now: only a live run.sh counts.
  if alive "$other" && [ "$other" != "$$" ] && tr '\0' ' ' <"/proc/$other/cmdline" 2>/dev/null | grep -q 'run.sh'; then
    fail "another 'make run' is running (pid $other); stop it with Ctrl-C first (or delete $RUN_DIR/run.pid if it is gone)"
  fi
  echo $$ >"$RUN_DIR/run.pid"
}

# The processes an earlier run started and left behind because it was
# killed (kill -9) before it could stop them: they hold the ports. Each is
# stopped only if its pid still runs the program recorded for it.
stop_leftovers() {
  local name pid program exe left=()
  [ -d "$PID_DIR" ] || return 0
  # As cleanup does: every service asked at once, the edges first, and
  # nats-server only once they are gone (they drain through it).
  for name in "${STOP_ORDER[@]}" nats-server; do
    [ -f "$PID_DIR/$name" ] || continue
    read -r pid program <"$PID_DIR/$name" || true
    # A binary rebuilt since shows as "<path> (deleted)": still the program.
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    if alive "$pid" && [ "${exe% (deleted)}" = "$program" ]; then
      left+=("$name:$pid")
    fi
  done
  [ ${#left[@]} -eq 0 ] || say "stopping what an earlier 'make run' that was killed left running: ${left[*]}"
  for name in "${left[@]}"; do
    [ "${name%%:*}" = nats-server ] || kill -TERM "${name#*:}" 2>/dev/null || true
  done
  for name in "${left[@]}"; do
    if [ "${name%%:*}" = nats-server ]; then kill -TERM "${name#*:}" 2>/dev/null || true; fi
    stop_pid "${name%%:*}" "${name#*:}"
  done
  rm -rf "$PID_DIR"
}

# Records a process this run started (name, pid, the program it runs) for
# `stop_leftovers`. The process was just forked: waits (up to a second) until
# it runs the program, so the record names that and not bash.
record_pid() {
  local name=$1 pid=$2 program=$3 tries=0
  while [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" != "$program" ] &&
    [ $tries -lt 50 ] && alive "$pid"; do
    sleep 0.02
    tries=$((tries + 1))
  done
  mkdir -p "$PID_DIR"
  printf '%s %s\n' "$pid" "$(readlink "/proc/$pid/exe" 2>/dev/null)" >"$PID_DIR/$name"
}

# Fail early and clearly rather than with a bind error in some log.
check_ports_free() {
  local port
  for port in "$NATS_PORT" "$NATS_MONITOR_PORT" "$GRPC_PORT" "$CALLBACK_PORT" "$SIM_PORT" \
    "$SMILEPAYZ_SIM_PORT" "$SNAPQR_SIM_PORT" "${ADMIN_PORT[@]}"; do
    if port_open "$port"; then
      fail "port $port is already in use: a leftover of an earlier 'make run', or another program (ports can be moved with RUN_…_PORT, see the top of scripts/run.sh)"
    fi
  done
}

build() {
  say "building the release binaries (the first build takes several minutes)"
  cargo build --release --bins \
    -p loket-ingress -p loket-callback -p loket-reconciler -p loket-okebayar -p loket-simulators -p loket-cli \
    -p loket-snapqr -p loket-smilepayz
}

# A random OkeBayar PIN made once and kept in .run/: the simulator and the
# connector share it, and no secret is written into the repository.
demo_pin() {
  local file=$RUN_DIR/okebayar-pin
  if [ ! -s "$file" ]; then
    (umask 077 && printf '%06d\n' $(($(od -An -N4 -tu4 /dev/urandom) % 1000000)) >"$file")
  fi
  chmod 600 "$file"
  OKEBAYAR_PIN=$(cat "$file")
}

# A random demo secret made once and kept in .run/<name> (like the PIN):
# prints it. A letter prefix keeps it text whatever the random part is.
demo_secret() {
  local file=$RUN_DIR/$1 prefix=$2
  if [ ! -s "$file" ]; then
    (umask 077 && printf '%s-%s\n' "$prefix" "$(openssl rand -hex 24)" >"$file")
  fi
  chmod 600 "$file"
  cat "$file"
}

# An RSA-2048 key pair made once in .run/keys/: <name>.pem (PKCS#8 private)
# and <name>.pub.pem (SPKI public). The services get the file paths, never
# the key text in their environment.
demo_key_pair() {
  local private=$KEY_DIR/$1.pem public=$KEY_DIR/$1.pub.pem
  if ! openssl pkey -in "$private" -noout 2>/dev/null; then
    rm -f "$private" "$public"
    (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$private" 2>/dev/null) ||
      fail "openssl could not generate $private"
  fi
  # Derived every run, so it always matches the private half.
  (umask 077 && openssl pkey -in "$private" -pubout -out "$public") || fail "openssl could not write $public"
  chmod 600 "$private" "$public"
}

# The SNAP QR CPM and Smilepayz demo credentials. Four key pairs: SNAP
# partner (ours: signs the B2B token request; the issuer simulator verifies
# with the public half), SNAP issuer (the simulator signs notifies; our
# callback receiver verifies), Smilepayz merchant (ours: signs requests) and
# Smilepayz platform (the simulator signs callbacks; our receiver verifies).
demo_credentials() {
  mkdir -p "$KEY_DIR"
  chmod 700 "$KEY_DIR"
  local pair
  for pair in snapqr-partner snapqr-issuer smilepayz-merchant smilepayz-platform; do
    demo_key_pair "$pair"
  done
  SNAPQR_CLIENT_SECRET=$(demo_secret snapqr-client-secret snap)
  SNAPQR_CUSTOMER_TOKEN=$(demo_secret snapqr-customer-token cust)
  SMILEPAYZ_MERCHANT_SECRET=$(demo_secret smilepayz-merchant-secret smp)
}

# As root, PostgreSQL runs as 'postgres', which cannot enter a checkout
# below a private folder (/root is mode 700 on Debian). Its data and log then
# go to /var/lib/loket-run/<checkout>/ (the same folder on every run), and
# .run/pg-location says where (.run/pg-moved-to, the bare path, is what
# `make clean` removes).
place_postgres() {
  mkdir -p "$PG_DIR"
  [ "$(id -u)" -eq 0 ] || return 0
  chown postgres:postgres "$PG_DIR"
  if ! runuser -u postgres -- test -x "$PG_DIR"; then
    local moved=/var/lib/loket-run/$CHECKOUT_KEY
    rmdir "$PG_DIR" 2>/dev/null || true
    PG_DIR=$moved/pg
    PG_LOG=$moved/postgres.log
    mkdir -p "$PG_DIR"
    chown postgres:postgres "$moved" "$PG_DIR"
    printf 'PostgreSQL data and log of this checkout: %s (the postgres user cannot reach %s)\n' \
      "$moved" "$RUN_DIR" >"$RUN_DIR/pg-location"
    # The bare path, for `make clean`.
    printf '%s\n' "$moved" >"$RUN_DIR/pg-moved-to"
    say "the postgres user cannot reach $RUN_DIR (a parent folder is private): PostgreSQL keeps its data in $moved"
  fi
}

start_postgres() {
  PG_BIN=$(scripts/postgres-bin.sh)
  place_postgres
  mkdir -p "$PG_SOCKET_DIR"
  chmod 700 "$PG_SOCKET_DIR"
  touch "$PG_LOG"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$PG_DIR" "$PG_LOG" "$PG_SOCKET_DIR"; fi
  if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
    say "creating the PostgreSQL cluster in $PG_DIR/data"
    # trust on loopback only: a private demo instance, never reachable
    # from another machine.
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
  fi
  # Set before starting: a Ctrl-C during the start is handled once pg_ctl
  # returns, and the cleanup must then stop the server it started.
  PG_STARTED=1
  if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
    say "PostgreSQL from an earlier run is still up on $PG_DIR/data: reusing it"
  else
    port_open "$PG_PORT" && fail "port $PG_PORT is already in use (set RUN_PG_PORT to another one)"
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    # setsid: a Ctrl-C in the terminal reaches only this script, which then
    # stops everything in order (services drain before their database goes).
    setsid --wait "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_LOG" -w -t 60 \
      -o "-p $PG_PORT -k $PG_SOCKET_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c synchronous_commit=$PG_SYNCHRONOUS_COMMIT" \
      start >/dev/null || fail "PostgreSQL did not start; see $PG_LOG"
  fi
  if [ -z "$(psql_loket -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
    psql_loket -d postgres -c "CREATE DATABASE $DB_NAME"
  fi
}

start_nats() {
  local nats
  nats=$(command -v nats-server || echo /usr/sbin/nats-server)
  mkdir -p "$NATS_DIR"
  say "starting nats-server (JetStream) on 127.0.0.1:$NATS_PORT"
  GOMAXPROCS=$NATS_THREADS setsid "$nats" -js -sd "$NATS_DIR" -n loket-run -a 127.0.0.1 -p "$NATS_PORT" \
    -m "$NATS_MONITOR_PORT" >"$LOG_DIR/nats.log" 2>&1 &
  NATS_PID=$!
  record_pid nats-server "$NATS_PID" "$(basename "$nats")"
  local deadline=$((SECONDS + 30))
  until [ "$(http_status "$NATS_MONITOR_PORT" '/healthz?js-enabled-only=true')" = 200 ]; do
    alive "$NATS_PID" || { tail -n 20 "$LOG_DIR/nats.log" >&2; fail "nats-server exited"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$LOG_DIR/nats.log" >&2; fail "nats-server not healthy after 30 s"; }
    sleep 0.2
  done
}

prepare_database() {
  export LOKET_DATABASE_URL=$DATABASE_URL # read by loketctl's database commands
  say "migrating and loading deploy/products.toml"
  "$BIN/loketctl" migrate
  "$BIN/loketctl" products load deploy/products.toml
}

# The demo client is created once; its key (shown only once by loketctl) is
# kept in .run/demo-api-key so every later run prints the same key. A key
# whose client is gone (the database was reset) is replaced.
demo_api_key() {
  local file=$RUN_DIR/demo-api-key key="" name=demo
  key=$(cat "$file" 2>/dev/null || true)
  if [ -n "$key" ]; then
    # Only the key's hash on psql's command line: arguments show in `ps`.
    local known hash
    hash=$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)
    known=$(psql_loket -d "$DB_NAME" -tA -v hash="$hash" \
      <<<"SELECT count(*) FROM clients WHERE api_key_hash = decode(:'hash', 'hex') AND NOT disabled")
    [ "$known" = 1 ] && return 0
    say "the key in .run/demo-api-key is not (or no longer) valid: creating a new demo client"
  fi
  if [ -n "$(psql_loket -d "$DB_NAME" -tAc "SELECT 1 FROM clients WHERE name = 'demo'")" ]; then
    name=demo-$(date +%Y%m%d%H%M%S) # 'demo' exists but its key was lost
  fi
  say "creating the API client '$name'"
  key=$("$BIN/loketctl" --json client create "$name" | sed -n 's/.*"api_key": *"\([^"]*\)".*/\1/p')
  [ -n "$key" ] || fail "loketctl client create printed no api_key"
  (umask 077 && printf '%s\n' "$key" >"$file")
  chmod 600 "$file"
}

# Starts one service in its own session (see start_postgres for why), its
# settings as LOKET_… variables, its log in .run/logs/<name>.log.
start_service() {
  local name=$1
  shift
  [ -f "$LOG_DIR/$name.log" ] && mv "$LOG_DIR/$name.log" "$LOG_DIR/$name.log.1"
  (
    # The simulator uses neither (and would warn about both at start; the
    # database URL is exported above for loketctl).
    if [ "$name" = sim ]; then
      unset LOKET_NATS_URL LOKET_DATABASE_URL
    else
      export LOKET_NATS_URL=$NATS_URL LOKET_DATABASE_URL=$DATABASE_URL
    fi
    export LOKET_ADMIN_ADDR=127.0.0.1:${ADMIN_PORT[$name]}
    export TOKIO_WORKER_THREADS=$SERVICE_THREADS
    for setting in "$@"; do export "${setting?}"; done
    exec setsid "$BIN/${SERVICE_BIN[$name]}"
  ) >"$LOG_DIR/$name.log" 2>&1 &
  PIDS[$name]=$!
  record_pid "$name" "${PIDS[$name]}" "${SERVICE_BIN[$name]}"
}

start_services() {
  local callback_url=http://127.0.0.1:$CALLBACK_PORT/callback/okebayar
  local snapqr_callback_url=http://127.0.0.1:$CALLBACK_PORT/callback/snapqr
  local smilepayz_callback_url=http://127.0.0.1:$CALLBACK_PORT/callback/smilepayz
  say "starting the simulator and the services"
  # loket-sim plays every provider, each on a fixed port in our range (their
  # defaults are common ones like 8181), each sending its callbacks to our
  # callback receiver. OkeBayar: same userid/PIN as the connector. SNAP QR
  # CPM plays the issuer: it knows our client key, secret and partner public
  # key and signs notifies with the issuer key. Smilepayz knows our merchant
  # id, secret and public key and signs callbacks with the platform key (the
  # connector sends our callback URL on every request; the simulator's own
  # default points there too).
  start_service sim \
    LOKET_OKEBAYAR_ADDR=127.0.0.1:$SIM_PORT \
    LOKET_SMILEPAYZ_ADDR=127.0.0.1:$SMILEPAYZ_SIM_PORT \
    LOKET_SNAPQR_ADDR=127.0.0.1:$SNAPQR_SIM_PORT \
    LOKET_OKEBAYAR__USERID=$OKEBAYAR_USERID \
    LOKET_OKEBAYAR__USERPIN=$OKEBAYAR_PIN \
    LOKET_OKEBAYAR__CALLBACK_URL=$callback_url \
    LOKET_SNAPQR__CLIENT_KEY=$SNAPQR_CLIENT_KEY \
    LOKET_SNAPQR__CLIENT_SECRET=$SNAPQR_CLIENT_SECRET \
    "LOKET_SNAPQR__PARTNER_PUBLIC_KEY=$KEY_DIR/snapqr-partner.pub.pem" \
    "LOKET_SNAPQR__ISSUER_PRIVATE_KEY=$KEY_DIR/snapqr-issuer.pem" \
    LOKET_SNAPQR__CUSTOMER_TOKEN=$SNAPQR_CUSTOMER_TOKEN \
    LOKET_SNAPQR__MERCHANT_ID=$SNAPQR_MERCHANT_ID \
    LOKET_SNAPQR__NOTIFY_URL=$snapqr_callback_url \
    LOKET_SMILEPAYZ__MERCHANT_ID=$SMILEPAYZ_MERCHANT_ID \
    LOKET_SMILEPAYZ__MERCHANT_SECRET=$SMILEPAYZ_MERCHANT_SECRET \
    "LOKET_SMILEPAYZ__MERCHANT_PUBLIC_KEY=$KEY_DIR/smilepayz-merchant.pub.pem" \
    "LOKET_SMILEPAYZ__PLATFORM_PRIVATE_KEY=$KEY_DIR/smilepayz-platform.pem" \
    LOKET_SMILEPAYZ__CALLBACK_URL=$smilepayz_callback_url
  # The receiver verifies SNAP notifies (mode A, RSA) with the issuer's
  # public key and Smilepayz callbacks with the platform's, and masks the
  # OkeBayar PIN (the connector's) should a callback echo it.
  start_service callback LOKET_LISTEN_ADDR=127.0.0.1:$CALLBACK_PORT \
    LOKET_OKEBAYAR__USERID=$OKEBAYAR_USERID \
    LOKET_OKEBAYAR__USERPIN=$OKEBAYAR_PIN \
    LOKET_SNAPQR__MODE=rsa \
    "LOKET_SNAPQR__ISSUER_PUBLIC_KEY=$KEY_DIR/snapqr-issuer.pub.pem" \
    LOKET_SNAPQR__MERCHANT_ID=$SNAPQR_MERCHANT_ID \
    "LOKET_SMILEPAYZ__PLATFORM_PUBLIC_KEY=$KEY_DIR/smilepayz-platform.pub.pem" \
    "LOKET_SMILEPAYZ__MASK_SECRETS=[\"$SMILEPAYZ_MERCHANT_SECRET\"]"
  start_service reconciler
  start_service connector \
    LOKET_OKEBAYAR__URL=http://127.0.0.1:$SIM_PORT/ \
    LOKET_OKEBAYAR__USERID=$OKEBAYAR_USERID \
    LOKET_OKEBAYAR__USERPIN=$OKEBAYAR_PIN \
    LOKET_OKEBAYAR__CALLBACK_URL=$callback_url
  # The demo customer token lets `loketctl qr pay` without --qr have the
  # issuer generate a QR first (a demo flow only; see SnapQrSettings).
  start_service snapqr \
    LOKET_SNAPQR__BASE_URL=http://127.0.0.1:$SNAPQR_SIM_PORT \
    LOKET_SNAPQR__CLIENT_KEY=$SNAPQR_CLIENT_KEY \
    LOKET_SNAPQR__CLIENT_SECRET=$SNAPQR_CLIENT_SECRET \
    "LOKET_SNAPQR__PRIVATE_KEY=$KEY_DIR/snapqr-partner.pem" \
    LOKET_SNAPQR__MERCHANT_ID=$SNAPQR_MERCHANT_ID \
    LOKET_SNAPQR__DEMO_CUSTOMER_TOKEN=$SNAPQR_CUSTOMER_TOKEN \
    LOKET_SNAPQR__TIMEOUT_MS=$PROVIDER_TIMEOUT_MS \
    LOKET_SNAPQR__CONNECT_TIMEOUT_MS=$PROVIDER_CONNECT_TIMEOUT_MS \
    LOKET_WORKER__ACK_WAIT_MS=$CONNECTOR_ACK_WAIT_MS
  start_service smilepayz \
    LOKET_SMILEPAYZ__BASE_URL=http://127.0.0.1:$SMILEPAYZ_SIM_PORT \
    LOKET_SMILEPAYZ__MERCHANT_ID=$SMILEPAYZ_MERCHANT_ID \
    LOKET_SMILEPAYZ__MERCHANT_NAME=loket \
    LOKET_SMILEPAYZ__MERCHANT_SECRET=$SMILEPAYZ_MERCHANT_SECRET \
    "LOKET_SMILEPAYZ__MERCHANT_PRIVATE_KEY=$KEY_DIR/smilepayz-merchant.pem" \
    LOKET_SMILEPAYZ__CALLBACK_URL=$smilepayz_callback_url \
    LOKET_SMILEPAYZ__TIMEOUT_MS=$PROVIDER_TIMEOUT_MS \
    LOKET_SMILEPAYZ__CONNECT_TIMEOUT_MS=$PROVIDER_CONNECT_TIMEOUT_MS \
    LOKET_WORKER__ACK_WAIT_MS=$CONNECTOR_ACK_WAIT_MS
  start_service ingress LOKET_GRPC_ADDR=127.0.0.1:$GRPC_PORT
}

# Every service's /readyz must answer 200; the first that exits or is not
# ready in time fails the run with its log tail.
wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT)) name pending
  while :; do
    pending=()
    for name in "${SERVICES[@]}"; do
      alive "${PIDS[$name]}" || { tail -n 30 "$LOG_DIR/$name.log" >&2; fail "$name exited during start (log above: $LOG_DIR/$name.log)"; }
      [ "$(http_status "${ADMIN_PORT[$name]}" /readyz)" = 200 ] || pending+=("$name")
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$LOG_DIR/${pending[0]}.log" >&2
      fail "not ready after ${READY_TIMEOUT} s: ${pending[*]} (log above: $LOG_DIR/${pending[0]}.log)"
    fi
    sleep 0.3
  done
}

print_usage() {
  local ctl=target/release/loketctl run_dir root
  [ "$BIN" = "$ROOT/target/release" ] || ctl=$(printf '%q' "$BIN/loketctl")
  run_dir=$(printf '%q' "$RUN_DIR")
  root=$(printf '%q' "$ROOT")
  echo "$GRPC_PORT" >"$RUN_DIR/grpc-port"
  # For `make bench`'s calibration run (loketctl baseline).
  echo "$NATS_URL" >"$RUN_DIR/nats-url"
  (umask 077 && echo "$DATABASE_URL" >"$RUN_DIR/database-url")
  cat <<EOF

loket is running. Ctrl-C stops everything.

  gRPC (ingress)      127.0.0.1:$GRPC_PORT
  callback receiver   http://127.0.0.1:$CALLBACK_PORT/callback/{okebayar,snapqr,smilepayz}
  simulators          OkeBayar http://127.0.0.1:$SIM_PORT/  SNAP QR CPM http://127.0.0.1:$SNAPQR_SIM_PORT/snap/  Smilepayz http://127.0.0.1:$SMILEPAYZ_SIM_PORT/
                      (scenarios: crates/simulators/SCENARIOS.md)
  NATS / PostgreSQL   $NATS_URL   $DATABASE_URL
  admin (/readyz, /metrics)  ingress :${ADMIN_PORT[ingress]}  callback :${ADMIN_PORT[callback]}  reconciler :${ADMIN_PORT[reconciler]}  sim :${ADMIN_PORT[sim]}
                      connectors: okebayar :${ADMIN_PORT[connector]}  snapqr :${ADMIN_PORT[snapqr]}  smilepayz :${ADMIN_PORT[smilepayz]}
  demo keys/secrets   $KEY_DIR/   $RUN_DIR/{okebayar-pin,snapqr-*,smilepayz-*}
  logs                $LOG_DIR/<service>.log   (tail -f $LOG_DIR/*.log)

In another shell:

  cd $root
  export LOKET_ADDR=http://127.0.0.1:$GRPC_PORT
  export LOKET_API_KEY=\$(cat $run_dir/demo-api-key)

  # a first purchase, waiting for its final state
  $ctl purchase --ref first-1 --product PULSA10 --account 081234567890 --wait 10s
  # a scenario: pending, then callbacks, then success (the account picks the scenario)
  $ctl purchase --ref pending-1 --product PULSA10 --account 089900000002 --wait 10s
  # a definite failure: wrong number (204)
  $ctl purchase --ref wrong-1 --product PULSA10 --account 089900000204 --wait 10s
  # a provider timeout: the reply comes after ours (README, "make run")
  $ctl purchase --ref slow-1 --product PULSA10 --account 089900000901
  $ctl get --ref slow-1       # RECEIVED, UNKNOWN after 45 s, SUCCESS after about 80 s

  $ctl get --ref first-1
  $ctl list
  $ctl watch                  # updates as they happen, Ctrl-C to stop
  $ctl balance okebayar
  $ctl explain okebayar 208
  # support: any reference (ours, the client's, the provider's, a serial number) with its history
  LOKET_DATABASE_URL=\$(cat $run_dir/database-url) $ctl find first-1

  # QR payment (SNAP QR CPM); without --qr the issuer generates a QR first (demo flow)
  $ctl qr pay --ref Q1 --amount 25000 --wait 10s
  # refund part of it, or cancel another payment (--txn: the payment's id, printed by qr pay)
  $ctl qr refund --ref R1 --txn <payment id> --amount 10000 --wait 10s
  $ctl qr pay --ref Q2 --amount 30000 --wait 10s
  $ctl qr cancel --ref C1 --txn <payment id of Q2> --reason test --wait 10s

  # Smilepayz: a pay-in (pending with the QR string to show, success a moment later)
  $ctl payin --ref IN1 --amount 50000 --method QRIS --wait 10s
  $ctl get --ref IN1
  # a pay-out, and the Smilepayz balance
  $ctl payout --ref OUT1 --amount 100000 --method BCA --account 1234567890 --receiver Budi --wait 10s
  $ctl balance smilepayz

  make bench                  # load benchmark against this stack
EOF
}

# ---------------------------------------------------------------------------
# Stopping: only what this run started, in order, each with a deadline.

stop_pid() { # name pid: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL
  local name=$1 pid=$2 deadline=$((SECONDS + STOP_TIMEOUT))
  alive "$pid" || return 0
  while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  if alive "$pid"; then
    echo "$name did not stop within ${STOP_TIMEOUT} s: killing it" >&2 || true
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$? name
  # A second Ctrl-C must not cut the cleanup short, nor a terminal that went
  # away (SIGHUP; a write to it failing with EPIPE or EIO): stop everything
  # whatever happens to our output.
  set +e
  trap '' INT TERM HUP PIPE
  if [ -n "$SLEEP_PID" ]; then kill "$SLEEP_PID" 2>/dev/null || true; fi
  if [ ${#PIDS[@]} -gt 0 ]; then
    say "stopping the services"
    # STOP_ORDER: the edges first; every service drains in parallel.
    for name in "${STOP_ORDER[@]}"; do
      [ -n "${PIDS[$name]:-}" ] && kill -TERM "${PIDS[$name]}" 2>/dev/null || true
    done
    for name in "${STOP_ORDER[@]}"; do
      [ -n "${PIDS[$name]:-}" ] && stop_pid "$name" "${PIDS[$name]}"
    done
  fi
  if [ -n "$NATS_PID" ]; then
    say "stopping nats-server"
    kill -TERM "$NATS_PID" 2>/dev/null || true
    stop_pid nats-server "$NATS_PID"
  fi
  if [ -n "$PG_STARTED" ]; then
    say "stopping PostgreSQL"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  fi
  # Until stop_leftovers is done, the records name an earlier run's
  # processes, which must stay findable.
  [ -z "$LEFTOVERS_STOPPED" ] || rm -rf "$PID_DIR"
  rm -f "$RUN_DIR/run.pid"
  [ "$status" -eq 0 ] && say "stopped; data kept for the next 'make run'"
  exit "$status"
}

# While running: a service or nats-server that dies ends the run (a demo
# with a dead part would only confuse); a signal ends it cleanly.
watch_children() {
  local name
  while :; do
    for name in "${SERVICES[@]}"; do
      if ! alive "${PIDS[$name]}"; then
        tail -n 30 "$LOG_DIR/$name.log" >&2
        fail "$name exited (log above: $LOG_DIR/$name.log); stopping everything"
      fi
    done
    alive "$NATS_PID" || fail "nats-server exited (see $LOG_DIR/nats.log); stopping everything"
    # sleep in the background: `wait` returns at once on a signal.
    sleep 2 &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
  done
}

main() {
  take_lock
  trap cleanup EXIT
  # Ctrl-C or SIGTERM is how a demo ends: a clean stop, exit status 0. So
  # is a closed terminal (SIGHUP).
  trap 'exit 0' INT TERM HUP
  stop_leftovers
  LEFTOVERS_STOPPED=1
  scripts/ensure-deps.sh
  build
  check_ports_free
  demo_pin
  demo_credentials
  start_postgres
  start_nats
  prepare_database
  demo_api_key
  start_services
  say "waiting until every service is ready"
  wait_ready
  print_usage
  watch_children
}

# `make clean` first: an earlier run killed before it could stop its
# processes must not lose the records that find them.
if [ "${1:-}" = --stop-leftovers ]; then
  take_lock
  stop_leftovers
  rm -f "$RUN_DIR/run.pid"
  exit 0
fi
main "$@"
