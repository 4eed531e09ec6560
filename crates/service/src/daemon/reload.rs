//! What a SIGHUP must prove before new KMIP settings take effect: that they still reach
//! every served volume's key. An outside run reloaded onto a client certificate of another
//! identity, and every serving volume locked at its next key check with "the key no longer
//! exists". Now the new settings do what Save and Test does (a TLS connection, the KMIP
//! credential, a real request) for each served key, and are refused with the volume, the
//! key and the reason if one fails: the old settings keep serving.

use kmip::enums::State as KeyState;
use volume::text::shown;

use crate::config::Config;
use crate::keys::{state_name, KeyManager, KeyPolicy};

/// `Ok` when `new` sees every `(volume, key)` of `served` in a state the policy uses; the
/// first failure otherwise, in words.
pub(super) fn check_settings(new: &Config, served: &[(String, String)]) -> Result<(), String> {
    let policy = KeyPolicy {
        require_active: new.serve.require_active_key,
    };
    let mut kms = KeyManager::for_servers(new.kmip.clone())
        .map_err(|e| format!("the new client identity cannot be loaded: {e}"))?;
    for (volume, uid) in served {
        match kms.state(uid) {
            Ok(s) if policy.allows(s) => {}
            Ok(s) if s == KeyState::DESTROYED || s == KeyState::DESTROYED_COMPROMISED => {
                return Err(format!(
                    "volume {volume}: its key {} is {} on the key server",
                    shown(uid),
                    state_name(s)
                ))
            }
            Ok(s) => {
                return Err(format!(
                    "volume {volume}: its key {} is {} on the key server, and only an Active key is used (require_active_key)",
                    shown(uid),
                    state_name(s)
                ))
            }
            Err(e) if super::worker::is_gone(&e) => {
                return Err(format!(
                    "volume {volume}: its key {} is not found on the key server for the new client identity: the new certificate or username is not the one that owns the volumes' keys (or it has not been granted access to them)",
                    shown(uid)
                ))
            }
            Err(e) => return Err(format!("volume {volume}: {e}")),
        }
    }
    Ok(())
}
