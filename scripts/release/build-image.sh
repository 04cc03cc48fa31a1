#!/usr/bin/env bash
# Builds the release image from a tarball: scripts/release/build-image.sh TARBALL [TAG] [BASE]
#   TAG  default localhost/scope-endpoint-reporter:<package version>
#   BASE default docker.io/library/node:20-bookworm-slim (a Node 20 slim Debian base)
# OFFLINE=1 builds with --pull=never --network=none (the base must be local then).
# Uses podman from PATH; CONTAINERS_CONF / CONTAINERS_STORAGE_CONF choose where its state lives.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tarball="$(realpath "${1:?usage: build-image.sh TARBALL [TAG] [BASE]}")"
version="$(tar -xOzf "$tarball" package/package.json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).version))')"
tag="${2:-localhost/scope-endpoint-reporter:$version}"
base="${3:-docker.io/library/node:20-bookworm-slim}"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$tarball" "$context/scope-endpoint-reporter.tgz"
cp "$here/runtime-libraries" "$context/runtime-libraries"
offline=()
[ "${OFFLINE:-0}" = 1 ] && offline=(--pull=never --network=none)
podman build "${offline[@]}" --build-arg "BASE=$base" -f "$here/Containerfile" -t "$tag" "$context" >&2
echo "$tag"
