# Shared by scripts/demo.sh and scripts/chaos.sh: start three bridges and ask
# which one leads. Set before sourcing: BIN (the binlog-bridge binary), DIR
# (holds bridge.toml and the logs), HTTP_BASE and SERVER_ID_BASE (bridge N
# listens on HTTP_BASE+N and replicates as server id SERVER_ID_BASE+N).

declare -A BRIDGE

start_bridge() { # N: start bridge N (1..3) in the background
  BINLOG_BRIDGE_MYSQL_SERVER_ID=$((SERVER_ID_BASE + $1)) BINLOG_BRIDGE_HTTP_LISTEN=127.0.0.1:$((HTTP_BASE + $1)) \
    "$BIN" --config "$DIR/bridge.toml" run >>"$DIR/bridge$1.log" 2>&1 &
  BRIDGE[$1]=$!
  disown "$!"
}

stop_bridges() { # SIGCONT (a frozen one), SIGTERM, then SIGKILL what is left
  local i
  for i in 1 2 3; do
    if [ -n "${BRIDGE[$i]:-}" ]; then
      kill -CONT "${BRIDGE[$i]}" 2>/dev/null || true
      kill -TERM "${BRIDGE[$i]}" 2>/dev/null || true
    fi
  done
  sleep 1
  for i in 1 2 3; do [ -z "${BRIDGE[$i]:-}" ] || kill -KILL "${BRIDGE[$i]}" 2>/dev/null || true; done
}

leader_pid() { # the leader's pid per `binlog-bridge status`, or nothing
  timeout 5 "$BIN" --config "$DIR/bridge.toml" status --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); l=d.get("leader") or {}; print((l.get("identity") or {}).get("pid",""))' 2>/dev/null || true
}

wait_leader() { # [PID to exclude]: print the leader's pid; waits up to 30 s
  local i pid
  for ((i = 0; i < 300; i++)); do
    pid=$(leader_pid)
    if [ -n "$pid" ] && [ "$pid" != "${1:-}" ]; then echo "$pid"; return 0; fi
    sleep 0.1
  done
  return 1
}

# A leader is streaming when its /status says so (its /readyz is 200 too, but
# so is a standby's).
wait_streaming() { # PID; waits up to 20 s
  local i n
  for ((i = 0; i < 200; i++)); do
    for n in 1 2 3; do
      [ "${BRIDGE[$n]:-}" = "$1" ] || continue
      if python3 -c "import json,sys,urllib.request as u; s=json.load(u.urlopen('http://127.0.0.1:$((HTTP_BASE + n))/status', timeout=1)); sys.exit(0 if s['streaming'] else 1)" 2>/dev/null; then
        return 0
      fi
    done
    sleep 0.1
  done
  return 1
}

which_bridge() { # PID: print N of the bridge with that pid
  local i
  for i in 1 2 3; do if [ "${BRIDGE[$i]:-}" = "$1" ]; then echo "$i"; fi; done
}

wait_gone() { # PID: wait until it has exited (its HTTP port is free again)
  local i
  for ((i = 0; i < 200; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
}
