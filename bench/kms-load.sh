#!/usr/bin/env bash
# Get operations per second with 1, 8 and 64 concurrent clients (one connection each)
# against `atrest kms serve` and against PyKMIP 0.11's server, on this machine, in one run,
# with the same client (atrest's, crates/atrest/examples/kmip_get_load.rs), the same PKI
# (the one `atrest kms serve` generates) and the same KMIP version (2.0). Prints the ratios.
#
#   bash bench/kms-load.sh            (needs scripts/setup-peers.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${ATREST_PYKMIP_VENV:-$root/.venv}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; sleep 1; rm -rf "$work"; }
trap cleanup EXIT
cd "$root"
cargo build -q --release -p atrest --bin atrest --example kmip_get_load
bin=$root/target/release
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

a_port=$(port)
RUST_LOG=warn setsid "$bin/atrest" kms serve --dir "$work/kms" --listen "127.0.0.1:$a_port" 2>"$work/kms.log" &
pids+=($!)
wait_port "$a_port"

p_port=$(port)
mkdir -p "$work/pykmip/policies"
cat > "$work/pykmip/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$p_port
certificate_path=$work/kms/pki/server.crt
key_path=$work/kms/pki/server.key
ca_path=$work/kms/pki/ca.crt
auth_suite=TLS1.2
policy_path=$work/pykmip/policies
enable_tls_client_auth=True
logging_level=WARNING
database_path=$work/pykmip/pykmip.db
CONF
setsid "$venv/bin/pykmip-server" -f "$work/pykmip/server.conf" -l "$work/pykmip/server.log" >/dev/null 2>&1 &
pids+=($!)
wait_port "$p_port"

for target in atrest pykmip; do
  p=$a_port; [ $target = pykmip ] && p=$p_port
  sed -e "s/^servers = .*/servers = [\"127.0.0.1:$p\"]/" -e 's/^version = .*/version = "2.0"/' \
    -e "s#\"pki/#\"$work/kms/pki/#" -e "s#\"client.pass\"#\"$work/kms/client.pass\"#" \
    -e "s#\"kmip.pass\"#\"$work/kms/kmip.pass\"#" "$work/kms/client.toml" > "$work/$target.toml"
  uid=$("$bin/atrest" kmip create --activate --config "$work/$target.toml" --name load)
  for clients in 1 8 64; do
    count=$(( clients == 1 ? 1000 : (clients == 8 ? 250 : 40) ))
    r=$("$bin/examples/kmip_get_load" "$work/$target.toml" "$uid" "$clients" "$count")
    echo "$target $r" | tee -a "$work/results"
  done
done
python3 - "$work/results" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    server, j = line.split(" ", 1)
    j = json.loads(j)
    rows[(server, j["clients"])] = j
print("Gets/s (p50 / p99 latency), KMIP 2.0, one connection per client:")
print(f"{'clients':>8} {'atrest kms serve':>32} {'PyKMIP 0.11 server':>32} {'ratio':>7}")
for c in (1, 8, 64):
    a, p = rows[("atrest", c)], rows[("pykmip", c)]
    fmt = lambda j: f"{j['gets_per_s']:9.0f} ({j['p50_ms']:.2f} / {j['p99_ms']:.2f} ms)"
    print(f"{c:>8} {fmt(a):>32} {fmt(p):>32} {a['gets_per_s'] / p['gets_per_s']:6.1f}x")
PY
