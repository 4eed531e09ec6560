#!/usr/bin/env bash
# In-place encryption of a real-data image, side by side in one run:
#   cp       copy of the same file on the same disk, followed by sync (what "disk speed" is)
#   atrest   atrest encrypt (release build) against the embedded development KMS, and
#            atrest encrypt --header (a detached header: in place, journaled)
#   cryptsetup  cryptsetup reencrypt --encrypt, offline, the same data shift as atrest
#            (--reduce-device-size 32M on a copy grown by 32 MiB, header in the image)
#            and, as a second data point, with a detached header (in place, checksum
#            resilience, cryptsetup's default)
# then a re-encryption under a new key of the volumes just made, in place, both with their
# header on the volume: atrest rekey --deep against cryptsetup reencrypt (checksum
# resilience, its default).
# Page cache is dropped before every timed step (needs root), so reads come from the disk.
#   usage: bash bench/convert.sh [SIZE_MiB]   (default 4096)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-4096}
WORK=${BENCH_DIR:-$PWD/target/bench-convert}
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build -q --release --locked -p atrest
ATREST=$PWD/target/release/atrest

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
t() { local s=$(date +%s.%N); "$@" >/dev/null; local e=$(date +%s.%N); echo "$e - $s" | bc; }

echo "making $MIB MiB of random data"
head -c $((MIB << 20)) /dev/urandom > "$WORK/orig"
cp "$WORK/orig" "$WORK/a"; cp "$WORK/orig" "$WORK/c"; cp "$WORK/orig" "$WORK/d"; cp "$WORK/orig" "$WORK/e"
truncate -s +32M "$WORK/c"
SUM=$(sha256sum < "$WORK/orig" | cut -c1-64)

"$ATREST" kms serve --dir "$WORK/kms" --listen 127.0.0.1:25696 2>"$WORK/kms.log" &
KMS=$!
trap 'kill $KMS 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -f "$WORK/kms/client.toml" ] && "$ATREST" kmip test -c "$WORK/kms/client.toml" >/dev/null 2>&1 && break; sleep 0.1; done
head -c 32 /dev/urandom > "$WORK/pass"

drop; T_CP=$(t bash -c "cp '$WORK/orig' '$WORK/copy' && sync")
drop; T_AT=$(t "$ATREST" encrypt -c "$WORK/kms/client.toml" "$WORK/a")
drop; T_AH=$(t "$ATREST" encrypt -c "$WORK/kms/client.toml" --header "$WORK/e.hdr" "$WORK/e")
drop; T_CS=$(t cryptsetup reencrypt --encrypt --type luks2 --batch-mode --force-offline-reencrypt \
    --reduce-device-size 32M --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$WORK/pass" "$WORK/c")
drop; T_CD=$(t cryptsetup reencrypt --encrypt --type luks2 --batch-mode --force-offline-reencrypt \
    --header "$WORK/d.hdr" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$WORK/pass" "$WORK/d")

drop; T_AR=$(t "$ATREST" rekey --deep --keep-old -c "$WORK/kms/client.toml" "$WORK/a")
drop; T_CR=$(t cryptsetup reencrypt --batch-mode --force-offline-reencrypt \
    --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$WORK/pass" "$WORK/c")

# atrest's result must decrypt to the original (checked outside the timing).
"$ATREST" decrypt -c "$WORK/kms/client.toml" "$WORK/a" >/dev/null 2>&1
[ "$(sha256sum < "$WORK/a" | cut -c1-64)" = "$SUM" ] || { echo "atrest round trip differs!"; exit 1; }

rate() { echo "scale=0; $MIB / $1" | bc; }
printf '\n%-46s %9s %9s\n' "step ($MIB MiB)" "seconds" "MiB/s"
printf '%-46s %9.2f %9s\n' "cp + sync" "$T_CP" "$(rate "$T_CP")"
printf '%-46s %9.2f %9s\n' "atrest encrypt" "$T_AT" "$(rate "$T_AT")"
printf '%-46s %9.2f %9s\n' "atrest encrypt --header" "$T_AH" "$(rate "$T_AH")"
printf '%-46s %9.2f %9s\n' "cryptsetup reencrypt --encrypt (data shift)" "$T_CS" "$(rate "$T_CS")"
printf '%-46s %9.2f %9s\n' "cryptsetup reencrypt --encrypt --header" "$T_CD" "$(rate "$T_CD")"
printf '%-46s %9.2f %9s\n' "atrest rekey --deep" "$T_AR" "$(rate "$T_AR")"
printf '%-46s %9.2f %9s\n' "cryptsetup reencrypt (new key, in place)" "$T_CR" "$(rate "$T_CR")"
echo
echo "atrest / cp:                $(echo "scale=2; $T_AT / $T_CP" | bc)x the time"
echo "cryptsetup (shift) / atrest: $(echo "scale=2; $T_CS / $T_AT" | bc)x the time"
echo "cryptsetup (header) / atrest (header): $(echo "scale=2; $T_CD / $T_AH" | bc)x the time"
echo "cryptsetup (rekey) / atrest (rekey --deep): $(echo "scale=2; $T_CR / $T_AR" | bc)x the time"
rm -rf "$WORK"
