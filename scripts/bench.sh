#!/usr/bin/env bash
# `make bench`: cis490-shipper and cis490-receiver against the obvious
# alternatives, on synthetic data sets, loopback only (127.0.0.1), in one run.
#
#   A  pack:    tar -cf - EP | zstd -3 -T1 > f
#               vs the shipper packing (pack + sha256 + fsync), isolated by a
#               second receiver that refuses every upload with 413 before
#               the body is sent; the end-to-end shipper is shown as well
#   B  full:    tar | zstd -3 -T1 > f; openssl dgst -sha256 f; curl -T f
#               (mTLS, token, Content-Digest)  vs  cis490-shipper --once
#   C  upload:  curl -T of ready tarballs  vs  the shipper uploading ready
#               outbox/<id>.tar.zst files (sidecar digests, no packing)
#   D  ingest:  8 parallel `curl -T` of ready tarballs (client certificate)
#               to our receiver  vs  to Debian's nginx (dav_methods PUT,
#               TLS with ssl_verify_client on)
#   E  small:   300 episodes of 64 KiB: cis490-shipper --once  vs  a loop
#               of B's pipeline per episode; plus one untimed pass of each
#               of shipper and receiver under `strace -c -w -f` (wall time in syscalls)
#   F  link:    a 100 MB/s link (the shipper's max_upload_rate): --once end
#               to end, uploading while packing (the default)  vs  the same
#               shipper uploading ready tarballs from outbox/ (upload time
#               alone); and --once with upload_while_packing = false
#
# Supplementary rows explain the main ones: the shipper packing with
# compression_threads = 1 (zstd's own worker thread, like `zstd -T1`), B's
# pipeline with coreutils' `sha256sum` in place of `openssl dgst -sha256`
# (coreutils 9.1's sha256sum uses no SHA extensions), and an empty --once.
#
# Everything lives in bench-data/ (gitignored) and is left there for
# inspection; results go to bench-data/results.md. The receivers and the
# nginx this script starts are stopped (by PID) when it exits.
#
# Environment:
#   BENCH_EPISODES        episodes in the main data set       [default: 4]
#   BENCH_MIB             MiB per episode                     [default: 256]
#   BENCH_SMALL_EPISODES  episodes in the small data set (E)  [default: 300]
#   BENCH_SMALL_KIB       KiB per small episode               [default: 64]
#   BENCH_PARALLEL        parallel uploads in D               [default: 8]
#   BENCH_RATE            max_upload_rate in F                [default: 100MB/s]
#   BENCH_RUNS            hyperfine runs per command          [default: 3]
#   BENCH_NGINX_PORT      nginx's port on 127.0.0.1           [default: a free one]
#   BENCH_DIR             where everything goes               [default: bench-data]
#   CARGO                 cargo to build with                 [default: cargo]
#
# Each timed run starts from the same state, set up by hyperfine --prepare
# (untimed): a fresh copy of the episodes (`cp -al`: hard links, the shipper
# only reads the files and renames the directories), an empty store, and a
# `sync` so no earlier run's writeback lands in the next one. The source data
# is in the page cache for every command alike.
set -euo pipefail

PROG=bench.sh
SELF=$(realpath "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# ---------------------------------------------------------------------------
# Steps run by hyperfine (`bash bench.sh _STEP [SET]`). They read their paths
# from the environment the main run exports. SET: `main` (the default) or
# `small` (E's data set).

src_of() { # SET -> the data set's episodes/ parent
    case $1 in
        main) printf '%s\n' "$BD/src" ;;
        small) printf '%s\n' "$BD/src-small" ;;
        *) die "unknown data set $1" ;;
    esac
}
ship_of() { # SET -> the shipper's data_dir for it
    case $1 in
        main) printf '%s\n' "$BD/ship" ;;
        small) printf '%s\n' "$BD/ship-small" ;;
        *) die "unknown data set $1" ;;
    esac
}

# The episode ids of data set SET, one a line.
episode_ids() {
    local d
    for d in "$(src_of "${1:-main}")"/episodes/*/; do
        d=${d%/}
        printf '%s\n' "${d##*/}"
    done
}

# Empty the stores of host lab-01 (a run stores the same ids every time);
# nginx's as well unless $1 is `ours`.
wipe_store() {
    rm -rf "$BD/store/lab-01" "$BD/store-413/lab-01"
    [[ ${1:-} == ours ]] || rm -rf "$BD/nginx/root/lab-01"
}

# A fresh shipper data_dir for SET: hard-linked episodes.
reset_ship() {
    local set=$1 ship
    ship=$(ship_of "$set")
    rm -rf "$ship"
    mkdir -p "$ship/episodes" "$ship/outbox" "$ship/shipped"
    cp -al "$(src_of "$set")"/episodes/. "$ship/episodes/"
}

# The data_dir for uploading ready tarballs ($BD/ship-ready): the ready
# tarballs and sidecars in outbox/, beside the very episode trees they were
# packed from. A sidecar records the tree's fingerprint (inodes, ctimes:
# src/shipper/tree.rs), and the shipper repacks an episode whose tree is not
# that one, so these trees are a copy of their own (`cp -a` at setup; a
# hard link made later would move their ctimes), moved back from shipped/
# by rename after each run (the top directory's ctime is not fingerprinted).
reset_ready() {
    local ship=$BD/ship-ready id
    while read -r id; do
        if [[ -d $ship/shipped/$id ]]; then
            mv "$ship/shipped/$id" "$ship/episodes/$id"
        fi
        [[ -d $ship/episodes/$id ]] || die "$ship/episodes/$id is gone: rerun the whole script"
    done < <(episode_ids)
    rm -rf "$ship/outbox" "$ship/receipts" "$ship/state.json"
    mkdir -p "$ship/outbox"
    while read -r id; do
        ln "$BD/tarballs/$id.tar.zst" "$ship/outbox/$id.tar.zst"
        cp "$BD/tarballs/$id.tar.zst.sha256" "$ship/outbox/"
    done < <(episode_ids)
}

# Base64 of the bytes whose lowercase hex is $1 (for Content-Digest), into
# $B64_OUT; in bash itself, so the alternative pays no extra process.
B64_ALPHABET=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/
hex_to_b64() {
    local hex=$1 a=$B64_ALPHABET out='' i n
    for ((i = 0; i + 6 <= ${#hex}; i += 6)); do
        n=$((16#${hex:i:6}))
        out+=${a:$(((n >> 18) & 63)):1}${a:$(((n >> 12) & 63)):1}${a:$(((n >> 6) & 63)):1}${a:$((n & 63)):1}
    done
    case $((${#hex} - i)) in
        4)
            n=$((16#${hex:i:4} << 8))
            out+=${a:$(((n >> 18) & 63)):1}${a:$(((n >> 12) & 63)):1}${a:$(((n >> 6) & 63)):1}=
            ;;
        2)
            n=$((16#${hex:i:2} << 16))
            out+=${a:$(((n >> 18) & 63)):1}${a:$(((n >> 12) & 63)):1}==
            ;;
    esac
    B64_OUT=$out
}

# The sha256 of FILE in lowercase hex. BENCH_HASHER: openssl (default) or
# sha256sum.
hash_hex() {
    local out
    if [[ ${BENCH_HASHER:-openssl} == sha256sum ]]; then
        out=$(sha256sum "$1")
    else
        out=$(openssl dgst -sha256 -r "$1")
    fi
    printf '%s\n' "${out%% *}"
}

# PUT FILE as episode ID with curl; fails unless the receiver answers 201.
curl_put() {
    local file=$1 id=$2 hex=$3 code
    hex_to_b64 "$hex"
    code=$(curl -sS -o "$BD/alt/last-reply.json" -w '%{http_code}' \
        --cacert "$BD/pki/ca.crt" \
        --cert "$BD/pki/hosts/lab-01.crt" --key "$BD/pki/hosts/lab-01.key" \
        -H @"$BD/curl-headers" \
        -H "Content-Digest: sha-256=:$B64_OUT:" \
        -T "$file" "https://localhost:$BENCH_PORT/v1/episodes/lab-01/$id")
    [[ $code == 201 ]] || die "curl PUT $id: HTTP $code: $(cat "$BD/alt/last-reply.json")"
}

# D: the prepared uploads to TARGET (ours or nginx), BENCH_PARALLEL at a
# time; each must be answered 201.
par_upload() {
    local target=$1 n
    n=$(wc -l <"$BD/par/$target.list")
    xargs -P "$BENCH_PARALLEL" -n 1 curl -K <"$BD/par/$target.list" >"$BD/par/$target.codes" ||
        die "parallel upload to $target: a curl failed (codes in $BD/par/$target.codes)"
    [[ $(grep -c '^201$' "$BD/par/$target.codes") == "$n" ]] ||
        die "parallel upload to $target: not every answer was 201 (see $BD/par/$target.codes)"
}

step() {
    local id hex rc config set=${2:-main} src ship
    case $1 in
        _prep-alt)
            rm -rf "$BD/alt"
            mkdir -p "$BD/alt"
            wipe_store
            sync
            ;;
        _prep-ship)
            reset_ship "$set"
            wipe_store
            sync
            ;;
        _prep-ship-outbox)
            reset_ready
            wipe_store
            sync
            ;;
        _prep-store)
            # D: `ours` keeps nginx's last copies, checked after the runs.
            wipe_store "${2:-}"
            sync
            ;;
        _alt-pack)
            while read -r id; do
                tar -C "$BD/src/episodes" -cf - "$id" | zstd -q -3 -T1 >"$BD/alt/$id.tar.zst"
            done < <(episode_ids)
            ;;
        _alt-full)
            src=$(src_of "$set")
            while read -r id; do
                tar -C "$src/episodes" -cf - "$id" | zstd -q -3 -T1 >"$BD/alt/$id.tar.zst"
                hex=$(hash_hex "$BD/alt/$id.tar.zst")
                curl_put "$BD/alt/$id.tar.zst" "$id" "$hex"
            done < <(episode_ids "$set")
            ;;
        _alt-upload)
            while read -r id; do
                read -r hex _ <"$BD/tarballs/$id.tar.zst.sha256"
                curl_put "$BD/tarballs/$id.tar.zst" "$id" "$hex"
            done < <(episode_ids)
            ;;
        _par-ours) par_upload ours ;;
        _par-nginx) par_upload nginx ;;
        _par-nginx-sync)
            # As durable as the receiver's answer: every file and the
            # directory on disk (sync FILE... fsyncs each).
            par_upload nginx
            sync "$BD/nginx/root/lab-01"/* "$BD/nginx/root/lab-01"
            ;;
        _ours-pack)
            # The 413 receiver refuses each upload from its head (Expect:
            # 100-continue, so no body is sent): every episode is packed,
            # hashed and fsynced, then counted as rejected (exit 65).
            config=${2:-$BD/shipper-pack.toml}
            ship=${3:-$BD/ship}
            rc=0
            "$SHIPPER" --config "$config" --once 2>"$BD/logs/ours-pack.log" || rc=$?
            [[ $rc == 65 ]] || die "shipper (pack only) exited $rc, expected 65; see $BD/logs/ours-pack.log"
            [[ $(find "$ship/outbox" -name '*.tar.zst' | wc -l) == "$(episode_ids | wc -l)" ]] ||
                die "shipper (pack only) did not leave every tarball in outbox/"
            ;;
        *) die "unknown step $1" ;;
    esac
}

if [[ ${1:-} == _* ]]; then
    for v in BD SHIPPER BENCH_PORT BENCH_PARALLEL; do
        [[ -n ${!v:-} ]] || die "$1: \$$v unset (steps are run by the main script)"
    done
    step "$@"
    exit 0
fi
[[ $# -eq 0 ]] || die "no arguments expected; see the comment at the top of $SELF"

# ---------------------------------------------------------------------------
# The main run.

EPISODES=${BENCH_EPISODES:-4}
MIB=${BENCH_MIB:-256}
SMALL_EPISODES=${BENCH_SMALL_EPISODES:-300}
SMALL_KIB=${BENCH_SMALL_KIB:-64}
BENCH_PARALLEL=${BENCH_PARALLEL:-8}
RATE=${BENCH_RATE:-100MB/s}
RUNS=${BENCH_RUNS:-3}
CARGO=${CARGO:-cargo}
[[ $EPISODES =~ ^[1-9][0-9]*$ ]] || die "BENCH_EPISODES must be a positive integer"
[[ $MIB =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_MIB must be a number"
[[ $SMALL_EPISODES =~ ^[1-9][0-9]*$ ]] || die "BENCH_SMALL_EPISODES must be a positive integer"
[[ $SMALL_KIB =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_SMALL_KIB must be a number"
[[ $BENCH_PARALLEL =~ ^[1-9][0-9]*$ ]] || die "BENCH_PARALLEL must be a positive integer"
[[ $RATE =~ ^[0-9]+(\.[0-9]+)?[A-Za-z]+/s$ ]] || die "BENCH_RATE must look like 100MB/s"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ -z ${BENCH_NGINX_PORT:-} || $BENCH_NGINX_PORT =~ ^[1-9][0-9]{3,4}$ ]] ||
    die "BENCH_NGINX_PORT must be a port number (1000-65535)"

missing=()
for tool in hyperfine:hyperfine zstd:zstd curl:curl openssl:openssl /usr/bin/time:time \
    tar:tar sha256sum:coreutils awk:gawk nginx:nginx-light strace:strace xargs:findutils; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
[[ ${#missing[@]} -eq 0 ]] || die "missing tools: apt-get install ${missing[*]}"
command -v "$CARGO" >/dev/null || die "$CARGO not found: install Rust (https://rustup.rs)"
nginx -V 2>&1 | grep -q -- --with-http_dav_module ||
    die "this nginx has no WebDAV module (dav_methods PUT): apt-get install nginx-light"

cd "$ROOT"
BD=$(realpath -m "${BENCH_DIR:-bench-data}")
mkdir -p "$BD"/logs "$BD"/results
SHIPPER=$ROOT/target/release/cis490-shipper
RECEIVER=$ROOT/target/release/cis490-receiver
MKEPISODES=$ROOT/target/release/examples/mkepisodes
export BD SHIPPER BENCH_PARALLEL

# 1. Build.
say "building release binaries and the generator"
"$CARGO" build --release --bins --examples

# 2. The data sets, each regenerated only when its shape changed.
make_set() { # DIR COUNT MIB
    local stamp="$2 x $3 MiB"
    if [[ $(cat "$1/stamp" 2>/dev/null) != "$stamp" ]]; then
        say "generating $stamp under $1"
        rm -rf "$1"
        "$MKEPISODES" "$1" "$2" "$3" >/dev/null
        printf '%s\n' "$stamp" >"$1/stamp"
    else
        say "reusing the data set in $1 ($stamp)"
    fi
}
bytes_under() { # DIR NAME-PATTERN -> total bytes of the matching files
    find "$1" -type f -name "$2" -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}
make_set "$BD/src" "$EPISODES" "$MIB"
SMALL_MIB=$(awk -v k="$SMALL_KIB" 'BEGIN {printf "%.10g", k / 1024}')
make_set "$BD/src-small" "$SMALL_EPISODES" "$SMALL_MIB"
RAW_BYTES=$(bytes_under "$BD/src/episodes" '*')
SMALL_RAW_BYTES=$(bytes_under "$BD/src-small/episodes" '*')

# 3. PKI, configs, receivers, nginx.
rm -rf "$BD/pki"
bash "$ROOT/scripts/pki.sh" --dir "$BD/pki" init >/dev/null
bash "$ROOT/scripts/pki.sh" --dir "$BD/pki" server localhost 127.0.0.1 >/dev/null
HOSTS_LINE=$(bash "$ROOT/scripts/pki.sh" --dir "$BD/pki" host lab-01 2>/dev/null)
TOKEN=$(cat "$BD/pki/hosts/lab-01.token")
(
    umask 077
    printf 'Authorization: Bearer %s\nContent-Type: application/zstd\n' "$TOKEN" >"$BD/curl-headers"
)

rm -rf "$BD/store" "$BD/store-413" "$BD/nginx"
mkdir -p "$BD/store" "$BD/store-413" "$BD/nginx/root" "$BD/nginx/tmp"
receiver_config() { # STORE [EXTRA]
    cat <<EOF
listen = "127.0.0.1:0"
store_dir = "$1"
cert_file = "$BD/pki/server.crt"
key_file = "$BD/pki/server.key"
client_ca_file = "$BD/pki/ca.crt"
# D opens BENCH_PARALLEL connections at once from 127.0.0.1 (default 8).
max_connections_per_ip = $((BENCH_PARALLEL + 8))
${2:-}

[hosts]
$HOSTS_LINE
EOF
}
receiver_config "$BD/store" >"$BD/receiver.toml"
# Refuses every upload (413) before its body: isolates the shipper's packing.
receiver_config "$BD/store-413" "max_body_bytes = 1" >"$BD/receiver-413.toml"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# start_receiver NAME CONFIG: starts it, waits for its `listening on` line
# (no sleep), and sets PORT and STARTED_PID. Its stderr goes on to
# logs/NAME.log.
start_receiver() {
    local name=$1 config=$2 fifo=$BD/logs/$1.fifo log=$BD/logs/$1.log line fd
    PORT=
    rm -f "$fifo" "$log"
    mkfifo "$fifo"
    "$RECEIVER" --config "$config" </dev/null >/dev/null 2>"$fifo" &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    exec {fd}<"$fifo"
    while IFS= read -r -t 30 -u "$fd" line; do
        printf '%s\n' "$line" >>"$log"
        if [[ $line =~ listening\ on\ https://127\.0\.0\.1:([0-9]+) ]]; then
            PORT=${BASH_REMATCH[1]}
            break
        fi
    done
    if [[ -z $PORT ]]; then
        exec {fd}<&-
        die "receiver $name did not report 'listening on https://127.0.0.1:PORT' within 30 s; see $log"
    fi
    # Keep draining its log, or it would block once the pipe is full; this
    # ends by itself when the receiver exits.
    cat <&"$fd" >>"$log" &
    PIDS+=("$!")
    exec {fd}<&-
}

start_receiver receiver "$BD/receiver.toml"
BENCH_PORT=$PORT
RECEIVER_PID=$STARTED_PID
start_receiver receiver-413 "$BD/receiver-413.toml"
PORT_413=$PORT
export BENCH_PORT
say "receivers on 127.0.0.1:$BENCH_PORT (stores) and 127.0.0.1:$PORT_413 (refuses with 413)"

# nginx as a plain foreground process of ours (daemon off; its master is
# our child, its workers the master's), every path under $BD/nginx; the
# body temp files on the same file system as the root, so a PUT renames.
port_is_open() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -n ${BENCH_NGINX_PORT:-} ]]; then
    NGINX_PORT=$BENCH_NGINX_PORT
    ! port_is_open "$NGINX_PORT" || die "127.0.0.1:$NGINX_PORT is in use (BENCH_NGINX_PORT)"
else
    NGINX_PORT=
    for p in $(shuf -i 20000-59999 -n 50); do
        if ! port_is_open "$p"; then
            NGINX_PORT=$p
            break
        fi
    done
    [[ -n $NGINX_PORT ]] || die "found no free port for nginx; set BENCH_NGINX_PORT"
fi
N=$BD/nginx
cat >"$N/nginx.conf" <<EOF
# Written by scripts/bench.sh for row D; loopback only.
user $(id -un);
worker_processes auto;
daemon off;
pid $N/nginx.pid;
error_log $BD/logs/nginx-error.log warn;
events { worker_connections 256; }
http {
    access_log $BD/logs/nginx-access.log;
    client_body_temp_path $N/tmp;
    proxy_temp_path $N/tmp-proxy;
    fastcgi_temp_path $N/tmp-fastcgi;
    uwsgi_temp_path $N/tmp-uwsgi;
    scgi_temp_path $N/tmp-scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        server_name localhost;
        ssl_certificate $BD/pki/server.crt;
        ssl_certificate_key $BD/pki/server.key;
        ssl_client_certificate $BD/pki/ca.crt;
        ssl_verify_client on;
        # 1.22's default leaves TLS 1.3 out; the receiver speaks 1.3.
        ssl_protocols TLSv1.2 TLSv1.3;
        root $N/root;
        location / {
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }
    }
}
EOF
nginx -t -q -p "$N" -e "$BD/logs/nginx-error.log" -c "$N/nginx.conf" ||
    die "nginx refuses $N/nginx.conf; see $BD/logs/nginx-error.log"
nginx -p "$N" -e "$BD/logs/nginx-error.log" -c "$N/nginx.conf" </dev/null >/dev/null 2>"$BD/logs/nginx-stderr.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
# nginx has no readiness signal of its own: poll its port, with a deadline.
deadline=$((SECONDS + 30))
until port_is_open "$NGINX_PORT"; do
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited at start; see $BD/logs/nginx-error.log and nginx-stderr.log"
    ((SECONDS < deadline)) || die "nginx did not listen on 127.0.0.1:$NGINX_PORT within 30 s"
    sleep 0.05
done
say "nginx (PID $NGINX_PID) on 127.0.0.1:$NGINX_PORT"

shipper_config() { # DATA_DIR PORT [EXTRA]
    cat <<EOF
host_id = "lab-01"
data_dir = "$1"
receiver = "https://localhost:$2"
ca_file = "$BD/pki/ca.crt"
cert_file = "$BD/pki/hosts/lab-01.crt"
key_file = "$BD/pki/hosts/lab-01.key"
token_file = "$BD/pki/hosts/lab-01.token"
compression_level = 3
${3:-}
EOF
}
# Packing alone: packing first (the same pack code a stream runs), then the
# 413 receiver refuses the PUT head.
shipper_config "$BD/ship" "$BENCH_PORT" >"$BD/shipper.toml"
shipper_config "$BD/ship" "$PORT_413" "upload_while_packing = false" >"$BD/shipper-pack.toml"
shipper_config "$BD/ship" "$PORT_413" "upload_while_packing = false
compression_threads = 1" >"$BD/shipper-pack-t1.toml"
shipper_config "$BD/ship-small" "$BENCH_PORT" >"$BD/shipper-small.toml"
shipper_config "$BD/ship" "$BENCH_PORT" "max_upload_rate = \"$RATE\"" >"$BD/shipper-rate.toml"
shipper_config "$BD/ship-ready" "$PORT_413" "upload_while_packing = false" >"$BD/shipper-ready-pack.toml"
shipper_config "$BD/ship-ready" "$BENCH_PORT" >"$BD/shipper-ready.toml"
shipper_config "$BD/ship-ready" "$BENCH_PORT" "max_upload_rate = \"$RATE\"" >"$BD/shipper-ready-rate.toml"
shipper_config "$BD/ship" "$BENCH_PORT" "max_upload_rate = \"$RATE\"
upload_while_packing = false" >"$BD/shipper-rate-serial.toml"
rm -rf "$BD/ship-empty"
mkdir -p "$BD/ship-empty/episodes"
shipper_config "$BD/ship-empty" "$BENCH_PORT" >"$BD/shipper-empty.toml"

# Ready tarballs for C, D and F, made by the shipper itself from its own
# copy of the episodes (the 413 run leaves them in outbox/ with their
# sidecars; see reset_ready), and a first check that everything works.
say "checking the setup: one pack-only pass, the shipper and curl uploading its tarballs"
rm -rf "$BD/ship-ready" "$BD/tarballs"
mkdir -p "$BD/ship-ready/episodes" "$BD/ship-ready/outbox" "$BD/ship-ready/shipped" "$BD/tarballs"
cp -a "$BD/src/episodes/." "$BD/ship-ready/episodes/"
bash "$SELF" _ours-pack "$BD/shipper-ready-pack.toml" "$BD/ship-ready"
mv "$BD"/ship-ready/outbox/*.tar.zst "$BD"/ship-ready/outbox/*.tar.zst.sha256 "$BD/tarballs/"
bash "$SELF" _prep-ship-outbox
"$SHIPPER" --config "$BD/shipper-ready.toml" --once 2>"$BD/logs/ready-check.log" ||
    die "the shipper failed to upload the ready tarballs; see $BD/logs/ready-check.log"
! grep -E 'repacking|packed in' "$BD/logs/ready-check.log" ||
    die "the shipper packed again instead of uploading the ready tarballs; see $BD/logs/ready-check.log"
bash "$SELF" _prep-alt
bash "$SELF" _alt-upload

# D's uploads: BENCH_PARALLEL of them, the ready tarballs in turn, each as
# its own id (ID-uK), each a curl config file (client certificate; for our
# receiver also the token and Content-Digest).
rm -rf "$BD/par"
mkdir -p "$BD/par/ours" "$BD/par/nginx"
mapfile -t TARBALL_IDS < <(episode_ids)
PAR_BYTES=0
(
    umask 077
    for ((k = 0; k < BENCH_PARALLEL; k++)); do
        id=${TARBALL_IDS[k % ${#TARBALL_IDS[@]}]}
        read -r hex _ <"$BD/tarballs/$id.tar.zst.sha256"
        hex_to_b64 "$hex"
        common="silent
show-error
fail
output = \"/dev/null\"
write-out = \"%{http_code}\\n\"
cacert = \"$BD/pki/ca.crt\"
cert = \"$BD/pki/hosts/lab-01.crt\"
key = \"$BD/pki/hosts/lab-01.key\"
upload-file = \"$BD/tarballs/$id.tar.zst\""
        printf '%s\nheader = "Authorization: Bearer %s"\nheader = "Content-Type: application/zstd"\nheader = "Content-Digest: sha-256=:%s:"\nurl = "https://localhost:%s/v1/episodes/lab-01/%s-u%d"\n' \
            "$common" "$TOKEN" "$B64_OUT" "$BENCH_PORT" "$id" "$k" >"$BD/par/ours/$k.curl"
        printf '%s\nurl = "https://localhost:%s/lab-01/%s-u%d.tar.zst"\n' \
            "$common" "$NGINX_PORT" "$id" "$k" >"$BD/par/nginx/$k.curl"
        printf '%s\n' "$BD/par/ours/$k.curl" >>"$BD/par/ours.list"
        printf '%s\n' "$BD/par/nginx/$k.curl" >>"$BD/par/nginx.list"
    done
)
for ((k = 0; k < BENCH_PARALLEL; k++)); do
    id=${TARBALL_IDS[k % ${#TARBALL_IDS[@]}]}
    PAR_BYTES=$((PAR_BYTES + $(stat -c %s "$BD/tarballs/$id.tar.zst")))
done
say "checking the setup: one of D's uploads to each server"
for target in nginx ours; do
    code=$(curl -v -K "$BD/par/$target/0.curl" 2>"$BD/logs/curl-v-$target.log") ||
        die "curl PUT to $target failed: see $BD/logs/curl-v-$target.log"
    [[ $code == 201 ]] || die "$target answered a PUT with $code, expected 201"
done
tls_of() { # TARGET -> "TLSv1.3 / TLS_AES_256_GCM_SHA384", as curl -v saw it
    sed -n 's/^\* SSL connection using //p' "$BD/logs/curl-v-$1.log" | head -1
}

# 4. Measurements.
q() { printf '%q' "$1"; }
S="bash $(q "$SELF")"
SHIP="$(q "$SHIPPER") --config"
hf() { # NAME hyperfine-args... (HF_RUNS: runs, default $RUNS)
    local name=$1
    shift
    say "measuring $name"
    hyperfine --runs "${HF_RUNS:-$RUNS}" --style basic \
        --export-markdown "$BD/results/$name.md" \
        --export-csv "$BD/results/$name.csv" "$@"
}
# CPU seconds (user + system) used so far by PIDs and their threads and,
# for a PID with children (nginx's master), by the children alive now.
CLK_TCK=$(getconf CLK_TCK)
proc_cpu() {
    local pid kids=() f
    for pid in "$@"; do
        for f in /proc/"$pid"/task/*/children; do
            # shellcheck disable=SC2207 # a list of PIDs
            kids+=($(cat "$f" 2>/dev/null))
        done
    done
    for pid in "$@" "${kids[@]}"; do
        cat "/proc/$pid/stat" 2>/dev/null || true
    done | awk -v hz="$CLK_TCK" '{sub(/^.*\) /, ""); s += $12 + $13} END {printf "%.2f\n", s / hz}'
}

hf A-pack \
    --prepare "$S _prep-alt" -n "alt: tar piped to zstd -3 -T1 > f" "$S _alt-pack" \
    --prepare "$S _prep-ship" -n "ours: shipper packing (413 receiver)" "$S _ours-pack" \
    --prepare "$S _prep-ship" -n "ours: shipper packing with compression_threads = 1" \
    "$S _ours-pack $(q "$BD/shipper-pack-t1.toml")"

hf B-full \
    --prepare "$S _prep-alt" -n "alt: tar piped to zstd > f; openssl dgst -sha256 f; curl -T f" "$S _alt-full" \
    --prepare "$S _prep-ship" -n "ours: cis490-shipper --once" "$SHIP $(q "$BD/shipper.toml") --once" \
    --prepare "$S _prep-alt" -n "alt with sha256sum in place of openssl dgst -sha256" "BENCH_HASHER=sha256sum $S _alt-full"

# B's alternative runs left their tarballs in alt/ (C's prepare wipes it).
ALT_BYTES=$(bytes_under "$BD/alt" '*.tar.zst')

hf C-upload \
    --prepare "$S _prep-alt" -n "alt: curl -T ready tarballs" "$S _alt-upload" \
    --prepare "$S _prep-ship-outbox" -n "ours: shipper with tarballs in outbox/" "$SHIP $(q "$BD/shipper-ready.toml") --once"

# The last C runs stored with our shipper: check the store's bytes.
check_store() { # COUNT
    (cd "$BD/store/lab-01" && sha256sum --quiet -c ./*.sha256) ||
        die "the receiver's store does not match its sidecars"
    [[ $(find "$BD/store/lab-01" -name '*.tar.zst' | wc -l) == "$1" ]] ||
        die "the receiver's store does not hold $1 tarballs"
}
check_store "$EPISODES"

cpu0_ours=$(proc_cpu "$RECEIVER_PID")
cpu0_nginx=$(proc_cpu "$NGINX_PID")
hf D-ingest \
    --prepare "$S _prep-store" -n "alt: $BENCH_PARALLEL parallel curl -T to nginx (dav_methods PUT)" "$S _par-nginx" \
    --prepare "$S _prep-store" -n "alt: the same to nginx, then sync of the files stored" "$S _par-nginx-sync" \
    --prepare "$S _prep-store ours" -n "ours: $BENCH_PARALLEL parallel curl -T to cis490-receiver" "$S _par-ours"
# Server CPU per run: each server only worked during its own commands' runs
# (nginx in two commands).
SRV_CPU_OURS=$(awk -v a="$cpu0_ours" -v b="$(proc_cpu "$RECEIVER_PID")" -v n="$RUNS" 'BEGIN {printf "%.2f", (b - a) / n}')
SRV_CPU_NGINX=$(awk -v a="$cpu0_nginx" -v b="$(proc_cpu "$NGINX_PID")" -v n="$((2 * RUNS))" 'BEGIN {printf "%.2f", (b - a) / n}')
check_store "$BENCH_PARALLEL"
for ((k = 0; k < BENCH_PARALLEL; k++)); do
    id=${TARBALL_IDS[k % ${#TARBALL_IDS[@]}]}
    cmp -s "$BD/tarballs/$id.tar.zst" "$BD/nginx/root/lab-01/$id-u$k.tar.zst" ||
        die "nginx's copy of $id-u$k differs from the tarball sent"
done

hf E-small \
    --prepare "$S _prep-alt" -n "alt: per episode tar piped to zstd > f; openssl dgst; curl -T" "$S _alt-full small" \
    --prepare "$S _prep-ship small" -n "ours: cis490-shipper --once, $SMALL_EPISODES small episodes" \
    "$SHIP $(q "$BD/shipper-small.toml") --once"
check_store "$SMALL_EPISODES"

# Where E's time goes: one shipper pass under `strace -c -w -f` (untimed), the
# receiver traced over the same pass (attached before the shipper starts:
# strace says "attached" once it is).
say "strace -c -w -f: one shipper pass over the small episodes, and the receiver meanwhile"
bash "$SELF" _prep-ship small
fifo=$BD/logs/strace.fifo
rm -f "$fifo"
mkfifo "$fifo"
strace -c -w -f -p "$RECEIVER_PID" -o "$BD/logs/strace-small-receiver.txt" 2>"$fifo" &
STRACE_PID=$!
PIDS+=("$STRACE_PID")
exec {sfd}<"$fifo"
attached=
while IFS= read -r -t 30 -u "$sfd" line; do
    printf '%s\n' "$line" >>"$BD/logs/strace-receiver.log"
    if [[ $line == *attached* ]]; then
        attached=1
        break
    fi
done
[[ -n $attached ]] || die "strace did not attach to the receiver; see $BD/logs/strace-receiver.log"
cat <&"$sfd" >>"$BD/logs/strace-receiver.log" &
exec {sfd}<&-
strace -c -w -f -o "$BD/logs/strace-small.txt" "$SHIPPER" --config "$BD/shipper-small.toml" --once \
    2>"$BD/logs/strace-small-shipper.log"
kill -INT "$STRACE_PID"
wait "$STRACE_PID" || true
check_store "$SMALL_EPISODES"
# strace -c's table: calls is the 4th field; the name is the last.
strace_calls() { # FILE SYSCALL-REGEX -> calls
    awk -v re="^($2)\$" '$NF ~ re && $4 ~ /^[0-9]+$/ {s += $4} END {print s + 0}' "$1"
}

hf F-link \
    --prepare "$S _prep-ship-outbox" -n "upload alone: shipper with tarballs in outbox/ at $RATE" \
    "$SHIP $(q "$BD/shipper-ready-rate.toml") --once" \
    --prepare "$S _prep-ship" -n "ours: --once at $RATE, upload while packing (default)" \
    "$SHIP $(q "$BD/shipper-rate.toml") --once" \
    --prepare "$S _prep-ship" -n "ours: --once at $RATE, upload_while_packing = false" \
    "$SHIP $(q "$BD/shipper-rate-serial.toml") --once"
check_store "$EPISODES"

HF_RUNS=$((RUNS * 10)) hf S-empty --warmup 3 -N \
    -n "cis490-shipper --once, nothing to ship" "$SHIP $(q "$BD/shipper-empty.toml") --once" \
    -n "true (what starting a process costs here)" "$(q "$(command -v true)")"

say "peak RSS: one end-to-end shipper run under /usr/bin/time -v, unlimited and at $RATE"
bash "$SELF" _prep-ship
/usr/bin/time -v "$SHIPPER" --config "$BD/shipper.toml" --once 2>"$BD/logs/time-v.log"
bash "$SELF" _prep-ship
/usr/bin/time -v "$SHIPPER" --config "$BD/shipper-rate.toml" --once 2>"$BD/logs/time-v-rate.log"
rss_kb() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
RSS_KB=$(rss_kb "$BD/logs/time-v.log")
RSS_RATE_KB=$(rss_kb "$BD/logs/time-v-rate.log")
RECV_HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$RECEIVER_PID/status" 2>/dev/null || echo '?')
# Did the shipper stream? Its log says so when it fell back to packing first.
if grep -q 'takes no streamed upload' "$BD/logs/time-v.log"; then
    STREAMED="no: the receiver refused the chunked PUT, the shipper packed first (see logs/time-v.log)"
else
    STREAMED=yes
fi

OURS_BYTES=$(bytes_under "$BD/tarballs" '*.tar.zst')

# 5. Summary from hyperfine's CSVs: line 1 is the header, line N+1 the Nth
# command. Fields are counted from the end (a quoted command name may hold
# commas): mean stddev median user system min max.
hf_stat() { # NAME LINE -> "mean stddev cpu min max" (cpu = user + system, seconds)
    awk -F, -v line="$2" 'NR == line {print $(NF - 6), $(NF - 5), $(NF - 3) + $(NF - 2), $(NF - 1), $NF}' \
        "$BD/results/$1.csv"
}
mean() { # NAME LINE -> mean seconds
    local m _
    read -r m _ < <(hf_stat "$1" "$2")
    printf '%s\n' "$m"
}
# | LABEL | ours | range | MB/s | CPU | alt | range | MB/s | CPU | ratio | target |
# BYTES: what MB/s counts (default the raw episode bytes); TARGET: the
# ratio to stay under, or empty.
row() { # LABEL OURS_NAME OURS_LINE ALT_NAME ALT_LINE [BYTES] [TARGET]
    local o os oc omin omax a as ac amin amax
    read -r o os oc omin omax < <(hf_stat "$2" "$3")
    read -r a as ac amin amax < <(hf_stat "$4" "$5")
    awk -v l="$1" -v o="$o" -v os="$os" -v oc="$oc" -v omin="$omin" -v omax="$omax" \
        -v a="$a" -v as="$as" -v ac="$ac" -v amin="$amin" -v amax="$amax" \
        -v bytes="${6:-$RAW_BYTES}" -v target="${7:-}" 'BEGIN {
        r = o / a
        t = target == "" ? "" : sprintf("≤ %s: %s", target, r <= target ? "met" : "**missed**")
        printf "| %s | %.2f ± %.2f | %.2f–%.2f | %.0f | %.2f | %.2f ± %.2f | %.2f–%.2f | %.0f | %.2f | **%.2f** (%.2f–%.2f) | %s |\n",
            l, o, os, omin, omax, bytes / o / 1e6, oc, a, as, amin, amax, bytes / a / 1e6, ac, r, omin / amax, omax / amin, t
    }'
}
header() {
    echo "| | ours (s) | min–max | MB/s | CPU s | alternative (s) | min–max | MB/s | CPU s | ours / alt (range) | target |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
}
mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo "# cis490 benchmark results"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty tree)')"
    echo "- machine: $(nproc) CPU(s), $CPU; $(awk '/^MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo); kernel $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- tools: $(hyperfine --version); zstd $(zstd --version | grep -o 'v[0-9][0-9.]*' | head -1); $(curl --version | head -1 | cut -d' ' -f1-2); $(openssl version | cut -d' ' -f1-2); $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "- data: $EPISODES episode(s) × $MIB MiB = $(mb "$RAW_BYTES") raw (60% random camera frames, 40% float32 ramps); E: $SMALL_EPISODES × $SMALL_KIB KiB = $(mb "$SMALL_RAW_BYTES"); page cache hot"
    echo "- zstd level 3 everywhere: the shipper with compression_threads = 0 (compression on its one packing thread) unless stated; the zstd CLI with -T1 (one worker thread beside its I/O thread); mTLS on loopback; hyperfine --runs $RUNS"
    echo "- the shipper's end-to-end runs uploaded while packing: $STREAMED"
    echo
    echo "Mean wall time in seconds (± stddev, min–max over the runs); MB/s = raw episode bytes / wall time (D: tarball bytes sent); CPU s = user + system of the client side (the servers are not counted); ratio = ours / alternative in wall time (< 1: ours is faster), in brackets the extremes (best ours / worst alt – worst ours / best alt)."
    echo
    header
    row "A. pack: shipper packing (+sha256, fsync) vs tar \\| zstd -3 -T1 > f" A-pack 3 A-pack 2
    row "A'. shipper end-to-end vs tar \\| zstd -3 -T1 > f alone" B-full 3 A-pack 2
    row "B. full: shipper --once vs tar \\| zstd; openssl dgst; curl -T" B-full 3 B-full 2 "$RAW_BYTES" 0.8
    row "C. upload of ready tarballs: shipper vs curl -T" C-upload 3 C-upload 2
    row "D. ingest, $BENCH_PARALLEL parallel curl -T: cis490-receiver vs nginx PUT" D-ingest 4 D-ingest 2 "$PAR_BYTES"
    row "E. $SMALL_EPISODES × $SMALL_KIB KiB: shipper --once vs a curl loop" E-small 3 E-small 2 "$SMALL_RAW_BYTES" 0.12
    row "F. $RATE link: --once uploading while packing vs upload alone" F-link 3 F-link 2 "$RAW_BYTES" 1.1
    row "F'. $RATE link: --once packing first vs upload alone" F-link 4 F-link 2
    echo
    echo "Supplementary:"
    echo
    header
    row "A, shipper with compression_threads = 1" A-pack 4 A-pack 2
    row "B, alternative with sha256sum in place of openssl dgst" B-full 3 B-full 4
    row "D, receiver vs nginx followed by sync of the stored files" D-ingest 4 D-ingest 3 "$PAR_BYTES"
    row "F, upload while packing vs packing first" F-link 3 F-link 4
    echo
    awk -v full="$(mean B-full 3)" -v up="$(mean C-upload 3)" -v pk="$(mean A-pack 3)" 'BEGIN {
        printf "Shipper breakdown: end-to-end %.2f s; packing alone %.2f s, upload alone %.2f s (sum %.2f s).\n", full, pk, up, pk + up
    }'
    echo
    awk -v o="$(mean E-small 3)" -v a="$(mean E-small 2)" -v n="$SMALL_EPISODES" 'BEGIN {
        printf "- E: the shipper %.0f episodes/s (%.2f ms each), the curl loop %.0f episodes/s (%.2f ms each)\n", n / o, 1000 * o / n, n / a, 1000 * a / n
    }'
    awk -v c="$(strace_calls "$BD/logs/strace-small.txt" total)" \
        -v f="$(strace_calls "$BD/logs/strace-small.txt" 'fsync|fdatasync')" \
        -v rc="$(strace_calls "$BD/logs/strace-small-receiver.txt" total)" \
        -v rf="$(strace_calls "$BD/logs/strace-small-receiver.txt" 'fsync|fdatasync')" \
        -v n="$SMALL_EPISODES" 'BEGIN {
        printf "- E under strace -c -w -f (one untimed pass): the shipper %d syscalls (%.1f per episode), %d fsync/fdatasync (%.2f per episode); the receiver meanwhile %d syscalls (%.1f per episode), %d fsync/fdatasync (%.2f per episode); tables in logs/strace-small*.txt\n",
            c, c / n, f, f / n, rc, rc / n, rf, rf / n
    }'
    echo "- D: TLS as curl saw it: cis490-receiver $(tls_of ours), nginx $(tls_of nginx); nginx stores by renaming its body temp file (same file system), without fsync; the receiver fsyncs each upload"
    echo "- D: server CPU per run (user + system, from /proc): cis490-receiver $SRV_CPU_OURS s, nginx (master + workers) $SRV_CPU_NGINX s; $BENCH_PARALLEL uploads, $(mb "$PAR_BYTES") of tarballs per run"
    read -r m _ c m_min m_max < <(hf_stat S-empty 2)
    read -r t _ tc t_min t_max < <(hf_stat S-empty 3)
    awk -v m="$m" -v c="$c" -v lo="$m_min" -v hi="$m_max" -v t="$t" -v tc="$tc" -v tlo="$t_min" -v thi="$t_max" -v n="$((RUNS * 10))" 'BEGIN {
        printf "- empty --once (nothing to ship; %d runs): %.2f ms mean, %.2f–%.2f ms, CPU %.2f ms (target ≤ 2 ms: %s); /bin/true on the same machine: %.2f ms mean, %.2f–%.2f ms, CPU %.2f ms\n",
            n, m * 1000, lo * 1000, hi * 1000, c * 1000, m <= 0.002 ? "met" : "**missed**", t * 1000, tlo * 1000, thi * 1000, tc * 1000
    }'
    echo "- shipper peak RSS (end-to-end pass over the whole data set, /usr/bin/time -v): $((RSS_KB / 1024)) MiB ($RSS_KB kB); at $RATE: $((RSS_RATE_KB / 1024)) MiB ($RSS_RATE_KB kB) (target ≤ 8 MiB: $( ((RSS_KB <= 8192 && RSS_RATE_KB <= 8192)) && echo met || echo '**missed**'))"
    echo "- receiver peak RSS after all runs (VmHWM): $RECV_HWM_KB kB"
    awk -v raw="$RAW_BYTES" -v o="$OURS_BYTES" -v a="$ALT_BYTES" 'BEGIN {
        printf "- compression: %.1f MB raw -> %.1f MB by the shipper (ratio %.3f, %.1f%% of raw); tar | zstd -3: %.1f MB (ratio %.3f)\n",
            raw / 1e6, o / 1e6, raw / o, 100 * o / raw, a / 1e6, raw / a
    }'
    echo
    echo "## strace -c -w -f, shipper, E (top 12 by wall time in the call)"
    echo
    echo '```'
    head -n 14 "$BD/logs/strace-small.txt"
    echo '```'
    echo
    echo "## strace -c -w -f, receiver during the same pass (top 12 by wall time in the call; accept4 and recvfrom are mostly waiting)"
    echo
    echo '```'
    head -n 14 "$BD/logs/strace-small-receiver.txt"
    echo '```'
    echo
    for name in A-pack B-full C-upload D-ingest E-small F-link S-empty; do
        echo "## $name (hyperfine)"
        echo
        cat "$BD/results/$name.md"
        echo
    done
} >"$BD/results.md"

echo
cat "$BD/results.md"
say "results in $BD/results.md; logs in $BD/logs/; data left in $BD/"
