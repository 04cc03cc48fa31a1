#!/bin/sh
# Builds the procfs benchmark helpers: the connection holder and the C floor scanner.
# Usage: scripts/bench/build-procfs.sh [OUT_DIR]   (default: build/bench in the repository)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../../build/bench"}
mkdir -p "$out"
cc=${CC:-gcc}
$cc -O2 -Wall -Wextra -o "$out/conn-holder" "$here/conn-holder.c"
$cc -O2 -Wall -Wextra -o "$out/procfs-floor" "$here/procfs-floor.c"
