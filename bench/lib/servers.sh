# Helpers the bench scripts source: a free port, and the two KMIP servers they measure
# against, each started in the background with its process recorded in the caller's
# `pids` array (the caller kills them on exit).
#
#   free_port                  prints a free TCP port on 127.0.0.1
#   start_dev_kms ATREST DIR   atrest's development KMS; sets `conf` (its client.toml)
#   start_pykmip VENV DIR      PyKMIP's server with an ECDSA test PKI (its stock TLS 1.2
#                              suite has AEAD only with ECDSA); sets `conf` (an atrest
#                              configuration for it, KMIP 1.2) and `port`

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_dev_kms() {
  local atrest=$1 dir=$2
  port=$(free_port)
  "$atrest" kms serve --dir "$dir" --listen "127.0.0.1:$port" 2>"$dir.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -f "$dir/client.toml" ] && break; sleep 0.1; done
  conf=$dir/client.toml
}

start_pykmip() {
  local venv=$1 dir=$2
  mkdir -p "$dir/policies"
  (
    cd "$dir"
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
  )
  port=$(free_port)
  cat > "$dir/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$dir/server.crt
key_path=$dir/server.key
ca_path=$dir/ca.crt
auth_suite=TLS1.2
policy_path=$dir/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$dir/pykmip.db
CONF
  setsid "$venv/bin/pykmip-server" -f "$dir/server.conf" -l "$dir/server.log" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.2; done
  cat > "$dir/atrest.toml" <<CONF
[kmip]
servers = ["localhost:$port"]
ca_cert = "ca.crt"
client_cert = "client.crt"
client_key = "client.key"
version = "1.2"
CONF
  conf=$dir/atrest.toml
}
