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
rc=0
cargo nextest run --profile ci --no-tests fail "$@" || rc=$?
# On failure, say whether the shared services were still healthy: a dead
# MariaDB fails every test after it, and the run's tail is what gets read.
if [ "$rc" -ne 0 ]; then bash scripts/dev-env.sh diagnose; fi
exit "$rc"
