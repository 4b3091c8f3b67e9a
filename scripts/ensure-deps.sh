#!/usr/bin/env bash
# Installs what loket needs to run and test on a fresh Debian machine, from
# Debian's packages, only when missing: nats-server, PostgreSQL, openssl
# (`make run` generates its demo keys with it), python3 (`make test` picks
# a free port with it) and a C compiler (for crates with C parts). `make
# test` also needs cargo-nextest, which scripts/test.sh installs.
set -euo pipefail

# Rust itself is the one prerequisite: Debian's packaged compiler is older
# than the crates need.
# The oldest compiler the locked crates build with (async-nats, uuid); the
# workspace's rust-version says the same.
RUST_MIN=1.89
command -v cargo >/dev/null 2>&1 || {
  echo "ensure-deps: cargo not found: install Rust (stable, $RUST_MIN or newer) with rustup (https://rustup.rs), then run this again" >&2
  exit 1
}
rust_found=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$RUST_MIN" "$rust_found" | sort -V | head -n1)" != "$RUST_MIN" ]; then
  echo "ensure-deps: rustc $rust_found is older than $RUST_MIN, which the crates need: rustup update stable" >&2
  exit 1
fi

need_apt=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# runuser (in /usr/sbin, outside a normal user's PATH on Debian) is needed
# only as root, to run PostgreSQL as 'postgres'.
if [ "$(id -u)" -eq 0 ]; then
  command -v runuser >/dev/null 2>&1 || [ -x /usr/sbin/runuser ] || need_apt+=(util-linux)
fi
# Some crates build C code (ring): a C compiler and the C library headers.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing from Debian: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Through env: sudo drops the caller's environment.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# PostgreSQL refuses to run as root: the private instances run as the
# 'postgres' user the Debian package creates.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
