#!/usr/bin/env bash
# The PostgreSQL backup and restore commands of docs/operations.md ("Backing up and restoring
# PostgreSQL"), on a real PostgreSQL 15 started here (as the `postgres` user when run as root):
#
#   1. pg_dump --format=custom, then pg_restore into an empty database: the rows dumped, and only
#      those, come back;
#   2. point-in-time recovery: WAL archiving (archive_mode, archive_command), a base backup with
#      pg_basebackup, rows committed before and after a moment T, then a new data directory from
#      the base backup with restore_command, recovery_target_time = T and recovery.signal: the
#      server replays the archive up to T and opens read-write with exactly the rows of T.
#
# Exits 77 (ctest: skipped) when PostgreSQL 15 is not installed.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
[[ -x "$BIN/postgres" ]] || { echo "SKIP: PostgreSQL 15 is not installed (Debian package postgresql-15)"; exit 77; }

WORK="$(mktemp -d /tmp/anima-ops-pg.XXXXXX)"
as=()
if [[ $(id -u) -eq 0 ]]; then
  # PostgreSQL refuses to run as root: everything of the server runs as Debian's postgres user.
  as=(setpriv --reuid=postgres --regid=postgres --init-groups)
  chown postgres: "$WORK"
fi
pg() { "${as[@]}" "$@"; }
trap 'pg "$BIN/pg_ctl" stop -D "$WORK/data" -m immediate >/dev/null 2>&1 || true
      pg "$BIN/pg_ctl" stop -D "$WORK/restored" -m immediate >/dev/null 2>&1 || true
      rm -rf "$WORK"' EXIT
status=0
fail() {
  echo "FAIL: $*"
  status=1
}
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="postgresql://postgres@127.0.0.1:$port/anima"
psql_at() { pg "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "${2:-$URL}" -c "$1"; }

# start DATADIR: starts the server on it and waits until it accepts connections.
start() {
  pg "$BIN/pg_ctl" start -D "$1" -l "$1.log" -w -t 60 \
    -o "-p $port -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null ||
    { echo "FAIL: PostgreSQL did not start:"; cat "$1.log"; exit 1; }
}
# until_true SQL: polls until the query answers t (generous deadline).
until_true() {
  local deadline=$((SECONDS + 60))
  until [[ "$(psql_at "$1" 2>/dev/null)" == t ]]; do
    ((SECONDS < deadline)) || { echo "FAIL: never true: $1"; exit 1; }
    sleep 0.1
  done
}

pg "$BIN/initdb" -D "$WORK/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" ||
  { cat "$WORK/initdb.log"; exit 1; }
# WAL archiving, as docs/operations.md sets it up.
mkdir -p "$WORK/wal-archive" "$WORK/backups"
[[ ${#as[@]} -eq 0 ]] || chown postgres: "$WORK/wal-archive" "$WORK/backups"
cat >>"$WORK/data/postgresql.conf" <<CONF
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $WORK/wal-archive/%f && cp %p $WORK/wal-archive/%f'
archive_timeout = 60
CONF
start "$WORK/data"
psql_at "CREATE DATABASE anima" "postgresql://postgres@127.0.0.1:$port/postgres"
psql_at "CREATE TABLE jobs(id bigint PRIMARY KEY, batch text NOT NULL)"
psql_at "INSERT INTO jobs SELECT g, 'a' FROM generate_series(1, 100) g"

# 1. A logical dump, restored into an empty database.
pg "$BIN/pg_dump" --format=custom --no-owner --file="$WORK/backups/anima.dump" "$URL"
psql_at "INSERT INTO jobs SELECT g, 'after-dump' FROM generate_series(101, 110) g"
psql_at "CREATE DATABASE anima_restored" "postgresql://postgres@127.0.0.1:$port/postgres"
pg "$BIN/pg_restore" --no-owner --exit-on-error --dbname="${URL}_restored" "$WORK/backups/anima.dump"
got="$(psql_at "SELECT count(*) || ' ' || string_agg(DISTINCT batch, ',') FROM jobs" "${URL}_restored")"
if [[ "$got" == "100 a" ]]; then
  echo "ok: pg_dump and pg_restore bring back the 100 rows dumped and nothing later"
else
  fail "the restored database holds '$got', not the 100 rows of batch a"
fi
# A restore over the live database (--clean --if-exists) replaces what is there.
pg "$BIN/pg_restore" --clean --if-exists --no-owner --single-transaction --exit-on-error \
  --dbname="$URL" "$WORK/backups/anima.dump"
got="$(psql_at "SELECT count(*) FROM jobs")"
[[ "$got" == 100 ]] || fail "pg_restore --clean left $got rows, not the 100 dumped"

# 2. Point-in-time recovery: a base backup, then rows before and after the moment T.
pg "$BIN/pg_basebackup" -d "postgresql://postgres@127.0.0.1:$port/postgres" \
  -D "$WORK/backups/base" -Ft -z -X stream --checkpoint=fast
psql_at "INSERT INTO jobs SELECT g, 'b' FROM generate_series(1001, 1050) g"
target="$(psql_at "SELECT clock_timestamp()")"
psql_at "INSERT INTO jobs SELECT g, 'c' FROM generate_series(2001, 2050) g"
# Everything up to C in the archive (the next segment starts after it).
segment="$(psql_at "SELECT pg_walfile_name(pg_switch_wal())")"
until_true "SELECT last_archived_wal >= '$segment' FROM pg_stat_archiver"
pg "$BIN/pg_ctl" stop -D "$WORK/data" -m fast >/dev/null

# The restore, as the docs give it: the base backup into a new data directory, the archive as
# restore_command, the target time, recovery.signal.
pg mkdir -m 700 "$WORK/restored"
pg tar -xzf "$WORK/backups/base/base.tar.gz" -C "$WORK/restored"
pg tar -xzf "$WORK/backups/base/pg_wal.tar.gz" -C "$WORK/restored/pg_wal"
pg tee -a "$WORK/restored/postgresql.conf" >/dev/null <<CONF
restore_command = 'cp $WORK/wal-archive/%f %p'
recovery_target_time = '$target'
recovery_target_action = 'promote'
CONF
pg touch "$WORK/restored/recovery.signal"
start "$WORK/restored"
until_true "SELECT NOT pg_is_in_recovery()"
got="$(psql_at "SELECT string_agg(batch || '=' || n, ' ' ORDER BY batch) FROM (SELECT batch, count(*) n FROM jobs GROUP BY batch) t")"
if [[ "$got" == "a=100 b=50" ]]; then
  echo "ok: point-in-time recovery to T holds the rows committed before T (a, b) and none after (c)"
else
  fail "recovered to $target, the database holds '$got', not 'a=100 b=50'"
  tail -n 20 "$WORK/restored.log"
fi
psql_at "INSERT INTO jobs VALUES (3001, 'd')" || fail "the recovered server is not writable"
exit "$status"
