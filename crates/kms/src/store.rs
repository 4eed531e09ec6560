//! The object store: one file per managed object, replaced atomically, key material sealed
//! under the master key.
//!
//! Crash safety: an object is written to `objects/<uid>.json.tmp`, fsynced, renamed over
//! `objects/<uid>.json`, and the directory is fsynced, all before the server answers. A
//! `kill -9` (or power loss) at any point leaves either the old file or the new one, never a
//! torn one, and a change the client saw acknowledged is on disk. Leftover `.tmp` files are
//! removed at start. No crate fitted better: an embedded database would do the same with far
//! more code for a store that holds a few hundred development keys.
//!
//! Confidentiality: the object itself (the Key Block with the key bytes) is stored only as
//! AES-256-GCM ciphertext under `master.key` (32 random bytes, mode 0600), with the object's
//! identifier as associated data so a sealed blob cannot be moved to another identifier. A copy
//! of `objects/` alone reveals no key.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kmip::enums::{ObjectType, State};
use kmip::message::{Attribute, Attributes, ProtocolVersion};
use kmip::ttlv::{self, Item, Tag, Value};
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The store's failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A stored object is damaged.
    #[error("{}: damaged object file: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The master key file is missing, the wrong size, or readable by others.
    #[error("{}: {why}", path.display())]
    MasterKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Sealing or unsealing failed (a wrong master key, or tampering).
    #[error("object {uid}: its sealed key material does not open with this master key")]
    Unseal {
        /// The object.
        uid: String,
    },
}

/// One managed object.
#[derive(Debug, Clone)]
pub struct Record {
    /// Unique Identifier.
    pub uid: String,
    /// The identity that created it (its client certificate's subject CN).
    pub owner: String,
    /// Object Type.
    pub object_type: ObjectType,
    /// Every attribute, State and dates included.
    pub attributes: Attributes,
    /// The sealed object item; `None` once destroyed.
    sealed: Option<Vec<u8>>,
}

impl Record {
    /// The object's State.
    pub fn state(&self) -> State {
        self.attributes
            .get(Tag::STATE)
            .and_then(Attribute::as_enumeration)
            .map_or(State::PRE_ACTIVE, State)
    }

    /// Sets (or replaces) a single-valued standard attribute.
    pub fn set(&mut self, tag: Tag, value: Value) {
        match self
            .attributes
            .list
            .iter_mut()
            .find(|a| a.tag() == Some(tag))
        {
            Some(a) => a.value = value,
            None => self.attributes.list.push(Attribute::new(tag, value)),
        }
    }

    /// True while the key material is kept.
    pub fn has_material(&self) -> bool {
        self.sealed.is_some()
    }

    /// Drops the key material (Destroy).
    pub fn destroy_material(&mut self) {
        self.sealed = None;
    }
}

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    format: u32,
    uid: String,
    owner: String,
    object_type: u32,
    /// The attributes as a KMIP 2.x `Attributes` structure, TTLV in hex.
    attributes: String,
    /// nonce ‖ ciphertext ‖ tag of the object item's TTLV, in hex.
    sealed: Option<String>,
}

const FORMAT: u32 = 1;
const NONCE: usize = 12;
const TAG_LEN: usize = 16;

/// The objects of one server directory.
pub struct Store {
    dir: PathBuf,
    master: Zeroizing<Vec<u8>>,
    objects: BTreeMap<String, Record>,
}

impl Store {
    /// Opens `dir/objects` with the master key in `dir/master.key`, creating both if absent.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let objects_dir = dir.join("objects");
        crate::setup::private_dir(&objects_dir).map_err(|e| StoreError::Io {
            path: objects_dir.clone(),
            source: std::io::Error::other(e.why),
        })?;
        let master = master_key(&dir.join("master.key"))?;
        let mut objects = BTreeMap::new();
        let entries = fs::read_dir(&objects_dir).map_err(|source| StoreError::Io {
            path: objects_dir.clone(),
            source,
        })?;
        for e in entries {
            let path = e
                .map_err(|source| StoreError::Io {
                    path: objects_dir.clone(),
                    source,
                })?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                // A write that never reached its rename: it was not acknowledged.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let r = read_record(&path)?;
            objects.insert(r.uid.clone(), r);
        }
        Ok(Self {
            dir: objects_dir,
            master,
            objects,
        })
    }

    /// The object `uid`.
    pub fn get(&self, uid: &str) -> Option<&Record> {
        self.objects.get(uid)
    }

    /// Every object, in identifier order.
    pub fn all(&self) -> impl Iterator<Item = &Record> {
        self.objects.values()
    }

    /// A new record for a new object, with its object sealed; not yet stored.
    pub fn new_record(
        &self,
        owner: &str,
        object_type: ObjectType,
        attributes: Attributes,
        object: &Item,
    ) -> Result<Record, StoreError> {
        let uid = new_uid();
        let sealed = self.seal(&uid, object)?;
        Ok(Record {
            uid,
            owner: owner.to_owned(),
            object_type,
            attributes,
            sealed: Some(sealed),
        })
    }

    /// The object item of `r`, unsealed.
    pub fn object(&self, r: &Record) -> Result<Option<Item>, StoreError> {
        let Some(sealed) = &r.sealed else {
            return Ok(None);
        };
        let bad = || StoreError::Unseal { uid: r.uid.clone() };
        if sealed.len() < NONCE + TAG_LEN {
            return Err(bad());
        }
        let (nonce, rest) = sealed.split_at(NONCE);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let plain = Zeroizing::new(
            decrypt_aead(
                Cipher::aes_256_gcm(),
                &self.master,
                Some(nonce),
                r.uid.as_bytes(),
                ct,
                tag,
            )
            .map_err(|_| bad())?,
        );
        ttlv::decode(&plain).map(Some).map_err(|_| bad())
    }

    fn seal(&self, uid: &str, object: &Item) -> Result<Vec<u8>, StoreError> {
        let plain = Zeroizing::new(ttlv::encode(object));
        let mut nonce = [0u8; NONCE];
        openssl::rand::rand_bytes(&mut nonce).map_err(|e| StoreError::Unseal {
            uid: format!("{uid} ({e})"),
        })?;
        let mut tag = [0u8; TAG_LEN];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.master,
            Some(&nonce),
            uid.as_bytes(),
            &plain,
            &mut tag,
        )
        .map_err(|e| StoreError::Unseal {
            uid: format!("{uid} ({e})"),
        })?;
        Ok([&nonce[..], &ct, &tag].concat())
    }

    /// Stores `r` durably (see the module comment), then makes it visible.
    pub fn put(&mut self, r: Record) -> Result<(), StoreError> {
        let stored = StoredRecord {
            format: FORMAT,
            uid: r.uid.clone(),
            owner: r.owner.clone(),
            object_type: r.object_type.0,
            attributes: hex::encode(ttlv::encode(&r.attributes_item(ProtocolVersion::V2_1))),
            sealed: r.sealed.as_ref().map(hex::encode),
        };
        let text = serde_json::to_vec_pretty(&stored).unwrap_or_default();
        let path = self.dir.join(format!("{}.json", r.uid));
        let tmp = self.dir.join(format!("{}.json.tmp", r.uid));
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| StoreError::Io { path: p, source }
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        self.objects.insert(r.uid.clone(), r);
        Ok(())
    }
}

impl Record {
    fn attributes_item(&self, v: ProtocolVersion) -> Item {
        Item::structure(
            Tag::ATTRIBUTES,
            self.attributes.list.iter().map(|a| a.to_item(v)).collect(),
        )
    }
}

fn read_record(path: &Path) -> Result<Record, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let text = fs::read(path).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    let s: StoredRecord = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if s.format != FORMAT {
        return Err(corrupt(format!("unknown format {}", s.format)));
    }
    let attrs = hex::decode(&s.attributes).map_err(|e| corrupt(e.to_string()))?;
    let attrs = ttlv::decode(&attrs).map_err(|e| corrupt(e.to_string()))?;
    let list = attrs
        .children()
        .iter()
        .map(Attribute::from_item)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(e.to_string()))?;
    let sealed = s
        .sealed
        .map(|h| hex::decode(h).map_err(|e| corrupt(e.to_string())))
        .transpose()?;
    Ok(Record {
        uid: s.uid,
        owner: s.owner,
        object_type: ObjectType(s.object_type),
        attributes: Attributes::new(list),
        sealed,
    })
}

fn master_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let err = |why: String| StoreError::MasterKey {
        path: path.to_owned(),
        why,
    };
    if !path.exists() {
        let mut key = Zeroizing::new(vec![0u8; 32]);
        openssl::rand::rand_bytes(&mut key).map_err(|e| err(e.to_string()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        f.write_all(&key)
            .and_then(|()| f.sync_all())
            .map_err(|e| err(e.to_string()))?;
        return Ok(key);
    }
    let meta = fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "readable by group or others (mode {mode:03o}); run: chmod 600 {}",
            path.display()
        )));
    }
    let key = Zeroizing::new(fs::read(path).map_err(|e| err(e.to_string()))?);
    if key.len() != 32 {
        return Err(err(format!("must hold 32 bytes, holds {}", key.len())));
    }
    Ok(key)
}

/// A random version-4 UUID.
fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store directory not created yet, in a scratch folder that is removed when the
    /// guard drops, also when the test fails.
    fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::Builder::new()
            .prefix(&format!("atrest-store-{name}-"))
            .tempdir()
            .unwrap();
        let d = t.path().join("store");
        (t, d)
    }

    #[test]
    fn objects_survive_reopening_and_key_bytes_are_not_on_disk() {
        let (_t, d) = tmp("reopen");
        let key = vec![0x5Au8; 32];
        let object = Item::structure(
            Tag::SYMMETRIC_KEY,
            vec![Item::bytes(Tag::KEY_MATERIAL, key.clone())],
        );
        let uid = {
            let mut s = Store::open(&d).unwrap();
            let r = s
                .new_record(
                    "alice",
                    ObjectType::SYMMETRIC_KEY,
                    Attributes::default(),
                    &object,
                )
                .unwrap();
            let uid = r.uid.clone();
            s.put(r).unwrap();
            uid
        };
        let s = Store::open(&d).unwrap();
        let r = s.get(&uid).unwrap();
        assert_eq!(r.owner, "alice");
        assert_eq!(s.object(r).unwrap().unwrap(), object);
        let file = fs::read(d.join("objects").join(format!("{uid}.json"))).unwrap();
        assert!(!hex::encode(&file).contains(&hex::encode(&key)));
        assert!(!String::from_utf8_lossy(&file).contains(&hex::encode(&key)));
    }

    #[test]
    fn a_wrong_master_key_or_a_moved_blob_does_not_open() {
        let (_t, d) = tmp("master");
        let object = Item::structure(Tag::SYMMETRIC_KEY, vec![]);
        let mut s = Store::open(&d).unwrap();
        let r = s
            .new_record(
                "a",
                ObjectType::SYMMETRIC_KEY,
                Attributes::default(),
                &object,
            )
            .unwrap();
        let mut moved = r.clone();
        moved.uid = "other".into();
        assert!(matches!(s.object(&moved), Err(StoreError::Unseal { .. })));
        s.put(r.clone()).unwrap();
        drop(s);
        fs::write(d.join("master.key"), [1u8; 32]).unwrap();
        let s = Store::open(&d).unwrap();
        assert!(matches!(
            s.object(s.get(&r.uid).unwrap()),
            Err(StoreError::Unseal { .. })
        ));
        fs::set_permissions(d.join("master.key"), fs::Permissions::from_mode(0o644)).unwrap();
        let e = Store::open(&d).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_leftover_temporary_file_is_ignored_and_a_damaged_file_is_named() {
        let (_t, d) = tmp("damaged");
        let s = Store::open(&d).unwrap();
        drop(s);
        fs::write(d.join("objects/x.json.tmp"), b"half").unwrap();
        let s = Store::open(&d).unwrap();
        assert_eq!(s.all().count(), 0);
        assert!(!d.join("objects/x.json.tmp").exists());
        fs::write(d.join("objects/y.json"), b"{").unwrap();
        let e = Store::open(&d).err().unwrap().to_string();
        assert!(e.contains("y.json") && e.contains("damaged"), "{e}");
    }
}
