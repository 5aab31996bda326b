#!/usr/bin/env bash
# What a full handshake costs the client: `shardtls bench handshake
# --request` against wrk with connection-close requests (one new TLS
# connection and one request each), both against the same TLS test server
# (`shardtls test-server --mode http`), ROUNDS rounds, the two clients
# interleaved. Server on SERVER_CPU, client on LOAD_CPU.
#
# Per run: handshakes completed, the client process's CPU seconds
# (utime+stime over its whole run; the bench runs without warm-up, so its
# window is its run), handshakes per client CPU-second, and the server's
# CPU microseconds per handshake (equal for both clients when both do full
# handshakes: a resumed one costs the server far less). The bench runs with
# --insecure, as wrk does (no chain verification; both check the handshake
# signature).
#
# Usage: perf/client-cost.sh   (BIN=path/to/shardtls, ROUNDS=3,
#   RUN_SECONDS=8, CONNS=32, SERVER_CPU=0, LOAD_CPU=1; BASELINE=another
#   shardtls build adds its bench as a third client, against BIN's server)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/shardtls}
ROUNDS=${ROUNDS:-3}
RUN_SECONDS=${RUN_SECONDS:-8}
CONNS=${CONNS:-32}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
# shellcheck source=perf/lib.sh
. perf/lib.sh

"$BIN" bench --gen-cert "$WORK/certs" > /dev/null 2>&1
PORT=$(port)
taskset -c "$SERVER_CPU" "$BIN" test-server --listen "127.0.0.1:$PORT" --mode http \
    --tls-cert "$WORK/certs/cert.pem" --tls-key "$WORK/certs/key.pem" > "$WORK/server.log" 2>&1 &
SERVER=$!
pids+=("$SERVER")
wait_port "$PORT"
server_ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
HZ=$(getconf CLK_TCK)

# run NAME OUTPUT CMD...: runs CMD pinned to LOAD_CPU; prints the client's
# CPU seconds and the server's CPU seconds over the run.
run() {
    local out=$1 t0 t1
    shift
    t0=$(server_ticks)
    local cpu
    cpu=$(python3 - "$out" taskset -c "$LOAD_CPU" "$@" <<'PY'
import resource, subprocess, sys
with open(sys.argv[1], "w") as f:
    subprocess.run(sys.argv[2:], stdout=f, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{r.ru_utime + r.ru_stime:.3f}")
PY
)
    t1=$(server_ticks)
    echo "$cpu $(python3 -c "print(($t1 - $t0) / $HZ)")"
}

RESULTS=$WORK/runs.txt
: > "$RESULTS"
# bench NAME BINARY ROUND
bench() {
    local cpu scpu n
    read -r cpu scpu < <(run "$WORK/bench.json" "$2" bench handshake --target "127.0.0.1:$PORT" \
        --insecure --sni localhost --cpus "$LOAD_CPU" --concurrency "$CONNS" --request \
        --warmup 0s --duration "${RUN_SECONDS}s" --json)
    n=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['metrics']['handshakes']['value']))" "$WORK/bench.json" 2>/dev/null) \
        || { cat "$WORK/bench.json" >&2; exit 1; }
    echo "$1 $3 $n $cpu $scpu" | tee -a "$RESULTS"
}
for round in $(seq 1 "$ROUNDS"); do
    bench shardtls-bench "$BIN" "$round"
    [ -n "${BASELINE:-}" ] && bench baseline-bench "$BASELINE" "$round"
    read -r cpu scpu < <(run "$WORK/wrk.txt" wrk -t1 -c"$CONNS" -d"${RUN_SECONDS}s" -H "Connection: close" \
        "https://127.0.0.1:$PORT/")
    n=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
    echo "wrk $round $n $cpu $scpu" | tee -a "$RESULTS"
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, _, n, cpu, scpu = line.split()
    n, cpu, scpu = int(n), float(cpu), float(scpu)
    runs.setdefault(name, []).append((n / cpu, scpu * 1e6 / n, n))
def fmt(xs):
    return f"{statistics.median(xs):,.0f} ({min(xs):,.0f}-{max(xs):,.0f})"
print("client          handshakes per client CPU-second   server CPU us per handshake   handshakes per run")
for name, rs in runs.items():
    print(f"{name:15} {fmt([r[0] for r in rs]):34} {fmt([r[1] for r in rs]):29} {fmt([r[2] for r in rs])}")
w = [r[0] for r in runs["wrk"]]
for name in ("shardtls-bench", "baseline-bench"):
    if name in runs:
        ratios = [r[0] / x for r, x in zip(runs[name], w)]
        print(f"{name} / wrk, paired by round: median {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x)")
PY
