//! What a SIGHUP changes ([`plan`], a pure function of the two configurations and what
//! runs), and what it must prove before new KMIP settings take effect: that they still reach
//! every served volume's key. An outside run reloaded onto a client certificate of another
//! identity, and every serving volume locked at its next key check with "the key no longer
//! exists". Now the new settings do what Save and Test does (a TLS connection, the KMIP
//! credential, a real request) for each served key, and are refused with the volume, the
//! key and the reason if one fails: the old settings keep serving.

use kmip::enums::State as KeyState;
use volume::text::shown;

use std::collections::BTreeMap;

use crate::config::{Config, ServeConfig, VolumeConfig};
use crate::keys::{state_name, KeyManager, KeyPolicy};

/// `Ok` when `new` sees every `(volume, key)` of `served` in a state the policy uses; the
/// first failure otherwise, in words.
pub(super) fn check_settings(new: &Config, served: &[(String, String)]) -> Result<(), String> {
    let policy = KeyPolicy {
        require_active: new.serve.require_active_key,
    };
    // A reload is judged now, on one round: the operator waits for its answer.
    let kmip = kmip::client::ClientConfig {
        busy_retry: std::time::Duration::ZERO,
        ..new.kmip.clone()
    };
    let mut kms = KeyManager::for_servers(kmip)
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

/// What a reload does to the running volumes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Plan {
    /// Volumes that go on as they are (their table is unchanged, and so is `[serve]`).
    pub keep: Vec<String>,
    /// Volumes taken down: removed, changed, or every one when `[serve]` changed.
    pub stop: Vec<String>,
    /// Volumes started: new, changed, or every one when `[serve]` changed.
    pub start: Vec<VolumeConfig>,
    /// Lines for the operator about settings a reload cannot change.
    pub notices: Vec<String>,
    /// Kept volumes whose `serve_plaintext` changed, and its new value: told in place, so
    /// that turning it off after an encrypt does not close the exports.
    pub serve_plaintext: Vec<(String, bool)>,
}

/// The plan for a reload from `old` to `new` `[serve]` settings and `volumes`, with the
/// volumes in `running` (by name, the table each was started with). New KMIP settings do not
/// restart a volume (a serving volume keeps its key and exports through a certificate
/// rotation); new `[serve]` settings restart every one.
pub(super) fn plan(
    old: &ServeConfig,
    new: &ServeConfig,
    volumes: &[VolumeConfig],
    running: &BTreeMap<String, VolumeConfig>,
) -> Plan {
    let serve_changed = new != old;
    // `serve_plaintext` is told to a running volume; any other change restarts it.
    let same = |a: &VolumeConfig, b: &VolumeConfig| {
        a == &VolumeConfig {
            serve_plaintext: a.serve_plaintext,
            ..b.clone()
        }
    };
    let keep: Vec<String> = running
        .iter()
        .filter(|(name, cfg)| {
            !serve_changed && volumes.iter().any(|v| &v.name == *name && same(v, cfg))
        })
        .map(|(n, _)| n.clone())
        .collect();
    let serve_plaintext = volumes
        .iter()
        .filter(|v| keep.contains(&v.name))
        .filter(|v| {
            running
                .get(&v.name)
                .is_some_and(|r| r.serve_plaintext != v.serve_plaintext)
        })
        .map(|v| (v.name.clone(), v.serve_plaintext))
        .collect();
    let stop = running
        .keys()
        .filter(|n| !keep.contains(n))
        .cloned()
        .collect();
    let start = volumes
        .iter()
        .filter(|v| !keep.contains(&v.name))
        .cloned()
        .collect();
    let mut notices = Vec::new();
    for (what, was, now) in [
        ("api_socket", &old.api_socket, &new.api_socket),
        ("audit_log", &old.audit_log, &new.audit_log),
    ] {
        if was != now {
            notices.push(format!(
                "SIGHUP: {what} stays {} until atrest serve restarts",
                was.display()
            ));
        }
    }
    Plan {
        keep,
        stop,
        start,
        notices,
        serve_plaintext,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str, nbd: &str) -> VolumeConfig {
        VolumeConfig {
            name: name.into(),
            path: format!("/data/{name}.img").into(),
            header: None,
            nbd: Some(nbd.into()),
            fuse: None,
            dm: None,
            discard: false,
            serve_plaintext: false,
        }
    }

    fn running(v: &[VolumeConfig]) -> BTreeMap<String, VolumeConfig> {
        v.iter().map(|v| (v.name.clone(), v.clone())).collect()
    }

    #[test]
    fn unchanged_volumes_are_kept_changed_ones_restarted_removed_ones_stopped() {
        let serve = ServeConfig::default();
        let (a, b, c) = (
            vol("a", "unix:/run/a"),
            vol("b", "unix:/run/b"),
            vol("c", "unix:/run/c"),
        );
        let b2 = vol("b", "unix:/run/b2");
        let p = plan(
            &serve,
            &serve,
            &[a.clone(), b2.clone()],
            &running(&[a, b, c]),
        );
        assert_eq!(p.keep, ["a"]);
        assert_eq!(p.stop, ["b", "c"]);
        assert_eq!(p.start, [b2]);
        assert!(p.notices.is_empty());
    }

    #[test]
    fn new_serve_settings_restart_every_volume_and_unchangeable_ones_are_said() {
        let old = ServeConfig::default();
        let new = ServeConfig {
            key_check_secs: old.key_check_secs + 1,
            audit_log: "/elsewhere/audit.jsonl".into(),
            ..old.clone()
        };
        let a = vol("a", "unix:/run/a");
        let p = plan(
            &old,
            &new,
            std::slice::from_ref(&a),
            &running(std::slice::from_ref(&a)),
        );
        assert!(p.keep.is_empty());
        assert_eq!(p.stop, ["a"]);
        assert_eq!(p.start, [a]);
        assert_eq!(p.notices.len(), 1);
        assert!(p.notices[0].contains("audit_log stays /var/log/atrest/audit.jsonl"));
    }

    #[test]
    fn serve_plaintext_is_told_to_a_kept_volume_not_restarted() {
        let serve = ServeConfig::default();
        let a = vol("a", "unix:/run/a");
        let on = VolumeConfig {
            serve_plaintext: true,
            ..a.clone()
        };
        let p = plan(&serve, &serve, std::slice::from_ref(&a), &running(&[on]));
        assert_eq!(p.keep, ["a"]);
        assert!(p.stop.is_empty() && p.start.is_empty());
        assert_eq!(p.serve_plaintext, [("a".to_owned(), false)]);
        // With another change too, the volume restarts with the new table.
        let moved = VolumeConfig {
            nbd: Some("unix:/run/a2".into()),
            ..a.clone()
        };
        let on = VolumeConfig {
            serve_plaintext: true,
            ..a
        };
        let p = plan(
            &serve,
            &serve,
            std::slice::from_ref(&moved),
            &running(&[on]),
        );
        assert_eq!(p.stop, ["a"]);
        assert_eq!(p.start, [moved]);
        assert!(p.serve_plaintext.is_empty());
    }

    #[test]
    fn a_reload_of_the_same_configuration_changes_nothing() {
        let serve = ServeConfig::default();
        let v = [vol("a", "unix:/run/a"), vol("b", "127.0.0.1:10809")];
        let p = plan(&serve, &serve, &v, &running(&v));
        assert_eq!(p.keep, ["a", "b"]);
        assert!(p.stop.is_empty() && p.start.is_empty() && p.notices.is_empty());
    }
}
