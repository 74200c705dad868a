#!/usr/bin/env bash
# The local development environment: real MariaDB, a real 3-member etcd cluster
# and a real Kafka-protocol broker (tansu), all on 127.0.0.1, data under
# target/dev-env/.
#
#   scripts/dev-env.sh up        install what is missing, start everything (idempotent)
#   scripts/dev-env.sh down      stop what this script started (by pid files)
#   scripts/dev-env.sh status    say what is up
#   scripts/dev-env.sh diagnose  services, their log tails, disk and memory
#   scripts/dev-env.sh env       print the endpoints as shell exports
#   scripts/dev-env.sh install   only install packages and build the broker
#   scripts/dev-env.sh install-packages | build-broker   one of the two
#   scripts/dev-env.sh build-nisshi   only for tests/txn_nisshi.rs: nisshi 0.7.0, a
#                                     broker that commits and fences transactions
#                                     (not used by `up`; ~25+ min, cached)
#   scripts/dev-env.sh start|stop|kill NAME   one service: mariadb etcd1 etcd2 etcd3 broker
#   scripts/dev-env.sh etcd-leader   which etcd member is the raft leader
#
# A second, independent environment (the chaos test uses one) only needs other
# ports and another directory: BB_DEV_DIR, BB_MYSQL_PORT,
# BB_ETCD_PORT_BASE (client ports BASE, BASE+1000, BASE+2000), BB_KAFKA_PORT.
#
# The broker build (cargo install tansu, 20-35 min on 2 cores) is cached under
# $BB_CACHE_DIR (default ~/.cache/binlog-bridge) and reused when present.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${BB_DEV_DIR:-$ROOT/target/dev-env}
CACHE=${BB_CACHE_DIR:-$HOME/.cache/binlog-bridge}
TANSU_VERSION=0.6.0
TANSU_ROOT=$CACHE/tansu-$TANSU_VERSION
TANSU_BIN=$TANSU_ROOT/bin/tansu

MYSQL_PORT=${BB_MYSQL_PORT:-3306}
# Client ports BASE, BASE+1000, BASE+2000; peer ports one above each.
ETCD_BASE=${BB_ETCD_PORT_BASE:-2379}
ETCD_CLIENT_PORTS=("$ETCD_BASE" "$((ETCD_BASE + 1000))" "$((ETCD_BASE + 2000))")
ETCD_PEER_PORTS=("$((ETCD_BASE + 1))" "$((ETCD_BASE + 1001))" "$((ETCD_BASE + 2001))")
KAFKA_PORT=${BB_KAFKA_PORT:-9092}

APT_PACKAGES=(mariadb-server mariadb-client etcd-server etcd-client protobuf-compiler
  cmake libcurl4-openssl-dev libssl-dev pkg-config iproute2 docker-compose openssl)

log() { printf '[dev-env] %s\n' "$*" >&2; }
die() { printf '[dev-env] error: %s\n' "$*" >&2; exit 1; }

need_apt() {
  local missing=()
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  command -v mariadb >/dev/null || missing+=(mariadb-client)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v cmake >/dev/null || missing+=(cmake)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v openssl >/dev/null || missing+=(openssl)
  local dev
  for dev in libcurl4-openssl-dev libssl-dev; do
    dpkg-query -W -f='${Status}' "$dev" 2>/dev/null | grep -q "ok installed" || missing+=("$dev")
  done
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  printf '%s\n' "${missing[@]}"
}

install_packages() {
  local missing
  missing=$(need_apt)
  if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || die "missing packages ($missing); run as root or: sudo apt-get install -y ${APT_PACKAGES[*]}"
    log "installing: $(echo $missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null
  fi
}

# Build the broker into the cache unless it is there already.
build_broker() {
  if [ -x "$TANSU_BIN" ]; then return 0; fi
  log "building tansu $TANSU_VERSION into $TANSU_ROOT (first time only; 20-35 min on 2 cores)"
  mkdir -p "$CACHE"
  CARGO_TARGET_DIR=$CACHE/tansu-build cargo install "tansu@$TANSU_VERSION" --locked \
    --features libsql,dynostore --root "$TANSU_ROOT" >"$CACHE/tansu-build.log" 2>&1 \
    || die "tansu build failed; see $CACHE/tansu-build.log"
  rm -rf "$CACHE/tansu-build"
  log "tansu built: $TANSU_BIN"
}

# nisshi 0.7.0 (tansu's successor; 0.8 refuses transactional producers) for
# the transactional integration test. Cached like the broker; print its path.
NISSHI_VERSION=0.7.0
NISSHI_ROOT=$CACHE/nisshi-$NISSHI_VERSION
NISSHI_BIN=$NISSHI_ROOT/bin/nisshi
build_nisshi() {
  if [ ! -x "$NISSHI_BIN" ]; then
    log "building nisshi $NISSHI_VERSION into $NISSHI_ROOT (first time only; 25+ min on 2 cores)"
    mkdir -p "$CACHE"
    # Its rama dependency declares rustc 1.96 but compiles on 1.95.
    CARGO_TARGET_DIR=$CACHE/nisshi-build cargo install "nisshi@$NISSHI_VERSION" --locked \
      --ignore-rust-version --no-default-features --features dynostore,libsql \
      --root "$NISSHI_ROOT" >"$CACHE/nisshi-build.log" 2>&1 \
      || die "nisshi build failed; see $CACHE/nisshi-build.log"
    rm -rf "$CACHE/nisshi-build"
  fi
  log "nisshi: export BB_NISSHI_BIN=$NISSHI_BIN"
}

pidfile() { echo "$DATA/$1.pid"; }

is_running() {
  local pf
  pf=$(pidfile "$1")
  [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null
}

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$1 did not open 127.0.0.1:$2 within $3 s; see $DATA/$1.log"
}

mycnf() { echo "$DATA/mariadb/my.cnf"; }

start_mariadb() {
  is_running mariadb && return 0
  local dir=$DATA/mariadb
  mkdir -p "$dir"
  cat >"$dir/my.cnf" <<EOF
[client]
socket=$dir/mysql.sock
port=$MYSQL_PORT
host=127.0.0.1
user=root

[mariadbd]
datadir=$dir/data
socket=$dir/mysql.sock
pid-file=$dir/mariadbd.pid
port=$MYSQL_PORT
bind-address=127.0.0.1
user=root
skip-name-resolve
server_id=1
log_bin=$dir/data/binlog
binlog_format=ROW
binlog_row_image=FULL
binlog_row_metadata=FULL
innodb_buffer_pool_size=256M
max_connections=500
EOF
  if [ ! -d "$dir/data/mysql" ]; then
    log "initialising MariaDB data dir"
    mariadb-install-db --defaults-file="$dir/my.cnf" --auth-root-authentication-method=normal \
      --skip-test-db >"$dir/install.log" 2>&1 || die "mariadb-install-db failed; see $dir/install.log"
  fi
  mariadbd --defaults-file="$dir/my.cnf" >>"$DATA/mariadb.log" 2>&1 &
  echo $! >"$(pidfile mariadb)"
  local i
  for ((i = 0; i < 300; i++)); do
    mariadb-admin --defaults-file="$dir/my.cnf" ping >/dev/null 2>&1 && break
    kill -0 "$(cat "$(pidfile mariadb)")" 2>/dev/null || die "mariadbd exited; see $DATA/mariadb.log"
    sleep 0.1
  done
  mariadb --defaults-file="$dir/my.cnf" -e "
    CREATE USER IF NOT EXISTS 'bridge'@'%' IDENTIFIED BY 'bridge';
    GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'bridge'@'%';
    CREATE USER IF NOT EXISTS 'bridge'@'localhost' IDENTIFIED BY 'bridge';
    GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'bridge'@'localhost';" \
    || die "cannot create the replication user; see $DATA/mariadb.log"
  log "mariadb up on 127.0.0.1:$MYSQL_PORT"
}

etcd_cluster() {
  local out="" i
  for i in 0 1 2; do
    out+="${out:+,}n$((i + 1))=http://127.0.0.1:${ETCD_PEER_PORTS[$i]}"
  done
  echo "$out"
}

start_etcd_member() { # index 0..2
  local i=$1 name="etcd$(($1 + 1))"
  is_running "$name" && return 0
  local state=new
  [ -d "$DATA/$name/member" ] && state=existing
  mkdir -p "$DATA/$name"
  etcd --name "n$((i + 1))" --data-dir "$DATA/$name" \
    --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[$i]}" \
    --initial-cluster "$(etcd_cluster)" --initial-cluster-state "$state" \
    --initial-cluster-token binlog-bridge-dev \
    --heartbeat-interval 50 --election-timeout 500 \
    >>"$DATA/$name.log" 2>&1 &
  echo $! >"$(pidfile "$name")"
}

start_etcd() {
  local i
  for i in 0 1 2; do start_etcd_member "$i"; done
  for i in 0 1 2; do wait_port "etcd$((i + 1))" "${ETCD_CLIENT_PORTS[$i]}" 20; done
  local eps
  eps=$(printf '127.0.0.1:%s,' "${ETCD_CLIENT_PORTS[@]}")
  for ((i = 0; i < 100; i++)); do
    ETCDCTL_API=3 etcdctl --endpoints "${eps%,}" endpoint health >/dev/null 2>&1 && break
    sleep 0.2
  done
  ETCDCTL_API=3 etcdctl --endpoints "${eps%,}" endpoint health >/dev/null 2>&1 \
    || die "etcd cluster not healthy; see $DATA/etcd*.log"
  log "etcd up on 127.0.0.1:${ETCD_CLIENT_PORTS[0]},${ETCD_CLIENT_PORTS[1]},${ETCD_CLIENT_PORTS[2]}"
}

start_broker() {
  is_running broker && return 0
  [ -x "$TANSU_BIN" ] || build_broker
  mkdir -p "$DATA/broker"
  (cd "$DATA/broker" && exec "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "sqlite://broker.db") >>"$DATA/broker.log" 2>&1 &
  echo $! >"$(pidfile broker)"
  wait_port broker "$KAFKA_PORT" 20
  index_broker_headers
  log "broker (tansu) up on 127.0.0.1:$KAFKA_PORT"
}

# tansu 0.6.0's sqlite schema has no index on its `header` table, and its
# fetch looks up each record's headers in it: with every message carrying
# headers (ours do) each fetch scans all headers ever written, and reads
# slow to a stop as the data grows (measured: 60k messages with one header
# each, a 1 MB fetch took > 40 s; with this index, 20k messages read in
# under a second). The index changes no data, only how tansu finds it.
index_broker_headers() {
  python3 - "$DATA/broker/broker.db" <<'PY' || log "warning: could not index the broker's header table (reads of a large topic will be slow)"
import sqlite3, sys, time
db = sys.argv[1]
for _ in range(100):  # tansu creates its schema just after it starts listening
    try:
        c = sqlite3.connect(db, timeout=30)
        if c.execute("select 1 from sqlite_master where name = 'header'").fetchone():
            c.execute("create index if not exists bb_header_record on header (topition, offset_id)")
            c.commit()
            sys.exit(0)
        c.close()
    except sqlite3.Error:
        pass
    time.sleep(0.1)
sys.exit(1)
PY
}

stop_one() {
  local name=$1 pf
  pf=$(pidfile "$name")
  [ -f "$pf" ] || return 0
  local pid
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pf"
}

print_env() {
  cat <<EOF
export BB_MYSQL_URL=mysql://bridge:bridge@127.0.0.1:$MYSQL_PORT
export BB_MYSQL_ADMIN_URL=mysql://root@127.0.0.1:$MYSQL_PORT
export BB_MYSQL_CNF=$(mycnf)
export BB_ETCD_ENDPOINTS=127.0.0.1:${ETCD_CLIENT_PORTS[0]},127.0.0.1:${ETCD_CLIENT_PORTS[1]},127.0.0.1:${ETCD_CLIENT_PORTS[2]}
export BB_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export BB_TANSU_BIN=$TANSU_BIN
export BB_DEV_DIR=$DATA
EOF
}

status() {
  local n rc=0
  for n in mariadb etcd1 etcd2 etcd3 broker; do
    if is_running "$n"; then echo "$n: up (pid $(cat "$(pidfile "$n")"))"; else echo "$n: down"; rc=1; fi
  done
  return $rc
}

# What a failed test run needs to tell a broken service from a broken test:
# each service up or down with the end of its log, MariaDB's connection
# counters, disk, memory, and the kernel's OOM and segfault lines. Prints;
# never fails.
diagnose() {
  local n logf
  echo "[dev-env] diagnosis at $(date -u +%FT%TZ)"
  for n in mariadb etcd1 etcd2 etcd3 broker; do
    if is_running "$n"; then echo "--- $n: up (pid $(cat "$(pidfile "$n")"))"; else echo "--- $n: DOWN"; fi
    logf=$DATA/$n.log
    # MariaDB's crash report is long; etcd and the broker say little at the end.
    [ -f "$logf" ] && tail -n "$([ "$n" = mariadb ] && echo 30 || echo 6)" "$logf" | sed 's/^/    /'
  done
  # Errors scroll out of the tail behind routine warnings (aborted connections).
  if [ -f "$DATA/mariadb.log" ]; then
    echo "--- mariadb: its last errors"
    grep -F "[ERROR]" "$DATA/mariadb.log" | tail -n 8 | sed 's/^/    /' || true
  fi
  if is_running mariadb; then
    echo "--- mariadb counters"
    mariadb --defaults-file="$(mycnf)" --protocol=tcp -N -B -e \
      "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_connected','Max_used_connections','Aborted_connects','Connection_errors_max_connections','Uptime')" 2>&1 \
      | sed 's/^/    /' || true
  fi
  echo "--- disk"
  df -h "$DATA" /tmp 2>&1 | sed 's/^/    /' || true
  echo "--- memory"
  free -m 2>&1 | sed 's/^/    /' || true
  echo "--- processes: $(ps -e --no-headers 2>/dev/null | wc -l) (pid_max $(cat /proc/sys/kernel/pid_max 2>/dev/null))"
  # The kernel's word on a process that died: the OOM killer or a segfault.
  dmesg 2>/dev/null | grep -E "Out of memory|Killed process|oom-kill|segfault" | tail -n 5 | sed 's/^/    /' || true
}

cmd=${1:-}
mkdir -p "$DATA"
case "$cmd" in
  up)
    install_packages
    build_broker
    start_mariadb
    start_etcd
    start_broker
    status
    ;;
  install)
    install_packages
    build_broker
    ;;
  install-packages) install_packages ;;
  build-broker) build_broker ;;
  build-nisshi) build_nisshi ;;
  down)
    for n in broker etcd1 etcd2 etcd3 mariadb; do stop_one "$n"; done
    log "stopped"
    ;;
  status) status ;;
  diagnose) diagnose ;;
  env) print_env ;;
  start)
    case "${2:-}" in
      mariadb) start_mariadb ;;
      etcd1 | etcd2 | etcd3) start_etcd_member "$((${2#etcd} - 1))"; wait_port "$2" "${ETCD_CLIENT_PORTS[$((${2#etcd} - 1))]}" 20 ;;
      broker) start_broker ;;
      *) die "start what? mariadb, etcd1, etcd2, etcd3 or broker" ;;
    esac
    ;;
  kill)
    case "${2:-}" in
      mariadb | etcd1 | etcd2 | etcd3 | broker)
        pf=$(pidfile "$2")
        [ -f "$pf" ] && kill -9 "$(cat "$pf")" 2>/dev/null || true
        rm -f "$pf"
        ;;
      *) die "kill what? mariadb, etcd1, etcd2, etcd3 or broker" ;;
    esac
    ;;
  etcd-leader)
    for i in 0 1 2; do
      out=$(ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${ETCD_CLIENT_PORTS[$i]}" endpoint status -w json 2>/dev/null) || continue
      if python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)' <<<"$out"; then
        echo "etcd$((i + 1))"
        exit 0
      fi
    done
    die "no etcd member says it is the raft leader"
    ;;
  stop)
    case "${2:-}" in
      mariadb | etcd1 | etcd2 | etcd3 | broker) stop_one "$2" ;;
      *) die "stop what? mariadb, etcd1, etcd2, etcd3 or broker" ;;
    esac
    ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] || exit 2
    ;;
esac
