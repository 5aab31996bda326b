#!/usr/bin/env bash
# Side-by-side runs with a client no one here wrote (wrk), against the
# servers perf/peers.sh starts: kept-alive requests (`wrk -t1 -c16`) and a
# full handshake per request (`-H "Connection: close"`), ROUNDS rounds with
# the servers interleaved. For each run it records, for the server process:
# CPU seconds per second (utime+stime from /proc/PID/stat), the rate per
# server core (requests/s divided by that), CPU per request, and from
# `perf stat` the io_uring_enter, epoll_wait, sendto/recvfrom,
# reschedule-IPI and context-switch counts per request; wrk gives the p99 latency.
#
# A run whose server was below 0.9 busy is marked client-limited: on a
# 2-core machine wrk and the back end share one core and cannot saturate
# the server's; the per-core rate then still compares CPU per request.
#
# Usage: perf/wrk.sh [SERVER...]   (default: shardtls haproxy nginx, plus
#   baseline when SHARDTLS_BASELINE names another shardtls binary, started
#   on ports 8743-8746 with the same configuration)
#   ROUNDS (default 3), WRK_SECONDS (default 8), LOAD_CPU (default 1),
#   CONNECTIONS (kept-alive, default 16), HS_CONNECTIONS (default 32),
#   PEERS_RUNNING=1 when perf/peers.sh start already ran,
#   KINDS (default "keepalive handshake").
# Writes perf/results/wrk.json (every run) and perf/results/wrk.md (medians).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-$ROOT/perf/work}
OUT=${OUT:-$ROOT/perf/results}
ROUNDS=${ROUNDS:-3}
DURATION=${WRK_SECONDS:-8}
LOAD_CPU=${LOAD_CPU:-1}
SERVER_CPU=${SERVER_CPU:-0}
CONNECTIONS=${CONNECTIONS:-16}
HS_CONNECTIONS=${HS_CONNECTIONS:-32}
export WORK
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

if [ "${PEERS_RUNNING:-0}" != 1 ]; then
    "$ROOT/perf/peers.sh" stop
    "$ROOT/perf/peers.sh" start
    trap '"$ROOT/perf/peers.sh" stop; [ -n "${BASELINE_PID:-}" ] && kill "$BASELINE_PID" 2>/dev/null || true' EXIT
fi
# shellcheck disable=SC1091
. "$WORK/pids.env"

SERVERS=("$@")
if [ ${#SERVERS[@]} -eq 0 ]; then
    SERVERS=(shardtls haproxy nginx)
    [ -n "${SHARDTLS_BASELINE:-}" ] && SERVERS=(shardtls baseline haproxy nginx)
fi

BASELINE_PID=
if printf '%s\n' "${SERVERS[@]}" | grep -qx baseline; then
    sed 's/ 844\([3-6]\)$/ 874\1/' "$WORK/shardtls.conf" > "$WORK/baseline.conf"
    taskset -c "$SERVER_CPU" "$SHARDTLS_BASELINE" run -c "$WORK/baseline.conf" --shards 1 --admin "$WORK/baseline-admin.sock" \
        > "$WORK/baseline.log" 2>&1 &
    BASELINE_PID=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/8743) 2>/dev/null && break; sleep 0.1; done
    kill -0 "$BASELINE_PID" 2>/dev/null || { echo "baseline did not start:" >&2; cat "$WORK/baseline.log" >&2; exit 1; }
fi

pid_of() {
    case $1 in
        shardtls) echo "$SHARDTLS_PID" ;;
        baseline) echo "$BASELINE_PID" ;;
        haproxy) echo "$HAPROXY_PID" ;;
        nginx) echo "$NGINX_PID" ;;
    esac
}
port_of() {
    case $1 in
        shardtls) echo 8443 ;;
        baseline) echo 8743 ;;
        haproxy) echo 8543 ;;
        nginx) echo 8643 ;;
    esac
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

EVENTS=syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_read,syscalls:sys_enter_write,irq_vectors:reschedule_entry,context-switches
HZ=$(getconf CLK_TCK)
RUNS=$OUT/wrk.jsonl
: > "$RUNS"

one_run() {
    local server=$1 kind=$2 round=$3 pid port ticks0 ticks1 extra=() conns=$CONNECTIONS
    pid=$(pid_of "$server")
    port=$(port_of "$server")
    if [ "$kind" = handshake ]; then
        extra=(-H "Connection: close")
        conns=$HS_CONNECTIONS
    fi
    ticks0=$(cpu_ticks "$pid")
    perf stat -x, -e "$EVENTS" -p "$pid" -o "$WORK/perf-stat.txt" -- sleep "$DURATION" 2>/dev/null &
    local perf_pid=$!
    taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --latency "${extra[@]}" \
        "https://127.0.0.1:$port/" > "$WORK/wrk.txt" 2>&1 || true
    wait "$perf_pid" || true
    ticks1=$(cpu_ticks "$pid")
    python3 - "$server" "$kind" "$round" "$DURATION" "$((ticks1 - ticks0))" "$HZ" "$WORK/wrk.txt" "$WORK/perf-stat.txt" "$conns" >> "$RUNS" <<'PY'
import json, re, sys
server, kind, rnd, dur, ticks, hz, wrk, stat, conns = sys.argv[1:]
text = open(wrk).read()
def num(pat, scale=1.0):
    m = re.search(pat, text)
    return float(m.group(1)) * scale if m else None
rps = num(r"Requests/sec:\s+([\d.]+)") or 0.0
p99 = None
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
if m:
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
errors = 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if m:
    errors += sum(int(x) for x in m.groups())
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if m:
    errors += int(m.group(1))
busy = int(ticks) / int(hz) / float(dur)
counts = {}
for line in open(stat):
    parts = line.strip().split(",")
    if len(parts) >= 3 and parts[0].replace(".", "").isdigit():
        counts[parts[2].split(":")[-1]] = float(parts[0])
reqs = rps * float(dur)
per = lambda k: (counts.get(k, 0.0) / reqs) if reqs else None
print(json.dumps({
    "server": server, "kind": kind, "round": int(rnd), "connections": int(conns),
    "requests_per_s": round(rps, 1), "server_busy": round(busy, 3),
    "per_server_core": round(rps / busy, 1) if busy > 0 else None,
    "cpu_us_per_request": round(busy * 1e6 / rps, 2) if rps else None,
    "p99_ms": p99, "errors": errors,
    "client_limited": busy < 0.9,
    "io_uring_enter_per_request": per("sys_enter_io_uring_enter"),
    "epoll_wait_per_request": per("sys_enter_epoll_wait"),
    "sendto_per_request": per("sys_enter_sendto"),
    "recvfrom_per_request": per("sys_enter_recvfrom"),
    "read_write_per_request": ((counts.get("sys_enter_read", 0) + counts.get("sys_enter_write", 0) + counts.get("sys_enter_writev", 0)) / reqs) if reqs else None,
    "reschedule_ipis_per_request": per("reschedule_entry"),
    "context_switches_per_request": per("context-switches"),
}))
PY
    tail -1 "$RUNS"
}

for round in $(seq 1 "$ROUNDS"); do
    for kind in ${KINDS:-keepalive handshake}; do
        for s in "${SERVERS[@]}"; do
            one_run "$s" "$kind" "$round"
        done
    done
done

python3 - "$RUNS" "$OUT/wrk.json" "$OUT/wrk.md" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump(runs, open(sys.argv[2], "w"), indent=1)
def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)
def fmt(t, digits=0):
    m, lo, hi = t
    if m is None:
        return "-"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(m)} ({f.format(lo)}-{f.format(hi)})"
out = ["| wrk run | server | req/s | server busy | per server core | CPU us/req | io_uring_enter/req | epoll_wait/req | send+recv syscalls/req | resched IPIs/req | p99 ms | errors |",
       "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for kind in ("keepalive", "handshake"):
    servers = []
    for r in runs:
        if r["kind"] == kind and r["server"] not in servers:
            servers.append(r["server"])
    for s in servers:
        rs = [r for r in runs if r["kind"] == kind and r["server"] == s]
        g = lambda k: med([r.get(k) for r in rs])
        sr = med([(r.get("sendto_per_request") or 0) + (r.get("recvfrom_per_request") or 0) + (r.get("read_write_per_request") or 0) for r in rs])
        limited = " (client-limited)" if any(r["client_limited"] for r in rs) else ""
        out.append(f"| {kind} c{rs[0]['connections']} | {s}{limited} | {fmt(g('requests_per_s'))} | {fmt(g('server_busy'), 2)} | {fmt(g('per_server_core'))} | {fmt(g('cpu_us_per_request'), 1)} | {fmt(g('io_uring_enter_per_request'), 2)} | {fmt(g('epoll_wait_per_request'), 2)} | {fmt(sr, 2)} | {fmt(g('reschedule_ipis_per_request'), 3)} | {fmt(g('p99_ms'), 2)} | {sum(r['errors'] for r in rs)} |")
text = "\n".join(out) + "\n\nMedian (min-max) over %d rounds; `perf/wrk.sh` reproduces it.\n" % max(r["round"] for r in runs)
open(sys.argv[3], "w").write(text)
print(text)
PY
