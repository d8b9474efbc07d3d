#!/usr/bin/env bash
# Install cis490-shipper on a lab host: binary, config template, data
# directories, systemd units, and the timer that runs `cis490-shipper --once`.
#
# Made to run next to one scp'd binary: no repository, no cargo, no network.
# The code shared with install-receiver.sh (from scripts/lib/), the units and
# the config template (from etc/) are copied in below by
# scripts/embed-templates.sh (tests/deploy.rs checks the copies match), so
# this file plus the binary is all a lab host needs.
#
# Idempotent: running it again reinstalls the binary and units (same bytes,
# same modes) and never touches an existing config, token, key or episode.
set -euo pipefail

PROG=install-lab-host
NAME=cis490-shipper
USER_NAME=cis490

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS]

Install cis490-shipper and its systemd timer on this lab host.

Options:
  --binary PATH        the cis490-shipper binary (default: look next to this
                       script, then in the current directory)
  --host-id ID         host_id to write into a new /etc/cis490/shipper.toml
  --receiver URL       receiver (https://HOST:PORT) for a new shipper.toml
  --ca FILE            lab CA certificate -> /etc/cis490/tls/ca.crt
  --cert FILE          this host's client certificate -> /etc/cis490/tls/host.crt
  --key FILE           its private key -> /etc/cis490/tls/host.key
  --token FILE         this host's token -> /etc/cis490/shipper.token
  --recorder-user USER add USER (the process writing episodes) to group cis490
  --no-enable          install the units but do not enable the timer
  --dry-run            print what would be done, change nothing
  --root DIR           install into DIR as if it were / (for tests and image
                       builds): no useradd, chown or systemctl on this machine
  -h, --help           this help

Existing config, token, certificates and keys are never overwritten; to
replace one, remove it first.
EOF
}

# ---- shared with install-receiver.sh -------------------------------------
# BEGIN LIBRARY scripts/lib/install-common.sh
# shellcheck shell=bash
# ---- scripts/lib/install-common.sh: what both installers do alike ---------
# Not run on its own: scripts/embed-templates.sh copies this file into
# install-lab-host.sh and install-receiver.sh, between their
# "# BEGIN LIBRARY" and "# END LIBRARY" lines, so that each installer stays
# one file that works when scp'd alone. Edit it here, then run
# scripts/embed-templates.sh (or `make embed`); tests/deploy.rs fails while
# an installer's copy differs.
#
# The installer sets PROG, NAME (the binary) and USER_NAME (the service
# user) and defines usage() before this point; the library sets the options
# both installers take: BINARY CA_SRC CERT_SRC KEY_SRC ENABLE DRY_RUN ROOT.

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
note() { printf '%s: %s\n' "$PROG" "$*"; }

# ---- arguments ------------------------------------------------------------

BINARY=""
CA_SRC=""
CERT_SRC=""
KEY_SRC=""
ENABLE=1
DRY_RUN=0
ROOT=""

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }

# common_arg "$@": takes one of the options both installers have, and sets
# ARG_WORDS to how many words it used (the caller shifts them).
# shellcheck disable=SC2034  # ARG_WORDS is read by the installer's loop
common_arg() {
    ARG_WORDS=2
    case $1 in
        --binary) need_arg "$@"; BINARY=$2 ;;
        --ca) need_arg "$@"; CA_SRC=$2 ;;
        --cert) need_arg "$@"; CERT_SRC=$2 ;;
        --key) need_arg "$@"; KEY_SRC=$2 ;;
        --no-enable) ENABLE=0; ARG_WORDS=1 ;;
        --dry-run) DRY_RUN=1; ARG_WORDS=1 ;;
        --root) need_arg "$@"; ROOT=$2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
}

# check_sources [FILE...]: the files given to install (--ca, --cert, --key
# and the installer's own, e.g. --token) are readable, --cert and --key come
# together; --root names a directory. Sets R, the prefix of every path this
# installer writes ("" for the real system).
# shellcheck disable=SC2120  # install-receiver.sh has no files of its own
check_sources() {
    local f
    for f in "$CA_SRC" "$CERT_SRC" "$KEY_SRC" "$@"; do
        [[ -z $f || -r $f ]] || die "cannot read $f"
    done
    if [[ -n $CERT_SRC && -z $KEY_SRC ]] || [[ -z $CERT_SRC && -n $KEY_SRC ]]; then
        die "--cert and --key go together"
    fi
    if [[ -n $ROOT ]]; then
        [[ -d $ROOT ]] || die "--root $ROOT: not a directory"
        ROOT=$(cd "$ROOT" && pwd)
        [[ $ROOT != / ]] || ROOT=""
    fi
    R=$ROOT
}

# ---- prerequisites --------------------------------------------------------

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARCH=$(uname -m)

find_binary() {
    local dir cand
    for dir in "$SCRIPT_DIR" "$PWD"; do
        for cand in "$NAME" "$NAME-$ARCH-unknown-linux-musl"; do
            if [[ -f $dir/$cand ]]; then
                printf '%s\n' "$dir/$cand"
                return 0
            fi
        done
    done
    return 1
}

# check_prerequisites: the binary is ours and runs here; this is a systemd
# machine and we are root (unless --root or --dry-run says otherwise).
# Creates TMP, removed at exit.
check_prerequisites() {
    local version
    if [[ -z $BINARY ]]; then
        BINARY=$(find_binary) || die "no $NAME binary next to this script or in $PWD; pass --binary PATH"
    fi
    [[ -f $BINARY ]] || die "--binary $BINARY: no such file"
    # Running it is the architecture check: a binary for another CPU fails here
    # with "Exec format error" instead of at the first timer tick.
    [[ -x $BINARY ]] || chmod +x "$BINARY" 2>/dev/null || true
    version=$("$BINARY" --version 2>&1) || die "$BINARY does not run on this $ARCH machine: $version"
    [[ $version == "$NAME "* ]] || die "$BINARY --version printed '$version', not '$NAME <version>': wrong binary?"
    note "binary: $BINARY ($version)"

    if [[ -z $ROOT ]]; then
        command -v systemctl >/dev/null || die "systemctl not found: this installer needs systemd (or use --root DIR)"
        [[ -d /run/systemd/system ]] || die "systemd is not running on this machine (or use --root DIR)"
        if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
            die "run as root (sudo), or try --dry-run"
        fi
        command -v useradd >/dev/null || die "useradd not found"
    else
        note "--root $ROOT: installing into that tree; user, ownership and systemd changes on this machine are skipped"
    fi

    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
}

# ---- actions --------------------------------------------------------------
# Every change goes through one of these, so --dry-run and --root are decided
# in one place.

run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf 'would run: %s\n' "$*"
    else
        printf '+ %s\n' "$*"
        "$@"
    fi
}

# Against the real system only: skipped (and said so) under --root.
run_system() {
    if [[ -n $ROOT ]]; then
        printf 'skipped (--root): %s\n' "$*"
    else
        run "$@"
    fi
}

# mkdir_owned DIR MODE OWNER:GROUP
mkdir_owned() {
    run install -d -m "$2" "$R$1"
    run_system chown "$3" "$R$1"
}

# System directories (/usr/local/bin, /etc/systemd/system) are created if
# missing but otherwise left as the distribution set them.
ensure_system_dir() {
    [[ -d $R$1 ]] || run install -d -m 0755 "$R$1"
}

# put_file SRC DEST MODE OWNER:GROUP: always replaced (binary, units).
put_file() {
    if [[ -f $R$2 ]] && cmp -s "$1" "$R$2" && [[ $(stat -c %a "$R$2") == "${3#0}" ]]; then
        note "unchanged: $2"
    else
        run install -m "$3" "$1" "$R$2"
    fi
    run_system chown "$4" "$R$2"
}

# keep_or_put SRC DEST MODE OWNER:GROUP: never replaces an existing file.
keep_or_put() {
    if [[ -e $R$2 ]]; then
        if cmp -s "$1" "$R$2"; then
            note "unchanged: $2"
        else
            note "kept existing $2 (not overwritten; remove it first to replace it)"
        fi
        return 0
    fi
    run install -m "$3" "$1" "$R$2"
    run_system chown "$4" "$R$2"
}

# ensure_user HOME COMMENT: the service user, a system user with no login
# and no home of its own beyond HOME. On a machine that is both a lab host
# and the central node the other installer may have made it already.
ensure_user() {
    if [[ -z $ROOT ]] && getent passwd "$USER_NAME" >/dev/null; then
        note "user $USER_NAME exists"
    else
        run_system useradd --system --user-group --home-dir "$1" \
            --no-create-home --shell /usr/sbin/nologin \
            --comment "$2" "$USER_NAME"
    fi
}

# install_base: the binary, and /etc/cis490/ and its tls/ for the config and
# keys: readable by the service, writable by root only. Both installers make
# these directories, so their modes are decided here, once.
install_base() {
    ensure_system_dir /usr/local/bin
    put_file "$BINARY" "/usr/local/bin/$NAME" 0755 root:root
    mkdir_owned /etc/cis490 0750 "root:$USER_NAME"
    mkdir_owned /etc/cis490/tls 0750 "root:$USER_NAME"
}

# install_tls NAME: --ca, --cert and --key as tls/ca.crt, tls/NAME.crt and
# tls/NAME.key. Certificates are public; the key is for the service to read
# and root to change.
install_tls() {
    [[ -z $CA_SRC ]] || keep_or_put "$CA_SRC" /etc/cis490/tls/ca.crt 0644 root:root
    [[ -z $CERT_SRC ]] || keep_or_put "$CERT_SRC" "/etc/cis490/tls/$1.crt" 0644 root:root
    [[ -z $KEY_SRC ]] || keep_or_put "$KEY_SRC" "/etc/cis490/tls/$1.key" 0640 "root:$USER_NAME"
}

# enable_unit UNIT: let systemd see the unit files just installed and enable
# UNIT, unless --no-enable. Under --root this only creates the symlinks
# inside ROOT (systemctl --root). Succeeds only when UNIT was enabled on the
# running system, so the caller knows it may start it.
enable_unit() {
    if [[ -n $ROOT ]]; then
        if [[ $ENABLE -eq 1 ]]; then
            if command -v systemctl >/dev/null; then
                run systemctl --root="$ROOT" --quiet enable "$1"
            else
                note "skipped (no systemctl): enable $1 in $ROOT"
            fi
        fi
        return 1
    fi
    run systemctl daemon-reload
    [[ $ENABLE -eq 1 ]] || return 1
    run systemctl enable "$1"
}

# ---- the summary ----------------------------------------------------------
# Only what is still left to do: each installer adds a step for what neither
# its options nor the files already installed provide, then the checks, and
# prints the numbered list.

NEXT=()
next_step() { NEXT+=("$1"); }

# provided SRC PATH: given now (an option's file, or installed under
# --dry-run), or installed before.
provided() { [[ -n $1 || -e $R$2 ]]; }

print_next() {
    local i
    printf '%s: done.\n' "$PROG"
    [[ ${#NEXT[@]} -gt 0 ]] || return 0
    printf 'Next:\n'
    for i in "${!NEXT[@]}"; do
        printf '  %d. %s\n' "$((i + 1))" "${NEXT[$i]}"
    done
}
# END LIBRARY

# ---- arguments ------------------------------------------------------------
# Those of this installer only; common_arg takes the rest (--binary, --ca,
# --cert, --key, --no-enable, --dry-run, --root, --help).

HOST_ID=""
RECEIVER=""
TOKEN_SRC=""
RECORDER_USER=""

while [[ $# -gt 0 ]]; do
    case $1 in
        --host-id) need_arg "$@"; HOST_ID=$2; shift 2 ;;
        --receiver) need_arg "$@"; RECEIVER=$2; shift 2 ;;
        --token) need_arg "$@"; TOKEN_SRC=$2; shift 2 ;;
        --recorder-user) need_arg "$@"; RECORDER_USER=$2; shift 2 ;;
        *) common_arg "$@"; shift "$ARG_WORDS" ;;
    esac
done

# Values are written into TOML strings with sed: keep them to characters that
# need no escaping in either.
if [[ -n $HOST_ID && ! $HOST_ID =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]]; then
    die "--host-id '$HOST_ID': 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
fi
# `]` first and `-` last inside the brackets: POSIX bracket expressions have
# no backslash escapes. Allows host names, IPv4 and [IPv6] with a port.
receiver_re='^https://[][A-Za-z0-9.:-]+/?$'
if [[ -n $RECEIVER && ! $RECEIVER =~ $receiver_re ]]; then
    die "--receiver '$RECEIVER': expected https://HOST:PORT"
fi
check_sources "$TOKEN_SRC"
check_prerequisites

# ---- embedded templates ---------------------------------------------------
# BEGIN EMBEDDED etc/cis490-shipper.service etc/cis490-shipper.timer etc/shipper.toml.example
emit_etc_cis490_shipper_service() {
    cat <<'CIS490_TEMPLATE_END'
# cis490-shipper: one pass over the episode queue, started by
# cis490-shipper.timer. Installed by scripts/install-lab-host.sh; see
# docs/deploy.md for the ownership model and the exit-code table.
[Unit]
Description=CIS490 episode shipper (one pass)
# Network must be configured (and the WireGuard/VPN route up, if any) before a
# pass can reach the receiver; a pass that runs too early exits 69 or 75 and
# the timer retries, so this is an optimisation, not a correctness need.
Wants=network-online.target
After=network-online.target
# Alerting hook: a failed pass (65 conflict/rejected, 69 unreachable/TLS,
# 77 auth refused, 78 config) can start a unit of your own, e.g. one that
# mails the operator. %n expands to this unit's name.
#OnFailure=cis490-alert@%n.service

[Service]
Type=oneshot
ExecStart=/usr/local/bin/cis490-shipper --once
User=cis490
Group=cis490
# 75 (EX_TEMPFAIL) means "receiver busy or a transient error, try again on
# the next tick": the next timer run is the retry, so it is not a failure.
# 65/69/77/78 need a human and stay failures (visible in
# `systemctl --failed` and to OnFailure=).
SuccessExitStatus=75
# A pass over a large backlog can take long on a slow uplink; the shipper has
# its own connect/io timeouts, this only catches a wedged process.
TimeoutStartSec=6h

# Robots keep the machine: lowest CPU and I/O priority.
Nice=19
IOSchedulingClass=idle
CPUWeight=10
IOWeight=10

# Files the shipper creates (tarballs, lock) are private to cis490; the
# episode directories it moves keep the recorder's modes.
UMask=0077

# --- Sandbox ---------------------------------------------------------------
# The whole file system is read-only except the data directory (episodes/,
# outbox/, shipped/, .lock). Keep in sync with data_dir in shipper.toml.
ProtectSystem=strict
ReadWritePaths=/var/lib/cis490
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateIPC=yes
ProtectHostname=yes
PrivateMounts=yes
# A user namespace where only root and cis490 are mapped: the recorder's
# files show up owned by "nobody", but the kernel still checks access with
# the real owners, so group cis490 (ours, mapped) still reads the recorder's
# files and renames its episode directories (checked under a booted systemd
# by scripts/test-systemd.sh). Owners never reach the tarball: every tar
# header has uid/gid 0 (src/shipper/pack.rs).
PrivateUsers=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
# TCP to the receiver and UDP/TCP to the DNS resolver. AF_UNIX too: the
# static musl binary logs to stderr and asks nameservers itself, but a glibc
# build resolves names through nss modules that talk over local sockets
# (resolve, mdns4_minimal, sss on Ubuntu lab hosts); refused, those modules
# are skipped and names only they know (.local, resolved's own) do not
# resolve. Every other family stays refused.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
NoNewPrivileges=yes
RemoveIPC=yes
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
DevicePolicy=closed
# Not set, on purpose: PrivateNetwork=/IPAddressDeny=: the shipper's job is
# to talk to the receiver. To pin it to the receiver's address, add a drop-in
# with IPAddressDeny=any and IPAddressAllow=<receiver IP> <DNS server IP>.

[Install]
# Enabled through the timer; nothing pulls the service in directly.
CIS490_TEMPLATE_END
}
emit_etc_cis490_shipper_timer() {
    cat <<'CIS490_TEMPLATE_END'
# Schedules cis490-shipper.service: the shipper has no loop of its own.
[Unit]
Description=Run the CIS490 episode shipper every few minutes

[Timer]
# First pass shortly after boot (or at once when the timer is enabled on a
# running machine: an OnBootSec= already in the past elapses immediately).
OnBootSec=2min
# Then 5 minutes after the previous pass *ended*, so a long upload never
# overlaps the next pass and a backlog is worked through back to back.
# A failed pass counts as ended too, so failures are retried on the same beat.
OnUnitInactiveSec=5min
# Spread a fleet so the hosts do not hit the receiver in lockstep after a
# power cut brings them all up at the same second.
RandomizedDelaySec=90s
AccuracySec=15s
# Persistent= only applies to OnCalendar= timers; with monotonic timers it
# does nothing. Catching up on missed runs is done by OnBootSec= instead (a
# pass at every boot), so say "false" explicitly rather than imply otherwise.
Persistent=false
Unit=cis490-shipper.service

[Install]
WantedBy=timers.target
CIS490_TEMPLATE_END
}
emit_etc_shipper_toml_example() {
    cat <<'CIS490_TEMPLATE_END'
# /etc/cis490/shipper.toml: configuration of cis490-shipper on a lab host.
#
# Installed by scripts/install-lab-host.sh (owner root:cis490, mode 0640: the
# service reads it and cannot change it). Plain TOML: strings in double
# quotes, written as they are (no backslash escapes, no single quotes),
# whole numbers, comments after #. Unknown keys are errors, so a typo never
# falls back to a default.
# Check the whole path with:  sudo -u cis490 cis490-shipper --ping
#
# Ownership model (see docs/deploy.md):
#   data_dir            cis490:cis490  2770  (setgid: new entries get group cis490)
#   data_dir/episodes   cis490:cis490  2770  the recorder writes here
#   data_dir/outbox     cis490:cis490  2700  tarballs being shipped, shipper only
#   data_dir/shipped    cis490:cis490  2770  shipped episodes, moved here
# The recorder (the process that writes episodes) runs as a user in group
# cis490 with umask 0007 (or 0002), so each episode directory it creates is
# group cis490 and group-writable: the shipper must read every file and move
# the directory from episodes/ to shipped/, and moving a directory to another
# parent needs write permission on the directory itself (its ".." entry).
# Write done.marker last, when every other file of the episode is closed.

# This host's id: the name episodes are filed under on the receiver, and with
# mTLS the DNS SAN of this host's client certificate. 1-128 characters from
# A-Z a-z 0-9 . _ -, starting with a letter or digit; with mTLS a DNS name
# (labels of letters, digits, hyphens joined by dots). Required.
host_id = "lab-01"

# Holds episodes/<id>/ (finished when done.marker exists), outbox/, shipped/
# and the lock file .lock. Required: an absolute path of its own (/, /var,
# /var/lib, /tmp, /home and other system directories are refused). The
# systemd unit may write only /var/lib/cis490 (ReadWritePaths=): change both
# together.
data_dir = "/var/lib/cis490"

# The receiver, as https://HOST:PORT (port defaults to 443). HOST is also the
# name checked against the receiver's certificate. Required.
receiver = "https://receiver.lab.example:8443"

# PEM file of the CA(s) to trust for the receiver's certificate (the lab CA
# from scripts/pki.sh). Optional; when absent the public web PKI roots built
# into the binary are used (a receiver behind Caddy with a public cert).
ca_file = "/etc/cis490/tls/ca.crt"

# Client certificate and its private key (PEM, key in PKCS#8), for a receiver
# that requires client certificates (client_ca_file set there). Optional, but
# both or neither.
cert_file = "/etc/cis490/tls/host.crt"
key_file = "/etc/cis490/tls/host.key"

# File holding this host's bearer token (one line; surrounding whitespace is
# ignored). Required. The shipper refuses to start if the file is readable by
# group or others, or is not a regular file (a FIFO, device or directory):
# keep it owner cis490, mode 0600 (or 0400).
token_file = "/etc/cis490/shipper.token"

# zstd compression level, 1 (fast) to 19 (small). Default 3.
#compression_level = 3

# zstd worker threads; 0 compresses on the shipper's own thread, leaving the
# other cores to the robot. 0 to 4, and at most 2 at levels 10-16 and 1 at
# levels 17-19, since zstd's memory grows with both. Default 0.
#
# Peak memory (RSS) of the shipper packing one 300 MB episode, in MiB, by
# level and thread count (* refused); a 600 MB one took the same, but level
# 9 with 4 threads took 283:
#   level     0     1     2     4
#     1       3    18    28    33
#     2       4    34    55    64
#     3       5    67   108   126
#     4       6    68   110   131
#     5       7    61   111   133
#     6       7    69   111   133
#     7       9    63   108   143
#     8       9    63   100   143
#     9      16   108   166   267
#    10      26   118   170   307*
#    11      26   118   186   291*
#    12      46   138   210   371*
#    13      38   130   194   339*
#    14      54   146   226   403*
#    15      70   162   258   451*
#    16      38   130   210   339*
#    17      58   242   354*  579*
#    18      59   242   375*  581*
#    19      91   274   419*  697*
# (static x86_64 build, /usr/bin/time -v; the README says how to repeat it)
#compression_threads = 0

# Seconds to wait for the TCP connection to the receiver. 1 to 86400.
# Default 10.
#connect_timeout_s = 10

# Seconds any single read or write on an established connection may stall
# (not a limit on the whole upload). 1 to 86400. Default 60.
#io_timeout_s = 60

# Delete shipped episodes (data_dir/shipped/<id>) this many days after the
# receiver confirmed them; 0 deletes them as soon as it did. Default: keep
# forever (docs/operating.md, "Retention").
#keep_shipped_days = 30

# Delete the oldest shipped episodes while data_dir's file system has less
# than this percentage free (1-99). Never touches episodes not yet shipped.
#min_free_percent = 10

# Exit 69 (and log an error) when finished work has waited this long with no
# verdict from the receiver. 1 to 8760. Default 24.
#alert_after_hours = 24

# Prometheus text file written after each pass, for node_exporter's
# textfile collector (docs/operating.md, "Metrics"). Default: none.
#metrics_file = "/var/lib/prometheus/node-exporter/cis490-shipper.prom"

# Upper bound on the upload rate, so the lab's link keeps room for everyone
# else: B/s, kB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s, kbit/s, Mbit/s, Gbit/s
# (1 KiB/s to 1 TB/s). Default: no limit.
#max_upload_rate = "20MB/s"

# Send each tarball while it is being packed (a chunked PUT whose digest
# follows the body), instead of packing it whole first: the upload overlaps
# the packing. false: pack, then send (for a proxy in front of the receiver
# that drops HTTP trailers). Default true.
#upload_while_packing = true
CIS490_TEMPLATE_END
}
# END EMBEDDED

# ---- install --------------------------------------------------------------

ensure_user /var/lib/cis490 "CIS490 episode shipper"
if [[ -n $RECORDER_USER ]]; then
    # The recorder needs group cis490 to hand episodes over (see the
    # ownership model in shipper.toml.example).
    run_system usermod --append --groups "$USER_NAME" "$RECORDER_USER"
fi

# ---- the Python shipper, if this host ran it --------------------------------
# It ran from /opt/cis490 as a daemon (a cis490-shipper.service that is not
# Type=oneshot) next to a cis490-orchestrator.service. Left running, it and
# the timer would ship the same episodes: stop and disable it before the
# timer exists. Its code stays where it is; docs/migrating.md says what
# becomes of what it left in data/.
old_unit=$R/etc/systemd/system/$NAME.service
python_found=()
python_units=()
if [[ -f $old_unit ]] && ! grep -q '^Type=oneshot' "$old_unit"; then
    python_found+=("$NAME.service (a daemon, not Type=oneshot)")
    python_units+=("$NAME.service")
fi
if [[ -f $R/etc/systemd/system/cis490-orchestrator.service ]]; then
    python_found+=(cis490-orchestrator.service)
    python_units+=(cis490-orchestrator.service)
fi
[[ -d $R/opt/cis490 ]] && python_found+=(/opt/cis490)
if [[ ${#python_found[@]} -gt 0 ]]; then
    note "found the Python shipper: ${python_found[*]}; stopping and disabling its units before installing the timer"
    for unit in "${python_units[@]}"; do
        if [[ -n $ROOT ]]; then
            if command -v systemctl >/dev/null; then
                run systemctl --root="$ROOT" --quiet disable "$unit"
            else
                note "skipped (no systemctl): disable $unit in $ROOT"
            fi
        else
            run systemctl disable --now "$unit"
        fi
    done
fi

install_base
emit_etc_shipper_toml_example >"$TMP/shipper.toml"
config_existed=0
[[ -e $R/etc/cis490/shipper.toml ]] && config_existed=1
if [[ -n $HOST_ID ]]; then
    sed -i "s|^host_id = .*|host_id = \"$HOST_ID\"|" "$TMP/shipper.toml"
fi
if [[ -n $RECEIVER ]]; then
    sed -i "s|^receiver = .*|receiver = \"$RECEIVER\"|" "$TMP/shipper.toml"
fi
keep_or_put "$TMP/shipper.toml" /etc/cis490/shipper.toml 0640 root:$USER_NAME
install_tls host
# The token is the exception the shipper insists on: its own, mode 0600.
[[ -z $TOKEN_SRC ]] || keep_or_put "$TOKEN_SRC" /etc/cis490/shipper.token 0600 $USER_NAME:$USER_NAME

# Data: setgid group cis490 so whatever the recorder creates stays in the
# group; outbox/ is the shipper's alone (its setgid bit is inherited from
# data_dir, and said explicitly so a re-run does not fight over it).
mkdir_owned /var/lib/cis490 2770 $USER_NAME:$USER_NAME
mkdir_owned /var/lib/cis490/episodes 2770 $USER_NAME:$USER_NAME
mkdir_owned /var/lib/cis490/outbox 2700 $USER_NAME:$USER_NAME
mkdir_owned /var/lib/cis490/shipped 2770 $USER_NAME:$USER_NAME

ensure_system_dir /etc/systemd/system
emit_etc_cis490_shipper_service >"$TMP/$NAME.service"
emit_etc_cis490_shipper_timer >"$TMP/$NAME.timer"
put_file "$TMP/$NAME.service" /etc/systemd/system/$NAME.service 0644 root:root
put_file "$TMP/$NAME.timer" /etc/systemd/system/$NAME.timer 0644 root:root

# A fresh template still names example hosts and files: starting the timer
# now would only fail every five minutes until it is edited.
timer_started=0
if enable_unit $NAME.timer && [[ $config_existed -eq 1 ]]; then
    run systemctl start $NAME.timer
    timer_started=1
fi

# Whether some user besides the service's own is in its group (the
# recorder, added by an earlier run or by hand).
group_has_members() {
    local line
    if [[ -n $ROOT ]]; then
        line=$(grep "^$USER_NAME:" "$R/etc/group" 2>/dev/null) || return 1
    else
        line=$(getent group "$USER_NAME") || return 1
    fi
    [[ -n ${line##*:} ]]
}

# A kept config is the operator's, unless it still names the example receiver.
unset_keys=()
if [[ $config_existed -eq 0 ]]; then
    [[ -n $HOST_ID ]] || unset_keys+=(host_id)
    [[ -n $RECEIVER ]] || unset_keys+=(receiver)
elif grep -q '^receiver = "https://receiver.lab.example' "$R/etc/cis490/shipper.toml"; then
    unset_keys=(host_id receiver)
fi
if [[ ${#unset_keys[@]} -gt 0 ]]; then
    keys=${unset_keys[*]}
    next_step "edit /etc/cis490/shipper.toml: ${keys// /, } (still the example values)"
fi
provided "$CA_SRC" /etc/cis490/tls/ca.crt ||
    next_step "put the lab CA in /etc/cis490/tls/ca.crt (--ca), or drop ca_file from shipper.toml for a receiver with a public certificate"
provided "$CERT_SRC" /etc/cis490/tls/host.crt ||
    next_step "put this host's certificate and key in /etc/cis490/tls/host.crt and host.key (--cert, --key), or drop cert_file and key_file from shipper.toml"
provided "$TOKEN_SRC" /etc/cis490/shipper.token ||
    next_step "put the token in /etc/cis490/shipper.token (owner $USER_NAME, mode 0600; --token)"
if [[ -z $RECORDER_USER ]] && ! group_has_members; then
    next_step "add the recorder's user to group $USER_NAME (--recorder-user USER), unless it runs as $USER_NAME"
fi
if [[ ${#python_found[@]} -gt 0 ]]; then
    next_step "once this shipper works, remove the Python one: sudo rm -rf /opt/cis490 /etc/systemd/system/cis490-orchestrator.service && sudo systemctl daemon-reload (docs/migrating.md)"
fi
next_step "sudo -u $USER_NAME $NAME --ping"
[[ $timer_started -eq 1 ]] ||
    next_step "sudo systemctl start $NAME.timer && systemctl list-timers $NAME.timer"
next_step "journalctl -u $NAME.service"
print_next
