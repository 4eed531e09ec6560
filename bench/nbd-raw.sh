#!/usr/bin/env bash
# The nbd crate's server (crates/nbd/examples/serve_file.rs) against qemu-nbd, both serving
# identical raw files (one copy each), measured by fio's nbd engine (libnbd) over a Unix
# socket.
#
# All go through the page cache (flush = fdatasync):
#   ours:            serve_file FILE --socket S        pread/pwrite from worker threads
#   qemu-nbd threads: qemu-nbd -f raw --cache=writeback --aio=threads --persistent -k S FILE
#   qemu-nbd uring:  the same with --aio=io_uring
# --cache=writeback and --aio=threads are qemu-nbd's defaults and the same mechanism as
# ours (page cache, a pool of pread/pwrite threads): that is the comparable setting. The
# io_uring row is qemu-nbd's fastest setting on this kernel (buffered io_uring), as a
# harder reference. The files are filled with random data first (identically, see below)
# so no server pays for allocating blocks or reads holes.
#
# Cells: sequential 1 MiB read and write at queue depth 8, random 4 KiB read and write at
# queue depth 1 and 32; one fio job, --time_based, 1 s ramp. Each cell runs the servers in
# turn, REPEAT times (the order rotating, so none is always first or last), and prints the
# median of each and the ratios ours / qemu-nbd. Every run starts after a `sync`: without
# it the kernel's flusher writes back pages dirtied by earlier runs during a later one, and
# a write to a page under writeback waits for the disk, which lands on whichever server is
# being measured at the time (seen: random writes at depth 32 swinging 2x with the order).
#
#   bash bench/nbd-raw.sh [RUNTIME_SECONDS]     (default 10; REPEAT=3 SIZE_MIB=256)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runtime=${1:-10}
repeat=${REPEAT:-3}
size_mib=${SIZE_MIB:-256}
target=${CARGO_TARGET_DIR:-$root/target}
for tool in fio qemu-nbd nbdinfo; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install fio qemu-utils libnbd-bin)" >&2; exit 1; }
done

(cd "$root" && cargo build -q --release -p nbd --example serve_file)
serve_file=$target/release/examples/serve_file

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Every copy is written the same way: how a file entered the page cache matters (written
# with 1 MiB writes, its cached pages are large folios, and a 4 KiB write into one costs
# about twice what it costs on a file copied by cp(1) - measured 19k vs 43k IOPS here).
dd if=/dev/urandom of="$work/master.raw" bs=1M count="$size_mib" status=none
for s in ours qthreads quring; do
  dd if="$work/master.raw" of="$work/$s.raw" bs=1M status=none
done
rm "$work/master.raw"
sync

"$serve_file" "$work/ours.raw" --socket "$work/ours.sock" 2>"$work/ours.log" &
pids+=($!)
# Each qemu-nbd locks its image, hence one file per server.
for aio in threads uring; do
  qemu-nbd -f raw --cache=writeback --aio="$([ $aio = uring ] && echo io_uring || echo threads)" \
    --persistent -k "$work/q$aio.sock" "$work/q$aio.raw" 2>"$work/q$aio.log" &
  pids+=($!)
done
servers=(qthreads quring ours)
for s in "${servers[@]}"; do
  for _ in $(seq 50); do [ -S "$work/$s.sock" ] && break; sleep 0.1; done
  nbdinfo "nbd+unix:///?socket=$work/$s.sock" >/dev/null
done

# fio terse v3: field 7/8 = read KiB/s / IOPS, 48/49 = write KiB/s / IOPS.
measure() { # socket rw bs depth -> "MiB/s IOPS"
  fio --name=cell --ioengine=nbd --uri="nbd+unix:///?socket=$1" --rw="$2" --bs="$3" \
    --iodepth="$4" --time_based --runtime="$runtime" --ramp_time=1 \
    --output-format=terse --terse-version=3 2>/dev/null |
    awk -F';' 'NF > 50 { bw = $7 + $48; io = $8 + $49; printf "%.1f %.0f\n", bw / 1024, io }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

cells=("read 1M 8 MiB/s" "write 1M 8 MiB/s" "randread 4k 1 IOPS" "randread 4k 32 IOPS"
  "randwrite 4k 1 IOPS" "randwrite 4k 32 IOPS")
printf '%s\n' "fio $(fio --version | sed 's/fio-//'), ${size_mib} MiB file, ${runtime} s per run, median of ${repeat}; $(nproc) CPUs"
fmt='%-10s %4s %5s %6s %10s %10s %10s %9s %9s\n'
# shellcheck disable=SC2059
printf "$fmt" rw bs depth unit "qemu thr" "qemu uring" ours "ours/thr" "ours/urg"
for cell in "${cells[@]}"; do
  read -r rw bs depth unit <<<"$cell"
  for s in "${servers[@]}"; do : >"$work/$s.v"; done
  for i in $(seq "$repeat"); do
    for j in 0 1 2; do
      s=${servers[$(((i + j) % 3))]}
      sync
      r=$(measure "$work/$s.sock" "$rw" "$bs" "$depth")
      [ -n "$r" ] || { echo "fio failed against $s" >&2; exit 1; }
      if [ "$unit" = MiB/s ]; then echo "${r% *}"; else echo "${r#* }"; fi >>"$work/$s.v"
    done
  done
  t=$(median <"$work/qthreads.v")
  u=$(median <"$work/quring.v")
  o=$(median <"$work/ours.v")
  # shellcheck disable=SC2059
  printf "$fmt" "$rw" "$bs" "$depth" "$unit" "$t" "$u" "$o" \
    "$(awk -v o="$o" -v q="$t" 'BEGIN { printf "%.2f", o / q }')" \
    "$(awk -v o="$o" -v q="$u" 'BEGIN { printf "%.2f", o / q }')"
done
