#!/usr/bin/env bash
# Interop against real third-party servers on loopback: Postfix's smtpd with
# STARTTLS and a discarding transport, and python3-aiosmtpd with STARTTLS and
# AUTH (and implicit TLS). Messages are accepted, TLS 1.3 negotiated, AUTH
# never sent before TLS.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup


# --- Postfix smtpd, STARTTLS, discard ---
PF=$E2E_TMP/postfix
PF_PORT=$(free_port)
check "postfix: private instance started" start_postfix "$PF" "$PF_PORT" "$CERTS/server.pem" "$CERTS/server.key"
timeout 120 "$RM" blast --server "localhost:$PF_PORT" --count 200 --concurrency 5 \
    --msgs-per-conn 20 --tls verify --ca "$CERTS/ca.pem" --json \
    --records "$E2E_TMP/pf.records" >"$E2E_TMP/pf.json" 2>"$E2E_TMP/pf.err"
echo "postfix: $(cat "$E2E_TMP/pf.json")"
check_eq "postfix: 200 accepted" 200 "$(jget "$E2E_TMP/pf.json" accepted)"
PF_TLS=$(( $(jget "$E2E_TMP/pf.json" tls_full) + $(jget "$E2E_TMP/pf.json" tls_resumed) ))
check "postfix: at least 10 TLS sessions" test "$PF_TLS" -ge 10
check_eq "postfix: TLS 1.3 on every session" "$PF_TLS" "$(jget "$E2E_TMP/pf.json" tls13)"
check_eq "postfix: certificate verified on every session" "$PF_TLS" "$(jget "$E2E_TMP/pf.json" verify_ok)"
check_eq "postfix: nothing in plaintext" 0 "$(jget "$E2E_TMP/pf.json" tls_none)"
check "postfix: smtpd logged TLSv1.3 sessions" wait_for_log "$(postfix_log "$PF")" "TLSv1.3" 10
check "postfix: smtpd queued the messages" wait_for_count "$(postfix_log "$PF")" "status=sent|discard" 200 20
stop_postfix "$PF"

# --- aiosmtpd: STARTTLS + AUTH ---
AI_PORT=$(free_port)
AI_COUNT=$E2E_TMP/aiosmtpd.jsonl
start_aiosmtpd "$AI_PORT" "$CERTS/server.pem" "$CERTS/server.key" --auth alice:s3cret \
    --count-file "$AI_COUNT"
RINGMAIL_AUTH=alice:s3cret timeout 60 "$RM" blast --server "localhost:$AI_PORT" --count 30 \
    --concurrency 3 --tls verify --ca "$CERTS/ca.pem" --json >"$E2E_TMP/ai.json" 2>"$E2E_TMP/ai.err"
echo "aiosmtpd: $(cat "$E2E_TMP/ai.json")"
check_eq "aiosmtpd: 30 accepted with AUTH" 30 "$(jget "$E2E_TMP/ai.json" accepted)"
check_eq "aiosmtpd: server recorded 30 messages" 30 "$(wc -l <"$AI_COUNT" | tr -d ' ')"
check "aiosmtpd: every message arrived over TLS 1.3" /usr/bin/python3 -c '
import json,sys; rs=[json.loads(l) for l in open(sys.argv[1])]
assert all(r.get("tls_version")=="TLSv1.3" for r in rs), rs[:2]' "$AI_COUNT"
RINGMAIL_AUTH=alice:wrong timeout 60 "$RM" blast --server "localhost:$AI_PORT" --count 3 \
    --concurrency 1 --tls required --json >"$E2E_TMP/ai-bad.json" 2>/dev/null
check_eq "aiosmtpd: wrong password is a final failure" 3 "$(jget "$E2E_TMP/ai-bad.json" failed)"
check_eq "aiosmtpd: reason auth_failed" 3 "$(jget "$E2E_TMP/ai-bad.json" reasons.auth_failed)"
# AUTH must not be sent before TLS: with a plaintext policy blast refuses outright,
# and with opportunistic + a server without STARTTLS the session fails locally.
check "auth with --tls none is refused before connecting" \
    sh -c "! RINGMAIL_AUTH=a:b $RM blast --server localhost:$AI_PORT --count 1 --tls none >/dev/null 2>&1"
stop_aiosmtpd

# --- aiosmtpd: implicit TLS + AUTH ---
AI_PORT=$(free_port)
start_aiosmtpd "$AI_PORT" "$CERTS/server.pem" "$CERTS/server.key" --implicit-tls \
    --auth alice:s3cret --count-file "$E2E_TMP/ai465.jsonl"
RINGMAIL_AUTH=alice:s3cret timeout 60 "$RM" blast --server "localhost:$AI_PORT" --count 10 \
    --concurrency 2 --implicit-tls --tls verify --ca "$CERTS/ca.pem" --json \
    >"$E2E_TMP/ai465.json" 2>"$E2E_TMP/ai465.err"
echo "aiosmtpd 465: $(cat "$E2E_TMP/ai465.json")"
check_eq "aiosmtpd implicit TLS: 10 accepted" 10 "$(jget "$E2E_TMP/ai465.json" accepted)"
stop_aiosmtpd

e2e_finish
