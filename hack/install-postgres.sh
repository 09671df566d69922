#!/usr/bin/env bash
# Installs the PostgreSQL 15 server binaries from Debian when they are
# missing. The postgres store's tests and make bench-api start servers of
# their own (internal/pgtest) and need no system cluster, so the "main"
# cluster Debian's package creates is stopped if the install started it.
# Needs root (or sudo) only when installing.
set -euo pipefail

[ -x /usr/lib/postgresql/15/bin/postgres ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "[postgres] installing postgresql-15 from Debian" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters --no-header 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r ver name; do
    $sudo pg_ctlcluster "$ver" "$name" stop || true
  done
fi
