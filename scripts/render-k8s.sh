#!/usr/bin/env bash
# render-k8s.sh ENVIRONMENT IMAGE OUTDIR — the Kubernetes manifests of one environment.
# Substitutes the values of deploy/k8s/ENVIRONMENT.env, and IMAGE, into deploy/k8s/
# namespace.yaml and deploy/k8s/{config,migrate,app}/*.yaml, and writes them under OUTDIR
# (new or empty) in the same layout, to be applied in that order (docs/deploy.md).
# Only those variables are substituted (envsubst with an explicit list), every value must
# be one plain YAML word, and a manifest that uses a variable the file lacks fails.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: render-k8s.sh ENVIRONMENT IMAGE OUTDIR"
environment=${1:?$usage}
image=${2:?$usage}
out=${3:?$usage}
env_file=deploy/k8s/$environment.env
fail() { echo "error: $*" >&2; exit 2; }

[ -f "$env_file" ] || fail "no $env_file"
# An immutable reference: a tag other than `latest`, or a digest.
[[ $image =~ ^[a-z0-9./:@_-]+$ ]] || fail "not an image reference: $image"
case ${image##*/} in
  *@sha256:*) ;;
  *:latest) fail "name an immutable tag, not latest: $image" ;;
  *:?*) ;;
  *) fail "name the image with its tag or digest: $image" ;;
esac
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  fail "$out is not empty (stale manifests would be applied with the new ones)"
fi

export IMAGE=$image
names=(IMAGE)
while IFS= read -r line || [ -n "$line" ]; do
  case $line in '' | '#'*) continue ;; esac
  [[ $line =~ ^([A-Z][A-Z0-9_]*)=([A-Za-z0-9._:/,-]+)$ ]] || fail "$env_file: not NAME=value: $line"
  export "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
  names+=("${BASH_REMATCH[1]}")
done <"$env_file"
# shellcheck disable=SC2016 # literal ${NAME}s: the list envsubst substitutes, the leftovers
only=$(printf '${%s} ' "${names[@]}") leftover='${'

for source in deploy/k8s/namespace.yaml deploy/k8s/{config,migrate,app}/*.yaml; do
  target=$out/${source#deploy/k8s/}
  mkdir -p "$(dirname "$target")"
  envsubst "$only" <"$source" >"$target"
  if grep -nF "$leftover" "$target" >&2; then
    fail "$source uses a variable that $env_file does not set"
  fi
done
echo "rendered $environment ($image) into $out"
