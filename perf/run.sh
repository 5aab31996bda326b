#!/usr/bin/env bash
# Runs every bench scenario against shardtls, HAProxy and nginx as set up by
# perf/peers.sh, with --server-pid so each figure is also given per server
# core, and writes one JSON file per server and scenario to perf/results/.
#
# Usage: perf/run.sh [SERVER...]      (default: shardtls haproxy nginx)
#   DURATION (default 10s), WARMUP (default 2s), LOAD_CPU (default 1),
#   CONCURRENCY (default 64), CONNECTIONS (bulk, default 4),
#   IDLE_CONNECTIONS (default 10000), LATENCY_RATES (default "1000 2000 4000"),
#   SKIP_BUILD=1 to use an existing target/release/shardtls, KEEP=1 to leave
#   the servers running afterwards, SKIP_WRK=1 to skip the wrk runs
#   (perf/wrk.sh: ROUNDS, and SHARDTLS_BASELINE for another build beside).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-$ROOT/perf/work}
OUT=${OUT:-$ROOT/perf/results}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
LOAD_CPU=${LOAD_CPU:-1}
CONCURRENCY=${CONCURRENCY:-64}
CONNECTIONS=${CONNECTIONS:-4}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
LATENCY_RATES=${LATENCY_RATES:-1000 2000 4000}
SHARDTLS=${SHARDTLS:-$ROOT/target/release/shardtls}
export WORK SHARDTLS
SERVERS=("$@")
[ ${#SERVERS[@]} -gt 0 ] || SERVERS=(shardtls haproxy nginx)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release
fi
mkdir -p "$OUT"

# Many short connections from one address: reuse TIME_WAIT ports and widen
# the ephemeral range (best effort; needs root).
sysctl -qw net.ipv4.tcp_tw_reuse=1 2>/dev/null || true
sysctl -qw net.ipv4.ip_local_port_range="10000 65000" 2>/dev/null || true
ulimit -n 400000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$ROOT/perf/peers.sh" stop
"$ROOT/perf/peers.sh" start
[ "${KEEP:-0}" = 1 ] || trap '"$ROOT/perf/peers.sh" stop' EXIT
# shellcheck disable=SC1091
. "$WORK/pids.env"

{
    echo "{"
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"kernel\": \"$(uname -r)\","
    echo "  \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')\","
    echo "  \"cores\": $(nproc),"
    echo "  \"haproxy\": \"$(haproxy -v 2>/dev/null | head -1)\","
    echo "  \"nginx\": \"$(nginx -v 2>&1)\","
    echo "  \"openssl\": \"$(openssl version)\","
    echo "  \"shardtls\": \"$("$SHARDTLS" --version)\","
    echo "  \"key_type\": \"$KEY_TYPE\""
    echo "}"
} > "$OUT/machine.json"

# The ECDSA set has a CA; the RSA certificate is self-signed.
if [ "$KEY_TYPE" = rsa ]; then TRUST=(--insecure); else TRUST=(--ca "$CERTS/ca.pem"); fi

status=0
bench() {
    # bench NAME SERVER PORT_OFFSET PID ARGS...
    local name=$1 server=$2 off=$3 pid=$4
    shift 4
    local port
    case $server in
        shardtls) port=$((8443 + off)) ;;
        haproxy) port=$((8543 + off)) ;;
        nginx) port=$((8643 + off)) ;;
    esac
    echo "== $server $name" >&2
    if ! taskset -c "$LOAD_CPU" "$SHARDTLS" bench "$@" --target "127.0.0.1:$port" --sni localhost \
        "${TRUST[@]}" --tls-version 1.3 --server-pid "$pid" --duration "$DURATION" --warmup "$WARMUP" \
        --threads 1 --cpus "$LOAD_CPU" --json --out "$OUT/$server-$name.json" > /dev/null; then
        echo "!! $server $name failed (see above)" >&2
        status=1
    fi
}

for server in "${SERVERS[@]}"; do
    case $server in
        shardtls) pid=${SHARDTLS_PID:-} ;;
        haproxy) pid=$HAPROXY_PID ;;
        nginx) pid=$NGINX_PID ;;
        *) echo "unknown server $server" >&2; exit 2 ;;
    esac
    if [ -z "$pid" ]; then
        echo "!! $server is not running; skipped" >&2
        status=1
        continue
    fi
    bench handshake "$server" 0 "$pid" handshake --concurrency "$CONCURRENCY"
    bench handshake-request "$server" 0 "$pid" handshake --concurrency "$CONCURRENCY" --request
    bench resume "$server" 0 "$pid" resume --concurrency "$CONCURRENCY"
    bench bulk-up "$server" 1 "$pid" bulk --direction up --connections "$CONNECTIONS"
    bench bulk-both "$server" 2 "$pid" bulk --direction both --connections "$CONNECTIONS"
    bench bulk-down "$server" 3 "$pid" bulk --direction down --connections "$CONNECTIONS"
    for rate in $LATENCY_RATES; do
        bench "latency-$rate" "$server" 0 "$pid" latency --rate "$rate" --connections 16
    done
    bench idle "$server" 0 "$pid" idle --connections "$IDLE_CONNECTIONS" --request
    if [ "$server" = shardtls ]; then
        bench rotate "$server" 0 "$pid" rotate --admin "$WORK/admin.sock" --vserver vs_http \
            --interval 50ms --concurrency "$CONCURRENCY" --connections 8
    fi
done
# The same servers under a client no one here wrote (wrk): kept-alive
# requests and a handshake per request, with syscall and IPI counts.
if [ "${SKIP_WRK:-0}" != 1 ] && command -v wrk >/dev/null; then
    PEERS_RUNNING=1 OUT=$OUT bash "$ROOT/perf/wrk.sh" "${SERVERS[@]}" > "$WORK/wrk.log" 2>&1 || {
        echo "!! wrk runs failed (see $WORK/wrk.log)" >&2
        status=1
    }
fi
echo "results in $OUT" >&2
exit $status
