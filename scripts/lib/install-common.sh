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
