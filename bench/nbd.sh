#!/usr/bin/env bash
# atrest's encrypted NBD export against nbdkit and qemu-nbd, in one run, measured by fio's
# nbd engine (libnbd) over Unix sockets, every server on the same random data (one copy each):
#
#   atrest        atrest open --nbd (XTS-AES-128, key from the development KMS on loopback)
#   nbdkit file   nbdkit's file plugin, no encryption      (target: atrest >= 0.9x)
#   nbdkit luks   nbdkit's luks filter over the file plugin on a LUKS1 image, XTS-AES-128
#                 (target: atrest >= 1.2x)
#   qemu raw      qemu-nbd -f raw, no encryption
#   qemu luks     qemu-nbd on the same LUKS1 image, qemu's own XTS-AES-128
#
# and the FUSE road: fio (libaio, O_DIRECT) on atrest open --fuse's DIR/volume against the
# same on a plain file.
#
# All go through the page cache (qemu-nbd --cache=writeback --aio=threads, its defaults;
# nbdkit's file plugin with its default cache=default and 16 threads; the same mechanism as
# atrest: pread/pwrite from several threads; flush = fdatasync). Cells:
# sequential 1 MiB read and write at queue depth 8, random 4 KiB read and write at depth 1
# and 32; one fio job, --time_based, 1 s ramp. Each cell runs the servers in turn, REPEAT
# times with the order rotating, after a `sync` (the kernel's flusher would otherwise
# write back earlier runs' pages during a later one), and prints the medians and ratios.
#
#   bash bench/nbd.sh [RUNTIME_SECONDS]     (default 10; REPEAT=3 SIZE_MIB=256 CELLS=...
#                                             SERVERS="atrest fuse" ATREST_BIN=...)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runtime=${1:-10}
repeat=${REPEAT:-3}
size_mib=${SIZE_MIB:-256}
target=${CARGO_TARGET_DIR:-$root/target}
for tool in fio qemu-nbd qemu-img nbdcopy nbdkit python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (bash scripts/setup-peers.sh)" >&2; exit 1; }
done
# ATREST_BIN=path/to/atrest measures another build (an earlier commit's, for a before/after).
if [ -n "${ATREST_BIN:-}" ]; then
  atrest=$ATREST_BIN
else
  (cd "$root" && cargo build -q --release -p atrest)
  atrest=$target/release/atrest
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  umount "$work/fuse" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib/servers.sh
. "$root/bench/lib/servers.sh"
start_dev_kms "$atrest" "$work/kms"

# The data, written the same way into every copy (how a file entered the page cache
# matters: large folios from 1 MiB writes make 4 KiB writes into them cost about twice).
dd if=/dev/urandom of="$work/master.raw" bs=1M count="$size_mib" status=none
dd if="$work/master.raw" of="$work/raw.img" bs=1M status=none
cp "$work/master.raw" "$work/plain.file"
qemu-img convert -O luks --object secret,id=sec0,data=benchpass \
  -o key-secret=sec0,cipher-alg=aes-128,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256,iter-time=10 \
  "$work/master.raw" "$work/qemu.luks"
for v in atrest fusevol; do
  truncate -s $(( (16 + size_mib) << 20 )) "$work/$v.img"
  "$atrest" format --config "$conf" "$work/$v.img" >/dev/null
done

wait_socket() { for _ in $(seq 200); do [ -S "$1" ] && return; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }
"$atrest" open --config "$conf" --nbd "unix:$work/atrest.sock" "$work/atrest.img" >"$work/atrest.log" 2>&1 &
pids+=($!)
wait_socket "$work/atrest.sock"
nbdcopy "$work/master.raw" "nbd+unix:///?socket=$work/atrest.sock"
qemu-nbd -f raw --cache=writeback --aio=threads --persistent -k "$work/raw.sock" "$work/raw.img" &
pids+=($!)
qemu-nbd --object secret,id=sec0,data=benchpass --cache=writeback --aio=threads --persistent \
  -k "$work/luks.sock" --image-opts "driver=luks,key-secret=sec0,file.filename=$work/qemu.luks" &
pids+=($!)
cp "$work/qemu.luks" "$work/nbdkit.luks"
printf benchpass >"$work/luks.pass"
chmod 600 "$work/luks.pass"
nbdkit --foreground --unix "$work/kfile.sock" file "$work/raw.img" &
pids+=($!)
nbdkit --foreground --unix "$work/kluks.sock" file "$work/nbdkit.luks" --filter=luks \
  passphrase="+$work/luks.pass" &
pids+=($!)
for s in raw luks kfile kluks; do wait_socket "$work/$s.sock"; done
mkdir -p "$work/fuse"
"$atrest" open --config "$conf" --fuse "$work/fuse" "$work/fusevol.img" >"$work/fuse.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do [ -f "$work/fuse/volume" ] && break; sleep 0.05; done
dd if="$work/master.raw" of="$work/fuse/volume" bs=1M conv=notrunc,fsync status=none
rm "$work/master.raw"
sync

cells=("read 1m 8" "write 1m 8" "randread 4k 1" "randread 4k 32" "randwrite 4k 1" "randwrite 4k 32")
# CELLS="randread 4k 32;randwrite 4k 32" runs only those (while working on one).
if [ -n "${CELLS:-}" ]; then IFS=';' read -r -a cells <<<"$CELLS"; fi

# fio for one server and cell; prints MiB/s (1m cells) or IOPS (4k cells).
measure() {
  local who=$1 rw=$2 bs=$3 qd=$4 target
  case $who in
    atrest) target=(--ioengine=nbd "--uri=nbd+unix:///?socket=$work/atrest.sock") ;;
    raw) target=(--ioengine=nbd "--uri=nbd+unix:///?socket=$work/raw.sock") ;;
    luks) target=(--ioengine=nbd "--uri=nbd+unix:///?socket=$work/luks.sock") ;;
    kfile) target=(--ioengine=nbd "--uri=nbd+unix:///?socket=$work/kfile.sock") ;;
    kluks) target=(--ioengine=nbd "--uri=nbd+unix:///?socket=$work/kluks.sock") ;;
    fuse) target=(--ioengine=libaio --direct=1 "--filename=$work/fuse/volume") ;;
    file) target=(--ioengine=libaio --direct=1 "--filename=$work/plain.file") ;;
  esac
  sync
  fio --name=b "${target[@]}" --rw="$rw" --bs="$bs" --iodepth="$qd" --size="${size_mib}m" \
    --time_based --runtime="$runtime" --ramp_time=1 --output-format=json 2>/dev/null |
    python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]
side = j["read"] if j["read"]["io_bytes"] else j["write"]
print(round(side["bw_bytes"] / 1048576, 1) if sys.argv[1] == "1m" else round(side["iops"]))' "$bs"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "bench/nbd.sh: ${size_mib} MiB, ${runtime} s per run, median of $repeat; $(nproc) cores, $(uname -r)"
echo "1m cells in MiB/s, 4k cells in IOPS"
ratio() { echo "$1 / $2" | bc -l; }
printf '%-18s %8s %8s %8s %6s %6s %8s %8s %6s %6s | %8s %8s %6s\n' cell atrest "kit file" "kit luks" \
  "/file" "/luks" "qemu raw" "qemu luk" "/raw" "/luks" fuse file "/file"
for cell in "${cells[@]}"; do
  read -r rw bs qd <<<"$cell"
  declare -A got=()
  read -r -a servers <<<"${SERVERS:-atrest kfile kluks raw luks fuse file}"
  for r in $(seq "$repeat"); do
    for i in "${!servers[@]}"; do
      who=${servers[$(( (i + r) % ${#servers[@]} ))]}
      got[$who]="${got[$who]:-} $(measure "$who" "$rw" "$bs" "$qd")"
    done
  done
  m() { if [ -n "${got[$1]:-}" ]; then median ${got[$1]}; else echo 1; fi; }
  a=$(m atrest); kf=$(m kfile); kl=$(m kluks); q=$(m raw); l=$(m luks); f=$(m fuse); p=$(m file)
  printf '%-18s %8s %8s %8s %6.2f %6.2f %8s %8s %6.2f %6.2f | %8s %8s %6.2f\n' "$rw $bs qd$qd" \
    "$a" "$kf" "$kl" "$(ratio "$a" "$kf")" "$(ratio "$a" "$kl")" "$q" "$l" "$(ratio "$a" "$q")" \
    "$(ratio "$a" "$l")" "$f" "$p" "$(ratio "$f" "$p")"
  unset got
done
