# loket — two commands do everything on a fresh Debian machine:
#   make run    install nats-server/PostgreSQL if missing, start everything, print how to buy
#   make test   every test, against real nats-server, PostgreSQL and simulators
.PHONY: run test build lint fmt bench clean

run:
	scripts/run.sh

test:
	scripts/test.sh

build:
	cargo build --workspace --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# Load benchmark against a running `make run` (prints figures; never fails on timing).
# Extra loketctl bench flags: make bench BENCH_ARGS="--concurrency 64 --duration 60s"
bench:
	scripts/bench.sh $(BENCH_ARGS)

# Stops what a killed `make run` left running first (refused while one runs).
# Also removes PostgreSQL's data where `make run` had to move it as root
# (.run/pg-moved-to; only ever a folder under /var/lib/loket-run/).
clean:
	scripts/run.sh --stop-leftovers
	@moved=$$(cat .run/pg-moved-to 2>/dev/null); \
	case "$$moved" in /var/lib/loket-run/?*) echo "rm -rf $$moved"; rm -rf -- "$$moved";; esac
	rm -rf .run target
