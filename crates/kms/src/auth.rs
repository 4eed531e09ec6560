//! KMIP Credential checking: the users file of the server directory.
//!
//! `users.json` (mode 0600) maps a username to a PBKDF2-HMAC-SHA256 hash of its password
//! (random salt, 100 000 iterations). When it lists any user, every request must carry a
//! Username and Password Credential that matches; when it is absent or empty, the Credential
//! is not required (the client certificate alone identifies the client, as on most servers).

use std::collections::BTreeMap;
use std::path::Path;

use kmip::message::Credential;
use serde::{Deserialize, Serialize};

const ITERATIONS: usize = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    salt: String,
    iterations: usize,
    pbkdf2_sha256: String,
}

/// What one connection has already proven.
#[derive(Default)]
pub struct Session {
    verified: Option<(String, zeroize::Zeroizing<String>)>,
    authenticated: bool,
}

impl Session {
    /// Whether a request on this connection has passed [`Users::check`]: the peer is a
    /// client, no longer an unknown that may be evicted or timed out as such.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }
}

/// The users allowed to authenticate with a password.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: BTreeMap<String, Entry>,
}

/// PBKDF2 of `password`; `None` for parameters no entry this server wrote has (the users
/// file is the operator's to edit, so its numbers are checked, not trusted).
fn hash(password: &str, salt: &[u8], iterations: usize) -> Option<Vec<u8>> {
    if !(1..=10_000_000).contains(&iterations) || salt.is_empty() {
        return None;
    }
    let mut out = vec![0u8; 32];
    openssl::pkcs5::pbkdf2_hmac(
        password.as_bytes(),
        salt,
        iterations,
        openssl::hash::MessageDigest::sha256(),
        &mut out,
    )
    .ok()?;
    Some(out)
}

impl Users {
    /// Reads `path`; an absent file means no users.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(b) => {
                let users =
                    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Self { users })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The file's contents.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.users).unwrap_or_default()
    }

    /// Adds (or replaces) `username` with `password`.
    pub fn add(&mut self, username: &str, password: &str) -> Result<(), String> {
        let mut salt = [0u8; 16];
        openssl::rand::rand_bytes(&mut salt)
            .map_err(|e| format!("the random number generator failed: {e}"))?;
        let h = hash(password, &salt, ITERATIONS).ok_or("PBKDF2 failed")?;
        self.users.insert(
            username.to_owned(),
            Entry {
                salt: hex::encode(salt),
                iterations: ITERATIONS,
                pbkdf2_sha256: hex::encode(h),
            },
        );
        Ok(())
    }

    /// True when requests must carry a Credential.
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks a request's credentials: Ok with the username, or Err with why (for the log;
    /// the client only learns "Authentication Not Successful").
    ///
    /// PBKDF2 costs ~50 ms by design, and clients send the Credential with every request,
    /// so `session` remembers the last pair verified on this connection and a request
    /// repeating it is checked by a constant-time comparison instead.
    pub fn check(
        &self,
        credentials: &[Credential],
        session: &mut Session,
    ) -> Result<Option<String>, &'static str> {
        let r = self.check_credentials(credentials, session);
        session.authenticated |= r.is_ok();
        r
    }

    fn check_credentials(
        &self,
        credentials: &[Credential],
        session: &mut Session,
    ) -> Result<Option<String>, &'static str> {
        if !self.required() {
            return Ok(None);
        }
        if let (
            Some(verified),
            [Credential::UsernamePassword {
                username,
                password: Some(p),
            }, ..],
        ) = (&session.verified, credentials)
        {
            if verified.0 == *username
                && verified.1.len() == p.len()
                && openssl::memcmp::eq(verified.1.as_bytes(), p.as_bytes())
            {
                return Ok(Some(username.clone()));
            }
        }
        let r = self.verify(credentials);
        session.verified = match (&r, credentials) {
            (
                Ok(_),
                [Credential::UsernamePassword {
                    username,
                    password: Some(p),
                }, ..],
            ) => Some((username.clone(), p.clone())),
            _ => None,
        };
        r
    }

    fn verify(&self, credentials: &[Credential]) -> Result<Option<String>, &'static str> {
        for c in credentials {
            if let Credential::UsernamePassword { username, password } = c {
                let Some(e) = self.users.get(username) else {
                    return Err("unknown username");
                };
                let Some(p) = password else {
                    return Err("no password");
                };
                let salt = hex::decode(&e.salt).unwrap_or_default();
                let want = hex::decode(&e.pbkdf2_sha256).unwrap_or_default();
                let Some(got) = hash(p, &salt, e.iterations) else {
                    return Err("the users file has an unusable entry for this user");
                };
                return match got.len() == want.len() && openssl::memcmp::eq(&got, &want) {
                    true => Ok(Some(username.clone())),
                    false => Err("wrong password"),
                };
            }
        }
        Err("no Username and Password Credential")
    }
}
