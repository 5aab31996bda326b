#!/usr/bin/env bash
# Run tlsfuzzer's server scripts (https://github.com/tlsfuzzer/tlsfuzzer, not
# on PyPI: point TLSFUZZER_DIR at a checkout) against two vservers: one with
# an RSA 2048 certificate and session reuse on, so tickets are sent (most
# TLS 1.3 scripts sign with RSA-PSS; some expect a NewSessionTicket) and one
# with an ECDSA P-256 certificate (the ECDSA scripts). Both use the built-in
# defaults (TLS 1.2 and 1.3, every suite and group the ring provider has)
# and forward to an HTTP back end, which the scripts' "GET /" expects; a
# third (RSA) vserver forwards to an echo back end for the scripts that
# expect their data back (test-tls13-lengths.py).
#
#   TLSFUZZER_DIR=/path/to/tlsfuzzer perf/tlsfuzzer.sh
#   BIN=target/release/shardtls LABEL=after perf/tlsfuzzer.sh
#   SCRIPTS="test-tls13-ccs.py test-tls13-zero-length-data.py" perf/tlsfuzzer.sh
#
# tlsfuzzer needs tlslite-ng and ecdsa: PYTHON names an interpreter that has
# them; without it a virtual environment is made under $VENV (default
# /tmp/tlsfuzzer-venv) with pip. Each script's output goes to
# $OUTDIR/tlsfuzzer-$LABEL/<script>.log, and a table of pass/fail counts and
# failing conversations to $OUTDIR/tlsfuzzer-$LABEL.md (OUTDIR defaults to
# perf/results). What the failures mean is in perf/tlsfuzzer.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${SHARDTLS_BIN:-$ROOT/target/debug/shardtls}}
OUTDIR=${OUTDIR:-$ROOT/perf/results}
LABEL=${LABEL:-run}
JOBS=${JOBS:-3}
PER_SCRIPT=${PER_SCRIPT:-600}
[ -x "$BIN" ] || { echo "no $BIN: cargo build first" >&2; exit 2; }
[ -n "${TLSFUZZER_DIR:-}" ] && [ -d "$TLSFUZZER_DIR/scripts" ] ||
    { echo "set TLSFUZZER_DIR to a tlsfuzzer checkout (with scripts/)" >&2; exit 2; }
TLSFUZZER_DIR=$(cd "$TLSFUZZER_DIR" && pwd)

if [ -z "${PYTHON:-}" ]; then
    VENV=${VENV:-/tmp/tlsfuzzer-venv}
    if ! "$VENV/bin/python" -c 'import tlslite, ecdsa' 2>/dev/null; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q "$(grep -m1 tlslite "$TLSFUZZER_DIR/requirements.txt" 2>/dev/null || echo tlslite-ng)" ecdsa
    fi
    PYTHON=$VENV/bin/python
fi

# TLS 1.3 scripts for an RSA certificate, then for an ECDSA one; then TLS 1.2
# scripts that probe the same record-layer paths.
RSA_SCRIPTS_DEFAULT="test-tls13-conversation.py test-tls13-zero-content-type.py test-tls13-zero-length-data.py
test-tls13-keyupdate.py test-tls13-0rtt-garbage.py test-tls13-multiple-ccs-messages.py test-tls13-ccs.py
test-tls13-empty-alert.py test-tls13-unencrypted-alert.py test-tls13-finished.py test-tls13-finished-plaintext.py
test-tls13-hrr.py test-tls13-invalid-ciphers.py test-tls13-keyshare-omitted.py test-tls13-legacy-version.py
test-tls13-nociphers.py test-tls13-record-padding.py test-tls13-rsapss-signatures.py
test-tls13-serverhello-random.py test-tls13-session-resumption.py test-tls13-shuffled-extentions.py
test-tls13-symetric-ciphers.py test-tls13-unrecognised-groups.py test-tls13-version-negotiation.py
test-tls13-ecdhe-curves.py test-tls13-count-tickets.py test-tls13-connection-abort.py
test-tls13-record-layer-limits.py test-tls13-signature-algorithms.py test-tls13-ffdhe-sanity.py
test-tls13-psk_dhe_ke.py test-tls13-psk_ke.py test-tls13-large-number-of-extensions.py
test-conversation.py test-zero-length-data.py test-invalid-content-type.py test-ccs.py"
ECDSA_SCRIPTS_DEFAULT="test-tls13-ecdsa-support.py"
ECHO_SCRIPTS_DEFAULT="test-tls13-lengths.py"
# SCRIPTS replaces the RSA list and empties the others unless they are set too.
RSA_SCRIPTS=${SCRIPTS:-$RSA_SCRIPTS_DEFAULT}
if [ -n "${SCRIPTS:-}" ]; then
    ECDSA_SCRIPTS=${ECDSA_SCRIPTS:-}; ECHO_SCRIPTS=${ECHO_SCRIPTS:-}
else
    ECDSA_SCRIPTS=${ECDSA_SCRIPTS:-$ECDSA_SCRIPTS_DEFAULT}; ECHO_SCRIPTS=${ECHO_SCRIPTS:-$ECHO_SCRIPTS_DEFAULT}
fi

# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"

C="$WORK/certs"; mkdir -p "$C"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$C/rsa.key" -out "$C/rsa.pem" -days 30 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$C/ec.key" -out "$C/ec.pem" \
    -days 30 -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
chmod 600 "$C"/*.key

B=$(port); BE=$(port); PR=$(port); PE=$(port); PX=$(port)
cat > "$WORK/shardtls.conf" <<CONF
add ssl certKey rsa -cert certs/rsa.pem -key certs/rsa.key
add ssl certKey ec -cert certs/ec.pem -key certs/ec.key
add ssl profile tickets -tls12 ENABLED -tls13 ENABLED -sessReuse ENABLED -sessTimeout 300
add service web 127.0.0.1 $B TCP
add service echo 127.0.0.1 $BE TCP
add lb vserver rsa SSL_TCP 127.0.0.1 $PR
bind ssl vserver rsa -certkeyName rsa
set ssl vserver rsa -sslProfile tickets
bind lb vserver rsa web
add lb vserver ecdsa SSL_TCP 127.0.0.1 $PE
bind ssl vserver ecdsa -certkeyName ec
bind lb vserver ecdsa web
add lb vserver echo SSL_TCP 127.0.0.1 $PX
bind ssl vserver echo -certkeyName rsa
bind lb vserver echo echo
CONF

"$BIN" test-server --listen "127.0.0.1:$B" --mode http >/dev/null 2>&1 & pids+=($!)
"$BIN" test-server --listen "127.0.0.1:$BE" --mode echo >/dev/null 2>&1 & pids+=($!)
SHARDTLS_LOG=${SHARDTLS_LOG:-warn} "$BIN" run -c "$WORK/shardtls.conf" --shards 2 --admin "$WORK/admin.sock" \
    2>"$WORK/proxy.log" & pids+=($!)
for _ in $(seq 100); do [ -S "$WORK/admin.sock" ] && break; sleep 0.1; done
sleep 0.5

LOGS="$OUTDIR/tlsfuzzer-$LABEL"
rm -rf "$LOGS"; mkdir -p "$LOGS"
run_one() { # port script
    local port=$1 s=$2 t0 rc extra=()
    # TLS 1.2 probes default to CBC suites, which rustls does not implement:
    # give them an ECDHE-RSA AES-GCM suite instead.
    case $s in
    test-tls13-*.py) [ "$s" = test-tls13-version-negotiation.py ] && extra=(-C TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) ;;
    *) extra=(-C TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) ;;
    esac
    t0=$(date +%s)
    (cd "$TLSFUZZER_DIR" && timeout "$PER_SCRIPT" "$PYTHON" "scripts/$s" -h localhost -p "$port" "${extra[@]}") \
        >"$LOGS/$s.log" 2>&1 && rc=0 || rc=$?
    echo "rc=$rc seconds=$(( $(date +%s) - t0 ))" >>"$LOGS/$s.log"
}
export -f run_one
export TLSFUZZER_DIR PER_SCRIPT PYTHON LOGS
{
    for s in $RSA_SCRIPTS; do echo "$PR $s"; done
    for s in $ECDSA_SCRIPTS; do echo "$PE $s"; done
    for s in $ECHO_SCRIPTS; do echo "$PX $s"; done
} | xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"'

"$PYTHON" - "$LOGS" "$OUTDIR/tlsfuzzer-$LABEL.md" "$BIN" <<'PY'
import os, re, sys
logs, out, binary = sys.argv[1:4]
rows, fails = [], []
for name in sorted(n for n in os.listdir(logs) if n.endswith(".py.log")):
    text = open(os.path.join(logs, name), errors="replace").read()
    script = name[:-4]
    def count(key):
        m = re.findall(rf"^{key}: (\d+)$", text, re.M)
        return int(m[-1]) if m else None
    rc = re.findall(r"^rc=(\d+) seconds=(\d+)$", text, re.M)[-1]
    total, fail, xfail, skip, pas = (count(k) for k in ("TOTAL", "FAIL", "XFAIL", "SKIP", "PASS"))
    note = ""
    if rc[0] == "124":
        note = "timed out"
    elif total is None:
        last = [l for l in text.splitlines() if l.strip()][-3:-1]
        note = "did not run: " + " / ".join(last)[:160]
    rows.append((script, total, pas, fail, rc[1], note))
    m = re.search(r"^FAILED:\n((?:\t.*\n)+)", text, re.M)
    if m:
        for l in m.group(1).splitlines():
            fails.append((script, l.strip().strip("'\"")))
with open(out, "w") as f:
    f.write(f"# tlsfuzzer against {binary}\n\n")
    f.write("| script | conversations | pass | fail | seconds | note |\n|---|---|---|---|---|---|\n")
    for r in rows:
        f.write("| " + " | ".join("" if v is None else str(v) for v in r) + " |\n")
    tot = sum(r[1] or 0 for r in rows); bad = sum(r[3] or 0 for r in rows)
    f.write(f"\n{len(rows)} scripts, {tot} conversations, {bad} failed.\n\n## Failing conversations\n\n")
    # At most 12 per script: some fail the same way a thousand times.
    by = {}
    for s, c in fails:
        by.setdefault(s, []).append(c)
    for s, cs in by.items():
        for c in cs[:12]:
            f.write(f"- {s}: {c}\n")
        if len(cs) > 12:
            f.write(f"- {s}: ... and {len(cs) - 12} more\n")
print(open(out).read())
PY
cp "$WORK/proxy.log" "$LOGS/proxy.log"
if grep -q panicked "$WORK/proxy.log"; then echo "the proxy panicked:"; cat "$WORK/proxy.log"; exit 1; fi
