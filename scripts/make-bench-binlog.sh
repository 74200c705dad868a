#!/usr/bin/env bash
# Write a binlog file holding 1M row inserts (mixed column types) with a
# private, throw-away MariaDB, for `cargo run --release --example decode_bench`.
# Usage: scripts/make-bench-binlog.sh OUT_FILE [PORT]
set -euo pipefail
out=${1:?usage: $0 OUT_FILE [PORT]}
port=${2:-3397}
dir=$(mktemp -d)
trap 'mariadb-admin --defaults-file="$dir/my.cnf" shutdown >/dev/null 2>&1 || true; sleep 1; rm -rf "$dir"' EXIT
cat >"$dir/my.cnf" <<CNF
[client]
socket=$dir/mysql.sock
port=$port
host=127.0.0.1
user=root
[mariadbd]
datadir=$dir/data
socket=$dir/mysql.sock
pid-file=$dir/mariadbd.pid
port=$port
bind-address=127.0.0.1
user=root
skip-name-resolve
server_id=1
log_bin=$dir/data/binlog
max_binlog_size=1G
binlog_format=ROW
binlog_row_image=FULL
binlog_row_metadata=FULL
innodb_buffer_pool_size=256M
innodb_flush_log_at_trx_commit=0
CNF
mariadb-install-db --defaults-file="$dir/my.cnf" --auth-root-authentication-method=normal --skip-test-db >/dev/null
mariadbd --defaults-file="$dir/my.cnf" >/dev/null 2>&1 &
for _ in $(seq 300); do mariadb-admin --defaults-file="$dir/my.cnf" ping >/dev/null 2>&1 && break; sleep 0.1; done
sql() { mariadb --defaults-file="$dir/my.cnf" -e "$1"; }
sql "FLUSH BINARY LOGS"
sql "CREATE DATABASE bench; CREATE TABLE bench.t (
  id INT PRIMARY KEY, k BIGINT UNSIGNED, m MEDIUMINT, name VARCHAR(40), price DECIMAL(12,2),
  at DATETIME(3), d DATE, f DOUBLE, flag TINYINT, note TEXT) DEFAULT CHARSET=utf8mb4"
for chunk in $(seq 0 9); do
  lo=$((chunk * 100000 + 1)); hi=$(((chunk + 1) * 100000))
  sql "INSERT INTO bench.t SELECT seq, seq * 7919, CAST(seq % 8388607 AS SIGNED) - 4000000, CONCAT('name-', seq),
       seq / 100, '2024-01-01 00:00:00.123' + INTERVAL seq SECOND, '2024-01-01' + INTERVAL (seq % 3650) DAY,
       seq / 3, seq % 2, IF(seq % 10 = 0, NULL, REPEAT('n', seq % 50)) FROM bench.seq_${lo}_to_${hi}"
done
file=$(mariadb --defaults-file="$dir/my.cnf" -N -e "SHOW MASTER STATUS" | cut -f1)
sql "FLUSH BINARY LOGS"
cp "$dir/data/$file" "$out"
echo "wrote $out ($(stat -c %s "$out") bytes, 1000000 rows)"
