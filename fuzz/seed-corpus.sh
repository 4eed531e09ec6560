#!/usr/bin/env bash
# Seeds fuzz/corpus/ from the published KMIP vectors and the OASIS test cases, so the
# fuzzers start from real messages instead of from nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# The OASIS test cases in the repository (testdata/kmip/README.md); $KMIP_TESTCASES overrides.
cases=${KMIP_TESTCASES:-$root/testdata/kmip/testcases}
mkdir -p "$here/corpus/ttlv_roundtrip" "$here/corpus/kmip_xml"
grep -v '^#' "$root/crates/kmip/testdata/vectors.tsv" | while IFS=$'\t' read -r name hex; do
  printf '%s' "$hex" | xxd -r -p > "$here/corpus/ttlv_roundtrip/$(printf '%s' "$name" | tr -c 'A-Za-z0-9' _)"
done
# Every OASIS message as TTLV, through atrest's own encoder (files with $NOW-style
# placeholders have no fixed encoding and are left to the XML corpus).
cargo build -q --manifest-path "$root/Cargo.toml" -p atrest
n=0
for f in "$cases"/*/*/*.xml; do
  n=$((n + 1))
  cp "$f" "$here/corpus/kmip_xml/case$n.xml"
  { "${CARGO_TARGET_DIR:-$root/target}/debug/atrest" ttlv encode "$f" 2>/dev/null || true; } | head -4 | while read -r hex; do
    printf '%s' "$hex" | xxd -r -p > "$here/corpus/ttlv_roundtrip/case$n-$RANDOM"
  done
done
echo "corpus: $(ls "$here/corpus/ttlv_roundtrip" | wc -l) TTLV, $(ls "$here/corpus/kmip_xml" | wc -l) XML"
# LUKS2 headers made by cryptsetup (512- and 4096-byte sectors): the first 64 KiB of each.
mkdir -p "$here/corpus/luks2_header"
tmp=$(mktemp -d)
for ss in 512 4096; do
  truncate -s 20M "$tmp/img"
  head -c 32 /dev/urandom > "$tmp/key"
  cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --sector-size $ss --key-file "$tmp/key" "$tmp/img"
  head -c 65536 "$tmp/img" > "$here/corpus/luks2_header/cryptsetup-$ss"
  rm -f "$tmp/img"
done
rm -rf "$tmp"
echo "corpus: $(ls "$here/corpus/luks2_header" | wc -l) LUKS2 headers"
# The JSON areas of those headers, for luks2_json.
mkdir -p "$here/corpus/luks2_json"
for f in "$here"/corpus/luks2_header/cryptsetup-*; do
  dd if="$f" of="$here/corpus/luks2_json/$(basename "$f").json" bs=1 skip=4096 count=12288 2>/dev/null
done

# The same JSON areas (text only, up to the NUL) for luks2_vs_cryptsetup, and with a token
# and a second keyslot's worth of references, so the differential target starts from
# every object kind.
mkdir -p "$here/corpus/luks2_vs_cryptsetup"
for f in "$here"/corpus/luks2_json/*.json; do
  tr -d '\000' < "$f" > "$here/corpus/luks2_vs_cryptsetup/$(basename "$f")"
  sed 's/"tokens":{}/"tokens":{"0":{"type":"atrest-kmip","keyslots":["0"],"key_uid":"k"}}/' \
    "$here/corpus/luks2_vs_cryptsetup/$(basename "$f")" > "$here/corpus/luks2_vs_cryptsetup/token-$(basename "$f")"
done

# A park record's JSON, for convert_resume (the target wraps it in a valid record block).
mkdir -p "$here/corpus/convert_resume"
printf '{"kind":"encrypt","size":1048576,"data_offset":16777216,"park_len":1048576,"sha256":"%s","header":{"key_uid":"k","key_mode":"wrapped","volume_key_len":32,"sector_size":512,"server_hint":null}}' \
  "$(printf 'ab%.0s' $(seq 32))" > "$here/corpus/convert_resume/record.json"

# Two whole NBD sessions (option haggling, then reads, writes, flush, disconnect), for
# nbd_requests: the fuzzer rarely finds the handshake's magic numbers alone.
NBD_FUZZ_SEEDS_DIR="$here/corpus/nbd_requests" cargo test -q --manifest-path "$root/Cargo.toml" -p nbd --lib fuzzing
echo "corpus: $(ls "$here/corpus/nbd_requests" | wc -l) NBD sessions"
