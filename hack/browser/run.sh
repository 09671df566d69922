#!/usr/bin/env bash
# make test-browser: builds medops-api, installs playwright-core from the
# lock file and runs the /docs browser test against Debian's chromium.
# Without chromium it skips with an install hint; MEDOPS_REQUIRE_BROWSER=1
# (set by .ci/run) turns that skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
chromium=${MEDOPS_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ] || ! command -v node >/dev/null; then
  msg="browser test skipped: needs $chromium and node (apt-get install -y chromium nodejs npm)"
  if [ "${MEDOPS_REQUIRE_BROWSER:-}" = 1 ]; then echo "FAIL: $msg" >&2; exit 1; fi
  echo "SKIP: $msg"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 go build -o "$tmp/medops-api" ./cmd/medops-api
npm ci --prefix hack/browser --no-audit --no-fund --silent
MEDOPS_API_BIN="$tmp/medops-api" MEDOPS_CHROMIUM="$chromium" node hack/browser/docs-test.mjs
