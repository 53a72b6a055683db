#!/usr/bin/env bash
# check-live.sh URL [IMAGE] — the post-deploy check of a live CoinLink (deploy.sh runs it).
# Waits for readiness (a fresh rollout may lag) up to CHECK_LIVE_WAIT_S seconds (30), then
# runs `coinlink verify` against URL: from IMAGE when given (on a deploy host without
# Python), else the `coinlink` on PATH. CHECK_LIVE_ADMIN_TOKEN and CHECK_LIVE_METRICS_TOKEN,
# when set, are passed on (the alert check; /metrics with its token). Exits 1 naming the
# checks that failed.
set -uo pipefail
url=${1:?usage: check-live.sh URL [IMAGE]}
url=${url%/}
image=${2:-}

ready() { [ "$(curl --silent --output /dev/null --max-time 5 --write-out '%{http_code}' "$url/readyz")" = 200 ]; }
deadline=$((SECONDS + ${CHECK_LIVE_WAIT_S:-30}))
until ready || [ "$SECONDS" -ge "$deadline" ]; do
  sleep 0.5
done

args=(verify --url "$url")
[ -n "${CHECK_LIVE_ADMIN_TOKEN:-}" ] && args+=(--admin-token "$CHECK_LIVE_ADMIN_TOKEN")
[ -n "${CHECK_LIVE_METRICS_TOKEN:-}" ] && args+=(--metrics-token "$CHECK_LIVE_METRICS_TOKEN")
if [ -n "$image" ]; then
  exec docker run --rm --network host "$image" coinlink "${args[@]}"
fi
exec coinlink "${args[@]}"
