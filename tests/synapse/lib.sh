# Shared by tests/synapse/start and tests/synapse/stop (sourced, not run).

synapse_cache="${MYELIN_CACHE:-$HOME/.cache/myelin}"
synapse_venv="$synapse_cache/synapse-venv"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# Newest PostgreSQL server binaries from Debian's packages.
pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$d" && -x "$d/initdb" ]] || die "no PostgreSQL server found; run tests/synapse/setup"
    echo "$d"
}

# PostgreSQL refuses to run as root: as root we run it as this OS user.
pg_os_user() { echo "${SYNAPSE_PG_OS_USER:-postgres}"; }
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u "$(pg_os_user)" -- "$@"; else "$@"; fi
}

# A TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Is PID alive and is its command line matching PATTERN (guards against a
# recycled PID)?
pid_is() {
    local pid="$1" pattern="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

# stop_pid PID PATTERN FIRST_SIGNAL SECONDS: send FIRST_SIGNAL, wait up to
# SECONDS for the process to exit, then SIGKILL it.
stop_pid() {
    local pid="$1" pattern="$2" sig="$3" secs="$4" i
    pid_is "$pid" "$pattern" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        pid_is "$pid" "$pattern" || return 0
        sleep 0.1
    done
    echo "$(basename "$0"): pid $pid did not exit after SIG$sig in ${secs}s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_is "$pid" "$pattern" || return 0
        sleep 0.1
    done
    return 1
}
