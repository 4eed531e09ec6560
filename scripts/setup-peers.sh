#!/usr/bin/env bash
# Installs the real peers the tests talk to: PyKMIP 0.11 (pinned, see
# crates/atrest/tests/peers/requirements-pykmip.txt) in a virtualenv at .venv, a headless
# Chromium driven by Playwright (tests/web, pinned in its package-lock.json), and the
# Debian packages they and the build need. Idempotent: a second run only checks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${ATREST_PYKMIP_VENV:-$root/.venv}

need=()
for pkg in build-essential pkg-config libssl-dev openssl python3-venv cryptsetup-bin \
    qemu-utils libnbd-bin nbdkit fio fuse3 e2fsprogs util-linux gdb systemd \
    chromium fonts-liberation clevis clevis-luks jose tang socat; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# Node and npm run Playwright. Judged by command, not package: NodeSource's nodejs
# bundles npm and conflicts with Debian's npm package, so asking dpkg would break it.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
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

# Playwright from npm drives Debian's Chromium (/usr/bin/chromium): playwright-core has
# no browser of its own, and PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD makes sure nothing is
# fetched. npm ci only when the lock changed since the last install (stamp below).
web=$root/tests/web
lock_sha=$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$web/node_modules/playwright-core/package.json" ] \
    || [ "$(cat "$web/node_modules/.atrest-lock-sha" 2>/dev/null)" != "$lock_sha" ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$web" --no-audit --no-fund \
    --loglevel=error >/dev/null
  echo "$lock_sha" >"$web/node_modules/.atrest-lock-sha"
fi
# Resolve playwright-core from tests/web as the tests will, and find the browser.
pw=$(cd "$web" && CHROMIUM=${CHROMIUM:-/usr/bin/chromium} node -e '
  const fs = require("fs");
  const { chromium } = require("playwright-core");
  const exe = process.env.CHROMIUM;
  if (typeof chromium.launch !== "function") throw new Error("playwright-core has no chromium.launch");
  try { fs.accessSync(exe, fs.constants.X_OK); }
  catch { console.error(`no executable Chromium at ${exe} (apt-get install chromium)`); process.exit(1); }
  console.log(require("playwright-core/package.json").version);
') || { echo "Playwright or Chromium for tests/web is not usable (see above)" >&2; exit 1; }
echo "peers ready: playwright-core $pw in $web, $("${CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null)"
