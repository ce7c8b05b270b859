#!/usr/bin/env bash
# The local stack: a single-node KRaft Apache Kafka and a PostgreSQL 15 cluster on loopback, with all
# their data under $CSTL_LOCAL_DIR (default <repo>/.local). See docs/local-stack.md.
#
#   stack.sh up       start what is not running, wait until both accept connections
#   stack.sh down     stop exactly the processes this stack started
#   stack.sh status   show what runs (exit 0 when both run, 3 otherwise)
#   stack.sh env      print the environment the services need, as export lines
#   stack.sh pg-restart  restart our PostgreSQL (pg_ctl restart -m fast): for fault tests
set -euo pipefail

CSTL_PROG=stack
# shellcheck source=infra/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_PORT="${CSTL_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${CSTL_KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${CSTL_PG_PORT:-5432}"
START_TIMEOUT="${CSTL_STACK_TIMEOUT:-90}"
STOP_TIMEOUT="${CSTL_STOP_TIMEOUT:-30}"
KAFKA_HEAP="${CSTL_KAFKA_HEAP:-768m}"
PG_BIN="${CSTL_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DB=constellation
PG_ROLE=constellation

check_port_value() {
    local name="$1" value="$2"
    if [[ ! "$value" =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
        cstl_die "$name must be a port number between 1 and 65535, got \"$value\""
    fi
}
check_port_value CSTL_KAFKA_PORT "$KAFKA_PORT"
check_port_value CSTL_KAFKA_CONTROLLER_PORT "$CONTROLLER_PORT"
check_port_value CSTL_PG_PORT "$PG_PORT"
[[ "$KAFKA_PORT" != "$CONTROLLER_PORT" && "$KAFKA_PORT" != "$PG_PORT" && "$CONTROLLER_PORT" != "$PG_PORT" ]] ||
    cstl_die "the ports must differ: kafka $KAFKA_PORT, controller $CONTROLLER_PORT, postgresql $PG_PORT"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || cstl_die "CSTL_STACK_TIMEOUT must be a number of seconds, got \"$START_TIMEOUT\""
[[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || cstl_die "CSTL_STOP_TIMEOUT must be a number of seconds, got \"$STOP_TIMEOUT\""

mkdir -p "$CSTL_LOCAL_DIR" || cstl_die "cannot create $CSTL_LOCAL_DIR"
LOCAL="$(cd "$CSTL_LOCAL_DIR" && pwd -P)"

KAFKA_DIR="$LOCAL/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_PIDFILE="$KAFKA_DIR/kafka.pid"
KAFKA_PORTS_FILE="$KAFKA_DIR/ports"

# PostgreSQL lives in $LOCAL/pg unless that is unreachable for the postgres system user (when run
# as root); then in a directory recorded in $LOCAL/pg/location.
PG_HOME="$LOCAL/pg"
PG_LOCATION_FILE="$PG_HOME/location"

# PostgreSQL refuses to run as root: as root, its programs run as this user.
PG_USER=""
if ((EUID == 0)); then
    PG_USER="${CSTL_PG_USER:-postgres}"
fi

pg_area() {
    if [[ -f "$PG_LOCATION_FILE" ]]; then
        cat "$PG_LOCATION_FILE"
    else
        printf '%s\n' "$PG_HOME"
    fi
}
PG_AREA="$(pg_area)"
PG_DATA="$PG_AREA/data"
PG_LOG="$PG_AREA/pg.log"
PG_PORT_FILE="$PG_AREA/port"

# --- processes ----------------------------------------------------------------------------------

# True when the pid exists and is not a zombie.
proc_alive() {
    local pid="$1" stat
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

proc_cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# The pid of our broker: the pidfile's process, alive, running kafka.Kafka with our properties.
kafka_pid() {
    local pid
    [[ -f "$KAFKA_PIDFILE" ]] || return 1
    pid="$(<"$KAFKA_PIDFILE")"
    proc_alive "$pid" || return 1
    [[ "$(proc_cmdline "$pid")" == *"kafka.Kafka $KAFKA_PROPS"* ]] || return 1
    printf '%s\n' "$pid"
}

# The pid of our postmaster: postmaster.pid's process, alive, a postgres with our data directory.
pg_pid() {
    local pid cmd
    [[ -r "$PG_DATA/postmaster.pid" ]] || return 1
    pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null)"
    proc_alive "$pid" || return 1
    cmd="$(proc_cmdline "$pid")"
    [[ "$cmd" == *postgres* && "$cmd" == *"$PG_DATA"* ]] || return 1
    printf '%s\n' "$pid"
}

# Waits up to $2 seconds for the pid to be gone.
wait_gone() {
    local pid="$1" deadline=$((SECONDS + $2))
    while proc_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Runs a PostgreSQL program as the user that owns the cluster. The lock descriptor is closed so
# that a server started from here does not hold the stack lock for its lifetime.
as_pg() {
    if [[ -n "$PG_USER" ]]; then
        (cd / && runuser -u "$PG_USER" -- "$@") 9>&-
    else
        "$@" 9>&-
    fi
}

# --- ports --------------------------------------------------------------------------------------

port_in_use() {
    local port="$1"
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# "java (pid 123)" for the process listening on the port, when ss can see it.
port_owner() {
    local port="$1" users
    command -v ss >/dev/null 2>&1 || return 1
    users="$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1)" || true
    [[ -n "$users" ]] || return 1
    sed -n 's/^users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' <<<"$users"
}

port_conflict() {
    local what="$1" port="$2" var="$3" owner
    if owner="$(port_owner "$port")" && [[ -n "$owner" ]]; then
        printf 'port %s (%s) is already in use by %s, which this stack did not start; stop it or set %s\n' \
            "$port" "$what" "$owner" "$var"
    else
        printf 'port %s (%s) is already in use by a process this stack did not start (not visible to this user); stop it or set %s\n' \
            "$port" "$what" "$var"
    fi
}

# --- environment --------------------------------------------------------------------------------

print_env() {
    local kport="$KAFKA_PORT" pport="$PG_PORT"
    [[ -f "$KAFKA_PORTS_FILE" ]] && read -r kport _ <"$KAFKA_PORTS_FILE"
    [[ -f "$PG_PORT_FILE" ]] && pport="$(<"$PG_PORT_FILE")"
    printf "export CONSTELLATION_KAFKA_BROKERS='127.0.0.1:%s'\n" "$kport"
    printf "export CONSTELLATION_PG_DSN='host=127.0.0.1 port=%s dbname=%s user=%s'\n" "$pport" "$PG_DB" "$PG_ROLE"
    printf "export CONSTELLATION_QUERY_PG_DSN='host=127.0.0.1 port=%s dbname=%s user=constellation_query'\n" "$pport" "$PG_DB"
}

# --- kafka --------------------------------------------------------------------------------------

# The java command line of a Kafka tool or the broker, into KAFKA_JAVA.
kafka_java_cmd() {
    local libs="$1"
    shift
    KAFKA_JAVA=(java -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        "-Dlog4j.configuration=file:$KAFKA_DIR/log4j.properties" -cp "$libs/*" "$@")
}

kafka_render_props() {
    local template
    template="$(<"$CSTL_INFRA_DIR/kafka/server.properties.in")"
    template="${template//@KAFKA_PORT@/$KAFKA_PORT}"
    template="${template//@CONTROLLER_PORT@/$CONTROLLER_PORT}"
    template="${template//@DATA_DIR@/$KAFKA_DATA}"
    printf '%s\n' "$template" >"$KAFKA_PROPS"
    cp "$CSTL_INFRA_DIR/kafka/log4j.properties" "$KAFKA_DIR/log4j.properties"
}

# A Kafka cluster id: 16 random bytes, base64url without padding, not starting with "-".
kafka_cluster_id() {
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" != -* ]] && break
    done
    printf '%s\n' "$id"
}

# Starts the broker in the background; sets KAFKA_STARTED_PID.
kafka_start() {
    local libs version
    version="$(cstl_kafka_version)"
    libs="$(cstl_kafka_libs)"
    [[ -f "$libs/kafka_2.13-$version.jar" ]] ||
        cstl_die "kafka $version jars not found in $libs; run make deps"
    command -v java >/dev/null 2>&1 || cstl_die "java not found; run make deps"

    mkdir -p "$KAFKA_DIR"
    kafka_render_props
    printf '%s %s\n' "$KAFKA_PORT" "$CONTROLLER_PORT" >"$KAFKA_PORTS_FILE"
    if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
        local id
        id="$(kafka_cluster_id)"
        rm -rf "$KAFKA_DATA"
        printf '[%s] stack: formatting %s with cluster id %s\n' "$(date '+%F %T')" "$KAFKA_DATA" "$id" >>"$KAFKA_LOG"
        kafka_java_cmd "$libs" kafka.tools.StorageTool format -t "$id" -c "$KAFKA_PROPS" --ignore-formatted
        if ! "${KAFKA_JAVA[@]}" >>"$KAFKA_LOG" 2>&1; then
            cstl_tail_log "$KAFKA_LOG" 30
            cstl_die "formatting the kafka storage in $KAFKA_DATA failed (log: $KAFKA_LOG)"
        fi
    fi
    printf '[%s] stack: starting kafka %s on 127.0.0.1:%s\n' "$(date '+%F %T')" "$version" "$KAFKA_PORT" >>"$KAFKA_LOG"
    # setsid: the broker must not get the terminal's ^C meant for a later command; 9>&-: nor keep
    # the stack lock.
    kafka_java_cmd "$libs" kafka.Kafka "$KAFKA_PROPS"
    setsid "${KAFKA_JAVA[@]}" </dev/null >>"$KAFKA_LOG" 2>&1 9>&- &
    KAFKA_STARTED_PID=$!
    printf '%s\n' "$KAFKA_STARTED_PID" >"$KAFKA_PIDFILE"
}

kafka_ready() {
    kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 2 2>/dev/null | grep -q '^ *1 brokers:'
}

kafka_stop() {
    local pid
    if ! pid="$(kafka_pid)"; then
        rm -f "$KAFKA_PIDFILE"
        return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        cstl_warn "kafka (pid $pid) did not stop within ${STOP_TIMEOUT} s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || cstl_die "kafka (pid $pid) is still alive after SIGKILL"
    fi
    rm -f "$KAFKA_PIDFILE"
    printf '%s\n' "$pid"
}

# --- postgresql ---------------------------------------------------------------------------------

# True when the postgres user can reach and write the directory.
pg_user_can_use() {
    runuser -u "$PG_USER" -- test -w "$1" -a -x "$1" 2>/dev/null
}

# As root: makes $PG_HOME usable by the postgres user, adding search permission (o+x) to parent
# directories owned by root where needed (never to a home directory). When that cannot work, the
# cluster goes to a fresh directory under /var/tmp, recorded in $PG_LOCATION_FILE.
pg_prepare_area_as_root() {
    id "$PG_USER" >/dev/null 2>&1 ||
        cstl_die "running as root, but the system user \"$PG_USER\" that should run postgresql does not exist (install the Debian package postgresql or set CSTL_PG_USER)"
    mkdir -p "$PG_HOME"
    chown "$PG_USER:" "$PG_HOME"
    chmod 700 "$PG_HOME"
    if pg_user_can_use "$PG_HOME"; then
        return 0
    fi
    # Walk down from /: the first directories the postgres user cannot search are the blockers.
    local d="" part parts=() blocked=() ok=1
    IFS=/ read -r -a parts <<<"${LOCAL#/}"
    for part in "${parts[@]}"; do
        d="$d/$part"
        runuser -u "$PG_USER" -- test -x "$d" 2>/dev/null && continue
        if [[ "$(stat -c %u "$d")" == 0 && "$d" != /root && "$d" != "${HOME:-/root}" ]]; then
            chmod o+x "$d" && blocked+=("$d") || ok=0
        else
            ok=0
        fi
        ((ok)) || break
    done
    if ((${#blocked[@]} > 0)); then
        cstl_say "let the $PG_USER user traverse ${blocked[*]} (chmod o+x) to reach $PG_HOME"
    fi
    if ((ok)) && pg_user_can_use "$PG_HOME"; then
        return 0
    fi
    local elsewhere
    elsewhere="/var/tmp/constellation-pg-$(printf '%s' "$LOCAL" | sha256sum | cut -c1-12)"
    rm -rf "$elsewhere"
    mkdir -p "$elsewhere"
    chown "$PG_USER:" "$elsewhere"
    chmod 700 "$elsewhere"
    pg_user_can_use "$elsewhere" ||
        cstl_die "neither $PG_HOME nor $elsewhere is usable by the $PG_USER user"
    printf '%s\n' "$elsewhere" >"$PG_LOCATION_FILE"
    chmod 755 "$PG_HOME"
    cstl_say "$PG_HOME is not reachable by the $PG_USER user; the postgresql cluster lives in $elsewhere"
    PG_AREA="$elsewhere"
    PG_DATA="$PG_AREA/data"
    PG_LOG="$PG_AREA/pg.log"
    PG_PORT_FILE="$PG_AREA/port"
}

# The socket goes next to the data unless that path is too long for a unix socket.
pg_socket_dir() {
    if ((${#PG_AREA} + 20 <= 100)); then
        printf '%s\n' "$PG_AREA"
    else
        printf '/tmp/cstl-pg-%s\n' "$(printf '%s' "$PG_AREA" | sha256sum | cut -c1-12)"
    fi
}

pg_start() {
    [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] ||
        cstl_die "postgresql 15 programs not found in $PG_BIN; run make deps (or set CSTL_PG_BIN)"
    if [[ -n "$PG_USER" && ! -f "$PG_LOCATION_FILE" ]]; then
        pg_prepare_area_as_root
    elif [[ -n "$PG_USER" ]]; then
        mkdir -p "$PG_AREA"
        chown "$PG_USER:" "$PG_AREA"
        chmod 700 "$PG_AREA"
    else
        mkdir -p "$PG_AREA"
    fi
    local sock
    sock="$(pg_socket_dir)"
    if [[ "$sock" != "$PG_AREA" ]]; then
        mkdir -p "$sock"
        [[ -z "$PG_USER" ]] || chown "$PG_USER:" "$sock"
    fi

    as_pg touch "$PG_LOG" || cstl_die "cannot write the postgresql log $PG_LOG"
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        # initdb into a scratch directory renamed at the end: an interrupted run leaves no half cluster.
        as_pg rm -rf "$PG_DATA" "$PG_AREA/data.init"
        if ! as_pg "$PG_BIN/initdb" -D "$PG_AREA/data.init" -U "$PG_ROLE" -A trust -E UTF8 --locale=C \
            --no-instructions >>"$PG_LOG" 2>&1; then
            cstl_tail_log "$PG_LOG" 30
            cstl_die "initdb failed for $PG_AREA/data.init (log: $PG_LOG)"
        fi
        printf "include_if_exists = 'constellation.conf'\n" | as_pg tee -a "$PG_AREA/data.init/postgresql.conf" >/dev/null
        as_pg mv "$PG_AREA/data.init" "$PG_DATA"
    fi
    # Settings that follow the environment are rewritten on every start.
    as_pg tee "$PG_DATA/constellation.conf" >/dev/null <<EOF
# Written by infra/local/stack.sh on every start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '${sock//\'/\'\'}'
max_connections = 200
timezone = 'UTC'
log_timezone = 'UTC'
EOF
    printf '%s\n' "$PG_PORT" | as_pg tee "$PG_PORT_FILE" >/dev/null
    local out
    if ! out="$(as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" start 2>&1)"; then
        cstl_tail_log "$PG_LOG" 30
        printf '%s\n' "$out" >&2
        return 1
    fi
}

pg_ready() {
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -U "$PG_ROLE" >/dev/null 2>&1
}

# Creates the database when missing (the role is the cluster's bootstrap superuser).
pg_ensure_database() {
    local psql=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_ROLE" -d postgres)
    local have
    have="$("${psql[@]}" -tAc "select 1 from pg_database where datname = '$PG_DB'")" || return 1
    [[ "$have" == 1 ]] || "${psql[@]}" -c "create database $PG_DB owner $PG_ROLE"
}

pg_stop() {
    local pid
    pid="$(pg_pid)" || return 1
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1; then
        cstl_warn "postgresql (pid $pid) did not stop within ${STOP_TIMEOUT} s; stopping it immediately"
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
        if proc_alive "$pid" && [[ "$(proc_cmdline "$pid")" == *"$PG_DATA"* ]]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait_gone "$pid" 10 || cstl_die "postgresql (pid $pid) is still alive"
    printf '%s\n' "$pid"
}

# --- commands -----------------------------------------------------------------------------------

take_lock() {
    exec 9>"$LOCAL/.stack.lock"
    flock -w 120 9 || cstl_die "another stack.sh is running on $LOCAL for over 120 s"
}

UP_STARTED_KAFKA=0
UP_STARTED_PG=0
UP_DONE=0

# On a failed or interrupted up, stop what this run started.
up_cleanup() {
    ((UP_DONE)) && return 0
    if ((UP_STARTED_KAFKA)); then
        kafka_stop >/dev/null 2>&1 || true
    fi
    if ((UP_STARTED_PG)); then
        pg_stop >/dev/null 2>&1 || true
    fi
}

up_fail() {
    local msg="$1" log="$2"
    cstl_tail_log "$log" 30
    cstl_die "$msg (log: $log)"
}

cmd_up() {
    take_lock
    local t0 kpid="" ppid="" problems=()
    t0="$(cstl_now_ms)"
    kpid="$(kafka_pid)" || kpid=""
    ppid="$(pg_pid)" || ppid=""

    # Running, but on other ports than asked for: refuse rather than print a wrong environment.
    if [[ -n "$kpid" && -f "$KAFKA_PORTS_FILE" && "$(<"$KAFKA_PORTS_FILE")" != "$KAFKA_PORT $CONTROLLER_PORT" ]]; then
        problems+=("kafka (pid $kpid) already runs on ports $(<"$KAFKA_PORTS_FILE"), not $KAFKA_PORT $CONTROLLER_PORT; run stack.sh down first")
    fi
    if [[ -n "$ppid" && -f "$PG_PORT_FILE" && "$(<"$PG_PORT_FILE")" != "$PG_PORT" ]]; then
        problems+=("postgresql (pid $ppid) already runs on port $(<"$PG_PORT_FILE"), not $PG_PORT; run stack.sh down first")
    fi
    if [[ -z "$kpid" ]]; then
        port_in_use "$KAFKA_PORT" && problems+=("$(port_conflict kafka "$KAFKA_PORT" CSTL_KAFKA_PORT)")
        port_in_use "$CONTROLLER_PORT" &&
            problems+=("$(port_conflict "kafka controller" "$CONTROLLER_PORT" CSTL_KAFKA_CONTROLLER_PORT)")
    fi
    if [[ -z "$ppid" ]]; then
        port_in_use "$PG_PORT" && problems+=("$(port_conflict postgresql "$PG_PORT" CSTL_PG_PORT)")
    fi
    if ((${#problems[@]} > 0)); then
        local p
        for p in "${problems[@]}"; do cstl_warn "error: $p"; done
        cstl_die "nothing started (see above)"
    fi

    if [[ -n "$kpid" && -n "$ppid" ]]; then
        cstl_say "already up (kafka pid $kpid, postgresql pid $ppid); nothing started"
        print_env
        return 0
    fi
    command -v kcat >/dev/null 2>&1 || cstl_die "kcat not found; run make deps"
    command -v pg_isready >/dev/null 2>&1 || cstl_die "pg_isready not found; run make deps"

    trap up_cleanup EXIT
    trap 'exit 130' INT TERM
    if [[ -z "$kpid" ]]; then
        kafka_start
        UP_STARTED_KAFKA=1
        kpid="$KAFKA_STARTED_PID"
    fi
    if [[ -z "$ppid" ]]; then
        UP_STARTED_PG=1
        pg_start || cstl_die "postgresql did not start on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
        ppid="$(pg_pid)" || up_fail "postgresql started but its postmaster.pid is not ours" "$PG_LOG"
    fi

    local deadline=$((SECONDS + START_TIMEOUT)) k_ok=0 p_ok=0
    while :; do
        if ((!k_ok)); then
            proc_alive "$kpid" || up_fail "kafka exited while starting" "$KAFKA_LOG"
            kafka_ready && k_ok=1
        fi
        if ((!p_ok)); then
            proc_alive "$ppid" || up_fail "postgresql exited while starting" "$PG_LOG"
            pg_ready && p_ok=1
        fi
        ((k_ok && p_ok)) && break
        if ((SECONDS >= deadline)); then
            ((k_ok)) || up_fail "kafka did not accept connections on 127.0.0.1:$KAFKA_PORT within ${START_TIMEOUT} s" "$KAFKA_LOG"
            up_fail "postgresql did not accept connections on 127.0.0.1:$PG_PORT within ${START_TIMEOUT} s" "$PG_LOG"
        fi
        sleep 0.2
    done
    pg_ensure_database || up_fail "cannot create the database $PG_DB" "$PG_LOG"

    print_env >"$LOCAL/stack.env"
    UP_DONE=1
    cstl_say "up in $(cstl_elapsed "$t0"): kafka $(cstl_kafka_version) on 127.0.0.1:$KAFKA_PORT (pid $kpid), postgresql 15 on 127.0.0.1:$PG_PORT (pid $ppid), data in $LOCAL"
    print_env
}

cmd_down() {
    take_lock
    local pid stopped=0
    if pid="$(kafka_stop)"; then
        cstl_say "kafka stopped (pid $pid)"
        stopped=1
    fi
    if pid="$(pg_stop)"; then
        cstl_say "postgresql stopped (pid $pid)"
        stopped=1
    fi
    ((stopped)) || cstl_say "not running; nothing stopped"
    rm -f "$LOCAL/stack.env"
}

cmd_status() {
    local pid up=0 kport cport pport
    kport="$KAFKA_PORT" cport="$CONTROLLER_PORT" pport="$PG_PORT"
    [[ -f "$KAFKA_PORTS_FILE" ]] && read -r kport cport <"$KAFKA_PORTS_FILE"
    [[ -f "$PG_PORT_FILE" ]] && pport="$(<"$PG_PORT_FILE")"
    if pid="$(kafka_pid)"; then
        cstl_say "kafka: running, pid $pid, 127.0.0.1:$kport (controller $cport), data $KAFKA_DATA, log $KAFKA_LOG"
        up=$((up + 1))
    else
        cstl_say "kafka: stopped"
    fi
    if pid="$(pg_pid)"; then
        cstl_say "postgresql: running, pid $pid, 127.0.0.1:$pport, data $PG_DATA, log $PG_LOG"
        up=$((up + 1))
    else
        cstl_say "postgresql: stopped"
    fi
    if ((up == 2)); then
        print_env
        return 0
    fi
    return 3
}

# Restarts our running PostgreSQL with pg_ctl restart -m fast (every session is cut), as the user
# that owns the cluster, and waits until it accepts connections again.
cmd_pg_restart() {
    take_lock
    local pid t0 out
    pid="$(pg_pid)" || cstl_die "postgresql is not running; nothing restarted"
    [[ -f "$PG_PORT_FILE" ]] && PG_PORT="$(<"$PG_PORT_FILE")"
    t0="$(cstl_now_ms)"
    if ! out="$(as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t "$START_TIMEOUT" restart 2>&1)"; then
        cstl_tail_log "$PG_LOG" 30
        printf '%s\n' "$out" >&2
        cstl_die "postgresql did not restart (log: $PG_LOG)"
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until pg_ready; do
        ((SECONDS < deadline)) || up_fail "postgresql did not accept connections after the restart" "$PG_LOG"
        sleep 0.1
    done
    cstl_say "postgresql restarted in $(cstl_elapsed "$t0") (pid $pid -> $(pg_pid))"
}

case "${1:-}" in
up) cmd_up ;;
pg-restart) cmd_pg_restart ;;
down) cmd_down ;;
status) cmd_status ;;
env) print_env ;;
*)
    printf 'usage: %s up|down|status|env|pg-restart\n' "$0" >&2
    exit 2
    ;;
esac
