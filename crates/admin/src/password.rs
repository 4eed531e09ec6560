//! The admin password: an argon2id hash in the configuration (PHC string), checked in
//! constant time. The argon2 crate (RustCrypto) does the hashing; only the salt comes from
//! OpenSSL's generator, which the rest of atrest already trusts for keys.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::AdminError;

/// Shortest password `set-password` accepts: the hash is readable by whoever reads the
/// configuration, and argon2 slows guessing, it does not make a short password long.
pub const MIN_LEN: usize = 12;

/// The PHC string of `password` (argon2id, the crate's defaults: 19 MiB, 2 passes, as
/// OWASP recommends), with a fresh 16-byte salt.
pub fn hash(password: &str) -> Result<String, AdminError> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| AdminError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AdminError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Hash(e.to_string()))
}

/// Whether `password` matches `phc`. A malformed hash matches nothing. The comparison of
/// the computed and stored outputs is constant-time (the crate's `Output` equality).
pub fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) if h.algorithm.as_str() == "argon2id" => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        _ => false,
    }
}

/// A hash that no password matches, checked when the user name is wrong so that a wrong
/// name costs the same time as a wrong password.
pub fn decoy() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$YXRyZXN0LWRlY295LXNhbHQ$0mZ0d2cy0x6m4dY9vQ5eVb0vYk3cLr7Rr8m3n1Q2w5o"
}

/// Sets the admin password of the configuration at `config`: its `[web]
/// admin_password_hash` replaced (the rest of the file as it was, comments included), by a
/// rename. A running daemon uses it from the next login.
pub fn set(config: &std::path::Path, password: &str) -> Result<(), AdminError> {
    if password.chars().count() < MIN_LEN {
        return Err(AdminError::Hash(format!(
            "the password is shorter than {MIN_LEN} characters"
        )));
    }
    let mut doc = crate::settings::read_doc(config)?;
    let h = hash(password)?;
    if !doc.contains_table("web") {
        doc["web"] = toml_edit::table();
    }
    doc["web"]["admin_password_hash"] = toml_edit::value(h);
    crate::files::replace(config, doc.to_string().as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_takes_its_password_and_no_other() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&h, "correct horse battery"));
        assert!(!verify(&h, "correct horse batterY"));
        assert!(!verify(&h, ""));
        // Salted: the same password hashes differently.
        assert_ne!(h, hash("correct horse battery").unwrap());
    }

    #[test]
    fn set_writes_the_hash_and_keeps_the_rest_of_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("atrest.toml");
        let before = "# the appliance's settings\n[kmip]\nservers = [\"kms\"] # primary\n\n[web]\nlisten = \"127.0.0.1:8443\"\n";
        crate::files::create(&p, before.as_bytes(), 0o600).unwrap();
        assert!(set(&p, "short").is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), before);
        set(&p, "a long enough password").unwrap();
        let after = std::fs::read_to_string(&p).unwrap();
        assert!(
            after
                .starts_with("# the appliance's settings\n[kmip]\nservers = [\"kms\"] # primary\n"),
            "{after}"
        );
        assert!(!after.contains("a long enough password"));
        let w = service::config::WebConfig::load(&p).unwrap();
        assert!(verify(
            &w.admin_password_hash.unwrap(),
            "a long enough password"
        ));
    }

    #[test]
    fn a_malformed_or_foreign_hash_matches_nothing() {
        assert!(!verify("", "x"));
        assert!(!verify("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$abc", "x"));
        assert!(!verify("plaintext-password", "plaintext-password"));
        assert!(!verify(decoy(), ""));
        assert!(!verify(decoy(), "admin"));
    }
}
