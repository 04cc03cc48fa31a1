#!/usr/bin/env bash
# The command-line client: the live table like ss, --watch, --json, and `status`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec node --import "$root/node_modules/tsx/dist/loader.mjs" "$root/plugin/cli/endpoint-reporter-cli.ts" "$@"
