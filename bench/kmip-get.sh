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
trap 'kill -TERM -- -$(cat "$work/server.pid" 2>/dev/null) 2>/dev/null || true; sleep 1; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

# An ECDSA test PKI (PyKMIP's stock TLS 1.2 suite has AEAD only with ECDSA certificates).
cd "$work"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }
key ca.key
openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -out ca.crt 2>/dev/null
for who in server client; do
  key $who.key
  if [ $who = server ]; then ext="subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"; cn=localhost; else ext="extendedKeyUsage=clientAuth"; cn=bench-client; fi
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n' "$ext" > $who.ext
  openssl req -new -key $who.key -subj "/CN=$cn" -out $who.csr 2>/dev/null
  openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 -extfile $who.ext -out $who.crt 2>/dev/null
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p policies
cat > server.conf <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$work/server.crt
key_path=$work/server.key
ca_path=$work/ca.crt
auth_suite=TLS1.2
policy_path=$work/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$work/pykmip.db
CONF
setsid "$venv/bin/pykmip-server" -f "$work/server.conf" -l "$work/server.log" >/dev/null 2>&1 &
echo $! > server.pid
for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
cat > atrest.toml <<CONF
[kmip]
servers = ["localhost:$port"]
ca_cert = "ca.crt"
client_cert = "client.crt"
client_key = "client.key"
version = "$version"
CONF

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
