//! The LUKS anti-forensic splitter (LUKS1 spec §2.4, used unchanged by LUKS2 keyslots):
//! the key is spread over `stripes` blocks so that destroying any part of the keyslot
//! area destroys the key. Diffusion hashes each digest-sized piece with its big-endian
//! index; SHA-256 only (what cryptsetup writes by default).

use zeroize::Zeroizing;

fn diffuse(buf: &mut [u8]) {
    for (i, chunk) in buf.chunks_mut(32).enumerate() {
        let mut h = openssl::sha::Sha256::new();
        h.update(&(i as u32).to_be_bytes());
        h.update(chunk);
        let d = h.finish();
        let n = chunk.len();
        chunk.copy_from_slice(&d[..n]);
    }
}

/// Splits `key` into `stripes` blocks of its length (random ones, then the one that merges
/// back to `key`).
pub fn split(key: &[u8], stripes: usize) -> Result<Zeroizing<Vec<u8>>, crate::random::RandomError> {
    let ks = key.len();
    let stripes = stripes.max(1);
    let mut out = Zeroizing::new(vec![0u8; ks * stripes]);
    crate::random::fill(&mut out[..ks * (stripes - 1)])?;
    let mut buf = Zeroizing::new(vec![0u8; ks]);
    for i in 0..stripes - 1 {
        for (b, d) in buf.iter_mut().zip(&out[i * ks..(i + 1) * ks]) {
            *b ^= d;
        }
        diffuse(&mut buf);
    }
    for (j, b) in buf.iter().enumerate() {
        out[(stripes - 1) * ks + j] = b ^ key[j];
    }
    Ok(out)
}

/// Merges `stripes` blocks of `ks` bytes back into the key (`material` holds at least
/// `ks * stripes` bytes and `stripes` is at least 1: the caller checked the geometry).
pub fn merge(material: &[u8], ks: usize, stripes: usize) -> Zeroizing<Vec<u8>> {
    let stripes = stripes.max(1);
    let mut buf = Zeroizing::new(vec![0u8; ks]);
    for i in 0..stripes - 1 {
        for (b, d) in buf.iter_mut().zip(&material[i * ks..(i + 1) * ks]) {
            *b ^= d;
        }
        diffuse(&mut buf);
    }
    for (j, b) in buf.iter_mut().enumerate() {
        *b ^= material[(stripes - 1) * ks + j];
    }
    buf
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_then_merge_gives_the_key_back_and_each_stripe_matters() {
        for ks in [32, 64, 20] {
            let key: Vec<u8> = (0..ks as u8).collect();
            let m = super::split(&key, 4000).unwrap();
            assert_eq!(m.len(), ks * 4000);
            assert_eq!(super::merge(&m, ks, 4000).as_slice(), key.as_slice());
            let mut damaged = m.to_vec();
            damaged[ks * 17] ^= 1;
            assert_ne!(super::merge(&damaged, ks, 4000).as_slice(), key.as_slice());
        }
    }
}
