//! The configuration file.
//!
//! ```toml
//! [kmip]
//! servers = ["kms1.example.com", "kms2.example.com:5697"]
//! ca_cert = "kmip-ca.pem"
//! client_cert = "client.p12"        # PKCS#12, or a PEM certificate (chain)
//! client_key = "client.key"         # only with a PEM certificate; may be encrypted
//! passphrase_file = "client.pass"
//! username = "appliance"
//! password_file = "kmip.pass"
//! version = "auto"                  # or "1.0" ... "2.1"
//! timeout_secs = 10
//! busy_retry_secs = 30              # keep retrying servers that refuse or reset (0: never)
//! ```
//! Unknown keys are errors, so a typo is reported instead of silently ignored. Relative
//! paths resolve against the file's own folder. The file, its folder and every file it
//! names are read with the checks of [`crate::trusted`]: nobody but their owner (root or
//! the user atrest runs as) may change them, and nobody but the owner may read a secret
//! (the passphrase, the password, the private key, a PKCS#12 file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kmip::client::{ClientConfig, Identity, ServerAddr, VersionChoice};
use kmip::message::ProtocolVersion;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::trusted::{self, Role};

/// A configuration problem, naming the file or key and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {error}", path.display())]
    Read {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error (shown in the message, so not a `source`: it would print twice).
        error: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The configuration file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a value that cannot be used.
    #[error("{}: {key} = {value:?}: {why}", path.display())]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A file others could change (or that belongs to someone else).
    #[error("atrest does not trust {what} {}: {why}", path.display())]
    Untrusted {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A secret file readable by group or others.
    #[error("{what} {} is readable by group or others (mode {mode:03o}), and atrest sends secrets only from files nobody else can read; {hint}", path.display())]
    SecretTooOpen {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// What to do.
        hint: String,
    },
    /// Not a regular file (a FIFO, a device, a directory).
    #[error("{what} {} is {kind}, not a regular file", path.display())]
    NotRegular {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than any file of its kind.
    #[error("{what} {} holds {len} bytes, more than the {max} atrest reads: the configuration names the wrong file", path.display())]
    TooLarge {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A secret file with nothing in it.
    #[error("{what} {} is empty", path.display())]
    EmptySecret {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
}

impl ConfigError {
    /// What to do about it, when the message does not already say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Read { .. } => Some("check the path (relative paths are relative to the configuration file's folder) and that atrest may read it"),
            Self::Syntax { .. } => Some("correct the TOML at the line shown"),
            Self::Invalid { .. } | Self::EmptySecret { .. } => Some("correct the configuration file"),
            Self::Untrusted { .. } => Some("give the file (and its folder) to root or the user atrest runs as, writable by its owner only"),
            Self::SecretTooOpen { .. } | Self::NotRegular { .. } | Self::TooLarge { .. } => None,
        }
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    kmip: KmipSection,
    #[serde(default)]
    serve: ServeConfig,
    #[serde(default)]
    volume: Vec<VolumeConfig>,
    #[serde(default)]
    web: WebConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KmipSection {
    servers: Vec<String>,
    ca_cert: PathBuf,
    client_cert: PathBuf,
    client_key: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default = "auto")]
    version: String,
    #[serde(default = "ten")]
    timeout_secs: u64,
    #[serde(default = "thirty")]
    busy_retry_secs: u64,
}

fn thirty() -> u64 {
    30
}

fn auto() -> String {
    "auto".into()
}

fn ten() -> u64 {
    10
}

/// The `[serve]` table: how the daemon runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// The control API's Unix socket (JSON over HTTP), made 0600 in a 0700 folder.
    pub api_socket: PathBuf,
    /// The audit log (JSON lines), 0600.
    pub audit_log: PathBuf,
    /// Seconds between checks of each key's state on the server.
    pub key_check_secs: u64,
    /// The longest wait between attempts while no KMIP server answers.
    pub retry_max_secs: u64,
    /// Unlock only with a key the server reports Active (a Deactivated, Compromised or
    /// Destroyed key leaves the volume locked: the operator's crypto-erase).
    pub require_active_key: bool,
    /// The most MiB a second a conversion the daemon runs (encrypt, decrypt, deep rekey)
    /// may move, so that the appliance's own disk traffic keeps its share while a volume
    /// converts in the background; 0: as fast as the disk goes.
    pub convert_max_mib_per_sec: u64,
    /// Rotate each served volume's key when it has been active this many days (its
    /// Activation Date on the key server; fractions allowed); 0: never.
    pub rotate_days: f64,
    /// A scheduled rotation re-encrypts every sector (a deep rekey, which closes the exports
    /// while it runs) instead of rewrapping the volume key (which does not).
    pub rotate_deep: bool,
    /// The audit entries also as RFC 5424 syslog messages: `local` (/dev/log),
    /// `unix:PATH`, `tcp://HOST[:514]` or `tls://HOST[:6514]`.
    pub syslog: Option<String>,
    /// The CA that signed a `tls://` collector's certificate.
    pub syslog_ca: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            api_socket: "/run/atrest/api.sock".into(),
            audit_log: "/var/log/atrest/audit.jsonl".into(),
            key_check_secs: 300,
            retry_max_secs: 30,
            require_active_key: true,
            convert_max_mib_per_sec: 0,
            rotate_days: 0.0,
            rotate_deep: false,
            syslog: None,
            syslog_ca: None,
        }
    }
}

/// The `[web]` table: the HTTPS admin page that `atrest serve` runs beside its API.
///
/// ```toml
/// [web]
/// listen = "0.0.0.0:8443"          # no listen: no web page
/// cert = "web.crt"                 # optional, with key; otherwise a self-signed ECDSA
/// key = "web.key"                  #   P-256 pair is made beside the configuration
/// admin_password_hash = "$argon2id$v=19$..."   # set by `atrest admin set-password`
/// session_idle_mins = 15
/// session_max_hours = 8
/// ```
/// The hash is not a secret in the sense of the KMIP password (it cannot be sent anywhere
/// in its place), but it lets a reader try passwords offline: the file is read under the
/// same trust rules as the rest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where the page listens (`ADDR:PORT`); none: no page.
    pub listen: Option<std::net::SocketAddr>,
    /// The server certificate (PEM chain), resolved against the configuration's folder.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM), a secret file.
    pub key: Option<PathBuf>,
    /// The admin account's name.
    pub admin_user: String,
    /// The admin password as an argon2id PHC string.
    pub admin_password_hash: Option<String>,
    /// A session unused this long ends.
    pub session_idle_mins: u64,
    /// A session ends this long after its login, used or not.
    pub session_max_hours: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: None,
            cert: None,
            key: None,
            admin_user: "admin".into(),
            admin_password_hash: None,
            session_idle_mins: 15,
            session_max_hours: 8,
        }
    }
}

/// Only the `[web]` table, for what reads it again while serving (a login checks the
/// password hash that `atrest admin set-password` may have changed a minute ago).
#[derive(Debug, Deserialize)]
struct WebOnly {
    #[serde(default)]
    web: WebConfig,
}

impl WebConfig {
    /// The `[web]` table of the configuration at `path` as it is on disk now, paths
    /// resolved; the rest of the file is not checked.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        // Everything but [web] is ignored here: a table the full parse would refuse is
        // refused by the daemon's own reload, not by a login.
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: syntax_message(&text, &e),
        })?;
        let mut only = toml::Table::new();
        if let Some(w) = table.get("web") {
            only.insert("web".into(), w.clone());
        }
        let w: WebOnly = only
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: path.to_owned(),
                message: syntax_message(&text, &e),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(w.web.resolved(base))
    }

    fn resolved(self, base: &Path) -> Self {
        Self {
            cert: self.cert.map(|p| base.join(p)),
            key: self.key.map(|p| base.join(p)),
            ..self
        }
    }

    fn check(&self) -> Result<(), (&'static str, String, String)> {
        if self.cert.is_some() != self.key.is_some() {
            return Err((
                "cert",
                self.cert
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
                    .to_string(),
                "give both cert and key, or neither (a self-signed pair is then made)".into(),
            ));
        }
        if let Some(h) = &self.admin_password_hash {
            if !h.starts_with("$argon2id$") {
                return Err((
                    "admin_password_hash",
                    "(not shown)".into(),
                    "not an argon2id hash: set it with `atrest admin set-password`".into(),
                ));
            }
        }
        if !(1..=24 * 60).contains(&self.session_idle_mins) {
            return Err((
                "session_idle_mins",
                self.session_idle_mins.to_string(),
                "must be between 1 and 1440 minutes".into(),
            ));
        }
        if !(1..=24 * 7).contains(&self.session_max_hours) {
            return Err((
                "session_max_hours",
                self.session_max_hours.to_string(),
                "must be between 1 and 168 hours".into(),
            ));
        }
        Ok(())
    }
}

/// One `[[volume]]` table: a volume the daemon unlocks at start.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// A name for logs, the API and the exports (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The image file or block device (resolved against the configuration's folder).
    pub path: PathBuf,
    /// A detached LUKS2 header, if the volume has one.
    #[serde(default)]
    pub header: Option<PathBuf>,
    /// NBD export: `unix:PATH` or a loopback `IP:PORT`.
    #[serde(default)]
    pub nbd: Option<String>,
    /// FUSE export: the plaintext as the file `DIR/volume`.
    #[serde(default)]
    pub fuse: Option<PathBuf>,
    /// dm-crypt export: `/dev/mapper/NAME` through cryptsetup.
    #[serde(default)]
    pub dm: Option<String>,
    /// Pass NBD TRIM to the image as holes (off: holes show which blocks are free).
    #[serde(default)]
    pub discard: bool,
    /// Serve the volume through its NBD and FUSE exports while it holds plaintext, so that
    /// an encrypt (with a detached header: online) and a decrypt happen under a running
    /// appliance. Off by default: a disk whose header was wiped would otherwise be served
    /// as plaintext, and what the appliance writes would land in the clear. Turn it off
    /// once the volume is encrypted.
    #[serde(default)]
    pub serve_plaintext: bool,
}

/// The configuration, loaded and checked.
#[derive(Debug)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// The KMIP client's settings, files already read.
    pub kmip: ClientConfig,
    /// How the daemon runs.
    pub serve: ServeConfig,
    /// Volumes for the daemon.
    pub volumes: Vec<VolumeConfig>,
    /// The admin web page.
    pub web: WebConfig,
}

impl Config {
    /// Reads and checks the configuration at `path`, and every file it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        let file: File = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: syntax_message(&text, &e),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let k = file.kmip;
        let invalid = |key, value: String, why: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            why,
        };
        if k.servers.is_empty() {
            return Err(invalid(
                "servers",
                "[]".into(),
                "list at least one KMIP server".into(),
            ));
        }
        let servers = k
            .servers
            .iter()
            .map(|s| ServerAddr::parse(s).map_err(|why| invalid("servers", s.clone(), why)))
            .collect::<Result<Vec<_>, _>>()?;
        let version = match k.version.as_str() {
            "auto" => VersionChoice::Auto,
            v => {
                let parsed: ProtocolVersion =
                    v.parse().map_err(|why| invalid("version", v.into(), why))?;
                if !ProtocolVersion::SUPPORTED.contains(&parsed) {
                    return Err(invalid(
                        "version",
                        v.into(),
                        "atrest speaks KMIP 1.0, 1.1, 1.2, 1.3, 1.4, 2.0 and 2.1, or \"auto\""
                            .into(),
                    ));
                }
                VersionChoice::Fixed(parsed)
            }
        };
        if k.busy_retry_secs > 600 {
            return Err(invalid(
                "busy_retry_secs",
                k.busy_retry_secs.to_string(),
                "must be between 0 and 600 seconds".into(),
            ));
        }
        if k.timeout_secs == 0 || k.timeout_secs > 600 {
            return Err(invalid(
                "timeout_secs",
                k.timeout_secs.to_string(),
                "must be between 1 and 600 seconds".into(),
            ));
        }
        let resolve = |p: &Path| base.join(p);
        let passphrase = k
            .passphrase_file
            .as_deref()
            .map(|p| read_secret_text("passphrase_file", &resolve(p)))
            .transpose()?;
        let cert_path = resolve(&k.client_cert);
        let identity = match &k.client_key {
            None => {
                let der = read_secret("client_cert (PKCS#12)", &cert_path)?;
                let passphrase = passphrase.ok_or_else(|| {
                    invalid(
                        "passphrase_file",
                        String::new(),
                        "a PKCS#12 client_cert needs passphrase_file (or give client_key for a PEM certificate)".into(),
                    )
                })?;
                Identity::Pkcs12 {
                    der: der.to_vec(),
                    passphrase,
                }
            }
            Some(key) => Identity::Pem {
                cert_pem: read_file("client_cert", &cert_path)?,
                key_pem: read_secret("client_key", &resolve(key))?,
                passphrase,
            },
        };
        let password = k
            .password_file
            .as_deref()
            .map(|p| read_secret_text("password_file", &resolve(p)))
            .transpose()?;
        if password.is_some() && k.username.is_none() {
            return Err(invalid(
                "password_file",
                k.password_file.unwrap_or_default().display().to_string(),
                "a password needs a username".into(),
            ));
        }
        check_serve(&file.serve, &file.volume)
            .map_err(|(key, value, why)| invalid(key, value, why))?;
        file.web
            .check()
            .map_err(|(key, value, why)| invalid(key, value, why))?;
        let timeout = Duration::from_secs(k.timeout_secs);
        Ok(Self {
            path: path.to_owned(),
            kmip: ClientConfig {
                servers,
                ca_pem: read_file("ca_cert", &resolve(&k.ca_cert))?,
                identity,
                username: k.username,
                password,
                version,
                connect_timeout: timeout,
                request_timeout: timeout,
                busy_retry: Duration::from_secs(k.busy_retry_secs),
            },
            serve: ServeConfig {
                api_socket: resolve(&file.serve.api_socket),
                audit_log: resolve(&file.serve.audit_log),
                syslog_ca: file.serve.syslog_ca.as_deref().map(resolve),
                ..file.serve
            },
            volumes: file
                .volume
                .into_iter()
                .map(|v| VolumeConfig {
                    path: base.join(&v.path),
                    header: v.header.as_deref().map(resolve),
                    fuse: v.fuse.as_deref().map(resolve),
                    nbd: v.nbd.as_deref().map(|a| match a.strip_prefix("unix:") {
                        Some(p) => format!("unix:{}", resolve(Path::new(p)).display()),
                        None => a.to_owned(),
                    }),
                    ..v
                })
                .collect(),
            web: file.web.resolved(base),
        })
    }
}

/// Checks `[serve]` and the `[[volume]]` tables: (key, value, why) of the first fault.
fn check_serve(
    serve: &ServeConfig,
    volumes: &[VolumeConfig],
) -> Result<(), (&'static str, String, String)> {
    if !(1..=86_400).contains(&serve.key_check_secs) {
        return Err((
            "key_check_secs",
            serve.key_check_secs.to_string(),
            "must be between 1 and 86400 seconds".into(),
        ));
    }
    if let Some(t) = &serve.syslog {
        match crate::syslog::Target::parse(t) {
            Err(why) => return Err(("syslog", t.clone(), why)),
            Ok(crate::syslog::Target::Tls(..)) if serve.syslog_ca.is_none() => {
                return Err((
                    "syslog",
                    t.clone(),
                    "a tls:// collector needs syslog_ca, the CA that signed its certificate".into(),
                ))
            }
            Ok(_) => {}
        }
    }
    if !(0.0..=3650.0).contains(&serve.rotate_days) {
        return Err((
            "rotate_days",
            serve.rotate_days.to_string(),
            "must be between 0 (never) and 3650 days".into(),
        ));
    }
    if !(1..=3_600).contains(&serve.retry_max_secs) {
        return Err((
            "retry_max_secs",
            serve.retry_max_secs.to_string(),
            "must be between 1 and 3600 seconds".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for v in volumes {
        let ok = !v.name.is_empty()
            && v.name.len() <= 64
            && v.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !v.name.starts_with('.');
        if !ok {
            return Err((
                "name",
                v.name.clone(),
                "a volume name is 1 to 64 letters, digits, '.', '_' or '-' (not starting with '.')"
                    .into(),
            ));
        }
        if !names.insert(v.name.as_str()) {
            return Err((
                "name",
                v.name.clone(),
                "two [[volume]] tables have this name".into(),
            ));
        }
        // The kernel's dm-crypt and atrest's own exports would be two writers with two
        // caches over the same sectors.
        if let (Some(dm), true) = (&v.dm, v.nbd.is_some() || v.fuse.is_some()) {
            return Err((
                "dm",
                dm.clone(),
                format!(
                    "volume {}: dm cannot be combined with nbd or fuse (two writers over the same data); choose one road",
                    v.name
                ),
            ));
        }
    }
    Ok(())
}

/// The configuration file's text, read with the checks of [`crate::trusted`] (its folder
/// and itself), UTF-8 or refused. For whoever parses it: [`Config::load`], a login reading
/// `[web]`, the web page rewriting `[kmip]`.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    trusted::check_folder(path)?;
    let bytes = trusted::read("configuration file", path, Role::Trusted)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| ConfigError::Read {
        what: "configuration file",
        path: path.to_owned(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    Ok(trusted::read(what, path, Role::Trusted)?.to_vec())
}

/// A TOML error where it is, without the source line the parser would quote: the file
/// may not be a configuration at all (a path planted where one is expected, such as the
/// Clevis pin's, could name /etc/shadow), and an error may reach a log others read.
pub fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|s| {
        let before = &text[..s.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {column}: ")
    });
    format!("{}{}", at.unwrap_or_default(), e.message().trim_end())
}

/// Reads a file that holds a secret (see [`crate::trusted`] for the checks).
fn read_secret(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let bytes = trusted::read(what, path, Role::Secret)?;
    if bytes.is_empty() {
        return Err(ConfigError::EmptySecret {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// A secret text file: one line, the trailing newline not part of the secret.
fn read_secret_text(what: &'static str, path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    let bytes = read_secret(what, path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ConfigError::Read {
        what,
        path: path.to_owned(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(ConfigError::EmptySecret {
            what,
            path: path.to_owned(),
        });
    }
    Ok(Zeroizing::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A scratch folder, removed even when the test fails.
    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new(_name: &str) -> Self {
            Self(tempfile::tempdir().unwrap())
        }

        fn path(&self) -> &Path {
            self.0.path()
        }

        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let p = self.path().join(name);
            let _ = fs::remove_file(&p);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    const PEM_CONFIG: &str = r#"
[kmip]
servers = ["kms1.example.com", "kms2.example.com:5697", "[::1]:15696"]
ca_cert = "ca.pem"
client_cert = "client.pem"
client_key = "client.key"
passphrase_file = "client.pass"
username = "appliance"
password_file = "kmip.pass"
version = "1.2"
timeout_secs = 3

[[volume]]
name = "recordings"
path = "/var/lib/appliance/recordings.img"
"#;

    fn pem_dir(name: &str) -> (Dir, PathBuf) {
        let d = Dir::new(name);
        d.write("ca.pem", "CA", 0o644);
        d.write("client.pem", "CERT", 0o644);
        d.write("client.key", "KEY", 0o600);
        d.write("client.pass", "open sesame\n", 0o600);
        d.write("kmip.pass", "s3cret\r\n", 0o400);
        let c = d.write("atrest.toml", PEM_CONFIG, 0o644);
        (d, c)
    }

    #[test]
    fn loads_a_full_configuration_resolving_paths_against_its_folder() {
        let (_d, path) = pem_dir("full");
        let c = Config::load(&path).unwrap();
        let k = &c.kmip;
        assert_eq!(
            k.servers[0],
            ServerAddr {
                host: "kms1.example.com".into(),
                port: 5696
            }
        );
        assert_eq!(k.servers[1].port, 5697);
        assert_eq!(
            k.servers[2],
            ServerAddr {
                host: "::1".into(),
                port: 15696
            }
        );
        assert_eq!(k.ca_pem, b"CA");
        let Identity::Pem {
            cert_pem,
            key_pem,
            passphrase,
        } = &k.identity
        else {
            panic!("not PEM")
        };
        assert_eq!(
            (cert_pem.as_slice(), key_pem.as_slice()),
            (&b"CERT"[..], &b"KEY"[..])
        );
        assert_eq!(
            passphrase.as_deref().map(String::as_str),
            Some("open sesame")
        );
        assert_eq!(k.password.as_deref().map(String::as_str), Some("s3cret"));
        assert_eq!(k.version, VersionChoice::Fixed(ProtocolVersion::V1_2));
        assert_eq!(k.request_timeout, Duration::from_secs(3));
        assert_eq!(c.volumes[0].name, "recordings");
        assert_eq!(
            c.volumes[0].path,
            PathBuf::from("/var/lib/appliance/recordings.img")
        );
        // Secrets stay out of Debug.
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("open sesame") && !dbg.contains("s3cret") && !dbg.contains("KEY\""),
            "{dbg}"
        );
    }

    #[test]
    fn refuses_a_secret_file_readable_by_others_and_says_the_chmod() {
        let (d, path) = pem_dir("perm");
        d.write("kmip.pass", "s3cret\n", 0o644);
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("password_file") && e.contains("mode 644"), "{e}");
        assert!(
            ConfigError::hint(&Config::load(&path).unwrap_err()).is_none(),
            "the message already says what to do"
        );
        assert!(
            e.contains(&format!(
                "chmod 600 {}",
                d.path().join("kmip.pass").display()
            )),
            "{e}"
        );
        d.write("kmip.pass", "s3cret\n", 0o600);
        d.write("client.key", "KEY", 0o640);
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("client_key") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn names_a_missing_file_and_a_typo_and_a_bad_value() {
        let (d, path) = pem_dir("errors");
        fs::remove_file(d.path().join("ca.pem")).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("cannot read ca_cert") && e.contains("ca.pem"),
            "{e}"
        );

        let typo = PEM_CONFIG.replace("timeout_secs", "timeout_sec");
        let p = d.write("typo.toml", &typo, 0o644);
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("unknown field `timeout_sec`"), "{e}");

        let bad = PEM_CONFIG.replace("\"1.2\"", "\"3.0\"");
        let p = d.write("bad.toml", &bad, 0o644);
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("version = \"3.0\""), "{e}");

        let port = PEM_CONFIG.replace("kms2.example.com:5697", "kms2.example.com:99999");
        let p = d.write("port.toml", &port, 0o644);
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("port \"99999\""), "{e}");

        let e = Config::load(&d.path().join("nope.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read configuration file"), "{e}");
    }

    #[test]
    fn a_pkcs12_certificate_needs_a_passphrase_file() {
        let d = Dir::new("p12");
        d.write("ca.pem", "CA", 0o644);
        d.write("client.p12", "P12", 0o600);
        let p = d.write(
            "c.toml",
            "[kmip]\nservers=[\"k\"]\nca_cert=\"ca.pem\"\nclient_cert=\"client.p12\"\n",
            0o644,
        );
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("needs passphrase_file"), "{e}");
        d.write("client.p12", "P12", 0o644);
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn dm_is_not_combined_with_another_export() {
        let (d, _) = pem_dir("dmboth");
        let p = d.write(
            "both.toml",
            &PEM_CONFIG.replace(
                "[[volume]]\n",
                "[[volume]]\ndm = \"atrest-rec\"\nnbd = \"unix:/run/atrest/rec.sock\"\n",
            ),
            0o644,
        );
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("dm cannot be combined with nbd or fuse"), "{e}");
    }

    #[test]
    fn resolves_volume_paths_against_the_configuration_folder() {
        let (d, _) = pem_dir("volpath");
        let p = d.write(
            "rel.toml",
            &PEM_CONFIG.replace("/var/lib/appliance/recordings.img", "data/rec.img"),
            0o644,
        );
        let c = Config::load(&p).unwrap();
        assert_eq!(c.volumes[0].path, d.path().join("data/rec.img"));
    }

    // Issue 10, defect 7: a configuration (or a file it names) that someone else can
    // change is refused, so a local user cannot point root's atrest at a root-only file
    // and a server of their choice.
    #[test]
    fn r10_7_refuses_a_configuration_or_file_that_others_can_change() {
        let (d, path) = pem_dir("trust");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("does not trust configuration file")
                && e.contains("writable by group or others"),
            "{e}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        d.write("ca.pem", "CA", 0o664);
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("does not trust ca_cert"), "{e}");
        d.write("ca.pem", "CA", 0o644);
        // Another (non-root) user's files.
        std::os::unix::fs::chown(d.path().join("ca.pem"), Some(4242), None).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("belongs to user 4242"), "{e}");
        std::os::unix::fs::chown(d.path().join("ca.pem"), Some(0), None).unwrap();
        std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("configuration file") && e.contains("4242"),
            "{e}"
        );
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();
        Config::load(&path).unwrap();
        // A folder others may write (not sticky): they could swap what it names.
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("configuration folder") && e.contains("mode 777"),
            "{e}"
        );
        // Sticky, as /tmp: others cannot replace what is ours.
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        Config::load(&path).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn r10_7_refuses_fifos_devices_and_huge_files_without_blocking() {
        let (d, path) = pem_dir("kinds");
        let fifo = d.path().join("kmip.pass");
        fs::remove_file(&fifo).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let t = std::time::Instant::now();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "a FIFO held the load"
        );
        let zero = PEM_CONFIG.replace("kmip.pass", "/dev/zero");
        let p = d.write("zero.toml", &zero, 0o644);
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("is a character device"), "{e}");
        fs::remove_file(&fifo).unwrap();
        d.write("kmip.pass", &"x".repeat(2 << 20), 0o600);
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("more than the 1048576 atrest reads"), "{e}");
    }

    #[test]
    fn r10_7_a_shared_secret_file_gets_no_chmod_advice() {
        // As /etc/shadow: root-owned, readable by a group of its own. Suggesting `chmod
        // 600` on it would break the system; the message says the file is the wrong one.
        let (d, path) = pem_dir("shadow");
        let shadow = d.write("kmip.pass", "root:$y$...:19000::::::\n", 0o640);
        std::os::unix::fs::chown(&shadow, Some(0), Some(42)).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("shared with group 42") && !e.contains("chmod"),
            "{e}"
        );
    }
}
