# shellcheck shell=bash
# Shared helpers of the end-to-end scripts: logging, PASS/FAIL bookkeeping,
# background processes tracked by PID and cleaned up by a trap, and waiting.
# Sourced by cluster.sh and run.sh; never run on its own.

E2E_ROOT=${E2E_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

E2E_PASSED=0
E2E_FAILED=0
E2E_FAILURES=()
E2E_PIDS=()      # every background process this run started, in start order
E2E_PIDNAMES=()  # a name for each, same index
E2E_LOGS=()      # "name: path" of each log

E2E_REPORT=${E2E_REPORT:-0} # 1: end with the summary line and exit 1 on any FAIL
E2E_DONE=0                  # set to 1 when every check has run
E2E_ABORT=""

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { E2E_ABORT=$*; log "FATAL: $*"; exit 1; }

# pass/fail record one check each; the summary is printed by e2e_summary.
pass() { E2E_PASSED=$((E2E_PASSED + 1)); printf 'PASS: %s\n' "$1"; }
fail() {
  E2E_FAILED=$((E2E_FAILED + 1)); E2E_FAILURES+=("$1")
  printf 'FAIL: %s\n' "$1"
  [ -z "${2:-}" ] || printf '      %s\n' "${2//$'\n'/$'\n'      }"
}

# check NAME CMD...: runs CMD (output kept for the failure message) and
# records PASS or FAIL. Never exits, so one failed check does not hide the rest.
check() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(printf '%s' "$out" | tail -n 15)"; fi
}

# check_eq NAME WANT GOT
check_eq() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "want: $2"$'\n'"got:  $3"; fi
}

e2e_summary() {
  if [ ${#E2E_FAILURES[@]} -gt 0 ]; then
    printf '\nFailed checks:\n'
    printf '  - %s\n' "${E2E_FAILURES[@]}"
  fi
  printf '\ne2e: %d passed, %d failed\n' "$E2E_PASSED" "$E2E_FAILED"
}

# start NAME LOGFILE CMD...: starts CMD in the background with its output in
# LOGFILE and records its PID. CMD must be the real program (never `go run`,
# which would leave the real process as an untracked child).
start() {
  local name=$1 logf=$2; shift 2
  "$@" >"$logf" 2>&1 </dev/null &
  local pid=$!
  E2E_PIDS+=("$pid"); E2E_PIDNAMES+=("$name"); E2E_LOGS+=("$name: $logf")
  printf '%s %s\n' "$pid" "$name" >>"$E2E_WORK/pids"
  log "started $name (pid $pid, log $logf)"
}

# alive NAME: true while the process started under NAME runs.
alive() {
  local i
  for i in "${!E2E_PIDNAMES[@]}"; do
    if [ "${E2E_PIDNAMES[$i]}" = "$1" ]; then kill -0 "${E2E_PIDS[$i]}" 2>/dev/null; return; fi
  done
  return 1
}

# stop NAME: stops one tracked process by its PID (TERM, then KILL after 10s).
stop() {
  local i
  for i in "${!E2E_PIDNAMES[@]}"; do
    [ "${E2E_PIDNAMES[$i]}" = "$1" ] || continue
    stop_pid "${E2E_PIDS[$i]}" "$1"
  done
}

stop_pid() {
  local pid=$1 name=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) ignored TERM for 10s: KILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# cleanup stops every process this run started, newest first (clients before
# the apiserver, the apiserver before etcd), and says where the logs are.
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  set +e
  if [ ${#E2E_PIDS[@]} -gt 0 ]; then
    log "stopping ${#E2E_PIDS[@]} processes"
    for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do
      stop_pid "${E2E_PIDS[$i]}" "${E2E_PIDNAMES[$i]}"
    done
  fi
  if [ ${#E2E_LOGS[@]} -gt 0 ]; then
    printf '\nLogs (kept in %s):\n' "$E2E_WORK" >&2
    printf '  %s\n' "${E2E_LOGS[@]}" >&2
  fi
  # etcd's data and the binaries are the bulky parts; logs stay for reading.
  rm -rf "${E2E_WORK:?}/etcd-data" "${E2E_WORK:?}/bin"
  # The summary line comes last, also when the run was aborted (counted as a
  # failure), so it is always the closing line.
  if [ "$E2E_REPORT" = 1 ]; then
    [ "$E2E_DONE" = 1 ] || fail "run aborted: ${E2E_ABORT:-exit status $rc}"
    e2e_summary
    rc=0
    [ "$E2E_FAILED" -eq 0 ] || rc=1
  fi
  exit "$rc"
}

# e2e_init sets up the work folder and the trap. Call once, first.
e2e_init() {
  E2E_WORK=${E2E_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/medops-e2e.XXXXXX")}
  mkdir -p "$E2E_WORK/logs"
  : >"$E2E_WORK/pids"
  trap cleanup EXIT
  trap 'log "interrupted"; exit 130' INT TERM
  log "work folder: $E2E_WORK"
}

# wait_for [-p NAME]... SECONDS DESCRIPTION CMD...: polls CMD every 0.5s
# until it succeeds. Gives up at once when a process named with -p (one this
# run started) has exited: a dead component is the usual reason, and its log
# says why.
wait_for() {
  local procs=()
  while [ "$1" = -p ]; do procs+=("$2"); shift 2; done
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs)) p
  until "$@" >/dev/null 2>&1; do
    for p in "${procs[@]}"; do
      if ! alive "$p"; then
        log "$p has exited while waiting for $what"
        return 1
      fi
    done
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

# ensure_pkgs CMD:PACKAGE...: installs the Debian packages whose commands are
# missing, so the script works on a fresh machine.
ensure_pkgs() {
  local missing=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${spec%%:*}" ] || missing+=("${spec#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq >"$E2E_WORK/logs/apt.log" 2>&1 || die "apt-get update failed (see $E2E_WORK/logs/apt.log)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >>"$E2E_WORK/logs/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed (see $E2E_WORK/logs/apt.log)"
}
