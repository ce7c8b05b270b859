#!/usr/bin/env bash
# Installs what building, testing and running Constellation locally needs on Debian 12:
#   1. Debian packages (only the missing ones; apt-get as root, else through sudo)
#   2. the Apache Kafka broker jars, resolved by Maven from infra/local/pom.xml into
#      $CSTL_CACHE_DIR/kafka-<version>/libs (outside the repository)
#   3. a Python virtualenv at <repo>/.venv with infra/local/requirements.txt
# Each step is skipped when already done; steps 2 and 3 are stamped with a hash of their input,
# written only after success, so an interrupted run is redone. A run with nothing to do prints
# one line.
set -euo pipefail

CSTL_PROG=deps
# shellcheck source=infra/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CSTL_MAVEN_DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

DEBIAN_PACKAGES=(
    build-essential cmake ninja-build pkg-config git
    librdkafka-dev libpq-dev libavro-dev libmicrohttpd-dev libjansson-dev libcmocka-dev libssl-dev
    postgresql kcat prometheus
    clang clang-format clang-tidy libclang-rt-14-dev
    wrk python3-venv curl jq
)

did_something=0

# --- 1. Debian packages -------------------------------------------------------------------------

missing_debian_packages() {
    local wanted=("${DEBIAN_PACKAGES[@]}")
    command -v java >/dev/null 2>&1 || wanted+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || wanted+=(maven)
    command -v dpkg-query >/dev/null 2>&1 ||
        cstl_die "dpkg-query not found: this script installs Debian packages and needs Debian 12"
    local installed
    installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${wanted[@]}" 2>/dev/null |
        awk '$2 == "ii" { print $1 }' || true)"
    local p
    for p in "${wanted[@]}"; do
        grep -qxF -- "$p" <<<"$installed" || printf '%s\n' "$p"
    done
}

install_debian_packages() {
    local missing=()
    mapfile -t missing < <(missing_debian_packages)
    ((${#missing[@]} > 0)) || return 0
    did_something=1

    local sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            cstl_warn "missing Debian packages: ${missing[*]}"
            cstl_warn "not root and sudo is not installed; install them as root with:"
            cstl_warn "  apt-get update && apt-get install -y ${missing[*]}"
            exit 1
        fi
    fi
    cstl_say "installing Debian packages: ${missing[*]}"
    local t0 log
    t0="$(cstl_now_ms)"
    log="$(mktemp)"
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } >"$log" 2>&1; then
        cstl_tail_log "$log" 30
        rm -f "$log"
        cstl_warn "apt-get failed; the missing packages are: ${missing[*]}"
        cstl_die "install them as root with: apt-get update && apt-get install -y ${missing[*]}"
    fi
    rm -f "$log"
    cstl_say "Debian packages installed in $(cstl_elapsed "$t0")"
}

# --- 2. Kafka broker jars -----------------------------------------------------------------------

install_kafka_jars() {
    local version dir libs stamp want
    version="$(cstl_kafka_version)"
    dir="$CSTL_CACHE_DIR/kafka-$version"
    libs="$dir/libs"
    stamp="$dir/pom.sha256"
    want="$(cstl_sha256 "$CSTL_INFRA_DIR/pom.xml")"
    if [[ -f "$stamp" && "$(<"$stamp")" == "$want" && -f "$libs/kafka_2.13-$version.jar" ]]; then
        return 0
    fi
    did_something=1
    command -v mvn >/dev/null 2>&1 || cstl_die "mvn not found; install the Debian package maven"

    cstl_say "resolving kafka $version jars into $libs"
    local t0 tmp log
    t0="$(cstl_now_ms)"
    mkdir -p "$dir" || cstl_die "cannot create the cache directory $dir"
    rm -rf "$dir"/libs.tmp.* "$dir"/libs.old.*
    tmp="$(mktemp -d "$dir/libs.tmp.XXXXXX")"
    log="$dir/maven.log"
    if ! mvn -B -q -f "$CSTL_INFRA_DIR/pom.xml" \
        "$CSTL_MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" \
        -DoutputDirectory="$tmp" -DincludeScope=runtime >"$log" 2>&1; then
        cstl_tail_log "$log" 30
        rm -rf "$tmp"
        cstl_die "maven could not resolve the kafka $version jars (full log: $log)"
    fi
    [[ -f "$tmp/kafka_2.13-$version.jar" ]] ||
        cstl_die "maven finished but kafka_2.13-$version.jar is not in $tmp (full log: $log)"
    chmod 755 "$tmp"
    # Swap by rename: a broker already running from the old directory keeps its open jars.
    if [[ -e "$libs" ]]; then
        local old
        old="$(mktemp -u "$dir/libs.old.XXXXXX")"
        mv "$libs" "$old"
        mv "$tmp" "$libs"
        rm -rf "$old"
    else
        mv "$tmp" "$libs"
    fi
    printf '%s\n' "$want" >"$stamp.tmp" && mv "$stamp.tmp" "$stamp"
    cstl_say "kafka $version jars ready ($(find "$libs" -name '*.jar' | wc -l) jars) in $(cstl_elapsed "$t0")"
}

# --- 3. Python virtualenv -----------------------------------------------------------------------

pick_python() {
    if [[ -n "${CSTL_PYTHON:-}" ]]; then
        printf '%s\n' "$CSTL_PYTHON"
    elif [[ -x /usr/bin/python3 ]]; then
        printf '%s\n' /usr/bin/python3
    else
        command -v python3 || cstl_die "python3 not found; install the Debian package python3-venv"
    fi
}

install_venv() {
    local venv="$CSTL_REPO_ROOT/.venv" req="$CSTL_INFRA_DIR/requirements.txt"
    local stamp="$venv/.requirements.sha256" want
    want="$(cstl_sha256 "$req")"
    if [[ -f "$stamp" && "$(<"$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
        return 0
    fi
    did_something=1

    local python t0 log
    python="$(pick_python)"
    t0="$(cstl_now_ms)"
    cstl_say "creating the python virtualenv $venv"
    log="$(mktemp)"
    # Rebuilt from scratch so that no package dropped from requirements.txt lingers.
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >"$log" 2>&1; then
        cstl_tail_log "$log" 30
        rm -f "$log"
        rm -rf "$venv"
        cstl_die "$python -m venv failed (is the Debian package python3-venv installed?)"
    fi
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
        -r "$req" >"$log" 2>&1; then
        cstl_tail_log "$log" 30
        rm -f "$log"
        cstl_die "pip could not install $req into $venv"
    fi
    rm -f "$log"
    printf '%s\n' "$want" >"$stamp"
    cstl_say "python virtualenv ready in $(cstl_elapsed "$t0")"
}

install_debian_packages
install_kafka_jars
install_venv
((did_something)) || cstl_say "up to date"
