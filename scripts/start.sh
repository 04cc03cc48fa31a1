#!/usr/bin/env bash
# Starts the plugin under Node, installing and building whatever is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node --import tsx plugin/main.ts "$@"
