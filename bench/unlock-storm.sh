#!/usr/bin/env bash
# The unlock storm (issue 25): N appliances unlock at the same instant against one KMIP
# server, as after a site-wide power cut, all from one address (loopback: a test rig, or
# appliances behind a NAT). Against atrest's development KMS and PyKMIP's server:
#
#   daemons   DAEMONS real `atrest serve` processes started at once, three volumes each
#             (no exports): the time until the last volume's "unlocked" audit line
#   threads   N appliances as threads of one process (crates/atrest/examples/
#             unlock_storm.rs), each with its own KMIP client and TLS connection, three
#             volumes each: the same unlock path (key identifier from the header, Get and
#             the key-state check, the key proven against the header and its schedule set
#             up), for N beyond what real processes allow on the machine
#
# Each row: seconds until every volume was unlocked, the median appliance, the failures
# (none allowed: the clients retry with backoff and jitter), and the most established TCP
# connections to the server's port at once, accepted or still in its listen backlog
# (sampled every 20 ms with `ss`, so a short peak can be missed).
#
#   bash bench/unlock-storm.sh [N ...]   (default 50 200 500; SERVERS="dev pykmip" DAEMONS=50)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=${ATREST_PYKMIP_VENV:-$root/.venv}
(cd "$root" && cargo build -q --release -p atrest && cargo build -q --release -p atrest --example unlock_storm)
atrest=$target/release/atrest
storm=$target/release/examples/unlock_storm
sizes=("${@:-50 200 500}")
read -r -a sizes <<<"${sizes[*]}"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=bench/lib/servers.sh
. "$root/bench/lib/servers.sh"

# Most established connections to `port` during the life of the process `watched`.
peak_connections() {
  local port=$1 watched=$2 peak=0 n
  while kill -0 "$watched" 2>/dev/null; do
    n=$(ss -Htn state established "( sport = :$port )" | wc -l)
    [ "$n" -gt "$peak" ] && peak=$n
    sleep 0.02
  done
  echo "$peak"
}

printf '%-7s %-8s %6s %9s %9s %7s %10s\n' server mode N seconds median failed "peak conns"
for server in ${SERVERS:-dev pykmip}; do
  dir=$work/$server
  mkdir -p "$dir"
  case $server in
    dev) start_dev_kms "$atrest" "$dir/kms" ;;
    pykmip) start_pykmip "$venv" "$dir" ;;
  esac
  # An appliance's three volumes (one key each); copies for every daemon.
  images=()
  for v in config audit recordings; do
    truncate -s 17M "$dir/$v.img"
    "$atrest" format --config "$conf" "$dir/$v.img" >/dev/null
    images+=("$dir/$v.img")
  done

  # Real daemons. Their configurations sit beside the server's client configuration, so
  # its [kmip] table (relative paths) is used as it is.
  m=${DAEMONS:-50}
  cdir=$(dirname "$conf")
  kmip_table=$(sed -n '/^\[kmip\]/,$p' "$conf")
  for i in $(seq "$m"); do
    d=$cdir/daemon$i
    mkdir -p "$d"
    for v in config audit recordings; do cp --sparse=always "$dir/$v.img" "$d/$v.img"; done
    {
      echo "$kmip_table"
      printf '\n[serve]\napi_socket = "daemon%s/run/api.sock"\naudit_log = "daemon%s/log/audit.jsonl"\n' "$i" "$i"
      for v in config audit recordings; do
        printf '\n[[volume]]\nname = "%s"\npath = "daemon%s/%s.img"\n' "$v" "$i" "$v"
      done
    } > "$cdir/daemon$i.toml"
    chmod 600 "$cdir/daemon$i.toml"
  done
  start=$EPOCHREALTIME
  daemons=()
  for i in $(seq "$m"); do
    "$atrest" serve --config "$cdir/daemon$i.toml" 2>"$cdir/daemon$i/stderr" &
    daemons+=($!)
    pids+=($!)
  done
  ( while :; do sleep 1; done ) & sampler_life=$!
  peak_connections "$port" "$sampler_life" > "$dir/peak" &
  sampler=$!
  while :; do
    done_count=0
    for i in $(seq "$m"); do
      n=$(grep -c '"operation":"unlocked"' "$cdir/daemon$i/log/audit.jsonl" 2>/dev/null || true)
      done_count=$((done_count + ${n:-0}))
    done
    [ "$done_count" -ge $((3 * m)) ] && break
    awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a > 120) }' && break
    sleep 0.1
  done
  end=$EPOCHREALTIME
  kill "$sampler_life"; wait "$sampler" 2>/dev/null || true
  failed=$((3 * m - done_count))
  printf '%-7s %-8s %6s %9s %9s %7s %10s\n' "$server" daemons "$m" \
    "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')" - "$failed" "$(cat "$dir/peak")"
  for p in "${daemons[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${daemons[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$failed" -gt 0 ]; then grep -h WARN "$cdir"/daemon*/stderr | sort | uniq -c | sort -rn | head -3; fi
  rm -rf "$cdir"/daemon*

  # Threads of one process.
  for n in "${sizes[@]}"; do
    "$storm" "$conf" "$n" "${images[@]}" > "$dir/storm.json" &
    job=$!
    peak=$(peak_connections "$port" "$job")
    wait "$job"
    python3 - "$server" "$peak" "$dir/storm.json" <<'PY'
import json, sys
server, peak, path = sys.argv[1], sys.argv[2], sys.argv[3]
j = json.load(open(path))
print(f"{server:<7} {'threads':<8} {j['appliances']:>6} {j['seconds']:>9.2f} {j['p50_seconds']:>9.2f} {j['failed']:>7} {peak:>10}")
for r in j["reasons"]:
    print(f"        {r}")
PY
  done
done
