//! The KMIP side of every operation: fetch a volume's key by its identifier, create a new
//! active key (and remove it again if what it was made for fails), retire a key the volume
//! no longer uses, ask a key's state. A thin layer over [`kmip::client::Client`] that puts
//! each failure in the operator's words ("fetching the volume's key 42: ...").

use std::sync::Arc;
use std::time::Instant;

use kmip::client::{Client, ClientError};
use kmip::enums::{RevocationReasonCode, State};
use volume::text::shown;
use zeroize::Zeroizing;

use crate::audit::Audit;
use crate::config::Config;
use crate::error::ServiceError;

/// A key just created on the server, active, with its secret.
pub struct NewKey {
    /// Its Unique Identifier.
    pub uid: String,
    /// The key bytes.
    pub secret: Zeroizing<Vec<u8>>,
    /// The server it was created on (`host:port`), a hint for operators.
    pub server: Option<String>,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewKey({}, <redacted>)", self.uid)
    }
}

/// How a key the volume no longer uses was left.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RetiredKey {
    /// Its identifier.
    pub uid: String,
    /// `revoked`, `kept` (still Active, `--keep-old`) or `already` (not Active before:
    /// left as it was, so a "Key Compromise" revocation is never overwritten).
    pub fate: &'static str,
    /// The revocation reason, if revoked.
    pub reason: Option<&'static str>,
    /// Its state, when it was not Active already.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl RetiredKey {
    /// One sentence about it.
    pub fn sentence(&self) -> String {
        if let Some(state) = &self.state {
            return format!(
                "the old key {} was {state} already and is left as it is",
                shown(&self.uid)
            );
        }
        match self.reason {
            Some(r) => format!(
                "the old key {} is revoked ({r}; it can still be fetched to read old backups)",
                shown(&self.uid)
            ),
            None => format!(
                "the old key {} is still Active (--keep-old)",
                shown(&self.uid)
            ),
        }
    }
}

/// Which key states may be used at all: for unlocking, and for starting or resuming a
/// conversion (`[serve] require_active_key`, on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Only an Active key is used; with `false`, any key whose material still exists
    /// (not Destroyed) is.
    pub require_active: bool,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            require_active: true,
        }
    }
}

/// What a key is fetched for, which decides the states it may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// To serve plaintext or produce it (unlock, encrypt, decrypt), or to protect data
    /// under it (a rekey's new key): the policy applies as it stands.
    Protect,
    /// The old key of a rekey: the data only moves off it, to a new Active key, and the
    /// result is ciphertext. This is the remedy for a revoked or compromised key (NIST
    /// SP 800-57 lets such a key process data to re-protect it), so any state whose
    /// material still exists is accepted. A forged rekey record cannot aim it elsewhere:
    /// the record's tag is under the new key.
    MoveOff,
}

impl KeyPolicy {
    /// Whether a key in state `s` may be used.
    pub fn allows(self, s: State) -> bool {
        self.allows_for(s, KeyUse::Protect)
    }

    /// Whether a key in state `s` may be used for `what`.
    pub fn allows_for(self, s: State, what: KeyUse) -> bool {
        let exists = s != State::DESTROYED && s != State::DESTROYED_COMPROMISED;
        match what {
            KeyUse::Protect if self.require_active => s == State::ACTIVE,
            _ => exists,
        }
    }
}

/// A key state in words.
pub fn state_name(s: State) -> String {
    match s {
        State::PRE_ACTIVE => "Pre-Active".into(),
        State::ACTIVE => "Active".into(),
        State::DEACTIVATED => "Deactivated (revoked)".into(),
        State::COMPROMISED => "Compromised".into(),
        State::DESTROYED => "Destroyed".into(),
        State::DESTROYED_COMPROMISED => "Destroyed (compromised)".into(),
        other => other.to_string(),
    }
}

/// What a serving volume needs of a key server: a key's state and its secret. The daemon's
/// workers hold their keys through this, so that their state machine can be driven in unit
/// tests by a double that plays states, silence and refusals in milliseconds (the real
/// servers are the integration tests' business).
pub trait KeySource: Send {
    /// The key's lifecycle state.
    fn state(&mut self, uid: &str) -> Result<State, ServiceError>;
    /// The key's secret.
    fn fetch(&mut self, uid: &str) -> Result<Zeroizing<Vec<u8>>, ServiceError>;
    /// The server that answered last, if any.
    fn server(&self) -> Option<String>;
    /// When the key was activated (its Activation Date, else its Initial Date), in seconds
    /// since the epoch; none when the server keeps neither. For scheduled rotation.
    fn activated(&mut self, _uid: &str) -> Result<Option<i64>, ServiceError> {
        Ok(None)
    }
}

impl KeySource for KeyManager {
    fn state(&mut self, uid: &str) -> Result<State, ServiceError> {
        KeyManager::state(self, uid)
    }

    fn fetch(&mut self, uid: &str) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        KeyManager::fetch(self, uid)
    }

    fn server(&self) -> Option<String> {
        KeyManager::server(self)
    }

    fn activated(&mut self, uid: &str) -> Result<Option<i64>, ServiceError> {
        KeyManager::activated(self, uid)
    }
}

/// Makes a key source for the KMIP settings in force (again after a reload changes them).
pub type KeySourceFactory = Arc<
    dyn Fn(&kmip::client::ClientConfig) -> Result<Box<dyn KeySource>, ServiceError> + Send + Sync,
>;

/// The daemon's factory: a [`KeyManager`] of the volume's own, audited on its behalf,
/// with `policy`.
pub fn kmip_source(audit: Arc<Audit>, volume: &str, policy: KeyPolicy) -> KeySourceFactory {
    let volume = volume.to_owned();
    Arc::new(move |cfg| {
        Ok(Box::new(
            KeyManager::for_servers(cfg.clone())?
                .with_audit(audit.clone(), Some(&volume))
                .with_policy(policy),
        ) as Box<dyn KeySource>)
    })
}

/// A session with the configured key servers.
pub struct KeyManager {
    client: Client,
    audit: Arc<Audit>,
    volume: Option<String>,
    policy: KeyPolicy,
}

impl KeyManager {
    /// A client for `config`'s servers (loads the client identity now, so a wrong
    /// passphrase shows before any connection).
    pub fn new(config: Config) -> Result<Self, ServiceError> {
        let policy = KeyPolicy {
            require_active: config.serve.require_active_key,
        };
        Ok(Self::for_servers(config.kmip)?.with_policy(policy))
    }

    /// A client for `kmip`'s servers.
    pub fn for_servers(kmip: kmip::client::ClientConfig) -> Result<Self, ServiceError> {
        Ok(Self {
            client: Client::new(kmip)?,
            audit: Arc::new(Audit::none()),
            volume: None,
            policy: KeyPolicy::default(),
        })
    }

    /// Uses `policy` for [`Self::fetch_usable`].
    pub fn with_policy(mut self, policy: KeyPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Records every request (server, operation, key, result, latency) in `audit`, on
    /// behalf of `volume`.
    pub fn with_audit(mut self, audit: Arc<Audit>, volume: Option<&str>) -> Self {
        self.audit = audit;
        self.volume = volume.map(str::to_owned);
        self
    }

    /// Runs one request, audited.
    fn audited<T>(
        &mut self,
        operation: &str,
        uid: Option<&str>,
        f: impl FnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let t = Instant::now();
        let r = f(&mut self.client);
        let server = self.client.server_info().map(|s| s.server.to_string());
        let result = match &r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        self.audit.request(
            self.volume.as_deref(),
            server,
            operation,
            uid,
            result,
            t.elapsed(),
        );
        r
    }

    /// The underlying client (Save and Test, the `kmip` commands).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The secret of `uid`. (The TLS library releases its record buffer, where the key
    /// was in the clear, as soon as the response has been read: the connection can stay.)
    pub fn fetch(&mut self, uid: &str) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        self.audited("get", Some(uid), |c| c.get_symmetric_key(uid))
            .map_err(|e| {
                ServiceError::kmip(
                    format!(
                        "fetching the volume's key {} from the KMIP server",
                        shown(uid)
                    ),
                    e,
                )
            })
    }

    /// The secret of `uid` once the server says its state is one the policy allows: a key
    /// revoked as Compromised is not brought into memory to unlock a volume, nor to start
    /// or resume a conversion of one.
    pub fn fetch_usable(&mut self, uid: &str) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        self.fetch_for(uid, KeyUse::Protect)
    }

    /// [`Self::fetch_usable`] for `what`.
    pub fn fetch_for(
        &mut self,
        uid: &str,
        what: KeyUse,
    ) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        let state = self.state(uid)?;
        if !self.policy.allows_for(state, what) {
            let gone = state == State::DESTROYED || state == State::DESTROYED_COMPROMISED;
            return Err(ServiceError::KeyNotUsable {
                uid: shown(uid).into_owned(),
                state: state_name(state),
                why: if gone {
                    "its material is gone"
                } else {
                    "only an Active key is used (require_active_key)"
                },
            });
        }
        self.fetch(uid)
    }

    /// Records the next requests on behalf of `volume` (a manager shared by the daemon's
    /// volumes).
    pub fn set_volume(&mut self, volume: &str) {
        self.volume = Some(volume.to_owned());
    }

    /// A new active AES-256 key named `name`.
    pub fn create(&mut self, name: &str) -> Result<NewKey, ServiceError> {
        let uid = self
            .audited("create", None, |c| c.create_aes_key(256, Some(name)))
            .map_err(|e| ServiceError::kmip("creating the key on the KMIP server", e))?;
        let got = self
            .audited("activate", Some(&uid), |c| c.activate(&uid))
            .map_err(|e| ServiceError::kmip("activating the new key", e))
            .and_then(|()| self.fetch(&uid));
        match got {
            Ok(secret) => Ok(NewKey {
                server: self.client.server_info().map(|s| s.server.to_string()),
                uid,
                secret,
            }),
            Err(e) => Err(self.discard(&uid, e)),
        }
    }

    /// Revokes and destroys `uid`, a key that protects nothing because `error` stopped what
    /// it was made for; the error, with what became of the key.
    pub fn discard(&mut self, uid: &str, error: ServiceError) -> ServiceError {
        let cleanup = self
            .audited("revoke", Some(uid), |c| {
                c.revoke(
                    uid,
                    RevocationReasonCode::CESSATION_OF_OPERATION,
                    Some("atrest: the operation it was made for did not happen"),
                )
            })
            .and_then(|()| self.audited("destroy", Some(uid), |c| c.destroy(uid)));
        ServiceError::KeyDiscarded {
            error: Box::new(error),
            cleanup: match cleanup {
                Ok(()) => format!("the unused key {uid} was revoked and destroyed"),
                Err(c) => format!("the unused key {uid} could not be removed from the server: {c}"),
            },
        }
    }

    /// Revokes `uid` with `reason` unless `keep`; says how it was left. Revoked, not
    /// destroyed: backups made under it stay readable.
    pub fn retire(
        &mut self,
        uid: &str,
        reason: RevocationReasonCode,
        message: &str,
        keep: bool,
    ) -> Result<RetiredKey, ServiceError> {
        if keep {
            return Ok(RetiredKey {
                uid: uid.to_owned(),
                fate: "kept",
                reason: None,
                state: None,
            });
        }
        // Never revoke a key twice: a second revocation replaces the first one's reason on
        // the server ("Key Compromise" became "Cessation of Operation" after a decrypt).
        match self.state(uid) {
            Ok(State::ACTIVE) | Err(_) => {}
            Ok(s) => {
                return Ok(RetiredKey {
                    uid: uid.to_owned(),
                    fate: "already",
                    reason: None,
                    state: Some(state_name(s)),
                })
            }
        }
        self.audited("revoke", Some(uid), |c| {
            c.revoke(uid, reason, Some(message))
        })
        .map_err(|e| ServiceError::kmip(format!("revoking the old key {}", shown(uid)), e))?;
        Ok(RetiredKey {
            uid: uid.to_owned(),
            state: None,
            fate: "revoked",
            reason: Some(if reason == RevocationReasonCode::SUPERSEDED {
                "Superseded"
            } else {
                "Cessation of Operation"
            }),
        })
    }

    /// The key's lifecycle state on the server.
    pub fn state(&mut self, uid: &str) -> Result<State, ServiceError> {
        self.audited("get_attributes", Some(uid), |c| c.state(uid))
            .map_err(|e| ServiceError::kmip(format!("asking the state of key {}", shown(uid)), e))
    }

    /// When the key was activated (Activation Date, else Initial Date), seconds since the
    /// epoch.
    pub fn activated(&mut self, uid: &str) -> Result<Option<i64>, ServiceError> {
        let dates = [
            kmip::ttlv::Tag::ACTIVATION_DATE,
            kmip::ttlv::Tag::INITIAL_DATE,
        ];
        let attrs = self
            .audited("get_attributes", Some(uid), |c| {
                c.get_attributes(uid, &dates)
            })
            .map_err(|e| {
                ServiceError::kmip(format!("asking the dates of key {}", shown(uid)), e)
            })?;
        Ok(dates
            .iter()
            .find_map(|t| match attrs.get(*t).map(|a| &a.value) {
                Some(kmip::ttlv::Value::DateTime(s)) => Some(*s),
                _ => None,
            }))
    }

    /// The server the last request went to, if one answered.
    pub fn server(&self) -> Option<String> {
        self.client.server_info().map(|s| s.server.to_string())
    }
}
