#!/usr/bin/env bash
# The accept as most hosts do it today, on PostgreSQL tables, beside Roster's own accept, in
# one run (DESIGN section 9; issue 8).
#
# Starts a private PostgreSQL cluster (initdb into a temporary directory, its own port on
# 127.0.0.1, synchronous_commit = on), creates plain tables, and drives one transaction with
# pgbench and 64 clients: lock the link row, check its expiry and uses, insert the membership,
# bump the uses, insert an audit row. Two shapes, like `roster bench accept`: everyone joins
# through one link of one resource, and joins spread over 1,000 resources. Then runs
# `roster bench accept` on the same machine and prints both.
#
# Usage: scripts/bench-postgres.sh [SECONDS]   (default 10)
set -euo pipefail
seconds=${1:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
bindir=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
work=$(mktemp -d /tmp/roster-pgbench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# initdb refuses to run as root: run the cluster as the postgres user when we are root.
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  as_pg=(runuser -u postgres --)
  chown postgres "$work"
fi
cleanup() {
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"${as_pg[@]}" "$bindir/initdb" -D "$work/data" -U bench --auth=trust >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
synchronous_commit = on
fsync = on
max_connections = 100
shared_buffers = 128MB
CONF
"${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
psql=(psql -h 127.0.0.1 -p "$port" -U bench -d postgres -q -v ON_ERROR_STOP=1)

"${psql[@]}" <<'SQL'
CREATE TABLE links (id bigint PRIMARY KEY, resource_id bigint NOT NULL, role text NOT NULL,
                    expires_at timestamptz, max_uses integer, uses integer NOT NULL DEFAULT 0,
                    created_by text NOT NULL);
CREATE TABLE memberships (resource_id bigint NOT NULL, principal text NOT NULL, role text NOT NULL,
                          granted_by text NOT NULL, since timestamptz NOT NULL,
                          PRIMARY KEY (resource_id, principal));
CREATE TABLE audit (id bigserial PRIMARY KEY, resource_id bigint NOT NULL, principal text NOT NULL,
                    action text NOT NULL, actor text NOT NULL, at timestamptz NOT NULL);
INSERT INTO links (id, resource_id, role, created_by)
  SELECT g, g, 'editor', 'owner' FROM generate_series(1, 1000) g;
SQL

# One accept: the link row locked, checked, used; the membership and the audit row written.
cat > "$work/accept.sql" <<'SQL'
\set link random(1, :links)
BEGIN;
SELECT role FROM links WHERE id = :link
  AND (expires_at IS NULL OR expires_at > now())
  AND (max_uses IS NULL OR uses < max_uses) FOR UPDATE;
INSERT INTO memberships (resource_id, principal, role, granted_by, since)
  VALUES (:link, 'u' || :client_id || '-' || nextval('audit_id_seq'), 'editor', 'owner', now())
  ON CONFLICT DO NOTHING;
UPDATE links SET uses = uses + 1 WHERE id = :link;
INSERT INTO audit (resource_id, principal, action, actor, at)
  VALUES (:link, 'u' || :client_id, 'joined', 'owner', now());
COMMIT;
SQL

echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}'), synchronous_commit = on, pgbench, 64 clients, ${seconds} s"
printf '%-15s  %9s  %9s\n' shape "tx/s" "avg ms"
for shape in "one link:1" "many resources:1000"; do
  name=${shape%%:*}; links=${shape##*:}
  out=$(pgbench -h 127.0.0.1 -p "$port" -U bench -n -c 64 -j 2 -T "$seconds" -D links="$links" -f "$work/accept.sql" postgres 2>&1)
  tps=$(echo "$out" | awk '/^tps/ {print $3; exit}')
  latency=$(echo "$out" | awk '/latency average/ {print $4; exit}')
  printf '%-15s  %9.0f  %9s\n' "$name" "$tps" "$latency"
done
echo
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
scratch=$(mktemp -d /tmp/roster-bench.XXXXXX)
"$here/target/release/roster" --data "$scratch" bench accept --seconds "$seconds"
rm -rf "$scratch"
