#!/usr/bin/env bash
# `make bench`: the load benchmark (`loketctl bench`) against the stack a
# running `make run` serves: prepaid purchases through the real ingress, the
# simulator answering at once. Prints completed purchases/s, latency
# percentiles, errors and each process's CPU share; never fails on timing.
#
# Defaults: 32 purchases in flight for 20 s (after loketctl's warm-up). Extra
# arguments go to `loketctl bench` and override the defaults, e.g.
#   scripts/bench.sh --concurrency 64 --duration 60s
#   make bench BENCH_ARGS="--concurrency 16"
set -euo pipefail
cd "$(dirname "$0")/.."

ctl=target/release/loketctl
key_file=.run/demo-api-key
[ -x "$ctl" ] && [ -s "$key_file" ] || {
  echo "no demo stack found: start one with 'make run' in another shell first" >&2
  exit 1
}

# The address `make run` printed, unless LOKET_ADDR says otherwise.
port=$(cat .run/grpc-port 2>/dev/null || echo 50051)
export LOKET_ADDR=${LOKET_ADDR:-http://127.0.0.1:$port}
# From the file, not the command line: arguments are visible in `ps`.
LOKET_API_KEY=$(cat "$key_file")
export LOKET_API_KEY

# The bench shares the machine's cores with the stack it measures: one
# tokio worker thread, like the services under `make run`.
export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}

# clap refuses a flag given twice, so a default is added only when the
# caller did not set it.
defaults=()
[[ " $* " == *" --concurrency"* ]] || defaults+=(--concurrency 32)
[[ " $* " == *" --duration"* ]] || defaults+=(--duration 20s)

exec "$ctl" bench "${defaults[@]}" "$@"
