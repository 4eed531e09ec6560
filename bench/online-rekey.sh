#!/usr/bin/env bash
# What a reader of a served volume sees while the daemon re-encrypts it under a new key
# (issue 22: a deep rekey while serving), against the same reader on the idle volume, in
# one run. `atrest serve` exports a volume over NBD (Unix socket); fio's nbd engine
# (libnbd) reads it: sequential 1 MiB at queue depth 8, and random 4 KiB at depth 16. Each
# cell runs on the idle volume, then during `atrest ctl rekey --deep` (which must outlast
# the cell: the rekey is paced with convert_max_mib_per_sec so that it does), and prints
# both and their ratio, and how fast the rekey went meanwhile.
#
#   bash bench/online-rekey.sh [RUNTIME_SECONDS]   (default 10; SIZE_MIB=1024 PACE_MIB=40)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runtime=${1:-10}
size_mib=${SIZE_MIB:-1024}
pace=${PACE_MIB:-40}
target=${CARGO_TARGET_DIR:-$root/target}
for tool in fio python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (bash scripts/setup-peers.sh)" >&2; exit 1; }
done
(cd "$root" && cargo build -q --release -p atrest)
atrest=$target/release/atrest

work=$(mktemp -d)
chmod 700 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib/servers.sh
. "$root/bench/lib/servers.sh"
start_dev_kms "$atrest" "$work/kms"
truncate -s $(( (16 + size_mib) << 20 )) "$work/v.img"
"$atrest" format --config "$work/kms/client.toml" "$work/v.img" >/dev/null
{
  cat "$work/kms/client.toml" | sed "s|= \"pki/|= \"$work/kms/pki/|; s|= \"client.pass\"|= \"$work/kms/client.pass\"|; s|= \"kmip.pass\"|= \"$work/kms/kmip.pass\"|"
  cat <<CONF

[serve]
api_socket = "$work/run/api.sock"
audit_log = "$work/audit.jsonl"
convert_max_mib_per_sec = $pace

[[volume]]
name = "v"
path = "$work/v.img"
nbd = "unix:$work/run/v.sock"
CONF
} > "$work/atrest.toml"
chmod 600 "$work/atrest.toml"
RUST_LOG=warn "$atrest" serve --config "$work/atrest.toml" 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/run/v.sock" ] && break; sleep 0.1; done
uri="nbd+unix:///v?socket=$work/run/v.sock"
# Data everywhere, so that reads decrypt real sectors.
fio --name=fill --ioengine=nbd "--uri=$uri" --rw=write --bs=1m --iodepth=8 --size="${size_mib}m" \
  --output-format=terse >/dev/null

cell() { # rw bs qd -> MiB/s (1m) or IOPS (4k)
  local rw=$1 bs=$2 qd=$3
  fio --name=b --ioengine=nbd "--uri=$uri" --rw="$rw" --bs="$bs" --iodepth="$qd" \
    --size="${size_mib}m" --time_based --runtime="$runtime" --ramp_time=1 \
    --output-format=json 2>/dev/null | python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]["read"]
p999 = j["clat_ns"]["percentile"]["99.900000"] / 1e6
worst = j["clat_ns"]["max"] / 1e6
tail = "p99.9 %.1f ms, max %.0f ms" % (p999, worst)
print(round(j["bw_bytes"] / 1048576) if sys.argv[1] == "1m" else round(j["iops"]), tail, sep="|")' "$bs"
}

ctl() { "$atrest" ctl --socket "$work/run/api.sock" "$@"; }
printf '%-22s %12s %16s %7s\n' cell idle "during rekey" ratio
for c in "read 1m 8" "randread 4k 16"; do
  set -- $c
  idle_all=$(cell "$1" "$2" "$3"); idle=${idle_all%%|*}
  ctl rekey v --deep --no-wait >/dev/null
  sleep 1
  busy_all=$(cell "$1" "$2" "$3"); busy=${busy_all%%|*}
  state=$(ctl --json status | python3 -c '
import json, sys
v = json.load(sys.stdin)["volumes"][0]; p = v.get("progress") or {}
print(v["state"], p.get("done", 0) >> 20, "MiB done")')
  unit=$([ "$2" = 1m ] && echo MiB/s || echo IOPS)
  printf '%-22s %12s %16s %7s   (%s; volume %s)\n' "$1 $2 qd$3" "$idle $unit" "$busy $unit" \
    "$(python3 -c "print(f'{$busy/$idle:.2f}')")" "rekey paced at $pace MiB/s" "$state"
  printf '%-22s   latency idle: %s; during: %s\n' "" "${idle_all#*|}" "${busy_all#*|}"
  # Let it finish before the next cell.
  for _ in $(seq 600); do
    ctl --json status | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["volumes"][0].get("progress") is None else 1)' && break
    sleep 0.5
  done
done
