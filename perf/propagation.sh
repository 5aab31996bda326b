#!/usr/bin/env bash
# Configuration-change propagation under load: CHANGES (default 1000)
# changes through the admin API while handshake and request load runs,
# with SHARDS (default 2) shards. Reports the proxy's own propagation time
# (from the change's arrival until every shard has applied it, as logged
# per change) and the admin round trip seen by the client, p50/p90/p99,
# plus the rotate invariants (no error on an established connection, no
# resumption across a change).
#
# Usage: perf/propagation.sh    (BIN=target/release/shardtls by default)
#   SERVER_CPUS / LOAD_CPUS: taskset lists for the proxy and for the load
#   generator and back end (default: unpinned). On a 2-core machine,
#   SHARDS=1 SERVER_CPUS=0 LOAD_CPUS=1 gives the shard a core of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/shardtls}
SHARDS=${SHARDS:-2}
CHANGES=${CHANGES:-1000}
INTERVAL=${INTERVAL:-5ms}
SERVER_CPUS=${SERVER_CPUS:-}
LOAD_CPUS=${LOAD_CPUS:-}
on() { local cpus=$1; shift; if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi; }
[ -x "$BIN" ] || cargo build --release --quiet
# shellcheck source=perf/lib.sh
. perf/lib.sh
"$BIN" bench --gen-cert "$WORK/certs" > /dev/null
B=$(port); V=$(port)
on "$LOAD_CPUS" "$BIN" test-server --listen "127.0.0.1:$B" --mode http > /dev/null 2>&1 & pids+=($!)
cat > "$WORK/p.conf" <<CONF
add ssl certKey site -cert certs/cert.pem -key certs/key.pem
add service web 127.0.0.1 $B TCP
add lb vserver v1 SSL_TCP 127.0.0.1 $V
bind ssl vserver v1 -certkeyName site
bind lb vserver v1 web
CONF
SHARDTLS_LOG=info on "$SERVER_CPUS" "$BIN" run -c "$WORK/p.conf" --shards "$SHARDS" --admin "$WORK/admin.sock" > "$WORK/proxy.log" 2>&1 & PROXY=$!
pids+=($PROXY)
for _ in $(seq 1 100); do [ -S "$WORK/admin.sock" ] && break; sleep 0.05; done
on "$LOAD_CPUS" "$BIN" bench rotate --target "127.0.0.1:$V" --sni localhost --ca "$WORK/certs/ca.pem" --admin "$WORK/admin.sock" \
    --vserver v1 --interval "$INTERVAL" --max-changes "$CHANGES" --duration 60s --warmup 1s \
    --concurrency 16 --connections 8 --server-pid "$PROXY" --json --out "$WORK/rotate.json" > /dev/null
python3 - "$WORK/proxy.log" "$WORK/rotate.json" "$SHARDS" <<'PY'
import json, re, sys
log, res, shards = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
v = sorted(int(m.group(1)) for l in open(log) if (m := re.search(r'propagation_us=(\d+)', l)))
q = lambda p: v[min(len(v) - 1, int(len(v) * p))]
print(f"shards={shards} changes={len(v)}")
print(f"proxy propagation (all shards applied): p50 {q(.5)} us, p90 {q(.9)} us, p99 {q(.99)} us, max {v[-1]} us")
p = res["latency"]["propagation"]
print(f"admin round trip: p50 {p['p50']:.0f} us, p90 {p['p90']:.0f} us, p99 {p['p99']:.0f} us")
m = {k: x["value"] for k, x in res["metrics"].items()}
print(f"established errors {m['established_errors']:.0f}, handshakes failed {m['handshakes_failed']:.0f}, "
      f"resumptions across a change: {m['resumptions_attempted_across_change']:.0f} attempted, "
      f"{m['resumptions_across_change_succeeded']:.0f} succeeded")
sys.exit(0 if res["ok"] else 1)
PY
