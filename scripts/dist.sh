#!/usr/bin/env bash
# Build the release binaries that get scp'd onto hosts: static (musl),
# stripped, for x86_64 and aarch64 (Jetson lab hosts, Raspberry Pi 5
# receiver), into dist/ with a SHA256SUMS file; then check each one.
#
# Cross C toolchain: ring and zstd-sys compile C, so cross-building needs a C
# compiler and a musl libc for the target. We use zig as that compiler
# (`ziglang` from PyPI ships zig, with musl for every target) driven by
# cargo-zigbuild (crates.io). Debian's gcc-aarch64-linux-gnu would need
# musl headers for arm64 through multiarch; zig needs nothing else and
# builds both targets the same way. Missing tools are installed with pip and
# cargo (DIST_NO_INSTALL=1 only checks and says how to get them).
#
# Usage: scripts/dist.sh        (what `make dist` runs)
# Env:   CARGO_TARGET_DIR       where cargo builds (default: target/)
#        DIST_NO_INSTALL=1      do not install missing tools
set -euo pipefail

PROG=dist.sh
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
BINS=(cis490-shipper cis490-receiver)
# Versions this script was tested with; newer ones are likely fine.
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
note() { printf '%s: %s\n' "$PROG" "$*"; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DIST=$ROOT/dist
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TARGET_DIR

may_install() {
    if [[ ${DIST_NO_INSTALL:-0} == 1 ]]; then
        die "$1 is missing; install it with: $2"
    fi
    note "$1 is missing; installing: $2"
}

# ---- tools ----------------------------------------------------------------

command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
command -v file >/dev/null || die "'file' not found (Debian: apt-get install file)"
command -v sha256sum >/dev/null || die "sha256sum not found (Debian: coreutils)"

installed_targets=$(rustup target list --installed 2>/dev/null || true)
for t in "${TARGETS[@]}"; do
    if ! grep -qx "$t" <<<"$installed_targets"; then
        note "Rust standard library for $t missing; running: rustup target add $t"
        rustup target add "$t" || die "cannot add target $t: run 'rustup target add $t'"
    fi
done

# cargo-zigbuild finds zig on PATH, or runs `python3 -m ziglang`.
if ! command -v zig >/dev/null && ! python3 -m ziglang version >/dev/null 2>&1; then
    may_install zig "python3 -m pip install ziglang==$ZIGLANG_VERSION"
    python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION" ||
        die "pip could not install ziglang; run: python3 -m pip install ziglang==$ZIGLANG_VERSION"
fi
if ! cargo zigbuild --help >/dev/null 2>&1; then
    may_install cargo-zigbuild "cargo install --locked cargo-zigbuild --version $ZIGBUILD_VERSION"
    cargo install --locked cargo-zigbuild --version "$ZIGBUILD_VERSION" ||
        die "cannot install cargo-zigbuild; run: cargo install --locked cargo-zigbuild"
fi

# ---- build ----------------------------------------------------------------

rm -rf "$DIST"
mkdir -p "$DIST"
for t in "${TARGETS[@]}"; do
    note "building $t"
    for b in "${BINS[@]}"; do
        # The shipper aborts on a panic (smaller); the receiver unwinds, so
        # a panic ends one connection, not all (docs/build.md).
        profile=release
        [[ $b == cis490-shipper ]] && profile=release-shipper
        # --locked: a release is built from Cargo.lock as committed.
        cargo zigbuild --profile "$profile" --locked --target "$t" --bin "$b"
        install -m 0755 "$TARGET_DIR/$t/$profile/$b" "$DIST/$b-$t"
    done
done

# ---- verify ---------------------------------------------------------------

host_arch=$(uname -m)
runner_for() {
    # Prints the command prefix that runs a binary of arch $1 here.
    if [[ $1 == "$host_arch" ]]; then
        return 0
    fi
    local q=qemu-$1
    command -v "$q" >/dev/null || die "$q not found (Debian: apt-get install qemu-user)"
    printf '%s' "$q"
}

for t in "${TARGETS[@]}"; do
    arch=${t%%-*}
    case $arch in
        x86_64) want="x86-64" ;;
        aarch64) want="ARM aarch64" ;;
        *) die "no file(1) pattern for $arch" ;;
    esac
    runner=$(runner_for "$arch") || exit 1
    for b in "${BINS[@]}"; do
        f=$DIST/$b-$t
        desc=$(file -b "$f")
        # musl binaries are "statically linked" or, as static PIE,
        # "static-pie linked"; a dynamic one names its interpreter.
        [[ $desc == *"$want"* ]] || die "$f is not $want: $desc"
        [[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] ||
            die "$f is not statically linked: $desc"
        [[ $desc != *"not stripped"* ]] || die "$f is not stripped: $desc"
        version=$(${runner:+"$runner"} "$f" --version) || die "$f --version failed"
        [[ $version == "$b "* ]] || die "$f --version printed '$version'"
        note "ok: $(basename "$f"): $(stat -c %s "$f") bytes, $version${runner:+ (under $runner)}"
    done
done

# The cross-built shipper against a native receiver, over TLS with client
# certificates: the check that the cross-compiled ring and rustls work, not
# only that the binary starts. Loopback only.
# Globals, so the EXIT trap can still see them after ping_check returns.
RECV_PID=""
WORK=""
cleanup() {
    if [[ -n $RECV_PID ]]; then kill "$RECV_PID" 2>/dev/null || true; fi
    if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

ping_check() {
    local t_native=$host_arch-unknown-linux-musl other work port line
    local t
    for t in "${TARGETS[@]}"; do [[ $t == "$t_native" ]] || other=$t; done
    command -v openssl >/dev/null || { note "skipped --ping check: no openssl"; return 0; }
    WORK=$(mktemp -d)
    work=$WORK
    "$ROOT/scripts/pki.sh" --dir "$work/pki" init >/dev/null
    "$ROOT/scripts/pki.sh" --dir "$work/pki" server localhost 127.0.0.1 >/dev/null
    line=$("$ROOT/scripts/pki.sh" --dir "$work/pki" host lab-01 2>/dev/null)
    mkdir -p "$work/store" "$work/data"
    cat >"$work/receiver.toml" <<EOF
listen = "127.0.0.1:0"
store_dir = "$work/store"
cert_file = "$work/pki/server.crt"
key_file = "$work/pki/server.key"
client_ca_file = "$work/pki/ca.crt"
[hosts]
$line
EOF
    mkfifo "$work/stderr"
    "$DIST/cis490-receiver-$t_native" --config "$work/receiver.toml" 2>"$work/stderr" &
    RECV_PID=$!
    port=""
    exec 3<"$work/stderr"
    while IFS= read -r -t 20 line <&3; do
        if [[ $line =~ listening\ on\ https://127\.0\.0\.1:([0-9]+) ]]; then
            port=${BASH_REMATCH[1]}
            break
        fi
    done
    [[ -n $port ]] || die "native receiver did not report its port"
    # Keep draining the receiver's stderr so it never blocks on the pipe.
    cat <&3 >/dev/null &
    cat >"$work/shipper.toml" <<EOF
host_id = "lab-01"
data_dir = "$work/data"
receiver = "https://127.0.0.1:$port"
ca_file = "$work/pki/ca.crt"
cert_file = "$work/pki/hosts/lab-01.crt"
key_file = "$work/pki/hosts/lab-01.key"
token_file = "$work/pki/hosts/lab-01.token"
EOF
    local runner
    runner=$(runner_for "${other%%-*}") || exit 1
    ${runner:+"$runner"} "$DIST/cis490-shipper-$other" --config "$work/shipper.toml" --ping ||
        die "cis490-shipper-$other --ping against the local receiver failed (exit $?)"
    note "ok: cis490-shipper-$other --ping against cis490-receiver-$t_native${runner:+ (under $runner)}"
    kill "$RECV_PID"
    wait "$RECV_PID" 2>/dev/null || true
    RECV_PID=""
    exec 3<&-
}
ping_check

(cd "$DIST" && sha256sum -- cis490-* >SHA256SUMS)
note "wrote $DIST:"
ls -l "$DIST"
