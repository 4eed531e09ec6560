#!/usr/bin/env bash
# atrest's XTS-AES engine side by side with the system OpenSSL (`openssl speed -evp`), in
# one run: 1 and 2 threads, 512- and 4096-byte sectors, AES-128 and AES-256. Prints MB/s
# (10^6 bytes/s) and the ratios. `openssl speed` keeps one IV for the whole buffer, so it
# pays no per-sector IV reset: that comparison favours OpenSSL. The second comparison is with
# OpenSSL EVP used as a disk engine must use it (one context, IV reset per sector), measured
# by the same program in the same run.
#
#   bash bench/xts.sh [SECONDS]      (default 2 s per measurement)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-2}
cd "$root"
cargo build -q --release -p volume --example xts_speed
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$root/target/release/examples/xts_speed" "$secs" > "$out"
ossl() { # cipher bytes multi -> MB/s
  local r
  if [ "$3" = 1 ]; then
    r=$(openssl speed -evp "$1" -bytes "$2" -seconds "$secs" 2>/dev/null | tail -1)
  else
    r=$(openssl speed -multi "$3" -evp "$1" -bytes "$2" -seconds "$secs" 2>/dev/null | tail -1)
  fi
  echo "$r" | awk '{v=$NF; sub(/k$/,"",v); printf "%.0f", v/1000}'
}
echo "engine vs openssl speed -evp ($(openssl version | cut -d' ' -f1-2)), MB/s; buffer 4096 is one"
echo "small request per call (what the per-call overhead costs), 262144 an in-cache bulk buffer:"
printf '%-12s %6s %7s %7s %10s %10s %13s %7s %13s %7s\n' cipher sector buffer threads "atrest enc" "atrest dec" "openssl speed" ratio "EVP/sector" ratio
for cipher in aes-128-xts aes-256-xts; do
  for sector in 512 4096; do
    o1=$(ossl $cipher $sector 1); o2=$(ossl $cipher $sector 2)
    for buffer in 4096 262144; do
      for threads in 1 2; do
        if [ "$threads" = 1 ]; then o=$o1; else o=$o2; fi
        line=$(grep "\"cipher\":\"$cipher\",\"sector\":$sector,\"buffer\":$buffer,\"threads\":$threads," "$out")
        e=$(echo "$line" | sed 's/.*"encrypt_mb_s":\([0-9]*\).*/\1/')
        d=$(echo "$line" | sed 's/.*"decrypt_mb_s":\([0-9]*\).*/\1/')
        p=$(echo "$line" | sed 's/.*"openssl_per_sector_mb_s":\([0-9]*\).*/\1/')
        printf '%-12s %6s %7s %7s %10s %10s %13s %6.2fx %13s %6.2fx\n' $cipher $sector $buffer $threads $e $d $o "$(echo "$e / $o" | bc -l)" $p "$(echo "$e / $p" | bc -l)"
      done
    done
  done
done
echo "large (64 MiB, beyond cache) buffers, atrest only:"
grep '"buffer":67108864' "$out" | sed 's/[{}"]//g'
echo "the ceiling for large buffers: rewriting 64 MiB in place with no cipher (XOR), MB/s:"
grep '"memory_in_place_64MiB"' "$out" | sed 's/[{}"]//g'
echo "data path: $(grep -o '"engine":"[a-z0-9-]*"' "$out" | head -1 | cut -d'"' -f4) (ATREST_XTS=portable forces the portable one)"
