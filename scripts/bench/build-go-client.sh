#!/usr/bin/env bash
# Builds go-report-client (scripts/bench/go-report-client) into OUT_DIR (default build/bench) from
# Debian's Go packages only: grpc-go, protoc-gen-go and protoc-gen-go-grpc, in GOPATH mode (no
# module proxy is reachable). Installs the packages when missing. Rerunnable.
# Usage: scripts/bench/build-go-client.sh [OUT_DIR]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/build/bench}"

# golang-google-grpc-dev accepts golang-github-golang-protobuf 1.3 or 1.5, and apt would pick 1.3,
# which predates the protobuf runtime that protoc-gen-go 1.28's messages need: name 1.5.
packages=(golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev golang-google-protobuf-dev
  protoc-gen-go protoc-gen-go-grpc protobuf-compiler libprotobuf-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench/build-go-client: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

gopath="$OUT/go-src"
pkg="$gopath/src/endpointreporter"
rm -rf "$pkg"
mkdir -p "$pkg/pb" "$pkg/cmd/go-report-client"
cp "$ROOT/scripts/bench/go-report-client/main.go" "$pkg/cmd/go-report-client/"
# The .proto names no go_package: map it here rather than add Go options to the contract.
map=Mendpoint_reporter.proto=endpointreporter/pb
protoc -I "$ROOT/proto" -I /usr/include \
  --go_out="$pkg/pb" --go_opt=paths=source_relative --go_opt="$map" \
  --go-grpc_out="$pkg/pb" --go-grpc_opt=paths=source_relative --go-grpc_opt="$map" \
  endpoint_reporter.proto
env GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" GOCACHE="$OUT/go-cache" \
  go build -o "$OUT/go-report-client" endpointreporter/cmd/go-report-client
echo "bench/build-go-client: wrote $OUT/go-report-client"
