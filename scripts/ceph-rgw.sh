#!/usr/bin/env bash
# A throwaway one-node Ceph cluster with an S3 gateway (RADOS Gateway), for
# tests that need a real S3-compatible object store:
#
#   scripts/ceph-rgw.sh install                  # the Debian packages, once
#   scripts/ceph-rgw.sh start DIR [--owner PID]  # prints key=value lines
#   scripts/ceph-rgw.sh stop DIR                 # SIGKILLs what start recorded
#   scripts/ceph-rgw.sh gateway-stop DIR         # SIGKILLs the gateway only (an outage)
#   scripts/ceph-rgw.sh gateway-start DIR        # starts it again: same port, keys, data
#
# Everything lives under DIR: ceph.conf (with a fresh fsid), the keyring, the
# monitor's store, logs, admin sockets. The OSD keeps objects in memory
# (memstore), so a cluster costs no disk and leaves nothing behind. No
# systemd, no container: the daemons are plain child processes, and every
# command is pointed at DIR/ceph.conf, so /etc/ceph and /var/lib/ceph are
# never read or written. Every daemon binds 127.0.0.1 only.
#
# `start` prints, once the gateway answers HTTP:
#   endpoint=http://127.0.0.1:PORT
#   region=us-east-1
#   access_key=...
#   secret_key=...
#   pids=PID PID PID
#   startup_ms=N
#
# Why SIGKILL: the OSD's data is in memory and is meant to vanish, and a
# SIGTERMed radosgw can take minutes to exit once the monitor is gone.
# `--owner PID` adds a watchdog that kills the cluster when PID exits, so a
# test process killed before it could run `stop` leaks nothing for long.
#
# Exit codes: 0 ok, 64 usage, 77 packages missing (a test should skip), 69 the
# cluster did not come up (the log tails are printed), 1 anything else.
#
# CEPH_ARGS reaches every Ceph command, e.g. CEPH_ARGS=--debug-rgw=20 for
# verbose gateway logs in DIR/log/client.rgw.a.log.
set -euo pipefail

PROG=ceph-rgw.sh
EX_USAGE=64
EX_UNAVAILABLE=69
EX_SKIP=77
PACKAGES=(radosgw ceph-mon ceph-osd ceph-common)
COMMANDS=(ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool)
# Bounds for start-up: a cold start takes a few seconds; these are generous
# for a loaded 2-core machine and still end a hung start.
START_TIMEOUT_S=${CEPH_RGW_START_TIMEOUT_S:-120}
REGION=us-east-1

usage() {
    cat <<EOF
Usage: $PROG COMMAND [ARGS]

Commands:
  install                  apt-get install --no-install-recommends ${PACKAGES[*]}
  start DIR [--owner PID]  start a one-node cluster and S3 gateway under DIR
                           (created, must not hold a cluster already); with
                           --owner, kill it when process PID exits
  stop DIR                 SIGKILL the processes start recorded in DIR/pids
  gateway-stop DIR         SIGKILL only the S3 gateway (radosgw): the store is
                           down, its data kept by the monitor and OSD
  gateway-start DIR        start the gateway again on the same port; prints pid=PID
                           once it answers HTTP
  check                    exit 0 if the packages are installed, 77 if not
EOF
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

missing_commands() {
    local c missing=()
    for c in "${COMMANDS[@]}"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    printf '%s' "${missing[*]}"
}

require_packages() {
    local missing
    missing=$(missing_commands)
    if [[ -n $missing ]]; then
        printf '%s: Ceph is not installed (missing: %s); install it with: %s install\n' \
            "$PROG" "$missing" "$0" >&2
        printf '%s: (that is: apt-get install --no-install-recommends %s)\n' \
            "$PROG" "${PACKAGES[*]}" >&2
        exit "$EX_SKIP"
    fi
}

cmd_install() {
    [[ $(id -u) -eq 0 ]] || die "install needs root (apt-get)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
}

# Whether anything on this machine uses local TCP port $1 (any state, any
# address): /proc/net/tcp{,6} name it in hex.
port_in_use() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'NR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# A port below the kernel's ephemeral range (so no outgoing connection takes
# it between our check and the daemon's bind) that nothing uses now. A race
# with another process choosing the same port remains; the daemon then fails
# to bind and start reports it.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + (RANDOM * 32768 + RANDOM) % 22000))
        if ! port_in_use "$p"; then
            printf '%s' "$p"
            return 0
        fi
    done
    die "no free TCP port found in 10000-31999"
}

random_hex() {
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# The state a started cluster leaves in DIR.
pids_file() { printf '%s/pids' "$1"; }

record_pid() {
    printf '%s\n' "$2" >>"$(pids_file "$1")"
}

# Whether PID $1 is alive and still the process we started for cluster DIR
# $2 (its command line names a file under DIR), so a PID the kernel reused
# for someone else's process is never killed.
ours() {
    local pid=$1 dir=$2 state cmdline
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$dir/"* || $cmdline == *" $dir "* ]]
}

# SIGKILL every recorded PID that is still ours, then wait (bounded) until
# they are gone.
kill_recorded() {
    local dir=$1 pid i alive
    local file
    file=$(pids_file "$dir")
    [[ -f $file ]] || return 0
    local pids=()
    while read -r pid; do
        [[ $pid =~ ^[0-9]+$ ]] && pids+=("$pid")
    done <"$file"
    for pid in "${pids[@]}"; do
        # The watchdog runs this too, and is in the list.
        if [[ $pid != "$$" ]] && ours "$pid" "$dir"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            if [[ $pid != "$$" ]] && ours "$pid" "$dir"; then alive=1; fi
        done
        ((alive)) || return 0
        sleep 0.05
    done
    printf '%s: warning: processes of %s still alive after SIGKILL\n' "$PROG" "$dir" >&2
}

print_log_tails() {
    local dir=$1 f
    for f in "$dir"/log/*; do
        [[ -f $f ]] || continue
        printf '%s: --- last lines of %s\n' "$PROG" "$f" >&2
        tail -n 15 "$f" >&2 || true
    done
}

write_conf() {
    local dir=$1 fsid=$2 mon_port=$3 rgw_port=$4
    cat >"$dir/ceph.conf" <<EOF
# Written by $PROG for a throwaway test cluster. Every path is under $dir.
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
crash dir = $dir/crash
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
log to syslog = false
err to syslog = false
clog to syslog = false
# One OSD: pools of one copy, placement by OSD rather than by host.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# A lone monitor need not wait to batch proposals: start-up ~13 s -> ~3 s.
paxos propose interval = 0.1
paxos min wait = 0.01
# A client whose op names a pool newer than its osdmap (radosgw while
# radosgw-admin creates pools) asks for a new map on its next objecter tick,
# every 5 s by default: start-up varied from ~2.5 s to ~7 s. With 0.5 s it
# stays ~2.5 s.
objecter tick interval = 0.5

[mon]
mon data = $dir/mon.\$id
admin socket = $dir/run/\$name.asok

[osd]
osd data = $dir/osd.\$id
osd objectstore = memstore
memstore device bytes = 2147483648
admin socket = $dir/run/\$name.asok

[client.rgw.a]
rgw data = $dir/rgw.a
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
admin socket = $dir/run/\$name.asok
EOF
}

# Starts a daemon in the foreground as a background job of this shell, its
# output in DIR/log/NAME.out (never the caller's stdout: a test reading it
# to EOF would wait for the cluster to die), records its PID and leaves it
# in SPAWNED.
SPAWNED=
spawn() {
    local dir=$1 name=$2
    shift 2
    "$@" </dev/null >>"$dir/log/$name.out" 2>&1 &
    SPAWNED=$!
    record_pid "$dir" "$SPAWNED"
}

# Fails start if the daemon with PID $1 has died.
check_alive() {
    local pid=$1 what=$2
    if ! kill -0 "$pid" 2>/dev/null || [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) == Z ]]; then
        start_failed "$what exited during start-up"
    fi
}

START_DIR=
start_failed() {
    printf '%s: start failed: %s\n' "$PROG" "$*" >&2
    if [[ -n $START_DIR ]]; then
        print_log_tails "$START_DIR"
        kill_recorded "$START_DIR"
    fi
    exit "$EX_UNAVAILABLE"
}

# Seconds left before the start-up deadline, at least 1 (`timeout 0` would
# mean no bound at all).
remaining_s() {
    local left=$((START_TIMEOUT_S - SECONDS))
    printf '%s' $((left > 0 ? left : 1))
}

# One HTTP/1.0 request to 127.0.0.1:$1 over bash's /dev/tcp; succeeds if
# the answer starts with a status line.
http_answers() {
    local port=$1 line
    {
        exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
        printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 || { exec 3>&-; return 1; }
        IFS= read -r -t 2 line <&3 || line=
        exec 3>&-
    } 2>/dev/null
    [[ $line == HTTP/1.* ]]
}

cmd_start() {
    local dir=${1:-} owner=
    [[ -n $dir ]] || { usage >&2; exit "$EX_USAGE"; }
    shift
    while (($#)); do
        case $1 in
        --owner)
            [[ ${2:-} =~ ^[0-9]+$ ]] || { usage >&2; exit "$EX_USAGE"; }
            owner=$2
            shift 2
            ;;
        *) usage >&2; exit "$EX_USAGE" ;;
        esac
    done
    require_packages
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    [[ ! -e $(pids_file "$dir") ]] || die "$dir already holds a cluster (stop it first, or use a fresh directory)"
    # Unix socket paths are limited to 107 bytes.
    ((${#dir} <= 70)) || die "$dir is too long for the admin sockets under it (70 bytes at most)"
    mkdir -p "$dir"/{run,log,crash,mon.a,osd.0,rgw.a}
    : >"$(pids_file "$dir")"
    START_DIR=$dir
    SECONDS=0
    local t0
    t0=$(date +%s%N)

    local fsid mon_port rgw_port osd_uuid access_key secret_key
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    mon_port=$(free_port)
    rgw_port=$(free_port)
    while [[ $rgw_port == "$mon_port" ]]; do rgw_port=$(free_port); done
    write_conf "$dir" "$fsid" "$mon_port" "$rgw_port"
    local conf=(-c "$dir/ceph.conf")

    # One keyring for every entity: mkfs seeds the monitor's auth database
    # with all of it, so no `ceph auth add` round trips are needed later.
    local keyring=$dir/keyring
    ceph-authtool "${conf[@]}" --create-keyring "$keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "${conf[@]}" "$keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "${conf[@]}" "$keyring" --gen-key -n osd.0 \
        --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
    ceph-authtool "${conf[@]}" "$keyring" --gen-key -n client.rgw.a \
        --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
    chmod 600 "$keyring"

    monmaptool "${conf[@]}" --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" \
        "$dir/monmap" >/dev/null
    timeout "$(remaining_s)" ceph-mon "${conf[@]}" --mkfs -i a --monmap "$dir/monmap" \
        --keyring "$keyring" >>"$dir/log/mkfs.out" 2>&1 || start_failed "ceph-mon --mkfs"

    local mon_pid osd_pid rgw_pid watchdog_pid=
    spawn "$dir" mon.a ceph-mon "${conf[@]}" -i a -f
    mon_pid=$SPAWNED

    # Registers the OSD with the monitor (the first command that needs it
    # up: --connect-timeout bounds the wait).
    local osd_id
    osd_id=$(ceph "${conf[@]}" --connect-timeout "$(remaining_s)" osd new "$osd_uuid" 2>>"$dir/log/ceph-cli.out") ||
        { check_alive "$mon_pid" ceph-mon; start_failed "ceph osd new"; }
    [[ $osd_id == 0 ]] || start_failed "ceph osd new gave id '$osd_id', expected 0"
    # mkfs asks the monitor for the cluster's maps: bounded like the rest.
    timeout "$(remaining_s)" ceph-osd "${conf[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" \
        >>"$dir/log/mkfs.out" 2>&1 || start_failed "ceph-osd --mkfs"
    spawn "$dir" osd.0 ceph-osd "${conf[@]}" -i 0 -f
    osd_pid=$SPAWNED
    spawn "$dir" rgw.a radosgw "${conf[@]}" -n client.rgw.a -f
    rgw_pid=$SPAWNED

    # The gateway's user, with keys of our own making: nothing to parse.
    access_key=$(random_hex 10 | tr a-f A-F)
    secret_key=$(random_hex 20)
    timeout "$(remaining_s)" radosgw-admin "${conf[@]}" -n client.admin user create \
        --uid=cis490-test --display-name="cis490 test" \
        --access-key="$access_key" --secret-key="$secret_key" \
        >>"$dir/log/radosgw-admin.out" 2>&1 || {
        check_alive "$mon_pid" ceph-mon
        check_alive "$osd_pid" ceph-osd
        start_failed "radosgw-admin user create"
    }

    # Ready when the gateway answers HTTP; polled, bounded by the deadline.
    until http_answers "$rgw_port"; do
        check_alive "$mon_pid" ceph-mon
        check_alive "$osd_pid" ceph-osd
        check_alive "$rgw_pid" radosgw
        ((SECONDS < START_TIMEOUT_S)) || start_failed "radosgw did not answer on 127.0.0.1:$rgw_port within ${START_TIMEOUT_S}s"
        sleep 0.1
    done

    if [[ -n $owner ]]; then
        # A process of its own whose command line names DIR, so that `stop`
        # knows it as ours.
        spawn "$dir" watchdog bash "$0" watchdog "$dir" "$owner"
        watchdog_pid=$SPAWNED
    fi

    # What gateway-stop and gateway-start need.
    printf '%s\n' "$rgw_pid" >"$dir/rgw.pid"
    printf '%s\n' "$rgw_port" >"$dir/rgw.port"

    local t1
    t1=$(date +%s%N)
    START_DIR=
    printf 'endpoint=http://127.0.0.1:%s\n' "$rgw_port"
    printf 'region=%s\n' "$REGION"
    printf 'access_key=%s\n' "$access_key"
    printf 'secret_key=%s\n' "$secret_key"
    printf 'pids=%s\n' "$mon_pid $osd_pid $rgw_pid${watchdog_pid:+ $watchdog_pid}"
    printf 'startup_ms=%s\n' $(((t1 - t0) / 1000000))
}

# Polls once a second (a watchdog has no event to wait on for an unrelated
# process) and kills the cluster when OWNER is gone or `stop` ran.
cmd_watchdog() {
    local dir=$1 owner=$2
    while kill -0 "$owner" 2>/dev/null && [[ -f $(pids_file "$dir") ]]; do
        sleep 1
    done
    kill_recorded "$dir"
}

cmd_stop() {
    local dir=${1:-}
    [[ -n $dir && $# -eq 1 ]] || { usage >&2; exit "$EX_USAGE"; }
    [[ -d $dir ]] || die "$dir: no such directory"
    dir=$(cd "$dir" && pwd -P)
    [[ -f $(pids_file "$dir") ]] || die "$dir holds no cluster (no pids file)"
    kill_recorded "$dir"
    rm -f "$(pids_file "$dir")"
}

# The directory of a started cluster, made absolute; dies if it holds none.
cluster_dir() {
    local dir=${1:-}
    [[ -n $dir ]] || { usage >&2; exit "$EX_USAGE"; }
    [[ -d $dir ]] || die "$dir: no such directory"
    dir=$(cd "$dir" && pwd -P)
    [[ -f $(pids_file "$dir") && -f $dir/rgw.pid && -f $dir/rgw.port ]] ||
        die "$dir holds no running cluster (no pids, rgw.pid or rgw.port file)"
    printf '%s' "$dir"
}

# SIGKILLs the gateway (if it is still the one we started) and waits until
# it is gone: from then on its port refuses connections.
cmd_gateway_stop() {
    local dir pid i
    dir=$(cluster_dir "${1:-}")
    pid=$(<"$dir/rgw.pid")
    ours "$pid" "$dir" || return 0
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        ours "$pid" "$dir" || return 0
        sleep 0.05
    done
    die "radosgw (pid $pid) still alive after SIGKILL"
}

# Starts the gateway again with the cluster's config (same port, users and
# buckets: they live in the OSD), recorded like the others so that `stop`
# kills it; ready once it answers HTTP.
cmd_gateway_start() {
    local dir pid port
    dir=$(cluster_dir "${1:-}")
    pid=$(<"$dir/rgw.pid")
    ! ours "$pid" "$dir" || die "radosgw (pid $pid) is running already"
    port=$(<"$dir/rgw.port")
    START_DIR=
    SECONDS=0
    spawn "$dir" rgw.a radosgw -c "$dir/ceph.conf" -n client.rgw.a -f
    pid=$SPAWNED
    printf '%s\n' "$pid" >"$dir/rgw.pid"
    until http_answers "$port"; do
        if ! ours "$pid" "$dir"; then
            print_log_tails "$dir"
            printf '%s: radosgw exited during start-up\n' "$PROG" >&2
            exit "$EX_UNAVAILABLE"
        fi
        if ((SECONDS >= START_TIMEOUT_S)); then
            printf '%s: radosgw did not answer on 127.0.0.1:%s within %ss\n' "$PROG" "$port" "$START_TIMEOUT_S" >&2
            exit "$EX_UNAVAILABLE"
        fi
        sleep 0.1
    done
    printf 'pid=%s\n' "$pid"
}

main() {
    local cmd=${1:-}
    [[ -n $cmd ]] || { usage >&2; exit "$EX_USAGE"; }
    shift
    case $cmd in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    gateway-stop) cmd_gateway_stop "$@" ;;
    gateway-start) cmd_gateway_start "$@" ;;
    check) require_packages ;;
    watchdog) (($# == 2)) || { usage >&2; exit "$EX_USAGE"; }; cmd_watchdog "$@" ;;
    -h | --help) usage ;;
    *) usage >&2; exit "$EX_USAGE" ;;
    esac
}

main "$@"
