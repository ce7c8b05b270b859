# Shared helpers for infra/local/*.sh. Source it; it sets no options of its own.
# shellcheck shell=bash

CSTL_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
CSTL_INFRA_DIR="$CSTL_REPO_ROOT/infra/local"
CSTL_CACHE_DIR="${CSTL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/constellation}"
CSTL_LOCAL_DIR="${CSTL_LOCAL_DIR:-$CSTL_REPO_ROOT/.local}"
CSTL_PROG="${CSTL_PROG:-$(basename "$0" .sh)}"

cstl_say() { printf '%s: %s\n' "$CSTL_PROG" "$*"; }
cstl_warn() { printf '%s: %s\n' "$CSTL_PROG" "$*" >&2; }
cstl_die() {
    printf '%s: error: %s\n' "$CSTL_PROG" "$*" >&2
    exit 1
}

# Kafka version pinned in pom.xml (<kafka.version>).
cstl_kafka_version() {
    local v
    v="$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$CSTL_INFRA_DIR/pom.xml" | head -n 1)"
    [[ -n "$v" ]] || cstl_die "no <kafka.version> in $CSTL_INFRA_DIR/pom.xml"
    printf '%s\n' "$v"
}

cstl_kafka_libs() { printf '%s/kafka-%s/libs\n' "$CSTL_CACHE_DIR" "$(cstl_kafka_version)"; }

cstl_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# Milliseconds since the epoch, for reporting durations.
cstl_now_ms() { date +%s%3N; }

# "12.3 s" from a start time in ms.
cstl_elapsed() {
    local ms=$(($(cstl_now_ms) - $1))
    printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
}

# Print the last lines of a log file to stderr, framed.
cstl_tail_log() {
    local file="$1" n="${2:-30}"
    if [[ -r "$file" ]]; then
        printf -- '--- last %d lines of %s ---\n' "$n" "$file" >&2
        tail -n "$n" "$file" >&2
        printf -- '---\n' >&2
    else
        printf '(no log at %s)\n' "$file" >&2
    fi
}
