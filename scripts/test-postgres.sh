#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: `start` installs Debian's `postgresql` if it is
# missing, creates a cluster in a temp dir as an unprivileged user, starts it on a free loopback
# port and prints `export` lines (AICHAT_TEST_POSTGRES_URL, AICHAT_TEST_POSTGRES_DIR);
# `stop DIR` stops it and removes the dir. Password authentication over TCP, like a real one.
# `start --durable` keeps PostgreSQL's default durability (fsync, synchronous commit): for the
# benchmarks; the tests run without it.
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

case "${1:-}" in
start)
  if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
    echo "installing postgresql (Debian)" >&2
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >&2
  fi
  bin="$(bindir)"
  dir="$(mktemp -d /tmp/aichat-pg.XXXXXX)"
  chmod 755 "$dir"
  # PostgreSQL refuses to run as root: as root, run it as the `postgres` user the package made.
  run=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$dir"
    run=(runuser -u postgres --)
  fi
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  password="aichat-test-$RANDOM$RANDOM"
  printf '%s\n' "$password" >"$dir/pw"
  [ ${#run[@]} -eq 0 ] || chown postgres "$dir/pw"
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U aichat --pwfile="$dir/pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  # A throwaway cluster: durability off for speed (unless --durable); room for every test's pool.
  speed="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${2:-}" != "--durable" ] || speed=""
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 $speed" >/dev/null ||
    { cat "$dir/server.log" >&2; exit 1; }
  echo "export AICHAT_TEST_POSTGRES_URL='postgres://aichat:$password@127.0.0.1:$port/postgres?sslmode=disable'"
  echo "export AICHAT_TEST_POSTGRES_DIR='$dir'"
  ;;
stop)
  dir="${2:?usage: test-postgres.sh stop DIR}"
  run=()
  [ "$(id -u)" != 0 ] || run=(runuser -u postgres --)
  "${run[@]}" "$(bindir)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: test-postgres.sh start | stop DIR" >&2
  exit 2
  ;;
esac
