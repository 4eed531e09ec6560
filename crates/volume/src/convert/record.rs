//! The self-checking block that the park record and the journal record are both written
//! as: a 16-byte magic, a big-endian u32 length, that many bytes of JSON, zeros, and the
//! SHA-256 of everything before it in the last 32 bytes. One 4096-byte block, written
//! with one aligned write; a torn or stale block fails the checksum and reads as absent.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A record block's size.
pub const LEN: usize = 4096;
const BODY: usize = LEN - 32;
const MAX_JSON: usize = BODY - 20;

/// The block holding `json` under `magic`; an error if it does not fit.
pub(crate) fn seal_bytes(magic: &[u8; 16], json: &[u8]) -> std::io::Result<Vec<u8>> {
    if json.len() > MAX_JSON {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {}-byte record does not fit in {MAX_JSON}", json.len()),
        ));
    }
    let mut b = vec![0u8; LEN];
    b[..16].copy_from_slice(magic);
    b[16..20].copy_from_slice(&(json.len() as u32).to_be_bytes());
    b[20..20 + json.len()].copy_from_slice(json);
    let sum = openssl::sha::sha256(&b[..BODY]);
    b[BODY..].copy_from_slice(&sum);
    Ok(b)
}

/// The block holding `value` as JSON under `magic`.
pub fn seal<T: Serialize>(magic: &[u8; 16], value: &T) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    seal_bytes(magic, &json)
}

/// The value in `block`, if it is a whole, valid record under `magic`.
pub fn open<T: DeserializeOwned>(magic: &[u8; 16], block: &[u8]) -> Option<T> {
    if block.len() != LEN || &block[..16] != magic {
        return None;
    }
    if openssl::sha::sha256(&block[..BODY]) != block[BODY..] {
        return None;
    }
    let n = u32::from_be_bytes(block[16..20].try_into().ok()?) as usize;
    serde_json::from_slice(block.get(20..20 + n.min(MAX_JSON))?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_too_large_for_its_block_is_an_error_not_a_panic() {
        let magic = b"ATREST-TEST-V1\0\0";
        assert!(seal_bytes(magic, &[b' '; MAX_JSON + 1]).is_err());
        let block = seal(magic, &"x".repeat(MAX_JSON - 2)).unwrap();
        assert_eq!(
            open::<String>(magic, &block),
            Some("x".repeat(MAX_JSON - 2))
        );
        assert_eq!(open::<String>(b"ATREST-OTHER-V1\0", &block), None);
    }
}
