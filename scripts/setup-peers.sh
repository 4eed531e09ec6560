#!/usr/bin/env bash
# Installs the real peers the tests talk to: PyKMIP 0.11 (pinned, see
# crates/atrest/tests/peers/requirements-pykmip.txt) in a virtualenv at .venv, and the
# Debian packages it and the build need. Idempotent: a second run only checks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${ATREST_PYKMIP_VENV:-$root/.venv}

need=()
for pkg in build-essential pkg-config libssl-dev openssl python3-venv cryptsetup-bin \
    qemu-utils libnbd-bin fio fuse3 e2fsprogs util-linux gdb systemd; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A python3 whose venv module works: Debian's, or the one on PATH.
py=python3
if [ ! -x "$venv/bin/pykmip-server" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/crates/atrest/tests/peers/requirements-pykmip.txt"
fi
# NIST CAVP XTS vectors (XTSGenAES128/256.rsp), as pyca/cryptography ships them.
if ! "$venv/bin/python" -c 'import cryptography_vectors' 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check cryptography_vectors==50.0.2
fi
"$venv/bin/python" -c 'import kmip, kmip.services.server' 2>/dev/null \
  || { echo "PyKMIP in $venv does not import" >&2; exit 1; }
echo "peers ready: PyKMIP $("$venv/bin/pip" show pykmip 2>/dev/null | sed -n 's/^Version: //p') in $venv"
