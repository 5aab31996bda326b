#!/usr/bin/env bash
# Soak: mixed load for SOAK_SECS (default 3600) against shardtls with two
# shards, while every second a configuration change of another kind is
# applied (certificate rotation, cipher binding, curve binding, SSL
# parameter, profile; on the back-end side: the SSL_TCP service's curve,
# protocol versions and trusted CA) and a back end is killed and restarted
# every KILL_EVERY seconds (default 60). Load, all at once:
#   - `bench rotate`: new handshakes, resumptions and kept-alive requests on
#     vserver `stable` while the changes run (invariants: no error on an
#     established connection, no resumption across a change);
#   - `bench bulk`: long transfers on vserver `churn`, whose back end is the
#     one killed and restarted (its errors are expected and counted apart);
#   - `bench idle`: IDLE connections held open on `stable`;
#   - `bench latency`: kept-alive requests on vserver `secure`, whose back
#     end is re-encrypted TLS (SSL_TCP) and whose back-end settings change:
#     established connections must not notice (no error).
# Reports connections served, established connections lost to a change
# (must be 0), resumptions across a change (must be 0), panics (must be 0),
# and the proxy's memory at start, once all load is up (after the first
# minute, or half the run if shorter) and at the end. Exits non-zero on a
# broken invariant. The per-second progress goes to stderr and to
# $SOAK_LOG (default: a file in the work folder, printed at the end).
#
# Usage: perf/soak.sh            (SOAK_SECS=20 KILL_EVERY=5 for a short run;
#                                 KEEP=1 keeps the work folder with logs and JSON)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/shardtls}
SOAK_SECS=${SOAK_SECS:-3600}
KILL_EVERY=${KILL_EVERY:-60}
IDLE=${IDLE:-500}
[ -x "$BIN" ] || cargo build --release --quiet
# shellcheck source=perf/lib.sh
. perf/lib.sh
extra_cleanup() { [ -n "${CHURN_PID:-}" ] && kill "$CHURN_PID" 2>/dev/null || true; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

"$BIN" bench --gen-cert "$WORK/certs" > /dev/null
cp "$WORK/certs/cert.pem" "$WORK/certs/cert-0.pem"; cp "$WORK/certs/key.pem" "$WORK/certs/key-0.pem"
STABLE_B=$(port); CHURN_B=$(port); TLS_B=$(port); VS=$(port); VC=$(port); VT=$(port)
"$BIN" test-server --listen "127.0.0.1:$STABLE_B" --mode http > /dev/null 2>&1 & pids+=($!)
"$BIN" test-server --listen "127.0.0.1:$TLS_B" --mode http --tls-cert "$WORK/certs/cert.pem" \
    --tls-key "$WORK/certs/key.pem" > /dev/null 2>&1 & pids+=($!)
cp "$WORK/certs/ca.pem" "$WORK/certs/ca-0.pem"; cp "$WORK/certs/ca.pem" "$WORK/certs/ca-1.pem"
start_churn() { "$BIN" test-server --listen "127.0.0.1:$CHURN_B" --mode echo > /dev/null 2>&1 & CHURN_PID=$!; }
start_churn

cat > "$WORK/soak.conf" <<CONF
add ssl certKey site -cert certs/cert-0.pem -key certs/key-0.pem
add ssl cipher grp
bind ssl cipher grp -cipherName TLS1.3-AES128-GCM-SHA256
bind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384
add ssl profile fe -sessTimeout 300
add service stable_svc 127.0.0.1 $STABLE_B TCP
add service churn_svc 127.0.0.1 $CHURN_B TCP
add lb vserver stable SSL_TCP 127.0.0.1 $VS -cltTimeout $((SOAK_SECS + 300))
set ssl vserver stable -sslProfile fe
bind ssl vserver stable -certkeyName site
bind ssl vserver stable -cipherName grp
bind lb vserver stable stable_svc
add lb vserver churn SSL_TCP 127.0.0.1 $VC
bind ssl vserver churn -certkeyName site
bind lb vserver churn churn_svc
add ssl certKey backend_ca -cert certs/ca-0.pem
add service tls_svc 127.0.0.1 $TLS_B SSL_TCP
set ssl service tls_svc -serverAuth ENABLED -commonName localhost
bind ssl service tls_svc -certkeyName backend_ca -CA
add lb vserver secure SSL_TCP 127.0.0.1 $VT
bind ssl vserver secure -certkeyName site
bind lb vserver secure tls_svc
CONF
ADMIN="$WORK/admin.sock"
SHARDTLS_LOG=warn "$BIN" run -c "$WORK/soak.conf" --shards 2 --admin "$ADMIN" > "$WORK/proxy.log" 2>&1 & PROXY=$!
pids+=($PROXY)
for _ in $(seq 1 100); do [ -S "$ADMIN" ] && break; sleep 0.05; done
RSS0=$(rss_kib "$PROXY")

# Rotation keeps the client's trust: the same certificate under new file
# names still opens a new epoch (update re-reads the files).
for i in 1 2 3; do cp "$WORK/certs/cert.pem" "$WORK/certs/cert-$i.pem"; cp "$WORK/certs/key.pem" "$WORK/certs/key-$i.pem"; done
C="$WORK/certs"
changes=(
    --change "update ssl certKey site -cert $C/cert-1.pem -key $C/key-1.pem"
    --change "unbind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384"
    --change "bind ssl vserver stable -eccCurveName X25519"
    --change "set ssl profile fe -sessTimeout 301"
    --change "update ssl certKey site -cert $C/cert-2.pem -key $C/key-2.pem"
    --change "bind ssl cipher grp -cipherName TLS1.3-AES256-GCM-SHA384"
    --change "unbind ssl vserver stable -eccCurveName X25519"
    --change "set ssl profile fe -sessTimeout 300"
    --change "set ssl vserver stable -sessTimeout 302"
    --change "bind ssl service tls_svc -eccCurveName X25519"
    --change "update ssl certKey backend_ca -cert $C/ca-1.pem"
    --change "set ssl service tls_svc -tls12 DISABLED"
    --change "unbind ssl service tls_svc -eccCurveName X25519"
    --change "update ssl certKey backend_ca -cert $C/ca-0.pem"
    --change "set ssl service tls_svc -tls12 ENABLED"
)
common=(--sni localhost --ca "$WORK/certs/ca.pem" --warmup 0s --duration "${SOAK_SECS}s" --server-pid "$PROXY")
"$BIN" bench rotate --target "127.0.0.1:$VS" --admin "$ADMIN" --vserver stable --interval 1s "${changes[@]}" \
    --concurrency 8 --connections 4 "${common[@]}" --json --out "$WORK/rotate.json" > "$WORK/rotate.txt" 2>&1 &
ROT=$!
"$BIN" bench bulk --target "127.0.0.1:$VC" --direction both --connections 2 "${common[@]}" \
    --json --out "$WORK/bulk.json" > /dev/null 2>&1 &
BULK=$!
"$BIN" bench idle --target "127.0.0.1:$VS" --connections "$IDLE" "${common[@]}" \
    --json --out "$WORK/idle.json" > /dev/null 2>&1 &
IDLEP=$!
"$BIN" bench latency --target "127.0.0.1:$VT" --rate 200 --connections 8 "${common[@]}" \
    --json --out "$WORK/secure.json" > /dev/null 2>&1 &
SECURE=$!
SOAK_LOG=${SOAK_LOG:-$WORK/progress.log}
: > "$SOAK_LOG"
RSS_WARM=
WARM_AT=$(( SOAK_SECS < 120 ? SOAK_SECS / 2 : 60 ))

kills=0
t0=$(date +%s)
while kill -0 "$ROT" 2>/dev/null; do
    sleep 1
    now=$(date +%s)
    if [ $(( (now - t0) % KILL_EVERY )) -eq 0 ] && [ "$now" -gt "$t0" ]; then
        kill "$CHURN_PID" 2>/dev/null || true
        wait "$CHURN_PID" 2>/dev/null || true
        sleep 0.2
        start_churn
        kills=$((kills + 1))
    fi
    rss=$(rss_kib "$PROXY")
    [ -z "$RSS_WARM" ] && [ $((now - t0)) -ge "$WARM_AT" ] && RSS_WARM=$rss
    printf '[soak %5ds] back-end restarts %d, proxy RSS %s KiB\n' $((now - t0)) "$kills" "$rss" | tee -a "$SOAK_LOG" >&2
done
rot_status=0; wait "$ROT" || rot_status=$?
wait "$BULK" || true
wait "$IDLEP" || true
sec_status=0; wait "$SECURE" || sec_status=$?
RSS1=$(rss_kib "$PROXY")
"$BIN" ctl --admin "$ADMIN" stats > "$WORK/stats.json"
python3 - "$WORK/rotate.json" "$RSS0" "$RSS1" "$kills" "$WORK/proxy.log" "$rot_status" "$WORK/stats.json" \
    "$WORK/secure.json" "${RSS_WARM:-$RSS1}" <<'PY'
import json, sys
rot = json.load(open(sys.argv[1]))
rss0, rss1, kills, log, rot_status = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
stats = json.load(open(sys.argv[7]))
try:
    sec = json.load(open(sys.argv[8]))
    sm = {k: v["value"] for k, v in sec["metrics"].items()}
except (OSError, ValueError, KeyError):
    sec, sm = {"ok": False}, {}
rss_warm = int(sys.argv[9])
m = {k: v["value"] for k, v in rot["metrics"].items()}
served = sum(s["accepted"] for s in stats["shards"])
panics = sum(1 for l in open(log) if "panicked" in l)
print(f"connections served:                      {served}")
print(f"configuration changes applied:           {m['changes_applied']:.0f} (refused {m['changes_refused']:.0f})")
print(f"  of which opened a new epoch of 'stable': {m.get('changes_opening_a_vserver_epoch', 0):.0f}")
print(f"back-end kills and restarts:             {kills}")
print(f"established connections lost to a change: {m['established_errors']:.0f}")
print(f"resumptions across a change:             {m['resumptions_across_change_succeeded']:.0f} of {m['resumptions_attempted_across_change']:.0f} attempted")
print(f"handshakes failed on the stable vserver: {m['handshakes_failed']:.0f}")
print(f"requests via the TLS back end:           {sm.get('requests', 0):.0f}, "
      f"{sm.get('established_errors', -1):.0f} lost on established connections, "
      f"{sm.get('errors', -1):.0f} connections failed before a first response")
print(f"panics:                                  {panics}")
print(f"proxy RSS:                               {rss0} KiB at start, {rss_warm} KiB with all load up, {rss1} KiB at end")
sec_ok = sec["ok"] and sm.get("established_errors", 1) == 0
ok = rot["ok"] and sec_ok and panics == 0 and m["established_errors"] == 0 and m["resumptions_across_change_succeeded"] == 0
print("soak:", "OK" if ok else "INVARIANT BROKEN")
sys.exit(0 if ok else 1)
PY
