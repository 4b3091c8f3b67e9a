#!/usr/bin/env bash
# Prints the bin folder of the newest PostgreSQL server installed from
# Debian's packages: the newest version whose folder has initdb (a client-only
# package of a newer version has a bin folder without it).
set -euo pipefail
initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
[ -n "$initdb" ] || {
  echo "no PostgreSQL server under /usr/lib/postgresql; run scripts/ensure-deps.sh" >&2
  exit 1
}
dirname "$initdb"
