#!/usr/bin/env bash
# Install tools/asyncapi's node packages exactly as its package-lock.json pins them (npm ci
# checks every integrity hash); node and npm themselves come from scripts/ensure-servers.sh.
# Quick when done already: npm ci runs only when node_modules is missing or older than the
# lock.
set -euo pipefail
cd "$(dirname "$0")/../tools/asyncapi"

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm is not installed; run scripts/ensure-servers.sh" >&2
  exit 1
fi
# npm ci writes node_modules/.package-lock.json last: newer than the lock means done.
installed=node_modules/.package-lock.json
if [ ! -e "$installed" ] || [ package-lock.json -nt "$installed" ]; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
