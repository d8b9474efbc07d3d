#!/usr/bin/env bash
# `make demo`: the whole job end to end on loopback, from a clean clone.
#
#   1. build both binaries (release) and the episode generator
#   2. a throwaway lab PKI with scripts/pki.sh (CA, receiver cert, lab-01)
#   3. start cis490-receiver on 127.0.0.1 (an ephemeral port), mTLS + token
#   4. cis490-shipper --ping
#   5. generate two episodes, cis490-shipper --once, show them stored
#   6. verify a stored tarball with the zstd CLI and GNU tar
#
# Everything lives under ./demo (removed first); the receiver is stopped on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO=$ROOT/demo
for tool in openssl zstd tar; do
    command -v "$tool" >/dev/null || { echo "demo: $tool is missing: apt-get install $tool" >&2; exit 1; }
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build"
cargo build --release --bins --example mkepisodes
BIN=$ROOT/target/release

rm -rf "$DEMO"
mkdir -p "$DEMO"

step "a throwaway lab PKI (scripts/pki.sh)"
scripts/pki.sh --dir "$DEMO/pki" init
scripts/pki.sh --dir "$DEMO/pki" server localhost 127.0.0.1
hosts_line=$(scripts/pki.sh --dir "$DEMO/pki" host lab-01 | tail -n 1)
echo "$hosts_line"

cat >"$DEMO/receiver.toml" <<TOML
listen = "127.0.0.1:0"
store_dir = "$DEMO/store"
cert_file = "$DEMO/pki/server.crt"
key_file = "$DEMO/pki/server.key"
client_ca_file = "$DEMO/pki/ca.crt"

[hosts]
$hosts_line
TOML

step "start cis490-receiver"
"$BIN/cis490-receiver" --config "$DEMO/receiver.toml" 2>"$DEMO/receiver.log" &
RECEIVER_PID=$!
trap 'kill "$RECEIVER_PID" 2>/dev/null || true; wait "$RECEIVER_PID" 2>/dev/null || true' EXIT
# Readiness: the receiver's own "listening on" line (bounded wait).
port=""
for _ in $(seq 1 200); do
    port=$(sed -n 's/.*listening on https:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$DEMO/receiver.log")
    [[ -n $port ]] && break
    kill -0 "$RECEIVER_PID" 2>/dev/null || { cat "$DEMO/receiver.log"; exit 1; }
    sleep 0.05
done
[[ -n $port ]] || { echo "demo: receiver did not start" >&2; cat "$DEMO/receiver.log"; exit 1; }
cat "$DEMO/receiver.log"

mkdir -p "$DEMO/lab-host"
cat >"$DEMO/lab-host/shipper.toml" <<TOML
host_id = "lab-01"
data_dir = "$DEMO/lab-host/data"
receiver = "https://localhost:$port"
ca_file = "$DEMO/pki/ca.crt"
cert_file = "$DEMO/pki/hosts/lab-01.crt"
key_file = "$DEMO/pki/hosts/lab-01.key"
token_file = "$DEMO/pki/hosts/lab-01.token"
TOML
mkdir -p "$DEMO/lab-host/data"

step "cis490-shipper --ping"
"$BIN/cis490-shipper" --config "$DEMO/lab-host/shipper.toml" --ping

step "record two episodes (synthetic), then cis490-shipper --once"
"$BIN/examples/mkepisodes" "$DEMO/lab-host/data" 2 64
"$BIN/cis490-shipper" --config "$DEMO/lab-host/shipper.toml" --once

step "what the receiver stored"
ls -l "$DEMO/store/lab-01"
(cd "$DEMO/store/lab-01" && sha256sum -c ./*.sha256)
first=$(find "$DEMO/store/lab-01" -name "*.tar.zst" | sort | sed -n 1p)
zstd -t "$first"
zstd -dc "$first" | tar -tvf - | sed -n 1,5p
echo "..."
step "the lab host now"
ls "$DEMO/lab-host/data/shipped" "$DEMO/lab-host/data/outbox" "$DEMO/lab-host/data/episodes"
step "receiver log"
cat "$DEMO/receiver.log"
echo
echo "demo: done. Everything is under ./demo; the receiver stops now."
