#!/usr/bin/env bash
# deploy.sh IMAGE — used by .github/workflows/deploy.yml, once per environment.
# Rolls IMAGE out to the docker-compose.yml project on DEPLOY_HOST (a Docker engine reached
# over SSH), checks DEPLOY_URL (scripts/check-live.sh) and, when the check fails, rolls back
# to the image that was running before and exits 1.
# Needs: DEPLOY_HOST (user@host), DEPLOY_URL, DEPLOY_SSH_KEY, DEPLOY_KNOWN_HOSTS,
# ENV_PRODUCTION (the .env.production text); GHCR_READ_TOKEN and GHCR_USER for a private image.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:?usage: deploy.sh IMAGE}
for name in DEPLOY_HOST DEPLOY_URL DEPLOY_SSH_KEY DEPLOY_KNOWN_HOSTS ENV_PRODUCTION; do
  [ -n "${!name:-}" ] || { echo "error: $name is not set for this environment" >&2; exit 2; }
done

umask 077
mkdir -p ~/.ssh
printf '%s\n' "$DEPLOY_SSH_KEY" >~/.ssh/coinlink_deploy
printf '%s\n' "$DEPLOY_KNOWN_HOSTS" >>~/.ssh/known_hosts
printf 'Host %s\n  IdentityFile ~/.ssh/coinlink_deploy\n  IdentitiesOnly yes\n' \
  "${DEPLOY_HOST#*@}" >>~/.ssh/config
# compose reads the env file here and sends the values to the remote engine.
printf '%s\n' "$ENV_PRODUCTION" >.env.production
trap 'rm -f .env.production ~/.ssh/coinlink_deploy' EXIT

export DOCKER_HOST="ssh://$DEPLOY_HOST"
compose=(docker compose --project-name coinlink --env-file .env.production)
if [ -n "${GHCR_READ_TOKEN:-}" ]; then
  printf '%s' "$GHCR_READ_TOKEN" | docker login ghcr.io -u "${GHCR_USER:?}" --password-stdin
fi

running=$("${compose[@]}" ps --quiet app || true)
previous=""
[ -n "$running" ] && previous=$(docker inspect --format '{{.Config.Image}}' "$running")

rollout() {
  APP_IMAGE=$1 "${compose[@]}" up --detach --no-build --wait --wait-timeout 180
}

echo "deploying $image (running before: ${previous:-nothing})"
if rollout "$image" && bash scripts/check-live.sh "$DEPLOY_URL"; then
  echo "deployed $image"
  exit 0
fi
echo "::error::$image failed its post-deploy check"
if [ -n "$previous" ] && [ "$previous" != "$image" ]; then
  if rollout "$previous" && bash scripts/check-live.sh "$DEPLOY_URL"; then
    echo "::warning::rolled back to $previous"
  else
    echo "::error::rollback to $previous failed its check too"
  fi
fi
exit 1
