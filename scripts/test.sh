#!/usr/bin/env bash
# `make test`: every test of the workspace against real services. Starts one
# private PostgreSQL for the run (each test creates its own database on it);
# each test starts its own nats-server. Prints the test runner's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

# A caller may hand us a non-blocking stdout or stderr (the flag lives on the
# shared open file, so any process given it may have set it). A writer then
# meets EAGAIN when the reader falls behind: the test runner stops mid-line and
# exits 110 (seen once in CI). Everything here expects blocking output, so the
# flag is cleared at the start and again after the package installs.
blocking_output() {
  # Before ensure-deps has run, a fresh machine may have no Python yet.
  command -v python3 >/dev/null 2>&1 || return 0
  python3 - <<'PY'
import fcntl, os
for fd in (1, 2):
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        os.write(2, b"test.sh: output %d was non-blocking; made it blocking\n" % fd)
PY
}
blocking_output

scripts/ensure-deps.sh
# Each test runs in a process of its own (cargo-nextest): the end-to-end
# tests install process-wide log and trace subscribers, which `cargo test`'s
# threads would share. Installed from crates.io when missing.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest from crates.io (a few minutes, once)"
  cargo install --locked --quiet cargo-nextest
fi

# A build from nothing leaves 1.9 GB under target/ as .ci/run builds it
# (4.5 GB with the incremental caches and debug line tables a developer's
# build keeps); say so before cargo fails midway with "No space left on device".
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt $((3 * 1024 * 1024)) ]; then
  echo "test.sh: warning: only $((free_kb / 1024)) MB free on this disk; a build from nothing needs about 2 GB" >&2
fi

# The throw-away PostgreSQL lives under /tmp, not in the checkout: as root it
# runs as 'postgres', which may not reach a checkout under /root, and a deep
# checkout path would make its socket path too long.
run_dir=$(mktemp -d /tmp/loket-test-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg_bin=$(scripts/postgres-bin.sh)

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$pg_bin/pg_ctl" -D "$run_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$run_dir"
}
trap cleanup EXIT
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$run_dir"
as_pg "$pg_bin/initdb" -D "$run_dir/data" -U postgres -A trust -E UTF8 --no-sync --locale=C >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$run_dir/data" -l "$run_dir/postgres.log" -w -t 60 \
  -o "-p $port -k $run_dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500" \
  start >/dev/null
export LOKET_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
# The canary check reads what the server logs while a test runs.
export LOKET_TEST_POSTGRES_LOG="$run_dir/postgres.log"

blocking_output

# The whole workspace unless the caller names packages: cargo ignores `-p`
# next to `--workspace`.
scope=(--workspace)
for arg in "$@"; do
  case "$arg" in -p|-p*|--package|--package=*) scope=() ;; esac
done
# The tests start the services' binaries: built first, so that a test never
# runs one older than the code (cargo builds a package's binaries for tests
# only when that package has integration tests of its own).
cargo build --workspace --all-targets --quiet
cargo nextest run "${scope[@]}" --no-fail-fast --test-threads "${LOKET_TEST_THREADS:-4}" "$@"
