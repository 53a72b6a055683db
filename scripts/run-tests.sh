#!/usr/bin/env bash
# The whole suite with coverage (bash scripts/run-tests.sh [pytest args]).
# The coverage floor applies to full runs only: a selection (-k, a path) covers less.
# pytest's exit code 5 (nothing collected) is a failure: a run that tested nothing must
# not look green.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# The suite uses these servers when they answer, else starts throwaway ones (tests/support).
export COINLINK_TEST_DATABASE_URL="${COINLINK_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export COINLINK_TEST_REDIS_URL="${COINLINK_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
floor=()
[ $# -eq 0 ] && floor=(--cov-fail-under=90)
rm -f .coverage .coverage.*
# The slowest tests are printed: the suite has a budget of 20 minutes.
.venv/bin/pytest --cov --cov-report=term --timeout=300 --durations=25 "${floor[@]}" "$@"
status=$?
if [ $status -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $status
