#!/bin/bash
# Run the leader-gate (coord) integration tests from a snapshot of their
# binaries, two at a time.
#
# Why not just `cargo nextest run`: when several checkouts share one
# CARGO_TARGET_DIR, the test binaries (same names, same hashes) are rewritten
# by whichever checkout built last, even between build and run. With a target
# dir of your own, `cargo nextest run -E 'binary(/^coord_/)'` is equivalent.
# Needs the dev-env etcd (scripts/dev-env.sh up), etcd, etcdctl and openssl.
#
#   CARGO_TARGET_DIR=/work/main/target scripts/coord-tests.sh
set -e
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
SNAP=$(mktemp -d /tmp/coord-tests.XXXXXX)
# The binaries are big: keep only the logs.
trap 'rm -f "$SNAP"/coord_*' EXIT
cargo build --tests -q 2>&1 | grep -v "^$" || true
for t in coord_process coord_etcd_faults coord_lib coord_auth coord_tls; do
  f=$(cargo nextest list --message-format json --test $t 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print([v["binary-path"] for v in d["rust-suites"].values()][0])')
  cp "$f" $SNAP/$t
  [ $t = coord_lib ] || [ $t = coord_auth ] || [ $t = coord_tls ] || BB_COORD_TEST_CHILD_ARGS='["heartbeat","--help"]' $SNAP/$t --exact bridge_child_process --ignored --nocapture 2>/dev/null | grep -q tick-ms || { echo "snapshot of $t is not this branch's build"; exit 3; }
done
cd $SNAP
# Two at a time, as nextest does on 2 cores: these tests measure time.
( ./coord_process --test-threads 2 --nocapture > $SNAP/process.log 2>&1; echo "coord_process exit $?" >> $SNAP/process.log ) &
( ./coord_lib --test-threads 2 --nocapture > $SNAP/lib.log 2>&1; echo "coord_lib exit $?" >> $SNAP/lib.log ) &
wait
( ./coord_etcd_faults --test-threads 2 --nocapture > $SNAP/faults.log 2>&1; echo "coord_etcd_faults exit $?" >> $SNAP/faults.log ) &
wait
( ./coord_auth --nocapture > $SNAP/auth.log 2>&1; echo "coord_auth exit $?" >> $SNAP/auth.log ) &
( ./coord_tls --nocapture > $SNAP/tls.log 2>&1; echo "coord_tls exit $?" >> $SNAP/tls.log ) &
wait
grep -hE "takeover|killed:|quorum|woken|wrong password|client certificate|handover|noticed|resumed at|after SIGCONT|panicked|test result|exit [0-9]" $SNAP/process.log $SNAP/faults.log $SNAP/lib.log $SNAP/auth.log $SNAP/tls.log | cut -c1-220
echo "logs: $SNAP"
! grep -qE "exit [1-9]" "$SNAP"/*.log
