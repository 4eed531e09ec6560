//! Conversion records that only the holder of the key can write.
//!
//! Everything that steers a conversion (the header's `conversion` state, the park record at
//! the device's end, the rekey journal's record) is on the disk, and someone who can write
//! the disk but holds no key could otherwise forge it: a header saying "decrypt in progress"
//! made the daemon decrypt a whole volume in place, under a key revoked as Compromised.
//! Stock cryptsetup closed the same hole in 2.4.3 (CVE-2021-4122) by binding its
//! reencryption metadata to a digest that only the volume key can compute. atrest does the
//! same: each record carries `mac`, HMAC-SHA256 under a key derived from the KMIP secret the
//! conversion needs (the new key for a rekey, the volume's key otherwise), over a canonical
//! JSON of every field that steers it, and the record is verified before the first byte
//! moves. A record that does not verify (forged, altered, written by another key, or by an
//! atrest from before this check) is refused and nothing is written.
//!
//! What the tag binds (`docs/format.md`, "Authenticated conversion records"): for the header
//! state, the header's UUID, the token's key identifier and mode, segment 0 as a whole, the
//! digests bound to segment 0, and the state itself; for the park and journal records, every
//! field of the record. Replaying an older record of the same run (a header copy saved
//! earlier) is not detected, as in cryptsetup; its effect is a redo of steps already done,
//! which garbles data the attacker could overwrite anyway, never plaintext out of ciphertext
//! without the key.
//!
//! Why HMAC and not a signature or an AEAD: the verifier and the writer are the same party
//! (whoever holds the key), the tag must fit in a JSON field, and OpenSSL, already the
//! crate's crypto, does it.

use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde::Serialize;
use zeroize::Zeroizing;

use super::ConvertError;
use crate::luks2::header::Header;
use crate::luks2::metadata::Segment;
use crate::luks2::token::{self, Conversion, State};

/// Domain separation: a tag made for one kind of record never verifies as another.
const LABEL: &[u8] = b"atrest conversion record key v1";

/// The key that tags and verifies conversion records, derived from a KMIP secret.
pub struct RecordKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(<redacted>)")
    }
}

/// Which record a tag is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The header's `conversion` state.
    Header,
    /// The park record at the device's end.
    Park,
    /// The rekey (or detached-header) journal's record.
    Journal,
}

impl RecordKind {
    fn domain(self) -> &'static [u8] {
        match self {
            Self::Header => b"header-state\0",
            Self::Park => b"park-record\0",
            Self::Journal => b"journal-record\0",
        }
    }

    /// For messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Header => "the conversion state in the header",
            Self::Park => "the park record at the end of the device",
            Self::Journal => "the journal record in the keyslot area",
        }
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, ConvertError> {
    let run = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let pkey = PKey::hmac(key)?;
        let mut s = Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)?;
        for p in parts {
            s.update(p)?;
        }
        s.sign_to_vec()
    };
    run()
        .map(Zeroizing::new)
        .map_err(|e| ConvertError::Crypto(e.to_string()))
}

impl RecordKey {
    /// The record key of a KMIP secret (HMAC-SHA256(secret, label): the secret itself is
    /// never used as the tag key, so a tag says nothing about the keyslot passphrase).
    pub fn derive(kmip_secret: &[u8]) -> Result<Self, ConvertError> {
        Ok(Self(hmac(kmip_secret, &[LABEL])?))
    }

    /// The tag of `value` (serialised with its own `mac` empty) as `kind`, in hex.
    pub fn tag<T: Serialize>(&self, kind: RecordKind, value: &T) -> Result<String, ConvertError> {
        let json = serde_json::to_vec(value).map_err(|e| ConvertError::Crypto(e.to_string()))?;
        Ok(hex(&hmac(&self.0, &[kind.domain(), &json])?))
    }

    /// Checks `mac` against the tag of `value`; an error naming the record otherwise.
    pub fn verify<T: Serialize>(
        &self,
        kind: RecordKind,
        value: &T,
        mac: &str,
    ) -> Result<(), ConvertError> {
        if mac.is_empty() {
            return Err(ConvertError::Unauthenticated {
                record: kind.name(),
                why: "it carries no authentication tag (forged, or written by an atrest from before conversion records were authenticated)",
            });
        }
        let want = self.tag(kind, value)?;
        // Constant time: a byte-by-byte early exit would let a local attacker who can
        // rewrite the disk and time the daemon guess a tag byte by byte.
        if want.len() == mac.len() && openssl::memcmp::eq(want.as_bytes(), mac.as_bytes()) {
            Ok(())
        } else {
            Err(ConvertError::Unauthenticated {
                record: kind.name(),
                why: "its authentication tag does not match under the key: it was altered or forged, or belongs to another key",
            })
        }
    }

    /// The salt of the journal's block checksums (`journal::Checksums`): checksums of
    /// plaintext blocks must not let whoever reads the header file test guesses of the
    /// plaintext, and a disk writer must not be able to compute them.
    pub fn checksum_salt(&self) -> Result<Zeroizing<Vec<u8>>, ConvertError> {
        hmac(&self.0, &[b"journal-checksum-salt\0"])
    }

    /// The tag of the conversion state `c` in header `h`: binds the state to this header's
    /// UUID, key, segment and digests.
    pub fn tag_state(&self, h: &Header, c: &Conversion) -> Result<String, ConvertError> {
        self.tag(RecordKind::Header, &Bound::of(h, c)?)
    }

    /// Verifies the conversion state `s` of header `h`.
    pub fn verify_state(&self, h: &Header, s: &State) -> Result<(), ConvertError> {
        self.verify(RecordKind::Header, &Bound::of(h, &s.conversion)?, &s.mac)
    }
}

/// What a header state's tag covers. Field order is fixed by the struct; maps are sorted
/// (serde_json without `preserve_order`), so the serialisation is canonical.
#[derive(Serialize)]
struct Bound<'a> {
    v: u32,
    uuid: &'a str,
    key_uid: String,
    key_mode: &'static str,
    segment: Option<&'a Segment>,
    segment_digests: Vec<&'a str>,
    /// Serialised as the token holds it, `mac` left out.
    state: State,
}

impl<'a> Bound<'a> {
    fn of(h: &'a Header, c: &Conversion) -> Result<Self, ConvertError> {
        let t = token::read(&h.metadata)?;
        let m = &h.metadata;
        Ok(Self {
            v: 1,
            uuid: &h.binary.uuid,
            key_uid: t.as_ref().map(|t| t.key_uid.clone()).unwrap_or_default(),
            key_mode: t.as_ref().map(|t| t.key_mode.as_str()).unwrap_or(""),
            segment: m.segments.get("0"),
            segment_digests: m
                .digests
                .iter()
                .filter(|(_, d)| d.segments.iter().any(|s| s == "0"))
                .map(|(id, _)| id.as_str())
                .collect(),
            state: State::untagged(c.clone()),
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct R {
        a: u64,
    }

    #[test]
    fn a_tag_verifies_only_under_its_key_kind_and_value() {
        let k = RecordKey::derive(&[7; 32]).unwrap();
        let t = k.tag(RecordKind::Park, &R { a: 1 }).unwrap();
        assert_eq!(t.len(), 64);
        k.verify(RecordKind::Park, &R { a: 1 }, &t).unwrap();
        assert!(k.verify(RecordKind::Park, &R { a: 2 }, &t).is_err());
        assert!(k.verify(RecordKind::Journal, &R { a: 1 }, &t).is_err());
        assert!(k.verify(RecordKind::Park, &R { a: 1 }, "").is_err());
        let other = RecordKey::derive(&[8; 32]).unwrap();
        assert!(other.verify(RecordKind::Park, &R { a: 1 }, &t).is_err());
        // The tag key is not the secret itself.
        assert_ne!(&k.0[..], &[7u8; 32][..]);
    }
}
