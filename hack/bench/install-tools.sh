#!/usr/bin/env bash
# Installs the load generator and the baseline server of `make bench-api`
# from Debian when they are missing: wrk (latency percentiles through its Lua
# done() hook), nginx-light, memcached (the second-level scenario) and
# PostgreSQL 15 for the postgres store's figures (the bench starts its own
# servers; it needs no system cluster or service).
# Needs root (or sudo) only when installing.
set -euo pipefail

"$(dirname "$0")/../install-postgres.sh"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v memcached >/dev/null || missing+=(memcached)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "[bench] installing ${missing[*]} from Debian" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
