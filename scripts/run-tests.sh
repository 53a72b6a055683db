#!/usr/bin/env bash
# The whole suite with coverage. pytest's exit code 5 (nothing collected) is a failure:
# a run that tested nothing must not look green.
set -uo pipefail
cd "$(dirname "$0")/.."
rm -f .coverage .coverage.*
.venv/bin/pytest --cov --cov-report=term --timeout=300 "$@"
status=$?
if [ $status -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $status
