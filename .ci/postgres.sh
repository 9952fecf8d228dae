#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the store tests.
#
#   bash .ci/postgres.sh start   # prints postgresql://postgres@127.0.0.1:PORT/gesso_test
#   bash .ci/postgres.sh stop    # stops it and removes its data directory
#
# The cluster lives in a fresh temporary directory, listens only on 127.0.0.1 on a free port (never a fixed
# one), trusts TCP connections from 127.0.0.1 (and nothing else: no Unix socket, no other host), runs with
# fsync off and holds one database, gesso_test. Run as root (CI), it runs as the `postgres` user (initdb refuses
# root) and installs PostgreSQL from the OS packages (apt-get) when initdb is not found; run as anyone else, it
# runs as you and needs PostgreSQL installed (Debian/Ubuntu: apt-get install postgresql). Quiet unless it fails.
# `start` while this checkout's cluster is still running prints its URL again; one cluster per checkout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# where `stop` finds the cluster: one state file per checkout, outside it (nothing to git-ignore)
state="${TMPDIR:-/tmp}/gesso-postgres-$(id -u)-$(printf %s "$root" | cksum | cut -d' ' -f1)"

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bindir() {
  local initdb
  if initdb=$(command -v initdb) && [ -x "$(dirname "$initdb")/pg_ctl" ]; then
    dirname "$(readlink -f "$initdb")"
    return
  fi
  # Debian keeps them out of PATH, one directory per major version: take the newest
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  [ -n "$initdb" ] && dirname "$initdb"
}

# run a command as the cluster's owner: root -> the postgres user; anyone else -> themselves
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  if [ -f "$state" ]; then
    local dir url
    { read -r dir; read -r url; } <"$state"
    if [ -d "$dir/data" ] && as_owner "$(find_bindir)/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; then
      echo "$url"
      return
    fi
    stop
  fi

  local bin
  bin=$(find_bindir) || true
  if [ -z "$bin" ]; then
    [ "$(id -u)" -eq 0 ] || die "PostgreSQL's initdb and pg_ctl are not installed (Debian/Ubuntu: sudo apt-get install postgresql)"
    local log
    log=$(mktemp)
    # Debian's package would create and start a cluster of its own ("main", port 5432): not wanted here
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/gesso-ci.conf
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"; die "could not install PostgreSQL"
    fi
    rm -f "$log"
    bin=$(find_bindir) || true
    [ -n "$bin" ] || die "PostgreSQL installed, but initdb is still not found"
  fi
  if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
    useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postgres
  fi

  local dir port
  dir=$(mktemp -d "${TMPDIR:-/tmp}/gesso-postgres.XXXXXX")
  chmod 755 "$dir"  # mktemp makes it 700; the cluster's owner must reach it
  [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
  # a free port on loopback (the kernel's choice; nothing else binds it in the moment before PostgreSQL does)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local url="postgresql://postgres@127.0.0.1:$port/gesso_test"
  printf '%s\n%s\n' "$dir" "$url" >"$state"

  if ! {
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --no-locale --auth=trust --no-sync &&
      as_owner sh -c 'cat >>"$1/postgresql.conf" && echo "host all all 127.0.0.1/32 trust" >"$1/pg_hba.conf"' sh "$dir/data" <<EOF &&
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
      as_owner "$bin/pg_ctl" start -D "$dir/data" -l "$dir/server.log" -w -t 30 &&
      as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres gesso_test
  } >"$dir/setup.log" 2>&1; then
    cat "$dir/setup.log" >&2
    [ ! -f "$dir/server.log" ] || cat "$dir/server.log" >&2
    stop
    die "could not start the cluster"
  fi
  echo "$url"
}

stop() {
  [ -f "$state" ] || return 0
  local dir bin
  { read -r dir; read -r _; } <"$state"
  bin=$(find_bindir) || true
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    # immediate: the data is thrown away anyway
    as_owner "$bin/pg_ctl" stop -D "$dir/data" -m immediate -w >/dev/null 2>&1 || true
  fi
  case "$dir" in */gesso-postgres.*) rm -rf "$dir" ;; esac
  rm -f "$state"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
