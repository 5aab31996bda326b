#!/usr/bin/env bash
# Paired runs of two shardtls builds (or two settings of one) on the same
# back ends: bulk up, down and both, and request latency at 16,000/s, with
# the two taking turns for ROUNDS rounds. Prints one line per run.
#
# Usage: perf/ab.sh BIN_A BIN_B
#   ARGS_A / ARGS_B: extra `run` flags (e.g. ARGS_B="--batch-wait-us 50"),
#   ROUNDS (default 2), SECONDS_EACH (default 4), SERVER_CPU (0), LOAD_CPU (1).
# Examples behind perf/RESULTS.md and tuning.md:
#   perf/ab.sh /tmp/glommio/target/release/shardtls target/release/shardtls
#   perf/ab.sh target/release/shardtls target/release/shardtls   # with ARGS_B="--batch-wait-us 50"
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
A=${1:?usage: perf/ab.sh BIN_A BIN_B}
B=${2:?usage: perf/ab.sh BIN_A BIN_B}
ROUNDS=${ROUNDS:-2}
SECONDS_EACH=${SECONDS_EACH:-4}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WORK=${WORK:-$ROOT/perf/work}
export WORK SHARDTLS=$B

"$ROOT/perf/peers.sh" stop
"$ROOT/perf/peers.sh" start > "$WORK/ab-peers.log"
trap '"$ROOT/perf/peers.sh" stop >/dev/null; [ -n "${P:-}" ] && kill "$P" 2>/dev/null || true' EXIT
# shellcheck disable=SC1091
. "$WORK/pids.env"
kill "$SHARDTLS_PID" # each side starts its own on the same ports
sleep 0.5

metric() { python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['metrics']; print(round(m[sys.argv[2]]['value'], 3))" "$@"; }
p99() { python3 -c "import json,sys; l=json.load(open(sys.argv[1]))['latency']['request']; print(round(l['p50']), round(l['p99']))" "$1"; }

for round in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        if [ "$side" = A ]; then bin=$A; args=${ARGS_A:-}; else bin=$B; args=${ARGS_B:-}; fi
        # shellcheck disable=SC2086
        taskset -c "$SERVER_CPU" "$bin" run -c "$WORK/shardtls.conf" --shards 1 --admin "$WORK/admin.sock" $args \
            > "$WORK/ab-$side.log" 2>&1 &
        P=$!
        for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break; sleep 0.1; done
        common=(--sni localhost --ca "$CERTS/ca.pem" --tls-version 1.3 --server-pid "$P"
            --duration "${SECONDS_EACH}s" --warmup 1s --threads 1 --cpus "$LOAD_CPU" --json)
        for d in "up 1" "down 3" "both 2"; do
            set -- $d
            taskset -c "$LOAD_CPU" "$B" bench bulk --direction "$1" --connections 4 \
                --target "127.0.0.1:$((8443 + $2))" "${common[@]}" --out "$WORK/ab.json" > /dev/null 2>>"$WORK/ab-bench.log"
            echo "round $round $side bulk-$1 GB/s per server core: $(metric "$WORK/ab.json" gbytes_per_s_per_server_core)"
        done
        taskset -c "$LOAD_CPU" "$B" bench latency --rate 16000 --connections 16 --target 127.0.0.1:8443 \
            "${common[@]}" --out "$WORK/ab.json" > /dev/null 2>>"$WORK/ab-bench.log"
        echo "round $round $side latency at 16000/s p50/p99 us: $(p99 "$WORK/ab.json")"
        kill "$P"
        wait "$P" 2>/dev/null || true
        P=
    done
done
