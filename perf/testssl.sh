#!/usr/bin/env bash
# Run testssl.sh (Debian package `testssl.sh`) against a vserver configured
# like examples/shardtls.conf: ECDSA P-256 site certificate chained to an
# intermediate, the `modern` cipher group (TLS 1.3 AES-128-GCM and
# CHACHA20, TLS 1.2 ECDHE-ECDSA-AES128-GCM), curves X25519 and P-256,
# session reuse on. A second vserver with no cipher or curve binding shows
# the built-in defaults.
#
#   perf/testssl.sh                 # uses target/debug/shardtls (cargo build first)
#   SHARDTLS_BIN=target/release/shardtls perf/testssl.sh
#
# Writes perf/testssl-<vserver>.json and prints testssl's findings; the
# findings and what each means for shardtls are in perf/testssl-findings.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SHARDTLS_BIN:-$ROOT/target/debug/shardtls}
OUTDIR=${OUTDIR:-$ROOT/perf}
TESTSSL=$(command -v testssl || command -v testssl.sh || true)
[ -x "$BIN" ] || { echo "no $BIN: run cargo build first" >&2; exit 2; }
[ -n "$TESTSSL" ] || { echo "testssl.sh is not installed (apt-get install testssl.sh)" >&2; exit 2; }

# shellcheck source=perf/lib.sh
. "$ROOT/perf/lib.sh"

# A root, an intermediate and a site certificate (ECDSA P-256).
C="$WORK/certs"; mkdir -p "$C"
ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
ec "$C/root.key"; ec "$C/intermediate.key"; ec "$C/site.key"; chmod 600 "$C"/*.key
openssl req -x509 -new -key "$C/root.key" -subj "/CN=testssl root" -days 365 -out "$C/root.pem" \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -key "$C/intermediate.key" -subj "/CN=testssl intermediate" -out "$C/intermediate.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' > "$C/int.ext"
openssl x509 -req -in "$C/intermediate.csr" -CA "$C/root.pem" -CAkey "$C/root.key" -CAcreateserial \
    -days 365 -extfile "$C/int.ext" -out "$C/intermediate.pem" 2>/dev/null
openssl req -new -key "$C/site.key" -subj "/CN=localhost" -out "$C/site.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' > "$C/site.ext"
openssl x509 -req -in "$C/site.csr" -CA "$C/intermediate.pem" -CAkey "$C/intermediate.key" -CAcreateserial \
    -days 365 -extfile "$C/site.ext" -out "$C/site.pem" 2>/dev/null

B1=$(port); B2=$(port); P1=$(port); P2=$(port)
cat > "$WORK/shardtls.conf" <<CONF
add ssl certKey site -cert certs/site.pem -key certs/site.key
add ssl certKey intermediate -cert certs/intermediate.pem
link ssl certKey site intermediate
add ssl cipher modern
bind ssl cipher modern -cipherName TLS1.3-AES128-GCM-SHA256
bind ssl cipher modern -cipherName TLS1.3-CHACHA20-POLY1305-SHA256
bind ssl cipher modern -cipherName TLS1.2-ECDHE-ECDSA-AES128-GCM-SHA256
add ssl profile fe -tls12 ENABLED -tls13 ENABLED -sessReuse ENABLED -sessTimeout 300 -drainTimeout 600
add serviceGroup web TCP
bind serviceGroup web 127.0.0.1 $B1
bind serviceGroup web 127.0.0.1 $B2
add lb vserver www SSL_TCP 127.0.0.1 $P1 -maxClients 20000 -cltTimeout 180
set ssl vserver www -sslProfile fe
bind ssl vserver www -certkeyName site
bind ssl vserver www -cipherName modern
bind ssl vserver www -eccCurveName X25519
bind ssl vserver www -eccCurveName P_256
bind lb vserver www web
add lb vserver defaults SSL_TCP 127.0.0.1 $P2
bind ssl vserver defaults -certkeyName site
bind lb vserver defaults web
CONF

"$BIN" test-server --listen "127.0.0.1:$B1" --mode http >/dev/null 2>&1 & pids+=($!)
"$BIN" test-server --listen "127.0.0.1:$B2" --mode http >/dev/null 2>&1 & pids+=($!)
SHARDTLS_LOG=warn "$BIN" run -c "$WORK/shardtls.conf" --shards 1 --admin "$WORK/admin.sock" 2>"$WORK/proxy.log" & pids+=($!)
for _ in $(seq 100); do [ -S "$WORK/admin.sock" ] && break; sleep 0.1; done
sleep 0.5

for vs in www:$P1 defaults:$P2; do
    name=${vs%%:*}; port=${vs##*:}
    json="$OUTDIR/testssl-$name.json"
    rm -f "$json"
    echo "== testssl.sh against vserver $name (127.0.0.1:$port)"
    # --ip one: no DNS; exit status is the number of findings, not a failure.
    "$TESTSSL" --quiet --color 0 --warnings off --ip one --add-ca "$C/root.pem" --jsonfile "$json" "127.0.0.1:$port" || true
    python3 - "$json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
bad = [r for r in rows if r.get("severity") in ("LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN")]
print(f"-- {len(rows)} checks, {len(bad)} flagged (LOW or worse):")
for r in bad:
    print(f"   {r['severity']:8} {r['id']}: {r['finding']}")
PY
done
if grep -q panicked "$WORK/proxy.log"; then echo "the proxy panicked:"; cat "$WORK/proxy.log"; exit 1; fi
