#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for tests: start|stop|status.
#
# The cluster lives in target/postgres/ (data directory, socket directory, log)
# and listens on 127.0.0.1:${FF_PG_PORT:-54329} only, with trust authentication
# for loopback connections. `start` is idempotent (a running cluster is reused)
# and prints the connection URL; concurrent starts are serialised by a lock file.
# Running as root, the server runs as the `postgres` user (PostgreSQL refuses root).
set -euo pipefail

port="${FF_PG_PORT:-54329}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${FF_PG_DIR:-$root/target/postgres}"
data="$base/data-$port"
sock="$base/sock-$port"
log="$base/server-$port.log"
user="flowfabric"
url="postgres://$user@127.0.0.1:$port/postgres"
start_wait_s=60

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bin() {
    local name="$1"
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
    if [ -x "/usr/lib/postgresql/15/bin/$name" ]; then echo "/usr/lib/postgresql/15/bin/$name"; return; fi
    return 1
}

ensure_binaries() {
    if find_bin initdb >/dev/null && find_bin pg_ctl >/dev/null; then return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "postgres.sh: installing postgresql-15" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15 >&2 \
            || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15 >&2; } \
            || die "cannot install postgresql-15"
    fi
    find_bin initdb >/dev/null && find_bin pg_ctl >/dev/null || die "initdb/pg_ctl not found (install postgresql-15)"
}

# Runs a command as the cluster owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() {
    [ -f "$data/PG_VERSION" ] && as_owner "$(find_bin pg_ctl)" -D "$data" status >/dev/null 2>&1
}

ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p "$port" -U "$user" -d postgres
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

start() {
    ensure_binaries
    mkdir -p "$base"
    exec 9>"$base/lock-$port"
    flock 9
    if running && ready; then echo "$url"; return; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        rm -rf "$data"
        mkdir -p "$data" "$sock"
        if [ "$(id -u)" = 0 ]; then
            chown postgres "$data" "$sock"
            # The owner must reach the data directory through every parent.
            local d="$base"
            while [ "$d" != "/" ]; do
                runuser -u postgres -- test -x "$d" 2>/dev/null || chmod o+x "$d"
                d="$(dirname "$d")"
            done
        fi
        chmod 700 "$data"
        as_owner "$(find_bin initdb)" -D "$data" -U "$user" --auth=trust --encoding=UTF8 --locale=C \
            >"$base/initdb-$port.log" 2>&1 9>&- || die "initdb failed: see $base/initdb-$port.log"
    fi
    mkdir -p "$sock"
    [ "$(id -u)" = 0 ] && chown postgres "$sock"
    touch "$log"
    [ "$(id -u)" = 0 ] && chown postgres "$log"
    as_owner "$(find_bin pg_ctl)" -D "$data" -l "$log" -w -t "$start_wait_s" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $sock -c max_connections=400 -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=128MB" \
        start >/dev/null 9>&- || die "pg_ctl start failed: see $log"
    local i
    for ((i = 0; i < start_wait_s * 10; i++)); do
        if ready; then echo "$url"; return; fi
        sleep 0.1
    done
    die "the server did not accept connections within ${start_wait_s}s: see $log"
}

stop() {
    if [ -f "$data/PG_VERSION" ] && running; then
        as_owner "$(find_bin pg_ctl)" -D "$data" -m fast -w stop >/dev/null
    fi
    echo "stopped"
}

status() {
    if running && ready; then echo "running $url"; else echo "stopped"; return 3; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
