#!/usr/bin/env python3
"""Prints the benchmark table from the RESULT lines scripts/bench.sh collected.

Usage: table.py RESULTS_FILE ROWS [tansu|mock]

Each line of RESULTS_FILE is `NAME key=value ...` (see scripts/bench.sh);
the mock broker's results are named `mock-NAME`. Every ratio is of two rates
measured in the same run. Failover rows (chaos rounds, always on tansu) are
printed with the tansu table.
"""

import sys


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            out.setdefault(parts[0], []).append(kv)
    return out


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def rate(x):
    return "-" if x is None else f"{x:,.0f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def verdict(ok):
    return "" if ok is None else (" (met)" if ok else " (missed)")


def one_plain(r, name):
    return (r.get(name) or [{}])[0]


def pair_rows(name, decode, pair):
    """The end-to-end target over adjacent pairs (bench.sh --pairs): each
    end-to-end idempotent run against the plain producer run next to it
    (and our decode limit), one ratio per pair; the median is held to the
    target, and every pair's ratio is shown."""
    pairs, k = [], 1
    while True:
        e2e, plain = pair(k)
        if not e2e and not plain:
            break
        e_r, p_r = num(e2e.get("rate")), num(plain.get("produce_plain"))
        if e_r is not None and p_r:
            lim = min(p_r, decode) if decode else p_r
            rows = (num(e2e.get("messages")) or 0) - (num(e2e.get("first_seen")) or 0)
            br = num(e2e.get("window_cpu_bridge"))
            br_m = br * 1e6 / rows if br is not None and rows > 0 else None
            pairs.append((e_r / lim, e_r, lim, br_m, num(plain.get("cpu_m_plain"))))
        k += 1
    if not pairs:
        return
    ratios = sorted(p[0] for p in pairs)
    n = len(ratios)
    med = ratios[n // 2] if n % 2 else (ratios[n // 2 - 1] + ratios[n // 2]) / 2
    each = " / ".join(f"{p[0]:.2f}x" for p in pairs)
    print(f"| end-to-end idempotent, {n} adjacent pairs with a plain producer run (rows/s) | {name} | {', '.join(rate(p[1]) for p in pairs)} | min(decode, plain produce) {', '.join(rate(p[2]) for p in pairs)} | median {med:.2f}x (each: {each}) | >= 0.70x{verdict(med >= 0.7)} |")
    cpu = [p for p in pairs if p[3] is not None and p[4]]
    if cpu:
        each = " / ".join(f"{p[3] / p[4]:.2f}x" for p in cpu)
        print(f"| CPU-seconds per 1M rows in those pairs: bridge (measured window) vs plain producer | {name} | {', '.join(f'{p[3]:.2f}' for p in cpu)} | {', '.join(f'{p[4]:.2f}' for p in cpu)} | each: {each} | - |")


def cpu_rows(w, name, lim, e2e, ceiling, cores):
    """Where the CPU goes: per million rows, each limit alone and the
    end-to-end run (bridge, broker and MariaDB over the measured window), and
    the rate the machine's cores would allow end to end if the bridge cost no
    more than our decoder plus the plain producer."""
    dec, plain, plain_b = num(lim.get("cpu_m_decode")), num(lim.get("cpu_m_plain")), num(lim.get("cpu_m_plain_broker"))
    sink, sink_b = num(lim.get("cpu_m_sink")), num(lim.get("cpu_m_sink_broker"))
    if dec is None or plain is None or sink is None:
        return
    b = lambda x: "" if x is None else f" + broker {x:.2f}"
    print(f"| CPU-seconds per 1M rows, limits (each alone) | {name} | decode {dec:.2f}; sink {sink:.2f}{b(sink_b)} | plain producer {plain:.2f}{b(plain_b)} | sink / plain {ratio(sink, plain)} | - |")
    rows = (num(e2e.get("messages")) or 0) - (num(e2e.get("first_seen")) or 0)
    br, bk, db = (num(e2e.get(f"window_cpu_{k}")) for k in ("bridge", "broker", "mariadb"))
    secs = num(e2e.get("secs"))
    if rows <= 0 or br is None or not secs:
        return
    per_m = lambda x: None if x is None else x * 1e6 / rows
    br_m, bk_m, db_m = per_m(br), per_m(bk), per_m(db)
    others = (bk_m or 0) + (db_m or 0)
    print(f"| CPU-seconds per 1M rows, end-to-end idempotent (measured window) | {name} | bridge {br_m:.2f}, broker {bk_m or 0:.2f}, MariaDB {db_m or 0:.2f} | bridge vs decode + plain producer {dec + plain:.2f} | {ratio(br_m, dec + plain)} | - |")
    busy = (br + (bk or 0) + (db or 0)) / secs
    print(f"| cores busy end-to-end idempotent (bridge + broker + MariaDB) | {name} | {busy:.2f} | of {cores or '?'} | - | - |")
    m_busy, m_idle, m_steal = (num(e2e.get(f"machine_{k}")) for k in ("busy", "idle", "steal"))
    if m_busy is not None and m_idle is not None:
        print(f"| machine over the same window (every process, /proc/stat; cores) | {name} | busy {m_busy:.2f} (of which not bridge, broker or MariaDB {max(m_busy - busy, 0):.2f}), idle {m_idle:.2f}, steal {m_steal or 0:.2f} | of {cores or '?'} | - | - |")
    threads = e2e.get("threads")
    if threads:
        shown = ", ".join(t.replace("/", " ").replace("_", " ") for t in threads.split(";"))
        print(f"| bridge threads busy end-to-end idempotent (cores, by thread name) | {name} | {shown} | - | - | - |")
    if cores and ceiling:
        bound = cores * 1e6 / (dec + plain + others)
        print(f"| end-to-end bound on {cores:.0f} cores if the bridge cost only decode + plain producer (rows/s) | {name} | {rate(bound)} | min(decode, plain produce) {rate(ceiling)} | {ratio(bound, ceiling)} | - |")


def main():
    if len(sys.argv) not in (3, 4) or (len(sys.argv) == 4 and sys.argv[3] not in ("tansu", "mock")):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    r = load(sys.argv[1])
    rows = int(sys.argv[2])
    broker = sys.argv[3] if len(sys.argv) == 4 else "tansu"
    prefix = "mock-" if broker == "mock" else ""
    one = lambda name: (r.get(prefix + name) or [{}])[0]
    names = {"a": f"(a) {rows} single-row inserts, 10 per txn",
             "b": f"(b) one {rows}-row transaction",
             "c": f"(c) {rows} mixed ins/upd/del, 20 cols"}
    cores = num(one_plain(r, "machine").get("cores"))
    print(f"| measure | workload | ours | reference | ratio | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for w in "abc":
        lim = one(f"limits_{w}")
        if not lim:
            continue
        d_o, d_m = num(lim.get("decode_ours")), num(lim.get("decode_mariadb"))
        p_s, p_p = num(lim.get("produce_sink")), num(lim.get("produce_plain"))
        print(f"| decode limit (rows/s) | {names[w]} | {rate(d_o)} | mariadb-binlog -v {rate(d_m)} | {ratio(d_o, d_m)} | - |")
        print(f"| produce limit (msg/s, {lim.get('bytes_per_msg', '?')} B/msg) | {names[w]} | sink {rate(p_s)} | plain rdkafka {rate(p_p)} | {ratio(p_s, p_p)} | - |")
        ceiling = min(x for x in (d_o, p_p) if x is not None) if (d_o or p_p) else None
        for mode in ("idempotent", "at-least-once", "transactional"):
            e = one(f"e2e_{w}_{mode}")
            if mode == "transactional" and not e:
                if broker == "mock":
                    print(f"| end-to-end transactional | {names[w]} | not measured | - | - | - |")
                else:
                    print(f"| end-to-end transactional | {names[w]} | not measurable here | - | - | tansu has no transactions (EndTxn unsupported); the mode is refused at startup |")
                continue
            e_r = num(e.get("rate"))
            ok = None if e_r is None or ceiling is None else e_r >= 0.7 * ceiling
            print(f"| end-to-end {mode} (rows/s) | {names[w]} | {rate(e_r)} | min(decode, plain produce) {rate(ceiling)} | {ratio(e_r, ceiling)} | >= 0.70x{verdict(ok)} |")
        pair_rows(names[w], d_o, lambda k: (one(f"pair_e2e_{w}_{k}"), one(f"pair_plain_{w}_{k}")))
        cpu_rows(w, names[w], lim, one(f"e2e_{w}_idempotent"), ceiling, cores)
        base = one(f"e2e_{w}_idempotent-baseline")
        if base:
            b_r = num(base.get("rate"))
            e_r = num(one(f"e2e_{w}_idempotent").get("rate"))
            print(f"| end-to-end idempotent, this build vs --baseline build (rows/s) | {names[w]} | {rate(e_r)} | baseline {rate(b_r)} | {ratio(e_r, b_r)} | - |")
            # CPU time of the whole bridge process over the same rows: less
            # sensitive than rows/s to what else the machine runs.
            b_c = num(base.get("cpu_secs"))
            e_c = num(one(f"e2e_{w}_idempotent").get("cpu_secs"))
            if b_c and e_c:
                print(f"| end-to-end idempotent, this build vs --baseline build (bridge CPU-seconds, lower is better) | {names[w]} | {e_c:.2f} | baseline {b_c:.2f} | {ratio(e_c, b_c)} | - |")
        peer = one(f"peer_{w}")
        if peer:
            e_r = num(one(f"e2e_{w}_idempotent").get("rate"))
            p_r = num(peer.get("rate"))
            ok = None if e_r is None or p_r is None else e_r >= 5 * p_r
            print(f"| vs peer (rows/s) | {names[w]} | idempotent {rate(e_r)} | python-mysql-replication + confluent-kafka {rate(p_r)} | {ratio(e_r, p_r)} | >= 5x{verdict(ok)} |")
            e_c = num(one(f"e2e_{w}_idempotent").get("cpu_secs"))
            p_c = num(peer.get("cpu_secs"))
            if e_c and p_c:
                ours_eff, peer_eff = rows / e_c, rows / p_c
                print(f"| vs peer, rows per CPU-second (whole process) | {names[w]} | idempotent {rate(ours_eff)} | peer {rate(peer_eff)} | {ratio(ours_eff, peer_eff)} | - |")
    lat = one("latency")
    if lat.get("failed"):
        print(f"| latency commit -> consumer (ms) | {lat.get('rate')} rows/s | FAILED (see target/bench/{prefix}latency.log) | - | - | p99 <= 250 (not measured) |")
    elif lat:
        p99 = num(lat.get("p99_ms"))
        print(f"| latency commit -> consumer (ms) | {lat.get('rate')} rows/s achieved, {lat.get('measured')} rows | p50 {lat.get('p50_ms')}, p99 {lat.get('p99_ms')}, max {lat.get('max_ms')} | - | - | p99 <= 250{verdict(None if p99 is None else p99 <= 250)} |")
    for mode in ("idempotent", "at-least-once", "transactional"):
        e = one(f"e2e_b_{mode}")
        if e.get("vmhwm_kb"):
            mb = int(e["vmhwm_kb"]) / 1024
            print(f"| peak RSS (VmHWM, MB) | (b) {mode} | {mb:.0f} | - | - | <= 150{verdict(mb <= 150)} |")
    if broker == "mock":
        return
    for fault in ("kill9", "sigterm"):
        times = [x.get("took") for x in r.get(f"failover_{fault}", [])]
        if times:
            what = "kill -9 of the leader" if fault == "kill9" else "SIGTERM of the leader"
            print(f"| failover takeover (s, seen by status polling) | {what} | {', '.join(times)} | - | - | - |")
    for fault in ("kill9", "sigterm"):
        d = one(f"failover_data_{fault}")
        if d.get("stats"):
            print(f"| failover gap in Kafka (ms min/median/p99/max: old leader's last message to new leader's first) | {fault} | {d['stats']} | - | - | - |")
    v = one("failover_verify")
    if v:
        print(f"| failover run verified (every change exactly once) | chaos rounds | {'yes' if v.get('ok') == '1' else 'NO'} | - | - | - |")


if __name__ == "__main__":
    main()
