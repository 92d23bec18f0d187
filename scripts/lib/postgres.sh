# Shared by the project's scripts: install what a fresh machine lacks, and run a throwaway PostgreSQL
# cluster as the unprivileged postgres user. Source it; it defines functions and changes nothing by itself.

# Installs the PostgreSQL server and libpq's headers when either is missing (Debian's packages).
detectq_install_prerequisites() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -e /usr/include/postgresql/libpq-fe.h ] \
        && command -v pkg-config >/dev/null 2>&1; then
        return 0
    fi
    echo "==> installing postgresql, libpq-dev and pkg-config"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql libpq-dev pkg-config >/dev/null
}

# Installs PgBouncer when it is missing (Debian's package: 1.18 on bookworm), for the tests behind a pooler.
detectq_install_pgbouncer() {
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] && return 0
    echo "==> installing pgbouncer"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq pgbouncer >/dev/null
}

# Runs a command as the postgres user when we are root (PostgreSQL refuses root), else as ourselves.
detectq_as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A TCP port on 127.0.0.1 that nothing answers on, below the kernel's ephemeral range (as LoopbackPort.free()
# picks them), so that no outgoing connection's local end can take it before its server binds it.
detectq_free_port() {
    local port ephemeral
    ephemeral=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$ephemeral" -gt 10100 ] 2>/dev/null || ephemeral=32768
    for port in $(shuf -i "10000-$((ephemeral - 1))" -n 100); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# Creates and starts a throwaway cluster; exports DATABASE_URL and DETECTQ_PG_DIR. Stop it with
# detectq_stop_cluster (the callers trap EXIT to do so whatever happens).
detectq_start_cluster() {
    local bindir port dir
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    port=$(detectq_free_port)
    dir=$(mktemp -d /tmp/detectq-pg.XXXXXX)
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    DETECTQ_PG_DIR="$dir"
    DETECTQ_PG_BINDIR="$bindir"
    export DETECTQ_PG_DIR DETECTQ_PG_BINDIR
    detectq_as_postgres "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync \
        --no-instructions >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    detectq_as_postgres "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o \
        "-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=800" \
        start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
    export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    echo "==> throwaway PostgreSQL on 127.0.0.1:$port ($dir)"
}

# Starts PgBouncer in transaction pooling mode in front of the cluster detectq_start_cluster started, for
# every database on it; exports DETECTQ_PGBOUNCER_URL (its default database, as DATABASE_URL names it).
# detectq_stop_cluster stops it too.
detectq_start_pgbouncer() {
    local port bouncer server_port
    bouncer=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    port=$(detectq_free_port)
    server_port=${DATABASE_URL##*:}
    server_port=${server_port%%/*}
    cat >"$DETECTQ_PG_DIR/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$server_port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $DETECTQ_PG_DIR/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 20
max_db_connections = 40
logfile = $DETECTQ_PG_DIR/pgbouncer.log
pidfile = $DETECTQ_PG_DIR/pgbouncer.pid
INI
    echo '"postgres" ""' >"$DETECTQ_PG_DIR/userlist.txt"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DETECTQ_PG_DIR/pgbouncer.ini" "$DETECTQ_PG_DIR/userlist.txt"
    detectq_as_postgres "$bouncer" -d "$DETECTQ_PG_DIR/pgbouncer.ini" || { cat "$DETECTQ_PG_DIR/pgbouncer.log" >&2; return 1; }
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    export DETECTQ_PGBOUNCER_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    echo "==> PgBouncer $("$bouncer" --version | head -n 1 | awk '{print $2}') in transaction mode on 127.0.0.1:$port"
}

detectq_stop_cluster() {
    [ -n "${DETECTQ_PG_DIR:-}" ] && [ -d "$DETECTQ_PG_DIR" ] || return 0
    if [ -f "$DETECTQ_PG_DIR/pgbouncer.pid" ]; then
        kill "$(cat "$DETECTQ_PG_DIR/pgbouncer.pid")" 2>/dev/null || true
    fi
    detectq_as_postgres "$DETECTQ_PG_BINDIR/pg_ctl" -D "$DETECTQ_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$DETECTQ_PG_DIR"
}

# A directory of this run's own, made the temporary directory (TMPDIR) of everything the run starts: the
# tests' clusters, media roots and logs all land under it, so detectq_stop_leftovers can find them.
detectq_start_run_directory() {
    DETECTQ_RUN_DIR=$(mktemp -d /tmp/detectq-run.XXXXXX)
    # The postgres user runs the tests' clusters in folders below it.
    chmod 755 "$DETECTQ_RUN_DIR"
    export DETECTQ_RUN_DIR TMPDIR="$DETECTQ_RUN_DIR"
}

# Prints "PID command line" for each running process of this checkout's detectq build.
detectq_build_processes() {
    local build pid exe
    build="$(pwd)/.build"
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
        case "$exe" in "$build"/*/detectq) echo "$pid $(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline")" ;; esac
    done
}

# Stops whatever the run's tests left running and removes the run directory: PostgreSQL clusters under it,
# and processes of this checkout's detectq build. A test stops what it starts, pass or fail, so each line
# printed here is a bug in a test; the count is printed as "leftovers: N".
detectq_stop_leftovers() {
    [ -n "${DETECTQ_RUN_DIR:-}" ] && [ -d "$DETECTQ_RUN_DIR" ] || return 0
    local count=0 pidfile pid line
    while IFS= read -r pidfile; do
        echo "leftover: a PostgreSQL cluster in $(dirname "$pidfile")"
        count=$((count + 1))
        detectq_as_postgres "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/pg_ctl" \
            -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1 || true
    done < <(find "$DETECTQ_RUN_DIR" -name postmaster.pid 2>/dev/null)
    while IFS= read -r line; do
        pid=${line%% *}
        echo "leftover: detectq process $pid: ${line#* }"
        count=$((count + 1))
        kill -9 "$pid" 2>/dev/null || true
    done < <(detectq_build_processes)
    echo "leftovers: $count"
    rm -rf "$DETECTQ_RUN_DIR"
}
