//! Random bytes for keys, salts and AF stripes, from OpenSSL's generator (seeded by the
//! kernel). A library must not abort the process when the generator fails (a container
//! without entropy, a FIPS self-test failure): it reports the failure and writes nothing.

/// The system's random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed: {0}")]
pub struct RandomError(String);

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    openssl::rand::rand_bytes(buf).map_err(|e| RandomError(e.to_string()))
}
