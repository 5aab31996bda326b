#!/usr/bin/env bash
# A few seconds of every `shardtls bench` scenario against shardtls itself,
# so the harness never rots. Fails when a scenario fails or when an
# invariant of `rotate` breaks (an error on an established connection, or a
# session resumed across a change). Full runs live in perf/run.sh.
#
# Usage: perf/smoke.sh   (BIN=path/to/shardtls to use another build)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug/shardtls}
[ -x "$BIN" ] || cargo build --quiet
# shellcheck source=perf/lib.sh
. perf/lib.sh

"$BIN" bench --gen-cert "$WORK/certs" > /dev/null
HTTP=$(port); ECHO=$(port); SINK=$(port); BIG=$(port)
VS_HTTP=$(port); VS_ECHO=$(port); VS_SINK=$(port); VS_BIG=$(port)
"$BIN" test-server --listen "127.0.0.1:$HTTP" --mode http --response-size 128 > "$WORK/b1.log" 2>&1 & pids+=($!)
"$BIN" test-server --listen "127.0.0.1:$ECHO" --mode echo > "$WORK/b2.log" 2>&1 & pids+=($!)
"$BIN" test-server --listen "127.0.0.1:$SINK" --mode sink > "$WORK/b3.log" 2>&1 & pids+=($!)
"$BIN" test-server --listen "127.0.0.1:$BIG" --mode http --response-size 1048576 > "$WORK/b4.log" 2>&1 & pids+=($!)

cat > "$WORK/smoke.conf" <<CONF
add ssl certKey site -cert certs/cert.pem -key certs/key.pem
add service http 127.0.0.1 $HTTP TCP
add service echo 127.0.0.1 $ECHO TCP
add service sink 127.0.0.1 $SINK TCP
add service big 127.0.0.1 $BIG TCP
add lb vserver vhttp SSL_TCP 127.0.0.1 $VS_HTTP
bind ssl vserver vhttp -certkeyName site
bind lb vserver vhttp http
add lb vserver vecho SSL_TCP 127.0.0.1 $VS_ECHO
bind ssl vserver vecho -certkeyName site
bind lb vserver vecho echo
add lb vserver vsink SSL_TCP 127.0.0.1 $VS_SINK
bind ssl vserver vsink -certkeyName site
bind lb vserver vsink sink
add lb vserver vbig SSL_TCP 127.0.0.1 $VS_BIG
bind ssl vserver vbig -certkeyName site
bind lb vserver vbig big
CONF
"$BIN" check -c "$WORK/smoke.conf"
ADMIN="$WORK/admin.sock"
SHARDTLS_LOG=warn "$BIN" run -c "$WORK/smoke.conf" --shards 2 --admin "$ADMIN" > "$WORK/proxy.log" 2>&1 & PROXY=$!
pids+=($PROXY)
wait_port "$VS_HTTP"

common=(--ca "$WORK/certs/ca.pem" --sni localhost --duration 2s --warmup 0s --server-pid "$PROXY")
run() {
    local name=$1; shift
    echo "== bench $name"
    if ! "$BIN" bench "$@" "${common[@]}"; then
        echo "smoke: bench $name failed" >&2
        tail -20 "$WORK/proxy.log" >&2
        exit 1
    fi
}
run handshake handshake --target "127.0.0.1:$VS_HTTP" --concurrency 8 --request
run resume resume --target "127.0.0.1:$VS_HTTP" --concurrency 8
run bulk-up bulk --target "127.0.0.1:$VS_SINK" --direction up --connections 2
run bulk-both bulk --target "127.0.0.1:$VS_ECHO" --direction both --connections 2
run bulk-down bulk --target "127.0.0.1:$VS_BIG" --direction down --connections 2
run latency latency --target "127.0.0.1:$VS_HTTP" --rate 500 --connections 4
run idle idle --target "127.0.0.1:$VS_HTTP" --connections 200
run rotate rotate --target "127.0.0.1:$VS_HTTP" --admin "$ADMIN" --vserver vhttp --interval 100ms --concurrency 8
if grep -q panicked "$WORK/proxy.log"; then
    echo "smoke: the proxy panicked" >&2
    exit 1
fi
echo "smoke: every scenario ran"
