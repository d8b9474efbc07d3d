#!/usr/bin/env bash
# `make bench`: cis490-shipper against the obvious shell pipeline, on one
# synthetic data set, loopback only (127.0.0.1), in one run.
#
#   A  pack:    tar -cf - EP | zstd -3 -T1 > f
#               vs the shipper packing (pack + sha256 + fsync), isolated by a
#               second receiver that refuses every upload with 413 before
#               the body is sent; the end-to-end shipper is shown as well
#   B  full:    tar | zstd -3 -T1 > f; sha256sum f; curl -T f (mTLS, token,
#               Content-Digest)  vs  cis490-shipper --once
#   C  upload:  curl -T of ready tarballs  vs  the shipper uploading ready
#               outbox/<id>.tar.zst files (sidecar digests, no packing)
#
# Two supplementary rows explain the main ones: the shipper packing with
# compression_threads = 1 (zstd's own worker thread, like `zstd -T1`), and
# B's pipeline with `openssl dgst -sha256` in place of `sha256sum` (coreutils
# 9.1's sha256sum uses no SHA extensions and dominates B's alternative).
#
# Everything lives in bench-data/ (gitignored) and is left there for
# inspection; results go to bench-data/results.md. The receivers this script
# starts are stopped (by PID) when it exits.
#
# Environment:
#   BENCH_EPISODES  episodes in the data set           [default: 4]
#   BENCH_MIB       MiB per episode                    [default: 256]
#   BENCH_RUNS      hyperfine runs per command         [default: 3]
#   BENCH_DIR       where everything goes              [default: bench-data]
#   CARGO           cargo to build with                [default: cargo]
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
# Steps run by hyperfine (`bash bench.sh _STEP`). They read their paths from
# the environment the main run exports.

# The episode ids of the data set, one a line.
episode_ids() {
    local d
    for d in "$BD"/src/episodes/*/; do
        d=${d%/}
        printf '%s\n' "${d##*/}"
    done
}

# Empty the store of host lab-01 (a run stores the same ids every time).
wipe_store() {
    rm -rf "$BD/store/lab-01" "$BD/store-413/lab-01"
}

# A fresh shipper data_dir: hard-linked episodes; OUTBOX=1: the ready
# tarballs and sidecars in outbox/ as well.
reset_ship() {
    local with_outbox=$1 id
    rm -rf "$BD/ship"
    mkdir -p "$BD/ship/episodes" "$BD/ship/outbox" "$BD/ship/shipped"
    cp -al "$BD"/src/episodes/. "$BD/ship/episodes/"
    if [[ $with_outbox == 1 ]]; then
        while read -r id; do
            ln "$BD/tarballs/$id.tar.zst" "$BD/ship/outbox/$id.tar.zst"
            cp "$BD/tarballs/$id.tar.zst.sha256" "$BD/ship/outbox/"
        done < <(episode_ids)
    fi
}

# Base64 of the digest whose lowercase hex is $1 (for Content-Digest).
hex_to_b64() {
    local hex=$1 esc='' i
    for ((i = 0; i < ${#hex}; i += 2)); do
        esc+="\\x${hex:i:2}"
    done
    # shellcheck disable=SC2059 # the escapes are the point
    printf "$esc" | base64 -w0
}

# PUT FILE as episode ID with curl; fails unless the receiver answers 201.
# BENCH_HASHER: sha256sum (default) or openssl.
hash_hex() {
    local out
    if [[ ${BENCH_HASHER:-sha256sum} == openssl ]]; then
        out=$(openssl dgst -sha256 -r "$1")
    else
        out=$(sha256sum "$1")
    fi
    printf '%s\n' "${out%% *}"
}

curl_put() {
    local file=$1 id=$2 hex=$3 code
    code=$(curl -sS -o "$BD/alt/last-reply.json" -w '%{http_code}' \
        --cacert "$BD/pki/ca.crt" \
        --cert "$BD/pki/hosts/lab-01.crt" --key "$BD/pki/hosts/lab-01.key" \
        -H @"$BD/curl-headers" \
        -H "Content-Digest: sha-256=:$(hex_to_b64 "$hex"):" \
        -T "$file" "https://localhost:$BENCH_PORT/v1/episodes/lab-01/$id")
    [[ $code == 201 ]] || die "curl PUT $id: HTTP $code: $(cat "$BD/alt/last-reply.json")"
}

step() {
    local id hex rc config
    case $1 in
        _prep-alt)
            rm -rf "$BD/alt"
            mkdir -p "$BD/alt"
            wipe_store
            sync
            ;;
        _prep-ship)
            reset_ship 0
            wipe_store
            sync
            ;;
        _prep-ship-outbox)
            reset_ship 1
            wipe_store
            sync
            ;;
        _alt-pack)
            while read -r id; do
                tar -C "$BD/src/episodes" -cf - "$id" | zstd -q -3 -T1 >"$BD/alt/$id.tar.zst"
            done < <(episode_ids)
            ;;
        _alt-full)
            while read -r id; do
                tar -C "$BD/src/episodes" -cf - "$id" | zstd -q -3 -T1 >"$BD/alt/$id.tar.zst"
                hex=$(hash_hex "$BD/alt/$id.tar.zst")
                curl_put "$BD/alt/$id.tar.zst" "$id" "$hex"
            done < <(episode_ids)
            ;;
        _alt-upload)
            while read -r id; do
                read -r hex _ <"$BD/tarballs/$id.tar.zst.sha256"
                curl_put "$BD/tarballs/$id.tar.zst" "$id" "$hex"
            done < <(episode_ids)
            ;;
        _ours-pack)
            # The 413 receiver refuses each upload from its head (Expect:
            # 100-continue, so no body is sent): every episode is packed,
            # hashed and fsynced, then counted as rejected (exit 65).
            config=${2:-$BD/shipper-pack.toml}
            rc=0
            "$SHIPPER" --config "$config" --once 2>"$BD/logs/ours-pack.log" || rc=$?
            [[ $rc == 65 ]] || die "shipper (pack only) exited $rc, expected 65; see $BD/logs/ours-pack.log"
            [[ $(find "$BD/ship/outbox" -name '*.tar.zst' | wc -l) == "$(episode_ids | wc -l)" ]] ||
                die "shipper (pack only) did not leave every tarball in outbox/"
            ;;
        *) die "unknown step $1" ;;
    esac
}

if [[ ${1:-} == _* ]]; then
    for v in BD SHIPPER BENCH_PORT; do
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
RUNS=${BENCH_RUNS:-3}
CARGO=${CARGO:-cargo}
[[ $EPISODES =~ ^[1-9][0-9]*$ ]] || die "BENCH_EPISODES must be a positive integer"
[[ $MIB =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_MIB must be a number"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"

missing=()
for tool in hyperfine:hyperfine zstd:zstd curl:curl openssl:openssl /usr/bin/time:time \
    tar:tar sha256sum:coreutils awk:gawk; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
[[ ${#missing[@]} -eq 0 ]] || die "missing tools: apt-get install ${missing[*]}"
command -v "$CARGO" >/dev/null || die "$CARGO not found: install Rust (https://rustup.rs)"

cd "$ROOT"
BD=$(realpath -m "${BENCH_DIR:-bench-data}")
mkdir -p "$BD"/logs "$BD"/results
SHIPPER=$ROOT/target/release/cis490-shipper
RECEIVER=$ROOT/target/release/cis490-receiver
MKEPISODES=$ROOT/target/release/examples/mkepisodes
export BD SHIPPER

# 1. Build.
say "building release binaries and the generator"
"$CARGO" build --release --bins --examples

# 2. The data set, regenerated only when its shape changed.
stamp="$EPISODES x $MIB MiB"
if [[ $(cat "$BD/src/stamp" 2>/dev/null) != "$stamp" ]]; then
    say "generating $stamp under $BD/src"
    rm -rf "$BD/src"
    "$MKEPISODES" "$BD/src" "$EPISODES" "$MIB" >/dev/null
    printf '%s\n' "$stamp" >"$BD/src/stamp"
else
    say "reusing the data set in $BD/src ($stamp)"
fi
RAW_BYTES=$(find "$BD/src/episodes" -type f -printf '%s\n' | awk '{s += $1} END {print s}')

# 3. PKI, configs, receivers.
rm -rf "$BD/pki"
bash "$ROOT/scripts/pki.sh" --dir "$BD/pki" init >/dev/null
bash "$ROOT/scripts/pki.sh" --dir "$BD/pki" server localhost 127.0.0.1 >/dev/null
HOSTS_LINE=$(bash "$ROOT/scripts/pki.sh" --dir "$BD/pki" host lab-01 2>/dev/null)
(
    umask 077
    printf 'Authorization: Bearer %s\nContent-Type: application/zstd\n' \
        "$(cat "$BD/pki/hosts/lab-01.token")" >"$BD/curl-headers"
)

rm -rf "$BD/store" "$BD/store-413"
mkdir -p "$BD/store" "$BD/store-413"
receiver_config() { # STORE [EXTRA]
    cat <<EOF
listen = "127.0.0.1:0"
store_dir = "$1"
cert_file = "$BD/pki/server.crt"
key_file = "$BD/pki/server.key"
client_ca_file = "$BD/pki/ca.crt"
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
# (no sleep), and sets PORT. Its stderr goes on to logs/NAME.log.
start_receiver() {
    local name=$1 config=$2 fifo=$BD/logs/$1.fifo log=$BD/logs/$1.log line fd
    PORT=
    rm -f "$fifo" "$log"
    mkfifo "$fifo"
    "$RECEIVER" --config "$config" </dev/null >/dev/null 2>"$fifo" &
    PIDS+=("$!")
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
start_receiver receiver-413 "$BD/receiver-413.toml"
PORT_413=$PORT
RECEIVER_PID=${PIDS[0]}
export BENCH_PORT
say "receivers on 127.0.0.1:$BENCH_PORT (stores) and 127.0.0.1:$PORT_413 (refuses with 413)"

shipper_config() { # PORT [THREADS]
    cat <<EOF
host_id = "lab-01"
data_dir = "$BD/ship"
receiver = "https://localhost:$1"
ca_file = "$BD/pki/ca.crt"
cert_file = "$BD/pki/hosts/lab-01.crt"
key_file = "$BD/pki/hosts/lab-01.key"
token_file = "$BD/pki/hosts/lab-01.token"
compression_level = 3
compression_threads = ${2:-0}
EOF
}
shipper_config "$BENCH_PORT" >"$BD/shipper.toml"
shipper_config "$PORT_413" >"$BD/shipper-pack.toml"
shipper_config "$PORT_413" 1 >"$BD/shipper-pack-t1.toml"

# Ready tarballs for C, made by the shipper itself (the 413 run leaves them
# in outbox/ with their sidecars), and a first check that everything works.
say "checking the setup: one pack-only pass and one curl upload"
bash "$SELF" _prep-ship
bash "$SELF" _ours-pack
rm -rf "$BD/tarballs"
mkdir -p "$BD/tarballs"
mv "$BD"/ship/outbox/*.tar.zst "$BD"/ship/outbox/*.tar.zst.sha256 "$BD/tarballs/"
bash "$SELF" _prep-alt
bash "$SELF" _alt-upload

# 4. Measurements.
q() { printf '%q' "$1"; }
S="bash $(q "$SELF")"
hf() { # NAME hyperfine-args...
    local name=$1
    shift
    say "measuring $name"
    hyperfine --runs "$RUNS" --style basic \
        --export-markdown "$BD/results/$name.md" \
        --export-csv "$BD/results/$name.csv" "$@"
}

hf A-pack \
    --prepare "$S _prep-alt" -n "alt: tar piped to zstd -3 -T1 > f" "$S _alt-pack" \
    --prepare "$S _prep-ship" -n "ours: shipper packing (413 receiver)" "$S _ours-pack" \
    --prepare "$S _prep-ship" -n "ours: shipper packing with compression_threads = 1" \
    "$S _ours-pack $(q "$BD/shipper-pack-t1.toml")"

hf B-full \
    --prepare "$S _prep-alt" -n "alt: tar piped to zstd > f; sha256sum f; curl -T f" "$S _alt-full" \
    --prepare "$S _prep-ship" -n "ours: cis490-shipper --once" "$(q "$SHIPPER") --config $(q "$BD/shipper.toml") --once" \
    --prepare "$S _prep-alt" -n "alt with openssl dgst -sha256 in place of sha256sum" "BENCH_HASHER=openssl $S _alt-full"

# B's alternative runs left their tarballs in alt/ (C's prepare wipes it).
ALT_BYTES=$(find "$BD/alt" -name '*.tar.zst' -printf '%s\n' | awk '{s += $1} END {print s}')

hf C-upload \
    --prepare "$S _prep-alt" -n "alt: curl -T ready tarballs" "$S _alt-upload" \
    --prepare "$S _prep-ship-outbox" -n "ours: shipper with tarballs in outbox/" "$(q "$SHIPPER") --config $(q "$BD/shipper.toml") --once"

# The last B/C runs stored with our shipper: check the store's bytes.
(cd "$BD/store/lab-01" && sha256sum --quiet -c ./*.sha256) ||
    die "the receiver's store does not match its sidecars"
[[ $(find "$BD/store/lab-01" -name '*.tar.zst' | wc -l) == "$EPISODES" ]] ||
    die "the receiver's store does not hold $EPISODES tarballs"

say "peak RSS: one end-to-end shipper run under /usr/bin/time -v"
bash "$SELF" _prep-ship
/usr/bin/time -v "$SHIPPER" --config "$BD/shipper.toml" --once 2>"$BD/logs/time-v.log"
RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$BD/logs/time-v.log")
RECV_HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$RECEIVER_PID/status" 2>/dev/null || echo '?')

OURS_BYTES=$(find "$BD/tarballs" -name '*.tar.zst' -printf '%s\n' | awk '{s += $1} END {print s}')

# 5. Summary from hyperfine's CSVs: line 1 is the header, line N+1 the Nth
# command. Fields are counted from the end (a quoted command name may hold
# commas): mean stddev median user system min max.
hf_stat() { # NAME LINE -> "mean stddev cpu" (cpu = user + system, seconds)
    awk -F, -v line="$2" 'NR == line {print $(NF - 6), $(NF - 5), $(NF - 3) + $(NF - 2)}' \
        "$BD/results/$1.csv"
}
mean() { # NAME LINE -> mean seconds
    local m _
    read -r m _ < <(hf_stat "$1" "$2")
    printf '%s\n' "$m"
}
row() { # LABEL OURS_NAME OURS_LINE ALT_NAME ALT_LINE
    local o os oc a as ac
    read -r o os oc < <(hf_stat "$2" "$3")
    read -r a as ac < <(hf_stat "$4" "$5")
    awk -v l="$1" -v o="$o" -v os="$os" -v oc="$oc" -v a="$a" -v as="$as" -v ac="$ac" \
        -v raw="$RAW_BYTES" 'BEGIN {
        printf "| %s | %.2f ± %.2f | %.0f | %.2f | %.2f ± %.2f | %.0f | %.2f | **%.2f** |\n",
            l, o, os, raw / o / 1e6, oc, a, as, raw / a / 1e6, ac, o / a
    }'
}
header() {
    echo "| | ours (s) | MB/s | CPU s | alternative (s) | MB/s | CPU s | ours / alt |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
}

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo "# cis490 benchmark results"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ); commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (dirty tree)')"
    echo "- machine: $(nproc) CPU(s), $CPU; $(awk '/^MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo); kernel $(uname -r)"
    echo "- data: $EPISODES episode(s) × $MIB MiB = $(awk -v b="$RAW_BYTES" 'BEGIN {printf "%.1f MB", b / 1e6}') raw (60% random camera frames, 40% float32 ramps); page cache hot"
    echo "- zstd level 3 everywhere: the shipper with compression_threads = 0 (compression on its one packing thread) unless stated; the zstd CLI with -T1 (one worker thread beside its I/O thread); mTLS on loopback; hyperfine --runs $RUNS"
    echo
    echo "Mean wall time in seconds (± stddev); MB/s = raw episode bytes / wall time; CPU s = user + system of the client side (the receiver is not counted); ratio = ours / alternative in wall time (< 1: ours is faster)."
    echo
    header
    row "A. pack: shipper packing (+sha256, fsync) vs tar \\| zstd -3 -T1 > f" A-pack 3 A-pack 2
    row "A'. shipper end-to-end vs tar \\| zstd -3 -T1 > f alone" B-full 3 A-pack 2
    row "B. full: shipper --once vs tar \\| zstd; sha256sum; curl -T" B-full 3 B-full 2
    row "C. upload of ready tarballs: shipper vs curl -T" C-upload 3 C-upload 2
    echo
    echo "Supplementary:"
    echo
    header
    row "A, shipper with compression_threads = 1" A-pack 4 A-pack 2
    row "B, alternative with openssl dgst -sha256 for sha256sum" B-full 3 B-full 4
    echo
    awk -v full="$(mean B-full 3)" -v up="$(mean C-upload 3)" -v pk="$(mean A-pack 3)" 'BEGIN {
        printf "Shipper breakdown: end-to-end %.2f s ≈ packing %.2f s + upload %.2f s (sum %.2f s).\n", full, pk, up, pk + up
    }'
    echo
    echo "- shipper peak RSS (end-to-end pass over the whole data set, /usr/bin/time -v): $((RSS_KB / 1024)) MiB ($RSS_KB kB)"
    echo "- receiver peak RSS after all runs (VmHWM): $RECV_HWM_KB kB"
    awk -v raw="$RAW_BYTES" -v o="$OURS_BYTES" -v a="$ALT_BYTES" 'BEGIN {
        printf "- compression: %.1f MB raw -> %.1f MB by the shipper (ratio %.3f, %.1f%% of raw); tar | zstd -3: %.1f MB (ratio %.3f)\n",
            raw / 1e6, o / 1e6, raw / o, 100 * o / raw, a / 1e6, raw / a
    }'
    echo
    for name in A-pack B-full C-upload; do
        echo "## $name (hyperfine)"
        echo
        cat "$BD/results/$name.md"
        echo
    done
} >"$BD/results.md"

echo
cat "$BD/results.md"
say "results in $BD/results.md; logs in $BD/logs/; data left in $BD/"
