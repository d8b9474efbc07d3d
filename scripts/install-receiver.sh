#!/usr/bin/env bash
# Install cis490-receiver on the central node: binary, config template, store
# directory and the systemd service.
#
# Made to run next to one scp'd binary: no repository, no cargo, no network.
# The units and the config template are embedded below (generated from etc/
# by scripts/embed-templates.sh; tests/deploy.rs checks they match), so this
# file plus the binary is all a lab host needs.
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

while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) need_arg "$@"; BINARY=$2; shift 2 ;;
        --ca) need_arg "$@"; CA_SRC=$2; shift 2 ;;
        --cert) need_arg "$@"; CERT_SRC=$2; shift 2 ;;
        --key) need_arg "$@"; KEY_SRC=$2; shift 2 ;;
        --no-enable) ENABLE=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --root) need_arg "$@"; ROOT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

for f in "$CA_SRC" "$CERT_SRC" "$KEY_SRC"; do
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

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

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
Type=exec
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
# Listens on TCP only; logs go to stderr, so no AF_UNIX.
RestrictAddressFamilies=AF_INET AF_INET6
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

# Connections served at once; more wait in the kernel's backlog. Default 64.
#max_connections = 64

# Seconds to complete the TLS handshake and send a request head. Default 10.
#head_timeout_s = 10

# Seconds any single read of a request body (or write of an answer) may
# stall. Default 60.
#body_timeout_s = 60

# Seconds a kept-alive connection may sit idle between requests. Default 30.
#idle_timeout_s = 30

# One line per lab host: "HOST_ID" = "<sha256 of the host's token, lowercase
# hex>". `scripts/pki.sh host HOST_ID` prints the line to paste. The receiver
# never sees the tokens themselves; each host needs its own token.
[hosts]
# "lab-01" = "0000000000000000000000000000000000000000000000000000000000000000"
CIS490_TEMPLATE_END
}
# END EMBEDDED

# ---- install --------------------------------------------------------------

# The service user: no login, no home of its own beyond the store. On a node
# that is also a lab host the shipper's installer may have made it already.
if [[ -z $ROOT ]] && getent passwd "$USER_NAME" >/dev/null; then
    note "user $USER_NAME exists"
else
    run_system useradd --system --user-group --home-dir /var/lib/cis490-receiver \
        --no-create-home --shell /usr/sbin/nologin \
        --comment "CIS490 episode receiver" "$USER_NAME"
fi

ensure_system_dir /usr/local/bin
put_file "$BINARY" /usr/local/bin/$NAME 0755 root:root

# Config and key: readable by the service, writable by root only.
mkdir_owned /etc/cis490 0750 root:$USER_NAME
mkdir_owned /etc/cis490/tls 0750 root:$USER_NAME
emit_etc_receiver_toml_example >"$TMP/receiver.toml"
config_existed=0
[[ -e $R/etc/cis490/receiver.toml ]] && config_existed=1
keep_or_put "$TMP/receiver.toml" /etc/cis490/receiver.toml 0640 root:$USER_NAME
[[ -z $CA_SRC ]] || keep_or_put "$CA_SRC" /etc/cis490/tls/ca.crt 0644 root:root
[[ -z $CERT_SRC ]] || keep_or_put "$CERT_SRC" /etc/cis490/tls/server.crt 0644 root:root
[[ -z $KEY_SRC ]] || keep_or_put "$KEY_SRC" /etc/cis490/tls/server.key 0640 root:$USER_NAME

# The store: the receiver's alone.
mkdir_owned /var/lib/cis490-receiver 0700 $USER_NAME:$USER_NAME

ensure_system_dir /etc/systemd/system
emit_etc_cis490_receiver_service >"$TMP/$NAME.service"
put_file "$TMP/$NAME.service" /etc/systemd/system/$NAME.service 0644 root:root

if [[ -n $ROOT ]]; then
    # Offline: systemctl --root only creates the symlinks inside ROOT.
    if [[ $ENABLE -eq 1 ]]; then
        if command -v systemctl >/dev/null; then
            run systemctl --root="$ROOT" --quiet enable $NAME.service
        else
            note "skipped (no systemctl): enable $NAME.service in $ROOT"
        fi
    fi
else
    run systemctl daemon-reload
    if [[ $ENABLE -eq 1 ]]; then
        if [[ $config_existed -eq 1 ]]; then
            # A re-run after an upgrade: pick up the new binary and unit.
            run systemctl enable $NAME.service
            run systemctl restart $NAME.service
        else
            # The fresh template has no [hosts]: the receiver would refuse to
            # start until it is edited.
            run systemctl enable $NAME.service
        fi
    fi
fi

cat <<EOF
$PROG: done.
Next:
  1. edit /etc/cis490/receiver.toml (listen, cert_file, key_file, client_ca_file)
  2. paste each lab host's line from 'pki.sh host ID' under [hosts]
  3. sudo systemctl restart $NAME && journalctl -u $NAME -n 20
     (look for "listening on https://...")
EOF
