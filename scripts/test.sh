#!/usr/bin/env bash
# Run the whole test suite against real services: brings up the dev env
# (MariaDB, 3-member etcd, tansu broker on 127.0.0.1; idempotent), then runs
# every test with cargo-nextest. Extra arguments go to nextest, e.g.
#   scripts/test.sh smoke_        only tests whose name matches
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/dev-env.sh up
eval "$(bash scripts/dev-env.sh env)"
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
# Free disk space over the run, every 2 s, for the dev env's filesystem and
# /tmp (the tests' private servers): a full disk fails tests fast (MariaDB
# answers "Disk got full" for the temporary tables of information_schema
# queries) and is free again once their temporary directories are gone, so
# the low point is what a failed run needs to show.
DF_LOG=$(mktemp)
(while :; do df -Pk "$BB_DEV_DIR" /tmp 2>/dev/null | awk 'NR > 1 { print $6, $4 }'; sleep 2; done) >"$DF_LOG" &
DF_PID=$!
trap 'kill "$DF_PID" 2>/dev/null || true; rm -f "$DF_LOG"' EXIT
rc=0
cargo nextest run --profile ci --no-tests fail "$@" || rc=$?
# On failure, say whether the shared services were still healthy: a dead
# MariaDB fails every test after it, and the run's tail is what gets read.
if [ "$rc" -ne 0 ]; then
  bash scripts/dev-env.sh diagnose
  echo "--- lowest free disk space during the run"
  awk '{ if (!($1 in low) || $2 < low[$1]) low[$1] = $2 }
       END { for (m in low) printf "    %s: %.0f MB\n", m, low[m] / 1024 }' "$DF_LOG"
fi
exit "$rc"
