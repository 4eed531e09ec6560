#!/usr/bin/env bash
# How long `atrest serve` takes from its start to three volumes unlocked and exported
# (systemd's READY=1, which it sends once every volume is unlocked or says why not), with
# the development KMS on loopback; and what one key-state check costs per volume (the Get
# Attributes round trip, from the audit log's latency_ms with key_check_secs = 1).
#
#   bash bench/unlock.sh [RUNS]      (default 10)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-10}
target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build -q --release -p atrest)
atrest=$target/release/atrest

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "$work"/fuse-*; do umount "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib/servers.sh
. "$root/bench/lib/servers.sh"
start_dev_kms "$atrest" "$work/kms"

# Three volumes as an appliance has them: configuration, audit history, recordings (the
# last with a detached header); exports over NBD (Unix socket and loopback TCP) and FUSE.
for v in config:32 audit:64 recordings:256; do
  name=${v%%:*}; mib=${v#*:}
  truncate -s $(( (16 + mib) << 20 )) "$work/$name.img"
done
"$atrest" format --config "$conf" "$work/config.img" >/dev/null
"$atrest" format --config "$conf" --sector-size 4096 "$work/audit.img" >/dev/null
truncate -s 256M "$work/recordings.img"
"$atrest" encrypt --config "$conf" --header "$work/recordings.hdr" "$work/recordings.img" >/dev/null
tcp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  sed -n '/^\[kmip\]/,$p' "$conf" | sed "s#\"pki/#\"$work/kms/pki/#; s#\"client.pass\"#\"$work/kms/client.pass\"#; s#\"kmip.pass\"#\"$work/kms/kmip.pass\"#"
  cat <<EOF

[serve]
api_socket = "$work/run/api.sock"
audit_log = "$work/log/audit.jsonl"
key_check_secs = 1

[[volume]]
name = "config"
path = "$work/config.img"
nbd = "unix:$work/run/config.sock"

[[volume]]
name = "audit"
path = "$work/audit.img"
nbd = "127.0.0.1:$tcp"

[[volume]]
name = "recordings"
path = "$work/recordings.img"
header = "$work/recordings.hdr"
fuse = "$work/fuse-recordings"
EOF
} >"$work/atrest.toml"

python3 - "$atrest" "$work" "$runs" <<'PY'
import json, os, socket, statistics, subprocess, sys, time
atrest, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for i in range(runs + 1):
    path = f"{work}/notify.sock"
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    start = time.monotonic()
    p = subprocess.Popen([atrest, "serve", "--config", f"{work}/atrest.toml"],
                         env={**os.environ, "NOTIFY_SOCKET": path},
                         stdout=subprocess.DEVNULL, stderr=open(f"{work}/serve.log", "a"))
    while True:
        msg = s.recv(4096).decode()
        if "READY=1" in msg.split("\n"):
            break
    took = time.monotonic() - start
    if i > 0:  # the first run warms the page cache
        times.append(took * 1000)
    if i == runs:
        time.sleep(6)  # a few key-state checks per volume
    p.terminate()
    if p.wait(timeout=60) != 0:
        sys.exit(f"atrest serve exited with {p.returncode}")
    s.close()
checks = [json.loads(l)["latency_ms"] for l in open(f"{work}/log/audit.jsonl")
          if '"operation":"get_attributes"' in l and '"result":"ok"' in l]
print(f"bench/unlock.sh: {runs} starts, {os.cpu_count()} cores")
print(f"start to three volumes unlocked and exported (READY=1): median {statistics.median(times):.1f} ms, "
      f"min {min(times):.1f}, max {max(times):.1f}  (target < 100 ms)")
print(f"key-state check per volume (Get Attributes on an open connection): median {statistics.median(checks):.2f} ms, "
      f"max {max(checks):.2f} over {len(checks)} checks")
PY
