#!/usr/bin/env bash
# Install cis490-receiver on the central node: binary, config template, store
# directory and the systemd service.
#
# Made to run next to one scp'd binary: no repository, no cargo, no network.
# The code shared with install-lab-host.sh (from scripts/lib/), the unit and
# the config template (from etc/) are copied in below by
# scripts/embed-templates.sh (tests/deploy.rs checks the copies match), so
# this file plus the binary is all the central node needs.
#
# Idempotent: running it again reinstalls the binary and unit (same bytes,
# same modes) and never touches an existing config, key or stored episode.
set -euo pipefail

PROG=install-receiver
NAME=cis490-receiver
USER_NAME=cis490

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS]

Install cis490-receiver and its systemd service on the central node.

Options:
  --binary PATH   the cis490-receiver binary (default: look next to this
                  script, then in the current directory)
  --ca FILE       lab CA certificate (client CA) -> /etc/cis490/tls/ca.crt
  --cert FILE     server certificate -> /etc/cis490/tls/server.crt
  --key FILE      its private key -> /etc/cis490/tls/server.key
  --no-enable     install the unit but do not enable the service
  --dry-run       print what would be done, change nothing
  --root DIR      install into DIR as if it were / (for tests and image
                  builds): no useradd, chown or systemctl on this machine
  -h, --help      this help

An existing config, certificate or key is never overwritten; to replace
one, remove it first.
EOF
}

# ---- shared with install-lab-host.sh -------------------------------------
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
# All of them are common_arg's: --binary, --ca, --cert, --key, --no-enable,
# --dry-run, --root, --help.

while [[ $# -gt 0 ]]; do
    common_arg "$@"
    shift "$ARG_WORDS"
done

check_sources
check_prerequisites

# ---- embedded templates ---------------------------------------------------
# BEGIN EMBEDDED etc/cis490-receiver.service etc/receiver.toml.example
emit_etc_cis490_receiver_service() {
    cat <<'CIS490_TEMPLATE_END'
# cis490-receiver: stores episodes uploaded by the lab hosts' shippers.
# Installed by scripts/install-receiver.sh; see docs/deploy.md.
[Unit]
Description=CIS490 episode receiver
# The receiver binds to a configured address (e.g. the WireGuard address), so
# it needs that address to exist before it starts.
Wants=network-online.target
After=network-online.target
# Restart=on-failure gives up after 5 failed starts in 5 minutes (e.g. a
# config error, exit 78), instead of looping for ever.
StartLimitIntervalSec=5min
StartLimitBurst=5

[Service]
# The receiver says READY=1 (sd_notify) once every listener listens, so
# `systemctl start/restart` return only then, and fail when it exits first
# (a config error: exit 78). It also says STOPPING=1 when it drains and keeps
# a STATUS= line for `systemctl status`. No WatchdogSec=: accept(2) blocks
# while no lab host uploads, so an idle receiver cannot vouch for its accept
# loops without being woken on purpose; a loop that fails for good exits,
# and Restart= below brings it back.
Type=notify
ExecStart=/usr/local/bin/cis490-receiver
User=cis490
Group=cis490
# Restart after a crash; see StartLimit* above for the give-up rule.
Restart=on-failure
RestartSec=5s
# SIGTERM makes the receiver stop accepting and finish or drop in-flight
# uploads (the shipper retries those); give it a little time to do so.
KillSignal=SIGTERM
TimeoutStopSec=30s
# Stored episodes and their temporary files are private to cis490.
UMask=0077
# One open file per connection plus the store's own; the default soft limit
# (1024) is plenty for max_connections=64, raise both together.
LimitNOFILE=4096

# --- Sandbox ---------------------------------------------------------------
# Read-only file system except the store (keep in sync with store_dir in
# receiver.toml).
ProtectSystem=strict
ReadWritePaths=/var/lib/cis490-receiver
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateIPC=yes
PrivateMounts=yes
# The receiver only owns files it creates itself, so a user namespace costs
# nothing: other users' files are simply out of its sight.
PrivateUsers=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
# TCP for the listeners; AF_UNIX for the readiness notification
# ($NOTIFY_SOCKET is a local datagram socket), and for nss modules should a
# glibc build be used. (Logs need none: stderr is a socket systemd hands
# over, not one we create.) Every other family stays refused.
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
# Listen on a port >= 1024 (e.g. 8443): no CAP_NET_BIND_SERVICE, no
# capabilities at all.
CapabilityBoundingSet=
AmbientCapabilities=
DevicePolicy=closed
# Not set: PrivateNetwork= (it serves the network). To accept only the lab
# network, add a drop-in with IPAddressDeny=any and
# IPAddressAllow=<lab subnet> localhost.

[Install]
WantedBy=multi-user.target
CIS490_TEMPLATE_END
}
emit_etc_receiver_toml_example() {
    cat <<'CIS490_TEMPLATE_END'
# /etc/cis490/receiver.toml: configuration of cis490-receiver on the central
# node.
#
# Installed by scripts/install-receiver.sh (owner root:cis490, mode 0640).
# Plain TOML: strings in double quotes, written as they are (no backslash
# escapes, no single quotes), whole numbers, comments after #. Unknown keys
# are errors.
# The receiver refuses to start without at least one [hosts] line.

# TLS listener, ADDRESS:PORT with an IP address (e.g. 0.0.0.0:8443,
# [::]:8443, or the node's WireGuard address). Use a port >= 1024: the unit
# grants no capabilities. Required unless listen_plain is set.
listen = "0.0.0.0:8443"

# Plain-HTTP listener for a TLS-terminating reverse proxy (Caddy, nginx) on
# the same machine. Loopback addresses only (e.g. 127.0.0.1:8080). Optional;
# default none.
#listen_plain = "127.0.0.1:8080"

# Where episodes are stored. Required: an absolute path of its own (/, /var,
# /var/lib, /srv, /tmp, /home and other system directories are refused). The
# systemd unit may write only /var/lib/cis490-receiver (ReadWritePaths=):
# change both together.
store_dir = "/var/lib/cis490-receiver"

# Server certificate chain and private key (PEM, key in PKCS#8), from
# `scripts/pki.sh server NAME...`. Required with listen.
cert_file = "/etc/cis490/tls/server.crt"
key_file = "/etc/cis490/tls/server.key"

# PEM CA that issues the lab hosts' client certificates (the lab CA). When
# set, every TLS client must present a certificate from it whose DNS SAN is
# its host id (wildcards never count) with extended key usage clientAuth, and
# [hosts] ids must be DNS names. Optional; default none (token only).
client_ca_file = "/etc/cis490/tls/ca.crt"

# Largest accepted upload, in bytes. Default 68719476736 (64 GiB).
#max_body_bytes = 68719476736

# Connections served at once (a thread each). At most half of them may be
# connections that have not authenticated yet; when those are full, the
# oldest unauthenticated connection of the busiest address is closed to
# admit a newcomer. Nothing waits for a slot: beyond, a newcomer is
# answered 503 at once (shippers retry at their next pass), or closed
# without an answer when 16 such answers are already under way. Default 64.
#max_connections = 64

# Connections one source address may hold on the TLS listener; more are
# closed at once. Raise it if many lab hosts reach the receiver through one
# NAT address. The plain listener (behind a proxy, one address for all) is
# exempt: limit clients per address in the proxy. Default 8.
#max_connections_per_ip = 8

# Seconds to complete the TLS handshake and send a request head. Default 10.
#head_timeout_s = 10

# Seconds any single read of a request body (or write of an answer) may
# stall. Default 60.
#body_timeout_s = 60

# Seconds a kept-alive connection may sit idle between requests. Default 30.
#idle_timeout_s = 30

# A cut upload leaves a partial file (<store_dir>/<host>/.partial-<id>.<sha256>)
# that the shipper resumes instead of starting over. Partials untouched for
# this many hours are deleted (at start and every 10 s). Default 72.
#partial_ttl_hours = 72

# Bytes of partial uploads one host may keep; beyond, its oldest are
# deleted (never one being written). Set it to at least max_body_bytes for
# every upload to stay resumable, and mind the disk: hosts x this.
# Default: max_body_bytes.
#max_partial_bytes_per_host = 68719476736

# An S3-compatible object store (Ceph RGW, AWS S3, MinIO) to publish to,
# so that several receivers can share one bucket (docs/deploy.md, "Scaling
# out"). Unset (the default): episodes are stored in store_dir itself. Set:
# store_dir is only the spool of uploads in flight, and s3_endpoint,
# s3_bucket, s3_access_key_id and s3_secret_key_file are required.
# s3_endpoint is https://HOST[:PORT] (http:// only for a gateway on this
# machine); the secret key file must be mode 0600; s3_ca_file is needed if
# the store's certificate is not from a public CA. Episodes larger than
# s3_max_single_put_bytes (default 5 GiB, the most S3 takes in one PUT) go
# by multipart upload. `cis490-receiver --check-config` signs a HEAD of the
# bucket.
#s3_endpoint = "https://rgw.lab"
#s3_bucket = "cis490"
#s3_prefix = "episodes/"
#s3_region = "us-east-1"
#s3_access_key_id = "0555b35654ad1656d804"
#s3_secret_key_file = "/etc/cis490/s3.secret"
#s3_ca_file = "/etc/cis490/tls/rgw-ca.crt"
#s3_max_single_put_bytes = 5368709120

# One line per lab host: "HOST_ID" = "<sha256 of the host's token, lowercase
# hex>". `scripts/pki.sh host HOST_ID` prints the line to paste. The receiver
# never sees the tokens themselves; each host needs its own token.
[hosts]
# "lab-01" = "0000000000000000000000000000000000000000000000000000000000000000"
CIS490_TEMPLATE_END
}
# END EMBEDDED

# ---- install --------------------------------------------------------------

ensure_user /var/lib/cis490-receiver "CIS490 episode receiver"

install_base
emit_etc_receiver_toml_example >"$TMP/receiver.toml"
config_existed=0
[[ -e $R/etc/cis490/receiver.toml ]] && config_existed=1
keep_or_put "$TMP/receiver.toml" /etc/cis490/receiver.toml 0640 root:$USER_NAME
install_tls server

# The store: the receiver's alone.
mkdir_owned /var/lib/cis490-receiver 0700 $USER_NAME:$USER_NAME

ensure_system_dir /etc/systemd/system
emit_etc_cis490_receiver_service >"$TMP/$NAME.service"
put_file "$TMP/$NAME.service" /etc/systemd/system/$NAME.service 0644 root:root

# A re-run after an upgrade picks up the new binary and unit. The fresh
# template has no [hosts]: the receiver would refuse to start until edited.
restarted=0
if enable_unit $NAME.service && [[ $config_existed -eq 1 ]]; then
    run systemctl restart $NAME.service
    restarted=1
fi

# Whether the installed config has a line under [hosts] (the fresh
# template has only a commented example).
hosts_configured() {
    awk '/^\[hosts\]/ { h = 1; next } /^\[/ { h = 0 }
         h && !/^[[:space:]]*(#|$)/ { found = 1 } END { exit !found }' \
        "$R/etc/cis490/receiver.toml" 2>/dev/null
}

provided "$CERT_SRC" /etc/cis490/tls/server.crt ||
    next_step "put the server certificate and key from 'pki.sh server NAME...' in /etc/cis490/tls/server.crt and server.key (--cert, --key)"
provided "$CA_SRC" /etc/cis490/tls/ca.crt ||
    next_step "put the lab CA in /etc/cis490/tls/ca.crt (--ca), or drop client_ca_file from receiver.toml for tokens only"
hosts_configured ||
    next_step "paste each lab host's line from 'pki.sh host ID' under [hosts] in /etc/cis490/receiver.toml"
if [[ $restarted -eq 1 ]]; then
    next_step "journalctl -u $NAME -n 20    (look for \"listening on https://...\")"
else
    next_step "sudo systemctl restart $NAME && journalctl -u $NAME -n 20
     (look for \"listening on https://...\")"
fi
print_next
