//! The KMIP settings as the Storage › Encryption page shows and changes them.
//!
//! Saving follows the configuration file's rules and never leaves a half state: the new
//! files (uploads, typed secrets, and copies of the unchanged ones) go into a fresh folder
//! `web-kmip/GENERATION/` beside the configuration (0700, files 0600), a candidate
//! configuration naming them is tested there (Save and Test, plus a check that the served
//! volumes' keys are still reachable with it), and only a passing candidate replaces the
//! configuration, by a rename; the daemon then rereads it as on SIGHUP. A failing one is
//! deleted and the old settings stay in force. Secrets go to files, never into the TOML.

use std::path::{Path, PathBuf};

use kmip::client::ServerAddr;
use openssl::pkcs12::Pkcs12;
use openssl::x509::X509;
use service::config::Config;
use service::ops::test::TestReport;
use service::trusted::{self, Role};
use toml_edit::{value, Array, DocumentMut, Item};
use zeroize::Zeroizing;

use crate::error::AdminError;
use crate::files;

/// The folder (beside the configuration) that holds the settings saved from the page.
pub const FOLDER: &str = "web-kmip";

/// A file chosen in a form.
#[derive(Clone)]
pub struct Upload {
    /// The name the browser sent (shown back, never used as a path).
    pub filename: String,
    /// Its bytes.
    pub bytes: Zeroizing<Vec<u8>>,
}

/// A form's change to the settings: what is `None` stays as it is.
#[derive(Default)]
pub struct Draft {
    /// Servers, in order.
    pub servers: Vec<String>,
    /// A new CA certificate.
    pub ca_cert: Option<Upload>,
    /// A new client certificate (PKCS#12 or PEM).
    pub client_cert: Option<Upload>,
    /// A new client key (PEM, with a PEM certificate).
    pub client_key: Option<Upload>,
    /// A new passphrase.
    pub passphrase: Option<Zeroizing<String>>,
    /// The KMIP user name (empty: none).
    pub username: String,
    /// A new KMIP password.
    pub password: Option<Zeroizing<String>>,
}

/// A field of the form, for errors shown next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The server list.
    Servers,
    /// The CA upload.
    CaCert,
    /// The client certificate upload.
    ClientCert,
    /// The client key upload.
    ClientKey,
    /// The passphrase.
    Passphrase,
    /// The user name.
    Username,
    /// The password.
    Password,
    /// The settings as a whole.
    General,
}

impl Field {
    /// The form field's name (and the HTML id of its error).
    pub fn name(self) -> &'static str {
        match self {
            Self::Servers => "servers",
            Self::CaCert => "ca_cert",
            Self::ClientCert => "client_cert",
            Self::ClientKey => "client_key",
            Self::Passphrase => "passphrase",
            Self::Username => "username",
            Self::Password => "password",
            Self::General => "general",
        }
    }
}

/// A problem with a field, in words for the operator.
#[derive(Debug, Clone)]
pub struct FieldError {
    /// Which field.
    pub field: Field,
    /// What to fix.
    pub message: String,
}

fn field_error(field: Field, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// A certificate file as the page describes it (never its key).
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The file.
    pub path: String,
    /// Its first certificate's subject, when readable without a passphrase.
    pub subject: Option<String>,
    /// Its expiry.
    pub not_after: Option<String>,
}

/// The settings in force, as the form shows them: no secret, only whether one is set.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// Servers, in order.
    pub servers: Vec<String>,
    /// The CA certificate.
    pub ca_cert: Option<CertInfo>,
    /// The client certificate.
    pub client_cert: Option<CertInfo>,
    /// The client key file, with a PEM certificate.
    pub client_key: Option<String>,
    /// Whether a passphrase file is set.
    pub passphrase_set: bool,
    /// The KMIP user name.
    pub username: String,
    /// Whether a password file is set.
    pub password_set: bool,
}

fn kmip_table(doc: &DocumentMut) -> Option<&toml_edit::Table> {
    doc.get("kmip").and_then(Item::as_table)
}

fn str_of<'a>(t: &'a toml_edit::Table, k: &str) -> Option<&'a str> {
    t.get(k).and_then(Item::as_str)
}

/// The configuration as an editable document (comments and layout kept).
pub(crate) fn read_doc(config: &Path) -> Result<DocumentMut, AdminError> {
    let text = service::config::read_text(config)?;
    text.parse::<DocumentMut>().map_err(|e| {
        AdminError::Config(service::config::ConfigError::Syntax {
            path: config.to_owned(),
            message: e.to_string(),
        })
    })
}

fn describe(path: &Path) -> CertInfo {
    let first = std::fs::read(path).ok().and_then(|b| {
        X509::stack_from_pem(&b)
            .ok()
            .and_then(|s| s.into_iter().next())
            .or_else(|| X509::from_der(&b).ok())
    });
    CertInfo {
        path: path.display().to_string(),
        subject: first.as_deref().map(kmip::client::certificate_subject),
        not_after: first.as_ref().map(|c| c.not_after().to_string()),
    }
}

/// The settings in force in the configuration at `config`.
pub fn current(config: &Path) -> Result<Current, AdminError> {
    let doc = read_doc(config)?;
    let base = config.parent().unwrap_or(Path::new("."));
    let Some(t) = kmip_table(&doc) else {
        return Ok(Current::default());
    };
    let servers = t
        .get("servers")
        .and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let client_cert = str_of(t, "client_cert").map(|p| {
        let path = base.join(p);
        let mut info = describe(&path);
        if info.subject.is_none() {
            // PKCS#12: its certificate is readable with the passphrase the daemon has.
            if let Some(pass) = str_of(t, "passphrase_file")
                .and_then(|p| trusted::read("passphrase_file", &base.join(p), Role::Secret).ok())
            {
                let pass = String::from_utf8_lossy(&pass);
                let pass = pass.trim_end_matches(['\n', '\r']);
                if let Some(cert) = std::fs::read(&path)
                    .ok()
                    .and_then(|d| Pkcs12::from_der(&d).ok())
                    .and_then(|p| p.parse2(pass).ok())
                    .and_then(|p| p.cert)
                {
                    info.subject = Some(kmip::client::certificate_subject(&cert));
                    info.not_after = Some(cert.not_after().to_string());
                }
            }
        }
        info
    });
    Ok(Current {
        servers,
        ca_cert: str_of(t, "ca_cert").map(|p| describe(&base.join(p))),
        client_cert,
        client_key: str_of(t, "client_key").map(|p| base.join(p).display().to_string()),
        passphrase_set: str_of(t, "passphrase_file").is_some(),
        username: str_of(t, "username").unwrap_or_default().to_owned(),
        password_set: str_of(t, "password_file").is_some(),
    })
}

/// The digest of the settings in force: the configuration file and every file its
/// `[kmip]` table names. A test passed for one digest does not count for another.
pub fn fingerprint(config: &Path) -> [u8; 32] {
    let mut h = openssl::sha::Sha256::new();
    let bytes = std::fs::read(config).unwrap_or_default();
    h.update(&bytes);
    if let Ok(doc) = String::from_utf8_lossy(&bytes).parse::<DocumentMut>() {
        let base = config.parent().unwrap_or(Path::new("."));
        if let Some(t) = kmip_table(&doc) {
            for k in [
                "ca_cert",
                "client_cert",
                "client_key",
                "passphrase_file",
                "password_file",
            ] {
                if let Some(p) = str_of(t, k) {
                    let f = Zeroizing::new(std::fs::read(base.join(p)).unwrap_or_default());
                    h.update(k.as_bytes());
                    h.update(&(f.len() as u64).to_le_bytes());
                    h.update(&f);
                }
            }
        }
    }
    h.finish()
}

/// What a PEM or DER upload holds, checked: the CA as PEM.
fn ca_pem(u: &Upload) -> Result<Vec<u8>, FieldError> {
    if let Ok(stack) = X509::stack_from_pem(&u.bytes) {
        if !stack.is_empty() {
            return Ok(u.bytes.to_vec());
        }
    }
    if let Ok(c) = X509::from_der(&u.bytes) {
        return c
            .to_pem()
            .map_err(|e| field_error(Field::CaCert, e.to_string()));
    }
    Err(field_error(
        Field::CaCert,
        format!(
            "{} is not a certificate: upload the CA certificate that signed the KMIP server's certificate, in PEM (-----BEGIN CERTIFICATE-----) or DER form",
            shown_name(&u.filename)
        ),
    ))
}

fn shown_name(name: &str) -> String {
    let n: String = name.chars().filter(|c| !c.is_control()).take(80).collect();
    if n.is_empty() {
        "the uploaded file".into()
    } else {
        format!("\u{201c}{n}\u{201d}")
    }
}

/// The client certificate's form: PKCS#12 or PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientForm {
    Pkcs12,
    Pem,
}

fn client_form(u: &Upload) -> Result<ClientForm, FieldError> {
    if X509::stack_from_pem(&u.bytes).is_ok_and(|s| !s.is_empty()) {
        return Ok(ClientForm::Pem);
    }
    if Pkcs12::from_der(&u.bytes).is_ok() {
        return Ok(ClientForm::Pkcs12);
    }
    Err(field_error(
        Field::ClientCert,
        format!(
            "{} is neither a PKCS#12 file (.p12, .pfx) nor a PEM certificate: upload the appliance's client certificate",
            shown_name(&u.filename)
        ),
    ))
}

/// Checks a draft against what it changes, before anything is written: every problem
/// found, each by its field.
pub fn check(draft: &Draft, now: &Current) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if draft.servers.is_empty() {
        errors.push(field_error(Field::Servers, "name at least one KMIP server (host name or address, port 5696 unless given as host:port)"));
    }
    for s in &draft.servers {
        // Host names, IPv4 and [IPv6] addresses and ports only: nothing else belongs in
        // the configuration (or in the next page that shows it).
        let plain = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
        if !plain || s.len() > 255 {
            errors.push(field_error(
                Field::Servers,
                format!(
                    "{:?} is not a host name or address with an optional :port",
                    s.chars().take(80).collect::<String>()
                ),
            ));
        } else if let Err(why) = ServerAddr::parse(s) {
            errors.push(field_error(Field::Servers, format!("{s:?}: {why}")));
        }
    }
    // The saved password goes only to the servers, and through the CA, it was saved for:
    // otherwise a stolen session could point the settings at its own server and receive
    // it in the test's KMIP Credential.
    let destination_changed = draft.servers != now.servers || draft.ca_cert.is_some();
    if destination_changed
        && now.password_set
        && draft.password.is_none()
        && !draft.username.trim().is_empty()
    {
        errors.push(field_error(
            Field::Password,
            "the servers or the CA certificate change: type the KMIP password again (a saved password is only ever sent to the servers it was saved for)",
        ));
    }
    if let Some(u) = &draft.ca_cert {
        if let Err(e) = ca_pem(u) {
            errors.push(e);
        }
    } else if now.ca_cert.is_none() {
        errors.push(field_error(
            Field::CaCert,
            "upload the CA certificate of the KMIP server",
        ));
    }
    let form = match &draft.client_cert {
        Some(u) => match client_form(u) {
            Ok(f) => Some(f),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None if now.client_cert.is_none() => {
            errors.push(field_error(
                Field::ClientCert,
                "upload the client certificate (PKCS#12, or PEM with its key)",
            ));
            None
        }
        None => Some(if now.client_key.is_some() {
            ClientForm::Pem
        } else {
            ClientForm::Pkcs12
        }),
    };
    if let Some(k) = &draft.client_key {
        if PKeyPem::looks_like(&k.bytes).is_none() {
            errors.push(field_error(
                Field::ClientKey,
                format!(
                    "{} is not a PEM private key (-----BEGIN … PRIVATE KEY-----)",
                    shown_name(&k.filename)
                ),
            ));
        } else if form == Some(ClientForm::Pkcs12) {
            errors.push(field_error(Field::ClientKey, "a PKCS#12 certificate holds its key: leave the key empty, or upload a PEM certificate with it"));
        }
    } else if form == Some(ClientForm::Pem)
        && now.client_key.is_none()
        && draft.client_cert.is_some()
    {
        errors.push(field_error(
            Field::ClientKey,
            "a PEM client certificate needs its private key: upload it too",
        ));
    }
    if form == Some(ClientForm::Pkcs12) && draft.passphrase.is_none() && !now.passphrase_set {
        errors.push(field_error(
            Field::Passphrase,
            "a PKCS#12 certificate is opened with a passphrase: type it",
        ));
    }
    if draft.password.is_some() && draft.username.trim().is_empty() {
        errors.push(field_error(Field::Username, "a password needs a user name"));
    }
    if draft.username.len() > 256 || draft.username.chars().any(char::is_control) {
        errors.push(field_error(
            Field::Username,
            "a user name is up to 256 printable characters",
        ));
    }
    errors
}

/// Recognises PEM private keys (encrypted or not) without opening them: a passphrase may
/// be needed, which the test supplies.
struct PKeyPem;

impl PKeyPem {
    fn looks_like(b: &[u8]) -> Option<()> {
        let t = std::str::from_utf8(b).ok()?;
        (t.contains("-----BEGIN ") && t.contains("PRIVATE KEY-----")).then_some(())
    }
}

/// A draft written out and not yet in force.
pub struct Staged {
    /// Its folder (`web-kmip/GENERATION`).
    pub dir: PathBuf,
    /// The candidate configuration in it.
    pub candidate: PathBuf,
    /// The configuration text to put in place if the candidate passes.
    final_text: String,
}

impl Staged {
    /// Deletes it (the test failed): the old settings stay.
    pub fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Puts it in force: the configuration replaced by a rename, the candidate removed,
    /// and earlier generations (now named by nothing) deleted.
    pub fn commit(self, config: &Path) -> Result<(), AdminError> {
        files::replace(config, self.final_text.as_bytes(), 0o600)?;
        let _ = std::fs::remove_file(&self.candidate);
        if let Some(parent) = self.dir.parent() {
            if let Ok(entries) = std::fs::read_dir(parent) {
                for e in entries.flatten() {
                    if e.path() != self.dir && e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes a checked draft into a new generation folder with a candidate configuration.
pub fn stage(config: &Path, draft: &Draft) -> Result<Staged, AdminError> {
    let mut doc = read_doc(config)?;
    let base = config.parent().unwrap_or(Path::new(".")).to_owned();
    let root = base.join(FOLDER);
    files::private_folder(&root, true)?;
    let time = time::OffsetDateTime::now_utc();
    let generation = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}-{}",
        time.year(),
        time.month() as u8,
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        &crate::sessions::token()[..8]
    );
    let dir = root.join(&generation);
    files::private_folder(&dir, false)?;
    let result = write_generation(&mut doc, &base, &dir, &generation, draft);
    let (candidate_doc, final_doc) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let candidate = dir.join("candidate.toml");
    if let Err(e) = files::create(&candidate, candidate_doc.to_string().as_bytes(), 0o600) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Staged {
        dir,
        candidate,
        final_text: final_doc.to_string(),
    })
}

/// Writes the files of the generation and returns the candidate document (absolute paths,
/// for a test from inside the folder) and the final one (paths relative to the
/// configuration's folder).
fn write_generation(
    doc: &mut DocumentMut,
    base: &Path,
    dir: &Path,
    generation: &str,
    draft: &Draft,
) -> Result<(DocumentMut, DocumentMut), AdminError> {
    let old = kmip_table(doc).cloned().unwrap_or_default();
    let old_path = |k: &str| str_of(&old, k).map(|p| base.join(p));
    let carry = |k: &'static str, role: Role| -> Result<Option<Zeroizing<Vec<u8>>>, AdminError> {
        match old_path(k) {
            None => Ok(None),
            Some(p) => Ok(Some(trusted::read(k, &p, role)?)),
        }
    };
    // (key in [kmip], file name, bytes)
    let mut out: Vec<(&'static str, &'static str, Zeroizing<Vec<u8>>)> = Vec::new();
    match &draft.ca_cert {
        Some(u) => out.push((
            "ca_cert",
            "ca.pem",
            Zeroizing::new(ca_pem(u).map_err(|e| AdminError::Certificate {
                what: "CA certificate",
                why: e.message,
            })?),
        )),
        None => {
            if let Some(b) = carry("ca_cert", Role::Trusted)? {
                out.push(("ca_cert", "ca.pem", b));
            }
        }
    }
    let (cert, key) = match &draft.client_cert {
        Some(u) => {
            let pem = X509::stack_from_pem(&u.bytes).is_ok_and(|s| !s.is_empty());
            let key = match (&draft.client_key, pem) {
                (Some(k), true) => Some(k.bytes.clone()),
                (None, true) => carry("client_key", Role::Secret)?,
                (_, false) => None,
            };
            (Some((u.bytes.clone(), pem)), key)
        }
        None => {
            let key = match &draft.client_key {
                Some(k) => Some(k.bytes.clone()),
                None => carry("client_key", Role::Secret)?,
            };
            let pem = old_path("client_key").is_some();
            (carry("client_cert", Role::Secret)?.map(|b| (b, pem)), key)
        }
    };
    if let Some((bytes, pem)) = cert {
        out.push((
            "client_cert",
            if pem { "client.pem" } else { "client.p12" },
            bytes,
        ));
        if pem {
            if let Some(k) = key {
                out.push(("client_key", "client.key", k));
            }
        }
    }
    let pass = match &draft.passphrase {
        Some(p) => Some(Zeroizing::new(format!("{}\n", p.as_str()).into_bytes())),
        None => carry("passphrase_file", Role::Secret)?,
    };
    if let Some(p) = pass {
        out.push(("passphrase_file", "client.pass", p));
    }
    let username = draft.username.trim();
    if !username.is_empty() {
        let pw = match &draft.password {
            Some(p) => Some(Zeroizing::new(format!("{}\n", p.as_str()).into_bytes())),
            None => carry("password_file", Role::Secret)?,
        };
        if let Some(p) = pw {
            out.push(("password_file", "kmip.pass", p));
        }
    }
    for (_, name, bytes) in &out {
        files::create(&dir.join(name), bytes, 0o600)?;
    }
    files::sync_dir(dir)?;
    let table = |abs: bool| {
        let mut t = old.clone();
        for k in [
            "ca_cert",
            "client_cert",
            "client_key",
            "passphrase_file",
            "password_file",
            "username",
        ] {
            t.remove(k);
        }
        let mut servers = Array::new();
        for s in &draft.servers {
            servers.push(s.trim());
        }
        t.insert("servers", value(servers));
        for (k, name, _) in &out {
            let p = if abs {
                dir.join(name).display().to_string()
            } else {
                format!("{FOLDER}/{generation}/{name}")
            };
            t.insert(k, value(p));
        }
        if !username.is_empty() {
            t.insert("username", value(username));
        }
        t
    };
    let mut candidate = doc.clone();
    candidate["kmip"] = Item::Table(table(true));
    // The candidate lives in the generation folder: relative paths of the other tables
    // would resolve there; they are not used by the test, but made absolute all the same
    // so that nothing in it points somewhere unexpected.
    absolutize(&mut candidate, base);
    doc["kmip"] = Item::Table(table(false));
    Ok((candidate, doc.clone()))
}

fn absolutize(doc: &mut DocumentMut, base: &Path) {
    let abs = |v: &mut Item| {
        if let Some(s) = v.as_str() {
            if !Path::new(s).is_absolute() {
                *v = value(base.join(s).display().to_string());
            }
        }
    };
    if let Some(t) = doc.get_mut("serve").and_then(Item::as_table_mut) {
        for k in ["api_socket", "audit_log"] {
            if let Some(v) = t.get_mut(k) {
                abs(v);
            }
        }
    }
    if let Some(t) = doc.get_mut("web").and_then(Item::as_table_mut) {
        for k in ["cert", "key"] {
            if let Some(v) = t.get_mut(k) {
                abs(v);
            }
        }
    }
    if let Some(a) = doc.get_mut("volume").and_then(Item::as_array_of_tables_mut) {
        for t in a.iter_mut() {
            for k in ["path", "header", "fuse"] {
                if let Some(v) = t.get_mut(k) {
                    abs(v);
                }
            }
        }
    }
}

/// Deletes every generation folder under `web-kmip/` that the configuration does not name
/// (a Save and Test cut short by a crash leaves one, with copies of the secrets).
pub fn sweep(config: &Path) {
    let Ok(doc) = read_doc(config) else { return };
    let base = config.parent().unwrap_or(Path::new("."));
    let named: Vec<PathBuf> = kmip_table(&doc)
        .map(|t| {
            [
                "ca_cert",
                "client_cert",
                "client_key",
                "passphrase_file",
                "password_file",
            ]
            .iter()
            .filter_map(|k| str_of(t, k))
            .map(|p| base.join(p))
            .collect()
        })
        .unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(base.join(FOLDER)) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let in_use = named.iter().any(|p| p.starts_with(&dir));
        if !in_use && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The outcome of Save and Test, as the page shows it.
pub struct Outcome {
    /// The test's report.
    pub report: TestReport,
    /// Whether the served volumes' keys were reached with the new settings (none when not
    /// asked: a failed test, or a test of the settings already in force).
    pub reach: Option<Result<(), String>>,
    /// Whether the settings were saved (in force now).
    pub saved: bool,
}

impl Outcome {
    /// Everything passed.
    pub fn passed(&self) -> bool {
        self.report.ok && self.reach.as_ref().is_none_or(Result::is_ok)
    }
}

/// Tests a staged draft; commits it when it passes (and the served keys are reachable
/// with it), discards it otherwise.
pub fn test_and_commit(
    config: &Path,
    staged: Staged,
    reach: impl FnOnce(&Config) -> Result<(), String>,
) -> Outcome {
    let report = service::ops::test::save_and_test(&staged.candidate, false);
    if !report.ok {
        staged.discard();
        return Outcome {
            report,
            reach: None,
            saved: false,
        };
    }
    let reached = match Config::load(&staged.candidate) {
        Ok(c) => reach(&c),
        Err(e) => Err(e.to_string()),
    };
    if reached.is_err() {
        staged.discard();
        return Outcome {
            report,
            reach: Some(reached),
            saved: false,
        };
    }
    match staged.commit(config) {
        Ok(()) => Outcome {
            report,
            reach: Some(Ok(())),
            saved: true,
        },
        Err(e) => Outcome {
            report,
            reach: Some(Err(format!(
                "the settings passed but could not be saved: {e}"
            ))),
            saved: false,
        },
    }
}

/// The field a failed test step concerns, so that its message stands next to it.
pub fn field_of(report: &TestReport) -> Field {
    let error = report.error.as_deref().unwrap_or_default().to_lowercase();
    match report.step.unwrap_or_default() {
        "load client certificate" if error.contains("passphrase") => Field::Passphrase,
        "load client certificate" | "present client certificate" => Field::ClientCert,
        "resolve host name" | "TCP connect" | "reach any server" => Field::Servers,
        "verify server certificate" if error.contains("host") => Field::Servers,
        "verify server certificate" => Field::CaCert,
        "KMIP authentication" => Field::Password,
        _ => Field::General,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cert_pem(cn: &str) -> Vec<u8> {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        let key = openssl::pkey::PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(9).unwrap())
            .unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        b.build().to_pem().unwrap()
    }

    fn upload(name: &str, bytes: &[u8]) -> Upload {
        Upload {
            filename: name.into(),
            bytes: Zeroizing::new(bytes.to_vec()),
        }
    }

    /// A configuration folder (0700) with a PEM client certificate and its files.
    fn folder() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let w = |n: &str, b: &[u8]| files::create(&d.path().join(n), b, 0o600).unwrap();
        w("ca.pem", &cert_pem("Old CA"));
        w("client.pem", &cert_pem("appliance"));
        w(
            "client.key",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        w("kmip.pass", b"old password\n");
        let config = d.path().join("atrest.toml");
        w(
            "atrest.toml",
            b"# kept comment\n[kmip]\nservers = [\"old:5696\"]\nca_cert = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"\nusername = \"appliance\"\npassword_file = \"kmip.pass\"\ntimeout_secs = 7\n\n[serve]\naudit_log = \"audit.jsonl\"\n",
        );
        (d, config)
    }

    #[test]
    fn the_form_shows_no_secret_and_names_the_files() {
        let (_d, config) = folder();
        let c = current(&config).unwrap();
        assert_eq!(c.servers, ["old:5696"]);
        assert_eq!(c.ca_cert.unwrap().subject.as_deref(), Some("CN=Old CA"));
        assert!(c.password_set && !c.passphrase_set);
        assert!(!format!("{:?}", current(&config).unwrap()).contains("old password"));
    }

    #[test]
    fn check_names_each_wrong_field() {
        let (_d, config) = folder();
        let now = current(&config).unwrap();
        let field_of = |d: &Draft| check(d, &now).iter().map(|e| e.field).collect::<Vec<_>>();
        let ok = Draft {
            servers: vec!["old:5696".into()],
            username: "appliance".into(),
            ..Draft::default()
        };
        assert!(check(&ok, &now).is_empty());
        assert_eq!(
            field_of(&Draft {
                servers: vec![],
                ..Draft::default()
            })[0],
            Field::Servers
        );
        assert!(field_of(&Draft {
            servers: vec!["kms:99999".into()],
            ..Draft::default()
        })
        .contains(&Field::Servers));
        let d = Draft {
            ca_cert: Some(upload("notes.txt", b"not a certificate")),
            ..Draft {
                servers: vec!["kms".into()],
                ..Draft::default()
            }
        };
        assert_eq!(field_of(&d), [Field::CaCert]);
        let d = Draft {
            servers: vec!["kms".into()],
            client_cert: Some(upload("client.pem", &cert_pem("new"))),
            client_key: Some(upload("k.txt", b"just text")),
            ..Draft::default()
        };
        assert_eq!(field_of(&d), [Field::ClientKey]);
        let d = Draft {
            servers: vec!["kms".into()],
            password: Some(Zeroizing::new("pw".into())),
            username: " ".into(),
            ..Draft::default()
        };
        assert_eq!(field_of(&d), [Field::Username]);
    }

    #[test]
    fn a_staged_draft_is_discarded_or_committed_whole() {
        let (d, config) = folder();
        let before = std::fs::read(&config).unwrap();
        let draft = Draft {
            servers: vec!["new1:5696".into(), "new2".into()],
            ca_cert: Some(upload(
                "ca.der",
                &X509::from_pem(&cert_pem("New CA"))
                    .unwrap()
                    .to_der()
                    .unwrap(),
            )),
            username: "appliance".into(),
            password: Some(Zeroizing::new("new password".into())),
            ..Draft::default()
        };
        // Discarded: nothing of it remains, the configuration untouched.
        let s = stage(&config, &draft).unwrap();
        let candidate = std::fs::read_to_string(&s.candidate).unwrap();
        assert!(
            candidate.contains(&s.dir.join("ca.pem").display().to_string()),
            "{candidate}"
        );
        assert!(
            candidate.contains(&d.path().join("audit.jsonl").display().to_string()),
            "{candidate}"
        );
        assert!(!candidate.contains("new password"));
        let dir = s.dir.clone();
        s.discard();
        assert!(!dir.exists());
        assert_eq!(std::fs::read(&config).unwrap(), before);

        // Committed: the configuration names the new generation, relative, comment kept;
        // the DER CA is stored as PEM; unchanged files are carried over; secrets in files
        // 0600; the earlier generation is gone.
        let first = stage(&config, &draft).unwrap();
        let first_dir = first.dir.clone();
        first.commit(&config).unwrap();
        let s = stage(
            &config,
            &Draft {
                servers: vec!["new1:5696".into()],
                username: "appliance".into(),
                ..Draft::default()
            },
        )
        .unwrap();
        let gen = s.dir.clone();
        s.commit(&config).unwrap();
        assert!(!first_dir.exists(), "the earlier generation was removed");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.starts_with("# kept comment\n"), "{text}");
        assert!(text.contains("servers = [\"new1:5696\"]"), "{text}");
        assert!(text.contains("timeout_secs = 7"), "{text}");
        let rel = gen.strip_prefix(d.path()).unwrap().display().to_string();
        assert!(
            text.contains(&format!("ca_cert = \"{rel}/ca.pem\"")),
            "{text}"
        );
        assert!(!text.contains("new password"));
        assert!(!gen.join("candidate.toml").exists());
        assert!(std::fs::read_to_string(gen.join("ca.pem"))
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            std::fs::read(gen.join("kmip.pass")).unwrap(),
            b"new password\n"
        );
        assert_eq!(
            std::fs::read(gen.join("client.key")).unwrap(),
            std::fs::read(d.path().join("client.key")).unwrap()
        );
        for f in std::fs::read_dir(&gen).unwrap().flatten() {
            assert_eq!(
                f.metadata().unwrap().permissions().mode() & 0o777,
                0o600,
                "{:?}",
                f.path()
            );
        }
        assert_eq!(
            std::fs::metadata(&gen).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_ne!(fingerprint(&config), {
            let mut h = openssl::sha::Sha256::new();
            h.update(&before);
            h.finish()
        });
    }

    #[test]
    fn a_saved_password_is_not_sent_to_a_new_destination() {
        let (_d, config) = folder();
        let now = current(&config).unwrap();
        let moved = |servers: &str, ca: bool, pw: bool| Draft {
            servers: vec![servers.into()],
            ca_cert: ca.then(|| upload("ca.pem", &cert_pem("Evil CA"))),
            username: "appliance".into(),
            password: pw.then(|| Zeroizing::new("typed".into())),
            ..Draft::default()
        };
        let fields = |d: &Draft| check(d, &now).iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(fields(&moved("evil:5696", false, false)), [Field::Password]);
        assert_eq!(fields(&moved("old:5696", true, false)), [Field::Password]);
        assert!(fields(&moved("evil:5696", true, true)).is_empty());
        assert!(fields(&moved("old:5696", false, false)).is_empty());
        let junk = Draft {
            servers: vec!["[evil\" #\\ x[ [web]:5696".into()],
            ..Draft::default()
        };
        assert!(fields(&junk).contains(&Field::Servers));
    }

    #[test]
    fn a_crashed_save_is_swept_and_the_one_in_use_kept() {
        let (d, config) = folder();
        let draft = Draft {
            servers: vec!["old:5696".into()],
            username: "appliance".into(),
            ..Draft::default()
        };
        let used = stage(&config, &draft).unwrap();
        let used_dir = used.dir.clone();
        used.commit(&config).unwrap();
        let crashed = stage(&config, &draft).unwrap();
        let crashed_dir = crashed.dir.clone();
        std::mem::forget(crashed);
        assert!(crashed_dir.join("kmip.pass").exists());
        sweep(&config);
        assert!(!crashed_dir.exists());
        assert!(used_dir.join("kmip.pass").exists());
        assert!(d.path().join(FOLDER).exists());
    }

    #[test]
    fn a_failed_step_is_shown_beside_its_field() {
        let r = |step: &'static str, error: &str| TestReport {
            ok: false,
            step: Some(step),
            error: Some(error.into()),
            ..TestReport::default()
        };
        assert_eq!(
            field_of(&r("verify server certificate", "not trusted")),
            Field::CaCert
        );
        assert_eq!(
            field_of(&r(
                "verify server certificate",
                "the host name kms does not match"
            )),
            Field::Servers
        );
        assert_eq!(
            field_of(&r("load client certificate", "wrong passphrase")),
            Field::Passphrase
        );
        assert_eq!(
            field_of(&r("KMIP authentication", "denied")),
            Field::Password
        );
        assert_eq!(field_of(&r("TCP connect", "refused")), Field::Servers);
        assert_eq!(field_of(&r("KMIP operation", "x")), Field::General);
    }
}
