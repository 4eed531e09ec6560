#!/usr/bin/env bash
# Get latency and Gets/s over one connection: atrest's KMIP client and PyKMIP's own client,
# against the same PyKMIP 0.11 server, in one run. Prints both and the ratio.
#
#   bash bench/kmip-get.sh [COUNT]        (default 500 Gets; needs scripts/setup-peers.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${ATREST_PYKMIP_VENV:-$root/.venv}
count=${1:-500}
version=1.2
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; sleep 1; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
# shellcheck source=bench/lib/servers.sh
. "$root/bench/lib/servers.sh"
start_pykmip "$venv" "$work"

cd "$root"
cargo build -q --release -p atrest --example kmip_get_load
atrest_bin=$root/target/release/atrest
[ -x "$atrest_bin" ] || cargo build -q --release -p atrest
uid=$("$atrest_bin" kmip create --config "$work/atrest.toml" --activate --name bench)
a=$("$root/target/release/examples/kmip_get_load" "$work/atrest.toml" "$uid" 1 "$count")
p=$("$venv/bin/python" -W ignore "$root/bench/pykmip_get_load.py" 127.0.0.1 "$port" "$work/ca.crt" \
    "$work/client.crt" "$work/client.key" "$uid" 1 "$count" "$version")
echo "$a"
echo "$p"
python3 - "$a" "$p" <<'PY'
import json, sys
a, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"Gets over one connection, KMIP 1.2, {a['gets']} each, PyKMIP 0.11 server:")
print(f"  atrest client  {a['gets_per_s']:8.1f} Gets/s  p50 {a['p50_ms']:.2f} ms  p99 {a['p99_ms']:.2f} ms")
print(f"  PyKMIP client  {p['gets_per_s']:8.1f} Gets/s  p50 {p['p50_ms']:.2f} ms  p99 {p['p99_ms']:.2f} ms")
print(f"  ratio atrest/PyKMIP: {a['gets_per_s'] / p['gets_per_s']:.2f}x Gets/s, "
      f"{p['p50_ms'] / a['p50_ms']:.2f}x lower p50 latency")
PY
