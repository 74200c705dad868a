#!/usr/bin/env bash
# Chaos test: three bridges stream a steady workload while faults are injected
# round after round; then every committed row change is checked in Kafka:
# exactly once, in order per row, nothing that was not committed.
#
#   bash scripts/chaos.sh [--rounds N] [--delivery MODE] [--format debezium]
#
# BB_CHAOS_DIR, BB_CHAOS_MYSQL_PORT, BB_CHAOS_ETCD_PORT_BASE, BB_CHAOS_KAFKA_PORT
# and BB_CHAOS_HTTP_BASE move it elsewhere (to run two at once).
# --delivery is idempotent (default), at-least-once, auto or transactional.
# transactional needs a broker with Kafka transactions, which the private
# broker (tansu) is not: give one with BB_CHAOS_BROKERS=HOST:PORT (Apache Kafka,
# Redpanda, ...); its data is read with isolation.level=read_committed, and the
# broker-restart fault is left out (the script does not own that broker).
# --faults picks the fault types (default: all, in this order); --keep-env
# leaves the private services running afterwards for a look.
# Fault types, in turn: kill -9 of the leader; SIGSTOP of the leader past the
# lease TTL, then SIGCONT (a zombie; with idempotent delivery its watchdog
# kills it before the lease expires, and it is started again); SIGTERM of the leader; kill -9 of the
# etcd raft leader; MariaDB restart; broker restart. A killed bridge is started
# again, so three always run. The run uses its own private services (MariaDB
# :13306, etcd :12379/13379/14379, broker :19092, data in target/chaos/) so it
# never disturbs the dev env or other tests. Exits 1 if any change was lost,
# duplicated, reordered or invented, or if no standby took over.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=6
DELIVERY=idempotent
FAULT_LIST="kill9 zombie sigterm etcd-leader mariadb-restart broker-restart"
KEEP_ENV=0
RATE=300
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --delivery) DELIVERY=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --faults) FAULT_LIST=$2; shift 2 ;;
    --keep-env) KEEP_ENV=1; shift ;;
    *) echo "usage: $0 [--rounds N] [--delivery MODE] [--rate N] [--faults 'kill9 zombie ...'] [--keep-env]" >&2; exit 2 ;;
  esac
done

say() { printf '[chaos %s] %s\n' "$(date +%T)" "$*"; }

case "$DELIVERY" in
  idempotent | at-least-once | auto | transactional) ;;
  *) echo "--delivery $DELIVERY: use idempotent, at-least-once, auto or transactional" >&2; exit 2 ;;
esac
EXTERNAL_BROKERS=${BB_CHAOS_BROKERS:-}
if [ "$DELIVERY" = transactional ] && [ -z "$EXTERNAL_BROKERS" ]; then
  echo "--delivery transactional needs a broker with Kafka transactions; the private broker (tansu) has none." >&2
  echo "Set BB_CHAOS_BROKERS=HOST:PORT of one (Apache Kafka, Redpanda, ...), or use --delivery idempotent." >&2
  exit 2
fi
if [ -n "$EXTERNAL_BROKERS" ]; then
  FAULT_LIST=$(echo "$FAULT_LIST" | tr ' ' '\n' | grep -vx broker-restart | tr '\n' ' ')
fi

DIR=${BB_CHAOS_DIR:-$ROOT/target/chaos}
export BB_DEV_DIR=$DIR/env
export BB_MYSQL_PORT=${BB_CHAOS_MYSQL_PORT:-13306} BB_ETCD_PORT_BASE=${BB_CHAOS_ETCD_PORT_BASE:-12379}
export BB_KAFKA_PORT=${BB_CHAOS_KAFKA_PORT:-19092}
ENV_SH="bash $ROOT/scripts/dev-env.sh"
$ENV_SH down >/dev/null 2>&1 || true
rm -rf "$DIR" && mkdir -p "$DIR"
$ENV_SH up >"$DIR/env-up.log" 2>&1 || { cat "$DIR/env-up.log"; exit 1; }
eval "$($ENV_SH env)"
[ -z "$EXTERNAL_BROKERS" ] || export BB_KAFKA_BROKERS=$EXTERNAL_BROKERS

cargo build -q --bin binlog-bridge --example cdc_writer --example cdc_verify
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/debug/binlog-bridge
EX=$TARGET/debug/examples

RUN=$(date +%s)
DB=chaos_$RUN
cat >"$DIR/bridge.toml" <<EOF
[mysql]
url = "$BB_MYSQL_URL"
server_id = 3001
start = "latest"
include = ["$DB.*"]
read_timeout_secs = 5

[etcd]
endpoints = ["${BB_ETCD_ENDPOINTS//,/\", \"}"]
pipeline = "chaos-$RUN"
lease_ttl_secs = 1
checkpoint_interval_ms = 200

[kafka]
brokers = "$BB_KAFKA_BROKERS"
topic = "{db}.{table}"
format = "debezium"
delivery = "$DELIVERY"
partitions = 3
EOF

HTTP_BASE=${BB_CHAOS_HTTP_BASE:-19186}
SERVER_ID_BASE=3000
# shellcheck source=scripts/lib/bridges.sh
source "$ROOT/scripts/lib/bridges.sh"
cleanup() {
  touch "$DIR/stop" 2>/dev/null || true
  [ -n "${WRITER:-}" ] && kill -TERM "$WRITER" 2>/dev/null || true
  stop_bridges
  [ "$KEEP_ENV" = 1 ] || $ENV_SH down >/dev/null 2>&1 || true
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$(now) - $1:.2f}')"; }

for i in 1 2 3; do start_bridge "$i"; done
LEADER=$(wait_leader) || { say "no leader elected; see $DIR/bridge*.log"; exit 1; }
wait_streaming "$LEADER" || { say "the leader is not streaming; see $DIR/bridge*.log"; exit 1; }
say "bridges up, leader pid $LEADER, delivery $DELIVERY"

"$EX/cdc_writer" --url "$BB_MYSQL_ADMIN_URL" --db "$DB" --fresh --tables 4 --rate "$RATE" --seconds 0 \
  --stop-file "$DIR/stop" --big-every 400 --big-rows 10000 --ddl-every 300 \
  --log "$DIR/writer.log" >"$DIR/writer.out" 2>&1 &
WRITER=$!
sleep 3

read -r -a FAULTS <<<"$FAULT_LIST"
RESULTS=()
FAILED=0
for ((r = 0; r < ROUNDS; r++)); do
  fault=${FAULTS[$((r % ${#FAULTS[@]}))]}
  LEADER=$(wait_leader) || { say "round $r: no leader"; FAILED=1; break; }
  n=$(which_bridge "$LEADER")
  t0=$(now)
  echo "$r $fault $(date +%s%3N)" >>"$DIR/rounds.txt"
  case "$fault" in
    kill9)
      kill -KILL "$LEADER"
      NEW=$(wait_leader "$LEADER") || { FAILED=1; NEW=none; }
      took=$(elapsed "$t0")
      wait_gone "$LEADER"
      start_bridge "$n"
      ;;
    zombie)
      kill -STOP "$LEADER"
      NEW=$(wait_leader "$LEADER") || { FAILED=1; NEW=none; }
      took=$(elapsed "$t0")
      sleep 1.5
      kill -CONT "$LEADER" 2>/dev/null || true
      if [ -e "/proc/$LEADER" ] && ! awk '{exit !($3 == "Z")}' "/proc/$LEADER/stat" 2>/dev/null; then
        :
      else
        # Its watchdog killed the frozen leader before the lease expired
        # (etcd.watchdog, idempotent delivery): start it again, as a
        # supervisor would.
        say "round $r: the frozen leader $LEADER was killed by its watchdog"
        wait_gone "$LEADER"
        start_bridge "$n"
      fi
      ;;
    sigterm)
      kill -TERM "$LEADER"
      NEW=$(wait_leader "$LEADER") || { FAILED=1; NEW=none; }
      took=$(elapsed "$t0")
      wait_gone "$LEADER"
      start_bridge "$n"
      ;;
    etcd-leader)
      member=$($ENV_SH etcd-leader)
      $ENV_SH kill "$member"
      sleep 2
      $ENV_SH start "$member" >/dev/null 2>&1
      NEW=$(wait_leader) || { FAILED=1; NEW=none; }
      took=-
      ;;
    mariadb-restart)
      $ENV_SH stop mariadb
      sleep 1
      $ENV_SH start mariadb >/dev/null 2>&1
      NEW=$(wait_leader) || { FAILED=1; NEW=none; }
      took=-
      ;;
    broker-restart)
      $ENV_SH stop broker
      sleep 1
      $ENV_SH start broker >/dev/null 2>&1
      NEW=$(wait_leader) || { FAILED=1; NEW=none; }
      took=-
      ;;
  esac
  RESULTS+=("| $r | $fault | $LEADER | $NEW | $took |")
  say "round $r: $fault (leader was $LEADER, now $NEW, takeover ${took}s)"
  sleep 4
done

touch "$DIR/stop"
wait "$WRITER" || true
WRITER=
say "$(tail -1 "$DIR/writer.out")"
echo
echo "| round | fault | leader before | leader after | takeover seen by status (s) |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${RESULTS[@]}"
echo
# The verifier exits 3 when the broker stops serving reads before the end of
# the data (tansu's sqlite storage has been seen to stall under this read
# load): that is no verdict on the bridge, so restart the broker (its data is
# on disk) and read again.
rc=3
for attempt in 1 2 3; do
  set +e
  "$EX/cdc_verify" --brokers "$BB_KAFKA_BROKERS" --db "$DB" --log "$DIR/writer.log" --timeout 120 --rounds "$DIR/rounds.txt"
  rc=$?
  set -e
  [ "$rc" = 3 ] || break
  say "verify attempt $attempt: the broker stopped serving reads; restarting it and reading again"
  $ENV_SH stop broker
  $ENV_SH start broker >/dev/null 2>&1
done
[ "$rc" = 0 ] || FAILED=1
exit $FAILED
