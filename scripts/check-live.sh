#!/usr/bin/env bash
# check-live.sh URL — the post-deploy check of a live CoinLink (deploy.sh runs it).
# Liveness, readiness (database and bus), live market data and the security headers. Prints each check; exits 1 naming the failures.
set -uo pipefail
url=${1:?usage: check-live.sh URL}
url=${url%/}
failed=()

status() { curl --silent --output /dev/null --max-time 5 --write-out '%{http_code}' "$@"; }
check() { # name, expected, actual
  if [ "$3" = "$2" ]; then
    echo "ok    $1"
  else
    echo "FAIL  $1 (got $3)"
    failed+=("$1")
  fi
}

# priced: 1 when the tickers carry at least one price (the response is one line).
priced() { curl --silent --max-time 5 "$url/api/v2/market/tickers" | grep -c '"price":"'; }

# Readiness and the first prices may lag a fresh rollout: retry until CHECK_LIVE_WAIT_S
# seconds (30) have passed.
deadline=$((SECONDS + ${CHECK_LIVE_WAIT_S:-30}))
ready=$(status "$url/readyz")
prices=$(priced)
while { [ "$ready" != 200 ] || [ "$prices" != 1 ]; } && [ "$SECONDS" -lt "$deadline" ]; do
  sleep 0.5
  ready=$(status "$url/readyz")
  prices=$(priced)
done
check "/health 200" 200 "$(status "$url/health")"
check "/readyz 200" 200 "$ready"
check "/api/v2/market/tickers has live prices" 1 "$prices"
nosniff=$(curl --silent --max-time 5 --dump-header - --output /dev/null "$url/health" |
  tr -d '\r' | grep -ci '^x-content-type-options: nosniff')
check "security headers (X-Content-Type-Options: nosniff)" 1 "$nosniff"

if [ ${#failed[@]} -gt 0 ]; then
  echo "check-live: ${#failed[@]} failed: ${failed[*]}" >&2
  exit 1
fi
echo "check-live: all passed"
