#!/usr/bin/env bash
# Benchmarks: one table of throughput, latency, memory and failover, measured
# side by side in one run and printed as ratios (these machines are noisy;
# only ratios from one run mean anything).
#
#   bash scripts/bench.sh [--rows N] [--quick] [--workloads "a b c"] [--limit-runs N]
#                         [--brokers "tansu mock"] [--skip-peer] [--skip-latency]
#                         [--pairs N] [--skip-failover] [--keep-env]
#
# --rows N (default 1000000) sizes every workload; --quick is a smoke run
# (20000 rows, one run per limit, a short latency run, two failover rounds).
# --workloads picks some of (a), (b), (c); --limit-runs (default 2) is how
# many times each limit is measured (the best run counts). --baseline BIN
# also runs each end-to-end idempotent workload with another binlog-bridge
# binary (e.g. a build before a change) for a before/after ratio.
# --pairs N (default 3, 1 with --quick, 0 skips) measures the end-to-end
# target a second way: N adjacent pairs of one plain producer run and one
# end-to-end idempotent run (order alternating), each pair's ratio taken on
# its own, so that both sides of a ratio ran within seconds of each other
# (the machine's speed moves by up to 1.7x within minutes).
# --brokers (default both) picks the Kafka brokers every throughput and
# latency row is measured against, each in its own table:
# - tansu: a real on-disk broker (tansu 0.6.0 on sqlite). It acknowledges
#   only ~5000 messages/s here and stores every message header as its own
#   sqlite row, so its end-to-end and peer rows measure mostly the broker.
# - mock: librdkafka's in-memory mock cluster (examples/mock_broker.rs) on a
#   127.0.0.1 port. Not a real broker (no disk, no CreateTopics: its topics
#   are made at its start, 3 partitions each; the bridge runs with
#   create_topics = false); it shows the client-side limits of the bridge
#   and of the peer.
# Starts its own MariaDB, 3-member etcd and tansu broker (scripts/dev-env.sh,
# data in target/bench/) on its own ports and stops them at the end:
# BB_BENCH_MYSQL_PORT (13316), BB_BENCH_ETCD_PORT_BASE (12419: clients
# 12419/13419/14419), BB_BENCH_KAFKA_PORT (19102), BB_BENCH_HTTP_PORT (19196);
# the failover rounds run scripts/chaos.sh on BB_BENCH_CHAOS_MYSQL_PORT
# (13326), BB_BENCH_CHAOS_ETCD_PORT_BASE (12439), BB_BENCH_CHAOS_KAFKA_PORT
# (19112), BB_BENCH_CHAOS_HTTP_BASE (19206). BB_BENCH_DIR moves the data;
# BB_BENCH_MAX_BINLOG_SIZE (default and maximum 1 GiB) sets the server's
# max_binlog_size, e.g. small to check that a workload spanning several
# binlog files is measured whole. BB_BENCH_KAFKA_PROPERTIES adds lines to the
# measured bridges' [kafka.properties], e.g. 'debug = "eos"'. BB_BENCH_PERF=DIR
# records each measured bridge with perf into DIR/NAME.perf.data
# (BB_BENCH_PERF_ARGS replaces the default '-F 499 -g').
#
# What each row measures:
# - limits (examples/bench_tool.rs `limits`): on the binlog files each workload
#   wrote (all of them: one over max_binlog_size spans several), our decoder vs `mariadb-binlog -v`, and our sink vs a plain rdkafka
#   producer sending the same messages pre-encoded, to the same broker.
# - end-to-end: the workload is written first, then `binlog-bridge run`
#   starts from the position before it; rows/s from the first message seen
#   in Kafka to the last one acknowledged (topic high watermarks polled every
#   20 ms; start-up, election and fence wait are not counted).
# - peer: bench/peer.py (python-mysql-replication + confluent-kafka) from the
#   same position to the same broker; first row read to last delivery.
# - latency: rows written at a fixed rate while the bridge streams and a
#   consumer reads; receipt time minus the writer's clock at the INSERT.
# - CPU: CPU-seconds per million rows of each limit (the timed process and
#   the broker) and, end to end, of the bridge, the broker and MariaDB over
#   the measured window, the bridge's by thread; and the end-to-end rate the
#   machine's cores would allow if the bridge cost only our decode plus the
#   plain producer per row.
# - memory: the bridge's VmHWM after workload (b).
# - failover: takeover times of scripts/chaos.sh rounds (kill -9 and SIGTERM).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROWS=1000000
QUICK=0
SKIP_PEER=0
SKIP_FAILOVER=0
KEEP_ENV=0
WORKLOADS="a b c"
SKIP_LATENCY=0
LIMIT_RUNS=
BASELINE=
BROKERS="tansu mock"
PAIRS=
usage() {
  echo "usage: $0 [--rows N] [--quick] [--workloads 'a b c'] [--limit-runs N] [--baseline BIN] [--brokers 'tansu mock'] [--pairs N] [--skip-peer] [--skip-latency] [--skip-failover] [--keep-env]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) [[ "${2:-}" =~ ^[0-9]+$ ]] && [ "$2" -ge 100 ] || { echo "--rows needs a number >= 100" >&2; exit 2; }; ROWS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --workloads) [[ "${2:-}" =~ ^[abc]( [abc])*$ ]] || { echo "--workloads takes a space-separated list of a, b, c" >&2; exit 2; }; WORKLOADS=$2; shift 2 ;;
    --limit-runs) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { echo "--limit-runs needs a number >= 1" >&2; exit 2; }; LIMIT_RUNS=$2; shift 2 ;;
    --baseline) [ -x "${2:-}" ] || { echo "--baseline needs an executable binlog-bridge binary" >&2; exit 2; }; BASELINE=$(realpath "$2"); shift 2 ;;
    --brokers) [[ "${2:-}" =~ ^(tansu|mock)( (tansu|mock))?$ ]] || { echo "--brokers takes tansu, mock or both ('tansu mock')" >&2; exit 2; }; BROKERS=$2; shift 2 ;;
    --pairs) [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "--pairs needs a number >= 0" >&2; exit 2; }; PAIRS=$2; shift 2 ;;
    --skip-peer) SKIP_PEER=1; shift ;;
    --skip-latency) SKIP_LATENCY=1; shift ;;
    --skip-failover) SKIP_FAILOVER=1; shift ;;
    --keep-env) KEEP_ENV=1; shift ;;
    *) usage ;;
  esac
done
# 2000 rows/s: the test broker (tansu on sqlite) acknowledges about 5000
# messages/s on its own here, less while a consumer reads; at 5000 rows/s the
# latency would be the broker's queue. BB_BENCH_LATENCY_RATE sets another.
# The mock broker is measured at the issue's 5000 rows/s
# (BB_BENCH_MOCK_LATENCY_RATE).
LAT_SECS=20 LAT_RATE=${BB_BENCH_LATENCY_RATE:-2000} CHAOS_ROUNDS=4
MOCK_LAT_RATE=${BB_BENCH_MOCK_LATENCY_RATE:-5000}
if [ "$QUICK" = 1 ]; then
  ROWS=20000 LIMIT_RUNS=${LIMIT_RUNS:-1} LAT_SECS=8 CHAOS_ROUNDS=2 PAIRS=${PAIRS:-1}
fi
LIMIT_RUNS=${LIMIT_RUNS:-2}
PAIRS=${PAIRS:-3}
ROWS=$((ROWS / 10 * 10)) # workload (c) writes transactions of ten changes

say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

DIR=${BB_BENCH_DIR:-$ROOT/target/bench}
export BB_DEV_DIR=$DIR/env
export BB_MYSQL_PORT=${BB_BENCH_MYSQL_PORT:-13316}
export BB_ETCD_PORT_BASE=${BB_BENCH_ETCD_PORT_BASE:-12419}
export BB_KAFKA_PORT=${BB_BENCH_KAFKA_PORT:-19102}
HTTP_PORT=${BB_BENCH_HTTP_PORT:-19196}
ENV_SH="bash $ROOT/scripts/dev-env.sh"
VENV=${BB_CACHE_DIR:-$HOME/.cache/binlog-bridge}/bench-venv

$ENV_SH down >/dev/null 2>&1 || true
rm -rf "$DIR" && mkdir -p "$DIR"
RESULTS=$DIR/results.txt
: >"$RESULTS"
record() { echo "$*" >>"$RESULTS"; } # ROW key=value ...
record "machine cores=$(nproc)"

say "building (release)"
cargo build -q --release --bin binlog-bridge --example bench_tool --example mock_broker
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/binlog-bridge
TOOL=$TARGET/release/examples/bench_tool
MOCK=$TARGET/release/examples/mock_broker

if [ "$SKIP_PEER" = 0 ] && ! "$VENV/bin/python" -c 'import pymysqlreplication, confluent_kafka' 2>/dev/null; then
  say "creating the peer's venv in $VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
  "$VENV/bin/pip" install -q mysql-replication==1.0.17 confluent-kafka==2.16.1 || die "pip install failed"
fi

BRIDGE_PID=
MOCK_PID=
cleanup() {
  [ -z "$BRIDGE_PID" ] || kill -KILL "$BRIDGE_PID" 2>/dev/null || true
  [ -z "$MOCK_PID" ] || kill -KILL "$MOCK_PID" 2>/dev/null || true
  [ "$KEEP_ENV" = 1 ] || $ENV_SH down >/dev/null 2>&1 || true
}
trap cleanup EXIT

$ENV_SH up >"$DIR/env-up.log" 2>&1 || { cat "$DIR/env-up.log"; exit 1; }
eval "$($ENV_SH env)"
sql() { mariadb --defaults-file="$BB_MYSQL_CNF" -N -e "$1"; }
sql_in() { mariadb --defaults-file="$BB_MYSQL_CNF" -N; }
# The workloads are written before the bridge reads them; make writing cheap.
# max_binlog_size: 1 GiB is MariaDB's largest (and default) value; a smaller
# BB_BENCH_MAX_BINLOG_SIZE makes small workloads span several files too.
MAX_BINLOG_SIZE=${BB_BENCH_MAX_BINLOG_SIZE:-1073741824}
[[ "$MAX_BINLOG_SIZE" =~ ^[0-9]+$ ]] && [ "$MAX_BINLOG_SIZE" -ge 4096 ] && [ "$MAX_BINLOG_SIZE" -le 1073741824 ] ||
  die "BB_BENCH_MAX_BINLOG_SIZE must be a byte count from 4096 to 1073741824 (MariaDB's range)"
sql "SET GLOBAL innodb_flush_log_at_trx_commit=0; SET GLOBAL sync_binlog=0; SET GLOBAL max_binlog_size=$MAX_BINLOG_SIZE"
DATADIR=$(sql "SELECT @@datadir")

# The mock broker, with every topic the runs below use (it cannot create
# topics on request). Names match the ones the runs derive.
MOCK_BROKERS=
case " $BROKERS " in *" mock "*)
  topics=()
  for w in $WORKLOADS; do
    case $w in a | b) table=t ;; c) table=m ;; esac
    for ((r = 0; r < LIMIT_RUNS; r++)); do
      for side in plain sink; do topics+=("limits-$w-$side$r.bench_$w.$table" "limits-$w-$side$r.schema"); done
    done
    for run in idempotent at-least-once idempotent-baseline transactional; do
      topics+=("mock-e2e-$w-$run.bench_$w.$table" "mock-e2e-$w-$run.schema-changes")
    done
    for ((k = 1; k <= PAIRS; k++)); do
      topics+=("limits-$w-pair$k.bench_$w.$table" "limits-$w-pair$k.schema")
      topics+=("mock-pair-$w-$k.bench_$w.$table" "mock-pair-$w-$k.schema-changes")
    done
    topics+=("mock-peer-$w.bench_$w.$table")
  done
  topics+=("mock-lat.bench_mlat.lat" "mock-lat.schema-changes")
  args=()
  for t in "${topics[@]}"; do args+=(--topic "$t:3"); done
  # The transactional runs' progress topics ({pipeline}.progress), one partition.
  for w in $WORKLOADS; do args+=(--topic "bench-mock-e2e-$w-transactional.progress:1"); done
  # Made before the mock starts: the polling below may run before the
  # background redirect opens it (awk failing on a missing file ended the run).
  : >"$DIR/mock-broker.out"
  "$MOCK" "${args[@]}" >"$DIR/mock-broker.out" 2>&1 &
  MOCK_PID=$!
  # About 0.3 s per topic: each creation waits for the mock's own thread.
  for ((i = 0; i < 1200; i++)); do
    MOCK_BROKERS=$(awk '/^BOOTSTRAP/ {print $2}' "$DIR/mock-broker.out")
    [ -z "$MOCK_BROKERS" ] || break
    kill -0 "$MOCK_PID" 2>/dev/null || die "the mock broker exited: $(cat "$DIR/mock-broker.out")"
    sleep 0.1
  done
  [ -n "$MOCK_BROKERS" ] || die "the mock broker printed no address; see $DIR/mock-broker.out"
  say "mock broker (pid $MOCK_PID) at $MOCK_BROKERS, ${#topics[@]} topics"
  ;;
esac
# broker_env tansu|mock: sets BK_ADDR (bootstrap), BK_PREFIX (topic, pipeline
# and result-name prefix) and BK_CREATE (the bridge's create_topics).
broker_env() {
  case "$1" in
    tansu) BK_ADDR=$BB_KAFKA_BROKERS BK_PREFIX= BK_CREATE=true BK_PID=$(cat "$BB_DEV_DIR/broker.pid" 2>/dev/null || true) ;;
    mock) BK_ADDR=$MOCK_BROKERS BK_PREFIX=mock- BK_CREATE=false BK_PID=$MOCK_PID ;;
  esac
}

# ------------------------------------------------------------------ workloads
TEN_COLS="id INT PRIMARY KEY, k BIGINT UNSIGNED, m MEDIUMINT, name VARCHAR(40), price DECIMAL(12,2),
  at DATETIME(3), d DATE, f DOUBLE, flag TINYINT, note TEXT"
ten_values() { # EXPR for the row number
  echo "$1, $1 * 7919, CAST($1 % 8388607 AS SIGNED) - 4000000, CONCAT('name-', $1), $1 / 100,
    '2024-01-01 00:00:00.123' + INTERVAL $1 SECOND, '2024-01-01' + INTERVAL ($1 % 3650) DAY,
    $1 / 3, $1 % 2, IF($1 % 10 = 0, NULL, REPEAT('n', $1 % 50))"
}
TWENTY_COLS="id INT PRIMARY KEY, c_tiny TINYINT, c_small SMALLINT, c_medium MEDIUMINT, c_uint INT UNSIGNED,
  c_big BIGINT, c_float FLOAT, c_double DOUBLE, c_dec DECIMAL(12,2), c_char CHAR(8), c_vc VARCHAR(40),
  c_text TEXT, c_date DATE, c_time TIME(3), c_dtm DATETIME(6), c_ts TIMESTAMP(3) NULL, c_year YEAR,
  c_enum ENUM('new','paid','sent'), c_bit BIT(8), c_json JSON"
twenty_values() { # EXPR
  echo "$1, $1 % 128, $1 % 32768, $1 % 8388608, $1 * 3, $1 * 1000003, $1 / 7, $1 / 9, $1 / 100,
    CONCAT('c', $1 % 1000), CONCAT('vc-', $1), REPEAT('t', $1 % 40), '2024-01-01' + INTERVAL ($1 % 3650) DAY,
    SEC_TO_TIME($1 % 86400) + INTERVAL 0.123 SECOND, '2024-01-01 00:00:00.000001' + INTERVAL $1 SECOND,
    '2024-01-01 00:00:00.5' + INTERVAL $1 SECOND, 2000 + $1 % 100, 1 + $1 % 3, $1 % 256,
    JSON_OBJECT('n', $1, 's', 'x')"
}

write_workload() { # a|b|c
  case "$1" in
    a) # ROWS single-row INSERT statements, ten per transaction
      sql_in <<SQL
        CREATE DATABASE bench_a; CREATE TABLE bench_a.t ($TEN_COLS) DEFAULT CHARSET=utf8mb4;
        DELIMITER //
        CREATE PROCEDURE bench_a.fill(n INT) BEGIN
          DECLARE i INT DEFAULT 1;
          START TRANSACTION;
          WHILE i <= n DO
            INSERT INTO bench_a.t VALUES ($(ten_values i));
            IF i % 10 = 0 THEN COMMIT; START TRANSACTION; END IF;
            SET i = i + 1;
          END WHILE;
          COMMIT;
        END//
        DELIMITER ;
        CALL bench_a.fill($ROWS);
SQL
      ;;
    b) # one transaction of ROWS rows
      sql "CREATE DATABASE bench_b; CREATE TABLE bench_b.t ($TEN_COLS) DEFAULT CHARSET=utf8mb4;
        INSERT INTO bench_b.t SELECT $(ten_values seq) FROM bench_b.seq_1_to_$ROWS" ;;
    c) # transactions of 6 inserts, 3 updates, 1 delete; 20 columns of mixed types
      sql_in <<SQL
        CREATE DATABASE bench_c; CREATE TABLE bench_c.m ($TWENTY_COLS) DEFAULT CHARSET=utf8mb4;
        DELIMITER //
        CREATE PROCEDURE bench_c.fill(n INT) BEGIN
          DECLARE j INT DEFAULT 0;
          DECLARE k INT;
          WHILE j * 10 < n DO
            START TRANSACTION;
            SET k = 1;
            WHILE k <= 6 DO
              INSERT INTO bench_c.m VALUES ($(twenty_values "(j * 6 + k)"));
              SET k = k + 1;
            END WHILE;
            UPDATE bench_c.m SET c_vc = CONCAT('upd-', j), c_big = c_big + 1, c_json = JSON_OBJECT('u', j) WHERE id = j * 6 + 1;
            UPDATE bench_c.m SET c_dec = c_dec + 1, c_enum = 'sent' WHERE id = j * 6 + 2;
            UPDATE bench_c.m SET c_text = 'updated', c_ts = c_ts + INTERVAL 1 SECOND WHERE id = j * 6 + 3;
            DELETE FROM bench_c.m WHERE id = j * 6 + 4;
            COMMIT;
            SET j = j + 1;
          END WHILE;
        END//
        DELIMITER ;
        CALL bench_c.fill($ROWS);
SQL
      ;;
  esac
}

# ------------------------------------------------------------------ the bridge
# A 10 s lease: idempotent delivery bounds message.timeout.ms by half the
# lease, and with the default 2 s lease (1 s timeout) a broker stall over 1 s
# times a message out; the leader then steps down and replays, and tansu
# 0.6.0 answers the producer's epoch bump with a panic in its storage task
# (lite.rs:503) and serves nothing more. Throughput is measured here; takeover
# times come from the chaos rounds (1 s lease). BB_BENCH_LEASE_TTL sets another.
LEASE_TTL=${BB_BENCH_LEASE_TTL:-10}
bridge_config() { # FILE NAME START DELIVERY INCLUDE TOPIC_PREFIX (uses BK_ADDR, BK_CREATE)
  cat >"$1" <<EOF
[mysql]
url = "$BB_MYSQL_URL"
server_id = 3901
start = "$3"
include = ["$5"]

[etcd]
endpoints = ["${BB_ETCD_ENDPOINTS//,/\", \"}"]
pipeline = "$2"
lease_ttl_secs = $LEASE_TTL

[kafka]
brokers = "$BK_ADDR"
create_topics = $BK_CREATE
topic = "$6.{db}.{table}"
schema_topic = "$6.schema-changes"
format = "debezium"
delivery = "$4"

[http]
listen = "127.0.0.1:$HTTP_PORT"
EOF
  if [ -n "${BB_BENCH_KAFKA_PROPERTIES:-}" ]; then
    printf '\n[kafka.properties]\n%s\n' "$BB_BENCH_KAFKA_PROPERTIES" >>"$1"
  fi
}

start_bridge() { # CONFIG LOG [BINARY]
  "${3:-$BIN}" --config "$1" run >"$2" 2>&1 &
  BRIDGE_PID=$!
  if [ -n "${BB_BENCH_PERF:-}" ]; then # profile each measured bridge: perf report -i DIR/NAME.perf.data
    mkdir -p "$BB_BENCH_PERF"
    # shellcheck disable=SC2086 # BB_BENCH_PERF_ARGS is a list of perf options
    perf record -q ${BB_BENCH_PERF_ARGS:--F 499 -g} -p "$BRIDGE_PID" -o "$BB_BENCH_PERF/$(basename "$2" .log).perf.data" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
}

stop_bridge() {
  [ -n "$BRIDGE_PID" ] || return 0
  kill -TERM "$BRIDGE_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do kill -0 "$BRIDGE_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$BRIDGE_PID" 2>/dev/null || true
  wait "$BRIDGE_PID" 2>/dev/null || true
  BRIDGE_PID=
  if [ -n "${PERF_PID:-}" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
  fi
}

# e2e_run TAG MODE BINARY RESULT_NAME WHAT: one end-to-end run of workload $w
# on the current broker from $FILE:$POS, timed by `bench_tool watch` (with the
# broker's and MariaDB's CPU over the same window), recorded as RESULT_NAME.
e2e_run() {
  local tag=$1 mode=$2 bin=$3 name=$4 what=$5 out
  bridge_config "$DIR/$tag.toml" "bench-$tag" "$FILE:$POS" "$mode" "bench_$w.*" "$tag"
  start_bridge "$DIR/$tag.toml" "$DIR/$tag.log" "$bin"
  say "workload ($w), $broker broker: bridge ($what, pid $BRIDGE_PID) from $FILE:$POS"
  local cpu_pids=()
  [ -z "$BK_PID" ] || cpu_pids+=(--cpu-pid "broker=$BK_PID")
  [ ! -s "$BB_DEV_DIR/mariadb.pid" ] || cpu_pids+=(--cpu-pid "mariadb=$(cat "$BB_DEV_DIR/mariadb.pid")")
  out=$("$TOOL" watch --brokers "$BK_ADDR" --topic "$tag.bench_$w.$table" --expect "$ROWS" --pid "$BRIDGE_PID" "${cpu_pids[@]}") ||
    die "end-to-end ($w, $what, $broker) failed; see $DIR/$tag.log"
  echo "$out" >&2
  record "$name ${out#RESULT }"
  stop_bridge
}

wait_streaming() { # waits up to 30 s for /status to say streaming
  local i
  for ((i = 0; i < 300; i++)); do
    if python3 -c "import json,sys,urllib.request as u; s=json.load(u.urlopen('http://127.0.0.1:$HTTP_PORT/status', timeout=1)); sys.exit(0 if s.get('streaming') else 1)" 2>/dev/null; then
      return 0
    fi
    kill -0 "$BRIDGE_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------ runs
for w in $WORKLOADS; do
  sql "FLUSH BINARY LOGS"
  read -r FILE POS < <(sql "SHOW MASTER STATUS" | cut -f1,2)
  say "workload ($w): writing $ROWS row changes from $FILE:$POS"
  t0=$(date +%s.%N)
  write_workload "$w"
  sql "FLUSH BINARY LOGS"
  say "workload ($w) written in $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s"
  # Every file the workload wrote: from FILE up to the one the last FLUSH
  # opened. A workload over max_binlog_size (1 GiB, MariaDB's largest
  # setting) spans several; (c) at 1M rows writes ~1.35 GB. The copies keep
  # their names, so the positions in the messages match the bridge's.
  read -r NEXT_FILE _ < <(sql "SHOW MASTER STATUS" | cut -f1,2)
  WFILES=()
  while read -r f _; do
    if [[ "$f" > "$FILE" || "$f" == "$FILE" ]] && [[ "$f" < "$NEXT_FILE" ]]; then WFILES+=("$f"); fi
  done < <(sql "SHOW BINARY LOGS")
  [ "${#WFILES[@]}" -ge 1 ] || die "workload ($w): no binlog file between $FILE and $NEXT_FILE"
  rm -rf "${DIR:?}/$w.binlogs" && mkdir -p "$DIR/$w.binlogs"
  BINLOGS=()
  for f in "${WFILES[@]}"; do
    cp "$DATADIR/$f" "$DIR/$w.binlogs/$f"
    BINLOGS+=("$DIR/$w.binlogs/$f")
  done
  say "workload ($w) is in ${#WFILES[@]} binlog file(s): ${WFILES[*]}"

  case $w in a | b) table=t ;; c) table=m ;; esac
  for broker in $BROKERS; do
    broker_env "$broker"
    say "workload ($w), $broker broker: decode and produce limits"
    opts=()
    [ "$broker" = tansu ] || opts=(--fixed-topics "limits-$w")
    [ -z "$BK_PID" ] || opts+=(--broker-pid "$BK_PID")
    out=$("$TOOL" limits "${BINLOGS[@]}" --brokers "$BK_ADDR" --runs "$LIMIT_RUNS" "${opts[@]}") || die "limits ($w, $broker) failed"
    echo "$out" >&2
    res=$(grep '^RESULT' <<<"$out")
    record "${BK_PREFIX}limits_$w ${res#RESULT }"
    grep -q "rows=$ROWS " <<<"$res" || die "workload ($w): the binlog holds $(grep -o 'rows=[0-9]*' <<<"$res"), expected $ROWS"

    runs="idempotent at-least-once"
    # Transactional on the mock only (tansu has no transactions): the mock
    # answers every transactional request but writes no commit markers and
    # hides no aborted data, so this measures the bridge's side of it.
    [ "$broker" = tansu ] || runs="$runs transactional"
    [ -z "$BASELINE" ] || runs="$runs idempotent-baseline"
    for run in $runs; do
      mode=${run%-baseline}
      bin=$BIN
      [ "$run" = "$mode" ] || bin=$BASELINE
      e2e_run "${BK_PREFIX}e2e-$w-$run" "$mode" "$bin" "${BK_PREFIX}e2e_${w}_$run" "$run"
    done

    # Adjacent pairs: a plain producer run and an end-to-end idempotent run
    # next to each other (the order alternates), one ratio per pair.
    for ((k = 1; k <= PAIRS; k++)); do
      order="plain e2e"
      [ $((k % 2)) = 1 ] || order="e2e plain"
      for side in $order; do
        if [ "$side" = plain ]; then
          say "workload ($w), $broker broker: pair $k of $PAIRS, plain producer"
          out=$("$TOOL" plain "${BINLOGS[@]}" --brokers "$BK_ADDR" --tag "pair$k" "${opts[@]}") || die "plain producer ($w, $broker, pair $k) failed"
          echo "$out" >&2
          res=$(grep '^RESULT' <<<"$out")
          record "${BK_PREFIX}pair_plain_${w}_$k ${res#RESULT }"
        else
          e2e_run "${BK_PREFIX}pair-$w-$k" idempotent "$BIN" "${BK_PREFIX}pair_e2e_${w}_$k" "pair $k of $PAIRS, idempotent"
        fi
      done
    done

    if [ "$SKIP_PEER" = 0 ]; then
      say "workload ($w), $broker broker: peer (python-mysql-replication + confluent-kafka)"
      out=$("$VENV/bin/python" "$ROOT/bench/peer.py" --mysql-port "$BB_MYSQL_PORT" --file "$FILE" --pos "$POS" \
        --db "bench_$w" --expect "$ROWS" --brokers "$BK_ADDR" --topic-prefix "${BK_PREFIX}peer-$w" 2>"$DIR/${BK_PREFIX}peer-$w.log") ||
        die "peer ($w, $broker) failed; see $DIR/${BK_PREFIX}peer-$w.log"
      echo "$out" >&2
      record "${BK_PREFIX}peer_$w ${out#RESULT }"
    fi
  done
done

if [ "$SKIP_LATENCY" = 0 ]; then
  for broker in $BROKERS; do
    broker_env "$broker"
    db=bench_lat topic=lat.bench_lat.lat rate=$LAT_RATE
    [ "$broker" = tansu ] || db=bench_mlat topic=mock-lat.bench_mlat.lat rate=$MOCK_LAT_RATE
    say "latency, $broker broker: $rate rows/s for $LAT_SECS s while the bridge streams"
    "$TOOL" latency-table --mysql "$BB_MYSQL_ADMIN_URL" --db "$db" --brokers "$BK_ADDR" \
      --topic "$topic" || die "cannot create the latency table or topic"
    bridge_config "$DIR/${BK_PREFIX}latency.toml" "bench-${BK_PREFIX}latency" "latest" "idempotent" "$db.*" "${topic%%.*}"
    start_bridge "$DIR/${BK_PREFIX}latency.toml" "$DIR/${BK_PREFIX}latency.log"
    wait_streaming || die "the bridge did not start streaming; see $DIR/${BK_PREFIX}latency.log"
    if out=$("$TOOL" latency --mysql "$BB_MYSQL_ADMIN_URL" --brokers "$BK_ADDR" --db "$db" \
      --topic "$topic" --rate "$rate" --seconds "$LAT_SECS"); then
      echo "$out" >&2
      record "${BK_PREFIX}latency ${out#RESULT }"
    else
      say "latency run failed; see $DIR/${BK_PREFIX}latency.log"
      record "${BK_PREFIX}latency failed=1 rate=$rate"
    fi
    stop_bridge
  done
fi
[ -z "$MOCK_PID" ] || { kill -TERM "$MOCK_PID" 2>/dev/null || true; wait "$MOCK_PID" 2>/dev/null || true; MOCK_PID=; }
$ENV_SH down >/dev/null 2>&1 || true

if [ "$SKIP_FAILOVER" = 0 ]; then
  say "failover: scripts/chaos.sh --rounds $CHAOS_ROUNDS --faults 'kill9 sigterm'"
  BB_CHAOS_DIR=$DIR/chaos BB_CHAOS_MYSQL_PORT=${BB_BENCH_CHAOS_MYSQL_PORT:-13326} \
    BB_CHAOS_ETCD_PORT_BASE=${BB_BENCH_CHAOS_ETCD_PORT_BASE:-12439} BB_CHAOS_KAFKA_PORT=${BB_BENCH_CHAOS_KAFKA_PORT:-19112} \
    BB_CHAOS_HTTP_BASE=${BB_BENCH_CHAOS_HTTP_BASE:-19206} \
    bash "$ROOT/scripts/chaos.sh" --rounds "$CHAOS_ROUNDS" --faults "kill9 sigterm" >"$DIR/chaos.out" 2>&1 &&
    chaos_ok=1 || chaos_ok=0
  while IFS='|' read -r _ _ fault _ _ took _; do
    fault=$(echo "$fault" | tr -d ' ') took=$(echo "$took" | tr -d ' ')
    case "$fault" in kill9 | sigterm) record "failover_$fault took=$took" ;; esac
  done < <(grep -E '^\| [0-9]+ \|' "$DIR/chaos.out")
  # The verifier's view: last message of the old leader to the first of the new.
  while IFS='|' read -r _ fault _ _ stats _; do
    fault=$(echo "$fault" | tr -d ' ') stats=$(echo "$stats" | tr -d ' ')
    record "failover_data_$fault stats=$stats"
  done < <(grep -E '^\| (kill9|sigterm) \|' "$DIR/chaos.out")
  record "failover_verify ok=$chaos_ok"
fi

for broker in $BROKERS; do
  broker_env "$broker"
  echo
  case $broker in
    tansu) echo "## tansu 0.6.0 (sqlite, on disk): a real broker, the bottleneck of most end-to-end rows" ;;
    mock) echo "## librdkafka mock cluster (in memory): client-side limits of the bridge and the peer" ;;
  esac
  echo
  python3 "$ROOT/bench/table.py" "$RESULTS" "$ROWS" "$broker"
done
