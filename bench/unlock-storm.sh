#!/usr/bin/env bash
# The unlock storm (issue 25): N processes fetch a key at the same instant from one
# development KMS, as N appliances do after a site-wide power cut, all from one address
# (loopback: a test rig, or clients behind a NAT). Each is a real `atrest kmip get` (TLS
# with a client certificate, the Credential, Get); the script prints, per N, the time until
# the last one finished and how many failed. The server may hold 64 connections per
# address: the rest must queue, not be reset.
#
#   bash bench/unlock-storm.sh [N ...]      (default: 50 200 500)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build -q --release -p atrest)
atrest=$target/release/atrest
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$atrest" kms serve --dir "$work/kms" --listen "127.0.0.1:$port" 2>"$work/kms.log" &
pids+=($!)
for _ in $(seq 100); do [ -f "$work/kms/client.toml" ] && break; sleep 0.1; done
conf=$work/kms/client.toml
uid=$("$atrest" kmip create --config "$conf" --name storm --activate | tail -n 1)
printf '%6s %10s %8s\n' N seconds failed
for n in "${@:-50 200 500}"; do
  for m in $n; do
    rm -f "$work"/out.*
    start=$EPOCHREALTIME
    for i in $(seq "$m"); do
      ("$atrest" kmip get --config "$conf" "$uid" >/dev/null 2>"$work/out.$i" || echo fail >> "$work/out.$i") &
    done
    wait_for=$(jobs -p | grep -v -F -x -f <(printf '%s\n' "${pids[@]}") || true)
    # shellcheck disable=SC2086
    wait $wait_for 2>/dev/null || true
    end=$EPOCHREALTIME
    failed=$( (grep -l fail "$work"/out.* 2>/dev/null || true) | wc -l)
    printf '%6s %10s %8s\n' "$m" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')" "$failed"
    if [ "$failed" -gt 0 ]; then
      grep -h -v '^fail$' "$work"/out.* | sort | uniq -c | sort -rn | head -3
    fi
  done
done
