#!/usr/bin/env bash
# Make sure the PostgreSQL, Redis, nginx and PgBouncer server binaries exist, so the suite
# can start throwaway servers when none answers (and an nginx in front of app instances
# with the shipped deploy/nginx/ config, a PgBouncer in transaction mode in front of
# PostgreSQL), and promtool and amtool, which check the shipped deploy/prometheus/ files,
# and node with npm, which check the AsyncAPI document (scripts/ensure-node-tools.sh
# installs its packages), and wrk, the HTTP load generator of bench/ (`make bench`; the
# report's test drives it). Installs Debian's packages when
# they are missing.
#
# The packages would start system services (nginx on port 80, PgBouncer on 6432,
# Prometheus on 9090, Alertmanager on 9093); the suite starts its own
# on free ports, so the install runs under a policy-rc.d that forbids starting any
# service (exit 101, the Debian convention invoke-rc.d and deb-systemd-invoke honour),
# unless the machine already has one (Docker images ship one that does the same).
set -euo pipefail

have_postgres() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
# redis-cli makes the suite's throwaway Redis Cluster (--cluster create).
have_redis() { command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; }
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
have_pgbouncer() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }
have_promtool() { command -v promtool >/dev/null 2>&1; }
have_amtool() { command -v amtool >/dev/null 2>&1; }
have_node() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }
have_wrk() { command -v wrk >/dev/null 2>&1; }

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server redis-tools)
have_nginx || missing+=(nginx)
have_pgbouncer || missing+=(pgbouncer)
have_promtool || missing+=(prometheus)
have_amtool || missing+=(prometheus-alertmanager)
have_node || missing+=(nodejs npm)
have_wrk || missing+=(wrk)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing ${missing[*]} (needed by the test suite)"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: ${missing[*]} missing and apt-get unavailable; install them by hand" >&2
  exit 1
fi
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# ensure-servers.sh: no service starts while it installs\nexit 101\n' |
    $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
