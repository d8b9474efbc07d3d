#!/usr/bin/env bash
# Checks that the static aarch64 binaries hash and encrypt with the ARMv8
# crypto extensions (the Raspberry Pi 5 receiver's Cortex-A76 has them, and
# so do the Jetson lab hosts'): each disassembly must show
#   - SHA-256 of the tarballs (the sha2 crate, sha256_compress):
#     sha256h, sha256h2, sha256su0;
#   - TLS AES-GCM (ring's assembly): aese and aesmc for AES, pmull for GHASH.
# Both crates choose these at run time from getauxval(AT_HWCAP), with a
# portable fallback; this shows that the fast path is compiled in at all
# (docs/build.md says how each crate detects the extensions).
#
# Attribution needs symbols, so by default this builds both binaries
# unstripped (each with its own profile, as scripts/dist.sh does, strip =
# false) for aarch64-unknown-linux-musl with cargo-zigbuild, in its own
# target directory (target/arm-crypto-check). Given binaries it checks
# those instead; a stripped binary can only be checked for the instructions
# anywhere in it (ring's own SHA-256 also uses sha256h, so that proves
# less), and the script says so.
#
# Usage: scripts/check-arm-crypto.sh [AARCH64-BINARY...]
# Needs: a disassembler for aarch64 (llvm-objdump, or aarch64-linux-gnu-objdump
# from binutils-aarch64-linux-gnu); to build: rustup, zig and cargo-zigbuild
# (`make dist` installs the last two, see scripts/dist.sh).
# Exit: 0 all found, 1 something missing, 2 cannot run (tools, build).
set -euo pipefail

PROG=check-arm-crypto.sh
TARGET=aarch64-unknown-linux-musl

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 2
}
note() { printf '%s: %s\n' "$PROG" "$*"; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

case ${1:-} in
    -h | --help) echo "usage: $PROG [AARCH64-BINARY...]"; exit 0 ;;
esac
bins=("$@")

# ---- the disassembler -----------------------------------------------------

objdump=""
for cand in aarch64-linux-gnu-objdump llvm-objdump; do
    if command -v "$cand" >/dev/null; then
        objdump=$cand
        break
    fi
done
if [[ -z $objdump ]]; then
    # Debian installs versioned names (llvm-objdump-16) without the plain one.
    objdump=$(compgen -c llvm-objdump- | sort -V | tail -n 1 || true)
fi
[[ -n $objdump ]] ||
    die "no aarch64 disassembler: apt-get install binutils-aarch64-linux-gnu (or llvm)"

# ---- the binary -----------------------------------------------------------

if ((${#bins[@]} == 0)); then
    command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
    if ! command -v zig >/dev/null && ! python3 -m ziglang version >/dev/null 2>&1; then
        die "zig not found: python3 -m pip install ziglang (or run 'make dist' once)"
    fi
    cargo zigbuild --help >/dev/null 2>&1 ||
        die "cargo-zigbuild not found: cargo install --locked cargo-zigbuild (or run 'make dist' once)"
    rustup target list --installed 2>/dev/null | grep -qx "$TARGET" ||
        rustup target add "$TARGET" || die "cannot add target $TARGET"
    target_dir=$ROOT/target/arm-crypto-check
    for pair in cis490-shipper:release-shipper cis490-receiver:release; do
        b=${pair%%:*} profile=${pair##*:}
        note "building $b ($profile, unstripped) for $TARGET in $target_dir"
        CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_SHIPPER_STRIP=false \
            CARGO_TARGET_DIR=$target_dir \
            cargo zigbuild --profile "$profile" --locked --target "$TARGET" --bin "$b" ||
            die "build of $b failed"
        bins+=("$target_dir/$TARGET/$profile/$b")
    done
fi

# ---- the check ------------------------------------------------------------

dis=$(mktemp)
trap 'rm -f "$dis"' EXIT
# LLVM decodes only the extensions it is told of (else "<unknown>"); GNU
# objdump decodes them all.
mattr=()
if [[ $objdump == llvm-objdump* ]]; then mattr=("--mattr=+aes,+sha2"); fi

failed=0
# require LABEL FUNCTION-REGEX MNEMONIC...: every mnemonic occurs in some
# function (of $hits) whose name matches the regex.
require() {
    local label=$1 fn_re=$2 m count
    shift 2
    for m in "$@"; do
        count=$(awk -v re="$fn_re" -v m="$m" '
            { mn = $NF; $NF = ""; if (mn == m && $0 ~ re) c++ }
            END { print c + 0 }' <<<"$hits")
        if ((count > 0)); then
            note "  ok: $label: $m x$count"
        else
            note "  MISSING: $label: no $m"
            failed=1
        fi
    done
}

for bin in "${bins[@]}"; do
    [[ -f $bin ]] || die "$bin: no such file"
    desc=$(file -b "$bin" 2>/dev/null || true)
    [[ -z $desc || $desc == *"ARM aarch64"* ]] || die "$bin is not an aarch64 binary: $desc"
    note "$bin:"
    "$objdump" -d --demangle "${mattr[@]}" "$bin" >"$dis" 2>/dev/null ||
        die "$objdump -d $bin failed"

    # One line per crypto instruction: "<function> <mnemonic>". Function
    # headers look like "0000000000401234 <name>:" in both objdumps; a
    # stripped binary has only section names there (<.text>), so
    # everything is "?".
    hits=$(awk '
        /^[0-9a-f]+ <.*>:$/ {
            fn = $0; sub(/^[0-9a-f]+ </, "", fn); sub(/>:$/, "", fn)
            if (fn ~ /^\./) fn = ""
            next
        }
        {
            n = split($0, f, /[ \t]+/)
            for (i = 1; i <= n; i++) {
                if (f[i] ~ /^(sha256h|sha256h2|sha256su0|sha256su1|aese|aesmc|pmull|pmull2)$/) {
                    print (fn == "" ? "?" : fn) " " f[i]
                    break
                }
            }
        }' "$dis")

    if grep -q '^[0-9a-f]* <[^.]' "$dis"; then
        require "sha2 (sha256_compress)" 'sha256_compress' sha256h sha256h2 sha256su0
        require "ring AES (aes_hw_*, aes_gcm_*_kernel)" 'aes_hw_|aes_gcm_(enc|dec)_kernel' aese aesmc
        require "ring GHASH (gcm_*_clmul, aes_gcm_*_kernel)" 'gcm_[a-z_]*clmul|aes_gcm_(enc|dec)_kernel' pmull
        note "  the functions, with their counts of these instructions:"
        awk '{ mn = $NF; $NF = ""; c[$0 "\t" mn]++ } END { for (k in c) print "    " k "\t" c[k] }' \
            <<<"$hits" | sort
    else
        note "  warning: no symbols: checking only that the instructions occur somewhere" \
            "(ring's own SHA-256 uses sha256h too); run without arguments for the" \
            "per-function check"
        require "anywhere" '.' sha256h sha256h2 sha256su0 aese aesmc pmull
    fi
done

if ((failed)); then
    note "FAILED: ARMv8 crypto instructions missing (see docs/build.md)"
    exit 1
fi
note "ok: SHA-256 and AES-GCM use the ARMv8 crypto extensions"
