# Sourced by the perf/ scripts that start their own servers. It gives:
# WORK, a folder removed on exit (kept when KEEP is set); pids, the
# processes to kill on exit (append with `pids+=($!)`); `port`, a free
# loopback port; `wait_port PORT`, which waits up to 10 s for it to accept.
# A script with more to undo defines `extra_cleanup` before it exits.
WORK=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if declare -F extra_cleanup >/dev/null; then extra_cleanup; fi
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 did not open" >&2
    return 1
}
