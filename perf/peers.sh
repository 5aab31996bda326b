#!/usr/bin/env bash
# Installs and configures the servers compared in perf/run.sh, all with the
# same certificate, TLS 1.3 only and X25519, one worker pinned to SERVER_CPU,
# forwarding to built-in back ends (`shardtls test-server`) pinned to LOAD_CPU:
#
#   front ports   shardtls   haproxy   nginx    -> back end
#   +0            8443       8543      8643     -> 127.0.0.1:9000 http (128 B body)
#   +1            8444       8544      8644     -> 127.0.0.1:9001 sink
#   +2            8445       8545      8645     -> 127.0.0.1:9002 echo
#   +3            8446       8546      8646     -> 127.0.0.1:9003 http (16 MiB body)
#
# Usage: perf/peers.sh install | start | stop | pids
#   KEY_TYPE=ecdsa|rsa (default ecdsa: P-256; rsa: RSA-2048)
#   SERVER_CPU (default 0), LOAD_CPU (default 1), WORK (default perf/work)
#   SHARDTLS (default target/release/shardtls)
# `start` writes WORK/pids.env with SHARDTLS_PID, HAPROXY_PID, NGINX_PID
# (the nginx worker, not the master) and BACKEND_PIDS.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
KEY_TYPE=${KEY_TYPE:-ecdsa}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
WORK=${WORK:-$ROOT/perf/work}
SHARDTLS=${SHARDTLS:-$ROOT/target/release/shardtls}
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)

install_peers() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q haproxy nginx libnginx-mod-stream openssl wrk linux-perf
    # The packaged services must not hold ports or CPU during the runs.
    systemctl stop haproxy nginx 2>/dev/null || service haproxy stop 2>/dev/null || true
    service nginx stop 2>/dev/null || true
    haproxy -v | head -1
    nginx -v
}

make_certs() {
    local dir=$WORK/certs-$KEY_TYPE
    mkdir -p "$dir"
    if [ ! -s "$dir/cert.pem" ]; then
        if [ "$KEY_TYPE" = rsa ]; then
            openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
                -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
                -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
            cp "$dir/cert.pem" "$dir/ca.pem"
        else
            "$SHARDTLS" bench --gen-cert "$dir"
        fi
        cat "$dir/cert.pem" "$dir/key.pem" > "$dir/haproxy.pem"
    fi
    CERTS=$dir
}

write_configs() {
    local c=$CERTS
    cat > "$WORK/haproxy.cfg" <<CFG
global
    nbthread 1
    cpu-map 1/1 $SERVER_CPU
    maxconn 9000
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
    tune.ssl.cachesize 200000
    log stdout format raw local0 err

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    maxconn 9000

frontend http
    bind 127.0.0.1:8543 ssl crt $c/haproxy.pem curves X25519
    default_backend http
backend http
    server s 127.0.0.1:9000
frontend sink
    bind 127.0.0.1:8544 ssl crt $c/haproxy.pem curves X25519
    default_backend sink
backend sink
    server s 127.0.0.1:9001
frontend echo
    bind 127.0.0.1:8545 ssl crt $c/haproxy.pem curves X25519
    default_backend echo
backend echo
    server s 127.0.0.1:9002
frontend big
    bind 127.0.0.1:8546 ssl crt $c/haproxy.pem curves X25519
    default_backend big
backend big
    server s 127.0.0.1:9003
CFG

    local mod=/usr/lib/nginx/modules/ngx_stream_module.so
    {
        echo "daemon off;"
        echo "worker_processes 1;"
        echo "worker_rlimit_nofile 20000;"
        echo "pid $WORK/nginx.pid;"
        echo "error_log $WORK/nginx-error.log error;"
        [ -f "$mod" ] && echo "load_module $mod;"
        echo "events { worker_connections 12000; }"
        echo "stream {"
        echo "    ssl_certificate $c/cert.pem;"
        echo "    ssl_certificate_key $c/key.pem;"
        echo "    ssl_protocols TLSv1.3;"
        echo "    ssl_ecdh_curve X25519;"
        echo "    ssl_session_cache shared:SSL:100m;"
        echo "    ssl_session_tickets on;"
        local i
        for i in 0 1 2 3; do
            echo "    server { listen 127.0.0.1:864$((3 + i)) ssl; proxy_pass 127.0.0.1:900$i; }"
        done
        echo "}"
    } > "$WORK/nginx.conf"

    cat > "$WORK/shardtls.conf" <<CFG
# Same certificate, TLS 1.3 only, X25519, one shard (see perf/peers.sh).
add ssl certKey perf -cert $c/cert.pem -key $c/key.pem
add service svc_http 127.0.0.1 9000 TCP
add service svc_sink 127.0.0.1 9001 TCP
add service svc_echo 127.0.0.1 9002 TCP
add service svc_big 127.0.0.1 9003 TCP
CFG
    local names=(http sink echo big) i
    for i in 0 1 2 3; do
        local v=vs_${names[$i]}
        cat >> "$WORK/shardtls.conf" <<CFG
add lb vserver $v SSL_TCP 127.0.0.1 844$((3 + i))
bind lb vserver $v svc_${names[$i]}
bind ssl vserver $v -certkeyName perf
bind ssl vserver $v -eccCurveName X25519
set ssl vserver $v -tls12 DISABLED -tls13 ENABLED -sessReuse ENABLED
CFG
    done
}

wait_port() {
    local port=$1 i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $port did not open" >&2
    return 1
}

start_all() {
    [ -x "$SHARDTLS" ] || { echo "build first: cargo build --release ($SHARDTLS missing)" >&2; exit 1; }
    make_certs
    write_configs
    ulimit -n 400000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    local b=()
    taskset -c "$LOAD_CPU" "$SHARDTLS" test-server --listen 127.0.0.1:9000 --mode http --response-size 128 & b+=($!)
    taskset -c "$LOAD_CPU" "$SHARDTLS" test-server --listen 127.0.0.1:9001 --mode sink & b+=($!)
    taskset -c "$LOAD_CPU" "$SHARDTLS" test-server --listen 127.0.0.1:9002 --mode echo & b+=($!)
    taskset -c "$LOAD_CPU" "$SHARDTLS" test-server --listen 127.0.0.1:9003 --mode http --response-size $((16 << 20)) & b+=($!)
    for p in 9000 9001 9002 9003; do wait_port $p; done

    haproxy -c -f "$WORK/haproxy.cfg" >/dev/null
    taskset -c "$SERVER_CPU" haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
    local haproxy_pid=$!
    nginx -t -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null || nginx -t -c "$WORK/nginx.conf" -p "$WORK"
    taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx.conf" -p "$WORK" > "$WORK/nginx.log" 2>&1 &
    local nginx_master=$!
    local shardtls_pid=
    if "$SHARDTLS" check -c "$WORK/shardtls.conf" > "$WORK/shardtls-check.log" 2>&1; then
        taskset -c "$SERVER_CPU" "$SHARDTLS" run -c "$WORK/shardtls.conf" --shards 1 --admin "$WORK/admin.sock" \
            > "$WORK/shardtls.log" 2>&1 &
        shardtls_pid=$!
    else
        echo "shardtls cannot serve this config yet (see $WORK/shardtls-check.log); comparing peers only" >&2
    fi
    for p in 8543 8544 8545 8546 8643 8644 8645 8646; do wait_port $p; done
    [ -n "$shardtls_pid" ] && for p in 8443 8444 8445 8446; do wait_port $p; done
    local nginx_worker
    nginx_worker=$(pgrep -P "$nginx_master" | head -1)
    cat > "$WORK/pids.env" <<ENV
SHARDTLS_PID=$shardtls_pid
HAPROXY_PID=$haproxy_pid
NGINX_MASTER_PID=$nginx_master
NGINX_PID=$nginx_worker
BACKEND_PIDS="${b[*]}"
CERTS=$CERTS
KEY_TYPE=$KEY_TYPE
ENV
    echo "started; pids in $WORK/pids.env"
    cat "$WORK/pids.env"
}

stop_all() {
    [ -f "$WORK/pids.env" ] || return 0
    # shellcheck disable=SC1091
    . "$WORK/pids.env"
    local p
    for p in $SHARDTLS_PID $HAPROXY_PID $NGINX_MASTER_PID $BACKEND_PIDS; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in $SHARDTLS_PID $HAPROXY_PID $NGINX_MASTER_PID $BACKEND_PIDS; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    rm -f "$WORK/pids.env"
}

case "${1:-}" in
    install) install_peers ;;
    start) start_all ;;
    stop) stop_all ;;
    pids) cat "$WORK/pids.env" ;;
    *) echo "usage: $0 install|start|stop|pids" >&2; exit 2 ;;
esac
