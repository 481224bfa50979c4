#!/usr/bin/env bash
# make demo: ringmail's main job end to end on this machine. Makes a test
# CA and certificate, starts `ringmail sink` on loopback, delivers 100,000
# generated 2 KB messages over STARTTLS with `ringmail blast`, and prints
# what the client measured and what the sink counted.
set -eu
BUILD=${1:-build}
COUNT=${COUNT:-100000}
. tests/e2e/lib.sh
e2e_tmpdir
make_certs "$E2E_TMP/certs"
PORT=$(free_port)
"$BUILD/ringmail" sink --listen 127.0.0.1:$PORT --tls-cert "$E2E_TMP/certs/server.pem" \
    --tls-key "$E2E_TMP/certs/server.key" --threads 1 --stats "$E2E_TMP/sink.json" >/dev/null &
SINK=$!
e2e_cleanup "kill $SINK"
wait_port 127.0.0.1 "$PORT" 10
echo "delivering $COUNT messages over STARTTLS (TLS 1.3, certificate verified) to ringmail sink on 127.0.0.1:$PORT"
"$BUILD/ringmail" blast --server localhost:$PORT --count "$COUNT" --concurrency 20 --threads 1 \
    --tls verify --ca "$E2E_TMP/certs/ca.pem"
kill -TERM "$SINK"
wait "$SINK"
echo "the sink counted $(jget "$E2E_TMP/sink.json" messages) messages, $(jget "$E2E_TMP/sink.json" tls_handshakes) TLS handshakes"
