#!/usr/bin/env bash
# Copy etc/ templates into the installers, between their
#   # BEGIN EMBEDDED etc/FILE...
#   # END EMBEDDED
# lines, as one shell function per file (emit_etc_FILE, non-alphanumerics
# turned into _) that prints the file byte for byte.
#
# Why: an installer must work as one scp'd file next to the binary, yet the
# units and config templates must have one source of truth, etc/. This
# script is the only way the copies are made; tests/deploy.rs fails when an
# installer's copy differs from etc/ (`make` runs this; so can you).
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

for script in scripts/install-lab-host.sh scripts/install-receiver.sh; do
    begin=$(grep -n '^# BEGIN EMBEDDED ' "$script" | cut -d: -f1)
    end=$(grep -n '^# END EMBEDDED$' "$script" | cut -d: -f1)
    [[ -n $begin && -n $end && $begin -lt $end ]] || {
        echo "$script: no BEGIN/END EMBEDDED block" >&2
        exit 1
    }
    read -r -a files <<<"$(sed -n "${begin}p" "$script" | sed 's/^# BEGIN EMBEDDED //')"
    new=$(mktemp)
    {
        head -n "$begin" "$script"
        for f in "${files[@]}"; do
            # A line equal to the delimiter would end the heredoc early, and
            # a missing final newline could not be reproduced by a heredoc.
            if grep -qx "$DELIM" "$f"; then
                echo "$f contains the line $DELIM" >&2
                exit 1
            fi
            [[ $(tail -c 1 "$f" | od -An -c | tr -d ' ') == '\n' ]] || {
                echo "$f must end with a newline" >&2
                exit 1
            }
            fn=emit_$(printf '%s' "$f" | tr -c 'A-Za-z0-9' '_')
            printf '%s() {\n' "$fn"
            printf "    cat <<'%s'\n" "$DELIM"
            cat "$f"
            printf '%s\n}\n' "$DELIM"
        done
        tail -n "+$end" "$script"
    } >"$new"
    if cmp -s "$new" "$script"; then
        rm -f "$new"
    elif [[ $CHECK -eq 1 ]]; then
        echo "$script: embedded templates differ from etc/; run scripts/embed-templates.sh" >&2
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
