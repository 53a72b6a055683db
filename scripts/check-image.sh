#!/usr/bin/env bash
# Builds the Dockerfile and proves the image (make image; .ci/run runs it):
# scripts/check_image.py runs `coinlink migrate`, then `serve`, against real PostgreSQL and
# Redis and checks what an operator relies on. Docker where its daemon answers, else Podman
# (scripts/container-engine.sh). APP_IMAGE names the tag (default coinlink:check);
# --no-build checks an image built already (CI builds it with its layer cache).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${APP_IMAGE:-coinlink:check}
# shellcheck source=scripts/container-engine.sh
source scripts/container-engine.sh

if [ "${1:-}" != --no-build ]; then
  build=("$ENGINE" build --tag "$image")
  if [ "$ENGINE" = podman ]; then
    # docker format keeps HEALTHCHECK (OCI drops it); host networking and the host's CA
    # bundle, mounted for the build only, for hosts whose HTTPS goes through a proxy.
    build+=(--format docker --network host
      --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  fi
  mkdir -p var
  started=$SECONDS
  "${build[@]}" . >var/image-build.log 2>&1 || {
    tail -40 var/image-build.log >&2
    echo "error: $ENGINE build failed (whole log: var/image-build.log)" >&2
    exit 1
  }
  echo "built $image with $ENGINE in $((SECONDS - started)) s"
fi
exec .venv/bin/python scripts/check_image.py --engine "$ENGINE" --image "$image"
