#!/bin/sh
# The package's bins, endpoint-reporter and endpoint-reporter-cli (one script, told apart by its name).
# Starts node the way scripts/start.sh does: GLIBC_TUNABLES from plugin/runtime/glibc-tunables ahead of the
# caller's (glibc reads it only at exec, hence a shell script that execs node) and the V8 flags from
# plugin/runtime/v8-flags. $ENDPOINT_REPORTER_NODE picks the node binary (default: node on PATH).
set -eu
self=$(readlink -f "$0")
dist=$(dirname "$(dirname "$self")")
case "$(basename "$0")" in
  *-cli) exec "${ENDPOINT_REPORTER_NODE:-node}" "$dist/plugin/endpoint-reporter-cli.js" "$@" ;;
esac
tunables=$(cat "$dist/plugin/runtime/glibc-tunables")
GLIBC_TUNABLES="$tunables${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
export GLIBC_TUNABLES
set -f # the flags file holds one flag a line, none with spaces or globs
# shellcheck disable=SC2046
exec "${ENDPOINT_REPORTER_NODE:-node}" $(cat "$dist/plugin/runtime/v8-flags") "$dist/plugin/main.js" "$@"
