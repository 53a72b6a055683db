#!/usr/bin/env bash
# Make sure the test suite's node tools are installed: Debian's nodejs and npm when they
# are missing, then tools/asyncapi's packages exactly as its package-lock.json pins them
# (npm ci checks every integrity hash). Quick when both are there already: npm ci runs only
# when node_modules is missing or older than the lock.
set -euo pipefail
cd "$(dirname "$0")/../tools/asyncapi"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs and npm (needed by the test suite)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: node and npm missing and apt-get unavailable; install them by hand" >&2
    exit 1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi

# npm ci writes node_modules/.package-lock.json last: newer than the lock means done.
installed=node_modules/.package-lock.json
if [ ! -e "$installed" ] || [ package-lock.json -nt "$installed" ]; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
