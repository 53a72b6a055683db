#!/usr/bin/env bash
# Sourced by the scripts that build and run the image: sets ENGINE to a working container
# engine. Docker when its daemon answers; otherwise Podman, installed from Debian's packages
# when absent and configured for hosts like CI's sandbox:
#   - runc as the runtime (crun refuses hybrid cgroup hierarchies);
#   - default ulimits no higher than this host's hard limits (raising them needs
#     CAP_SYS_RESOURCE, which a sandbox may lack);
#   - the Dockerfile's base image is pulled; only when no registry answers is it made
#     locally: a Debian 12 minbase from debootstrap with its Python 3.11, tagged with the
#     FROM line's name (the same Debian release the official image is built on).
# Podman's settings go to a file of this checkout (CONTAINERS_CONF), never to /etc.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The FROM lines of the Dockerfile (a test holds them equal).
BASE_IMAGE=python:3.11-slim-bookworm

_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_install_podman() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || {
    echo "error: no Docker engine, and ${missing[*]} missing without apt-get: install Podman" >&2
    return 1
  }
  echo "installing ${missing[*]} (no Docker engine answers)"
  _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends \
    "${missing[@]}"
}

_configure_podman() {
  local conf="$ROOT/var/podman/containers.conf" nofile nproc
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  [ "$nofile" -gt 1048576 ] && nofile=1048576
  nproc=$(ulimit -Hu)
  { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
  mkdir -p "$(dirname "$conf")"
  cat >"$conf" <<EOF
# Written by scripts/container-engine.sh for this host.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF="$conf"
}

# The first URIs line of the host's Debian sources: the mirror this machine may reach.
_debian_mirror() {
  local uri
  uri=$(grep -hE '^URIs: .*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 |
    awk '{print $2}')
  [ -n "$uri" ] || uri=$(grep -hE '^deb .*/debian/? bookworm' /etc/apt/sources.list 2>/dev/null |
    head -1 | awk '{print $2}')
  echo "${uri:-http://deb.debian.org/debian}"
}

_base_image() {
  $ENGINE image exists "$BASE_IMAGE" && return 0
  $ENGINE pull --quiet "docker.io/library/$BASE_IMAGE" >/dev/null 2>&1 && return 0
  local rootfs="$ROOT/var/podman/rootfs" started=$SECONDS
  echo "making $BASE_IMAGE locally (debootstrap bookworm minbase): no registry answers"
  if ! command -v debootstrap >/dev/null 2>&1; then
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
      --no-install-recommends debootstrap
  fi
  _as_root rm -rf "$rootfs"
  _as_root debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    bookworm "$rootfs" "$(_debian_mirror)" >"$ROOT/var/podman/debootstrap.log" 2>&1 || {
    tail -20 "$ROOT/var/podman/debootstrap.log" >&2
    return 1
  }
  # The official image answers to `python`; the Dockerfile relies on that.
  _as_root ln -sf python3 "$rootfs/usr/bin/python"
  _as_root rm -rf "$rootfs/var/lib/apt/lists"/* "$rootfs/var/cache/apt"/*.bin
  _as_root tar -C "$rootfs" -c . | $ENGINE import --quiet \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  _as_root rm -rf "$rootfs"
  echo "made $BASE_IMAGE in $((SECONDS - started)) s"
}

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  _install_podman
  _configure_podman
  ENGINE=podman
  _base_image
fi
export ENGINE
