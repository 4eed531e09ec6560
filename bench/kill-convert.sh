#!/usr/bin/env bash
# The long SIGKILL run: encrypt, deep rekey and decrypt of 64 MiB images, each command
# killed at random points until it has been killed ATREST_KILLS times or finishes, for
# ROUNDS rounds per case (two cases: wrapped/512-byte sectors, direct/4096). Prints the
# total number of kills; every round checks the data against the original through atrest,
# through cryptsetup + pyca, and after decrypt byte for byte.
#   usage: bash bench/kill-convert.sh [ROUNDS]   (default 12: about 500 kills)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-12}
export ATREST_KILL_ROUNDS=$ROUNDS ATREST_KILLS=${ATREST_KILLS:-40}
time cargo test --release --locked -p atrest --test convert
