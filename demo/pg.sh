#!/usr/bin/env bash
# A throwaway PostgreSQL for busline-demo: installs Debian's `postgresql` package if no server
# is found, starts one on loopback (a free port, a fresh data directory, pg_stat_statements
# preloaded so the database counts the queries itself), runs the demo or its PostgreSQL test
# against it with DATABASE_URL set, and always stops it and deletes the data directory.
#
#   bash demo/pg.sh run [busline-demo run options]   # what `make demo-pg` runs
#   bash demo/pg.sh test                             # the ignored PostgreSQL test (CI)
#
# In `test` mode a machine where the package cannot be installed skips, saying so (exit 0);
# in `run` mode that is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
shift || true
case "$mode" in
  run | test) ;;
  *) echo "usage: $0 run [options] | test" >&2; exit 2 ;;
esac

skip_or_fail() {
  if [ "$mode" = test ]; then
    echo "demo/pg.sh: SKIPPED the PostgreSQL test: $*"
    exit 0
  fi
  echo "demo/pg.sh: error: $*" >&2
  exit 1
}

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

bin="$(find_bin)"
if [ -z "$bin" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    skip_or_fail "no PostgreSQL server found and not root to install it (apt-get install postgresql)"
  fi
  echo "demo/pg.sh: installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -q && apt-get install -y -q postgresql; } >/tmp/busline-pg-install.log 2>&1; then
    tail -n 20 /tmp/busline-pg-install.log >&2 || true
    skip_or_fail "apt-get install postgresql failed (log above)"
  fi
  bin="$(find_bin)"
  [ -n "$bin" ] || skip_or_fail "the postgresql package installed no server under /usr/lib/postgresql"
fi

# initdb refuses to run as root: the cluster belongs to the postgres user then.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

dir="$(mktemp -d /tmp/busline-pg.XXXXXX)"
[ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
data="$dir/data"
started=""
cleanup() {
  if [ -n "$started" ]; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }

# A free loopback port: the first from 55432 that nothing listens on and the server accepts.
# fsync off: a throwaway cluster that the demo only reads after one bulk fill.
for port in $(seq 55432 55531); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
  if as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c shared_preload_libraries=pg_stat_statements -c fsync=off -c max_connections=50" \
    >/dev/null 2>&1; then
    started=1
    break
  fi
done
if [ -z "$started" ]; then
  tail -n 20 "$dir/server.log" >&2 || true
  echo "demo/pg.sh: error: PostgreSQL did not start on any port in 55432-55531" >&2
  exit 1
fi
export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "demo/pg.sh: $("$bin/postgres" --version) on 127.0.0.1:$port (data in $data)"

case "$mode" in
  run) cargo run --profile sim -p busline-demo --features postgres -- run "$@" ;;
  test) cargo test -p busline-demo --features postgres --test postgres -- --ignored ;;
esac
