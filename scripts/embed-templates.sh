#!/usr/bin/env bash
# Copy the installers' single sources into the installers. Two kinds of
# block, each between a BEGIN line naming its source files and an END line:
#
#   # BEGIN EMBEDDED etc/FILE...     units and config templates, as one shell
#   # END EMBEDDED                   function per file (emit_etc_FILE,
#                                    non-alphanumerics turned into _) that
#                                    prints the file byte for byte
#   # BEGIN LIBRARY scripts/lib/F    shell code both installers share,
#   # END LIBRARY                    copied verbatim
#
# Why: an installer must work as one scp'd file next to the binary, yet the
# units, the config templates and the code the two installers share must
# each have one source of truth (etc/, scripts/lib/). This script is the
# only way the copies are made. Run it after editing etc/ or scripts/lib/
# (`make embed` does). Nothing runs it for you: `make test` only checks
# (tests/deploy.rs runs `--check` and compares the etc/ copies itself), so
# a forgotten run fails the tests instead of being papered over by them.
#
# Usage: scripts/embed-templates.sh [--check]
#   --check  change nothing; exit 1 if an installer is out of date
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CHECK=0
case ${1:-} in
    --check) CHECK=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 64 ;;
esac

DELIM=CIS490_TEMPLATE_END
stale=0

die() {
    echo "embed-templates.sh: $*" >&2
    exit 1
}

# A source must end with a newline (a heredoc cannot reproduce a missing
# one), and hold no line that would end its block or heredoc early.
check_source() {
    local f=$1 kind=$2
    [[ -f $f ]] || die "$f: no such file"
    [[ $(tail -c 1 "$f" | od -An -c | tr -d ' ') == '\n' ]] || die "$f must end with a newline"
    if grep -qx "$DELIM" "$f" || grep -q '^# \(BEGIN\|END\) ' "$f"; then
        die "$f contains a line $DELIM, # BEGIN ... or # END ...: it would end its $kind block early"
    fi
}

# emit_function FILE: a function printing FILE byte for byte.
emit_function() {
    printf '%s() {\n' "emit_$(printf '%s' "$1" | tr -c 'A-Za-z0-9' '_')"
    printf "    cat <<'%s'\n" "$DELIM"
    cat "$1"
    printf '%s\n}\n' "$DELIM"
}

# render SCRIPT: SCRIPT's text with every block made afresh from its sources.
render() {
    local script=$1 line kind="" blocks=0 f
    local -a files
    while IFS= read -r line; do
        if [[ -n $kind ]]; then
            # Inside a block: the old copy is dropped up to the END line.
            [[ $line == "# END $kind" ]] || continue
            kind=""
        fi
        printf '%s\n' "$line"
        if [[ $line =~ ^#\ BEGIN\ (EMBEDDED|LIBRARY)\ (.+)$ ]]; then
            kind=${BASH_REMATCH[1]}
            blocks=$((blocks + 1))
            read -r -a files <<<"${BASH_REMATCH[2]}"
            for f in "${files[@]}"; do
                check_source "$f" "$kind"
                if [[ $kind == EMBEDDED ]]; then
                    emit_function "$f"
                else
                    cat "$f"
                fi
            done
        fi
    done <"$script"
    [[ -z $kind ]] || die "$script: # BEGIN $kind without # END $kind"
    [[ $blocks -gt 0 ]] || die "$script: no # BEGIN EMBEDDED/LIBRARY block"
}

for script in scripts/install-lab-host.sh scripts/install-receiver.sh; do
    new=$(mktemp)
    render "$script" >"$new" || { rm -f "$new"; exit 1; }
    if cmp -s "$new" "$script"; then
        rm -f "$new"
    elif [[ $CHECK -eq 1 ]]; then
        echo "$script: embedded copies differ from etc/ or scripts/lib/; run scripts/embed-templates.sh" >&2
        rm -f "$new"
        stale=1
    else
        # Keep the script's mode (it is executable); only the bytes change.
        cat "$new" >"$script"
        rm -f "$new"
        echo "updated $script"
    fi
done
exit "$stale"
