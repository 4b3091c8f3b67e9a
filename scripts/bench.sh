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

ctl=${CARGO_TARGET_DIR:-target}/release/loketctl
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

# First the bare INSERT -> JetStream -> UPDATE pipeline the target is set
# against (loketctl baseline), at the same concurrency (at most 64), so the
# bench figure can be read against what this machine does right now: on a
# shared virtual machine both move with the neighbours. BENCH_BASELINE=0
# skips it.
concurrency=32
previous=
for arg in "$@"; do
  case "$previous" in --concurrency) concurrency=$arg ;; esac
  case "$arg" in --concurrency=*) concurrency=${arg#--concurrency=} ;; esac
  previous=$arg
done
baseline_rate=
baseline_cost=
if [ "${BENCH_BASELINE:-1}" != 0 ] && [ -s .run/nats-url ] && [ -s .run/database-url ]; then
  LOKET_NATS_URL=$(cat .run/nats-url)
  LOKET_DATABASE_URL=$(cat .run/database-url)
  export LOKET_NATS_URL LOKET_DATABASE_URL
  baseline_concurrency=$((concurrency < 64 ? concurrency : 64))
  echo "--- the bare pipeline on this machine now (loketctl baseline --concurrency $baseline_concurrency)"
  baseline=$("$ctl" baseline --concurrency "$baseline_concurrency" --duration 10s)
  echo "$baseline"
  baseline_rate=$(awk '/^completed items\/s/ {print $3}' <<<"$baseline")
  baseline_cost=$(sed -n 's/.* = \([0-9.]*\) ms of CPU per item$/\1/p' <<<"$baseline")
  echo "--- loket (loketctl bench)"
fi

report=$("$ctl" bench "${defaults[@]}" "$@")
echo "$report"
rate=$(awk '/^completed purchases\/s/ {print $3}' <<<"$report")
cost=$(sed -n 's/.* = \([0-9.]*\) ms of CPU per purchase$/\1/p' <<<"$report")
if [ -n "$baseline_rate" ] && [ -n "$rate" ]; then
  awk -v loket="$rate" -v bare="$baseline_rate" 'BEGIN {
    if (bare > 0) printf "loket %.0f purchases/s, the bare pipeline %.0f items/s, on this machine now: loket does %.0f%% of it\n", loket, bare, 100 * loket / bare
  }'
fi
# The budget in CPU: the target (1,500/s where the bare pipeline does
# 3,400/s) allows a purchase 3400/1500 = 2.3 times the CPU of one item.
if [ -n "$baseline_cost" ] && [ -n "$cost" ]; then
  awk -v loket="$cost" -v bare="$baseline_cost" 'BEGIN {
    if (bare > 0) printf "CPU: loket %.3f ms per purchase, the bare pipeline %.3f ms per item: %.1f times (the target allows 2.3)\n", loket, bare, loket / bare
  }'
fi
