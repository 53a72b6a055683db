#!/usr/bin/env bash
# deploy.sh IMAGE — used by .github/workflows/deploy.yml, once per environment.
# Rolls IMAGE out to the docker-compose.yml project on DEPLOY_HOST (a Docker engine reached
# over SSH), checks DEPLOY_URL (scripts/check-live.sh) and, when the check fails, rolls back
# to the image that was running before and exits 1.
# Needs: DEPLOY_HOST (user@host or user@host:port), DEPLOY_URL, DEPLOY_SSH_KEY, DEPLOY_KNOWN_HOSTS,
# ENV_PRODUCTION (the .env.production text); GHCR_READ_TOKEN and GHCR_USER for a private image.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:?usage: deploy.sh IMAGE}
for name in DEPLOY_HOST DEPLOY_URL DEPLOY_SSH_KEY DEPLOY_KNOWN_HOSTS ENV_PRODUCTION; do
  [ -n "${!name:-}" ] || { echo "error: $name is not set for this environment" >&2; exit 2; }
done

umask 077
# Everything secret is removed on exit: the SSH key and the registry login (docker keeps it
# in DOCKER_CONFIG) in a directory of their own, and .env.production, which compose reads
# here (docker-compose.yml's env_file) and sends to the remote engine.
work=$(mktemp -d)
trap 'rm -rf "$work" .env.production' EXIT
export DOCKER_CONFIG="$work/docker"
mkdir -p "$DOCKER_CONFIG" "$work/bin"
printf '%s\n' "$DEPLOY_SSH_KEY" >"$work/id_deploy"
printf '%s\n' "$DEPLOY_KNOWN_HOSTS" >"$work/known_hosts"
printf '%s\n' "$ENV_PRODUCTION" >.env.production
# docker's ssh:// transport runs `ssh`: this one uses the key and known hosts above and
# leaves ~/.ssh alone.
cat >"$work/bin/ssh" <<EOF
#!/bin/sh
exec $(command -v ssh) -i "$work/id_deploy" -o IdentitiesOnly=yes \\
  -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes "\$@"
EOF
chmod +x "$work/bin/ssh"
export PATH="$work/bin:$PATH"

export DOCKER_HOST="ssh://$DEPLOY_HOST"
compose=(docker compose --project-name coinlink --env-file .env.production)
# Fail here, not later: an unreachable host must not read as "nothing was running".
docker version --format '{{.Server.Version}}' >/dev/null
if [ -n "${GHCR_READ_TOKEN:-}" ]; then
  printf '%s' "$GHCR_READ_TOKEN" | docker login ghcr.io -u "${GHCR_USER:?}" --password-stdin
fi

running=$("${compose[@]}" ps --quiet app)
previous=""
[ -n "$running" ] && previous=$(docker inspect --format '{{.Config.Image}}' "$running")

rollout() {
  APP_IMAGE=$1 "${compose[@]}" up --detach --no-build --wait --wait-timeout 180
}

echo "deploying $image (running before: ${previous:-nothing})"
if rollout "$image" && bash scripts/check-live.sh "$DEPLOY_URL" "$image"; then
  echo "deployed $image"
  exit 0
fi
echo "::error::$image failed its post-deploy check"
if [ -n "$previous" ] && [ "$previous" != "$image" ]; then
  if rollout "$previous" && bash scripts/check-live.sh "$DEPLOY_URL" "$previous"; then
    echo "::warning::rolled back to $previous"
  else
    echo "::error::rollback to $previous failed its check too"
  fi
fi
exit 1
