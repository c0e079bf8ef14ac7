# shellcheck shell=bash
# System services the test suite needs. Sourced by `./dev test` (bash, `set -euo pipefail`)
# after the virtualenv is ready and before pytest runs; it only defines `_bc_*` names and
# exports what the tests read.
#
# PostgreSQL: the store contract suite (tests/store) runs against SQLite *and* PostgreSQL, so
# this starts a throwaway cluster — initdb into a fresh temp dir, listening on 127.0.0.1 only
# (free port) and on a unix socket inside that dir, trust auth (nothing but loopback can reach
# it) — creates a database and exports
#     BACKCHANNEL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:PORT/backchannel_test
# An EXIT trap stops the cluster and deletes its directory when ./dev exits (./dev runs pytest
# as a child for `test`, so the trap fires after the suite).
#
# Why a private cluster and not the distribution's `main` one: no fixed port, no state shared
# with other runs or with a developer's own databases, no service manager needed (CI containers
# have none), and a crash leaves nothing that the next run trips over (stale clusters whose
# ./dev died are swept below).
#
# Idempotent: if BACKCHANNEL_TEST_POSTGRES_URL is already set (a CI service container, a
# developer's own server, or a second `source` in the same shell) nothing is started.
# Works as root (initdb/pg_ctl then run as the `postgres` user: PostgreSQL refuses root) and as
# an ordinary user (the cluster is owned by that user).

if ! declare -F log >/dev/null; then
  log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
fi
if ! declare -F apt_install >/dev/null; then
  # Sourced outside ./dev: the same behaviour as ./dev's helper.
  apt_install() {
    local missing=() pkg sudo=""
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  }
fi

# Run a PostgreSQL server-side binary as the cluster owner (postgres when we are root).
_bc_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_bc_pg_bin() {
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null \
    | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] || return 1
  printf '%s\n' "$dir"
}

_bc_free_port() {
  local py="${VENV:-}/bin/python"
  [ -x "$py" ] || py=python3
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Where clusters live: $TMPDIR unless the postgres user cannot reach it (root's private tmp).
_bc_tmp_base() {
  local base=${TMPDIR:-/tmp}
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$base" 2>/dev/null; then
    base=/tmp
  fi
  printf '%s\n' "${base%/}"
}

# Is this process running? (A zombie is not: `kill -0` would say it is.)
_bc_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# Stop and delete the cluster of a run whose ./dev is gone (killed with -9, machine reset...).
_bc_pg_sweep() {
  local bin=$1 dir owner
  for dir in "$(_bc_tmp_base)"/backchannel-pg.*; do
    [ -d "$dir" ] && [ -f "$dir/owner" ] || continue
    owner=$(cat "$dir/owner" 2>/dev/null || true)
    if [ -n "$owner" ] && _bc_alive "$owner"; then
      continue  # still in use by a live ./dev
    fi
    if [ -f "$dir/data/postmaster.pid" ]; then
      (cd "$dir" && _bc_as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop) \
        >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
  done
}

_bc_pg_stop() {
  [ -n "${_BC_PG_DIR:-}" ] || return 0
  if [ -f "$_BC_PG_DIR/data/postmaster.pid" ]; then
    (cd "$_BC_PG_DIR" && _bc_as_owner "$_BC_PG_BIN/pg_ctl" -D "$_BC_PG_DIR/data" \
      -m immediate -w stop) >/dev/null 2>&1 || true
  fi
  rm -rf "$_BC_PG_DIR"
  _BC_PG_DIR=""
}

# Chain with whatever EXIT trap the sourcing shell already had, instead of replacing it.
_bc_install_exit_trap() {
  local previous
  previous=$(trap -p EXIT)
  if [ -n "$previous" ]; then
    # `trap -p` prints: trap -- 'COMMAND' EXIT
    eval "set -- $previous"
    _BC_PREVIOUS_EXIT_TRAP=$3
  else
    _BC_PREVIOUS_EXIT_TRAP=""
  fi
  # bash runs the EXIT trap on normal exit, on `set -e` failures and on SIGTERM/SIGHUP; a
  # Ctrl-C reaches pytest, which exits normally, so ./dev exits and the trap runs too.
  trap '_bc_on_exit' EXIT
}

_bc_on_exit() {
  local status=$?
  _bc_pg_stop
  if [ -n "${_BC_PREVIOUS_EXIT_TRAP:-}" ]; then
    eval "$_BC_PREVIOUS_EXIT_TRAP"
  fi
  return "$status"
}

_bc_start_postgres() {
  if [ -n "${BACKCHANNEL_TEST_POSTGRES_URL:-}" ]; then
    log "PostgreSQL for tests: using BACKCHANNEL_TEST_POSTGRES_URL from the environment"
    return 0
  fi
  apt_install postgresql
  local bin dir port attempt started=""
  bin=$(_bc_pg_bin) || { log "no PostgreSQL server binaries under /usr/lib/postgresql"; return 1; }
  _BC_PG_BIN=$bin
  _bc_pg_sweep "$bin"

  dir=$(mktemp -d "$(_bc_tmp_base)/backchannel-pg.XXXXXX")
  _BC_PG_DIR=$dir
  _bc_install_exit_trap
  echo "$$" > "$dir/owner"
  chmod 755 "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; fi

  # --no-sync: a throwaway cluster need not fsync its freshly created files (saves seconds);
  # the running server keeps fsync on, so commits cost what they cost in production.
  (cd "$dir" && _bc_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
    --encoding=UTF8 --locale=C --no-sync) >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }

  for attempt in 1 2 3; do
    port=$(_bc_free_port)
    if (cd "$dir" && _bc_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" \
        start) >/dev/null 2>&1; then
      started=1
      break
    fi
    log "PostgreSQL did not start on port $port (attempt $attempt)"
  done
  if [ -z "$started" ]; then
    tail -n 20 "$dir/server.log" >&2 || true
    return 1
  fi

  "$bin/createdb" -h "$dir" -p "$port" -U postgres backchannel_test
  export BACKCHANNEL_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/backchannel_test"
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') for tests on 127.0.0.1:$port"
}

# Chromium (browser leg): tests/browser drive Debian's chromium through Playwright's pip wheel
# (which ships its own driver; no `playwright install`, no browser download). Without it the
# browser tests fail, they do not skip.
_bc_chromium() {
  apt_install chromium
  export BACKCHANNEL_TEST_CHROMIUM=${BACKCHANNEL_TEST_CHROMIUM:-/usr/bin/chromium}
}

_bc_start_postgres
_bc_chromium
