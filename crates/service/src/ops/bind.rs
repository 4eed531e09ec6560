//! `atrest bind` and `atrest unbind`: a LUKS2 volume that atrest did not make (cryptsetup's)
//! enrolled under a new KMIP key, its existing keyslots kept; and the enrolment removed
//! again. The disk side is `volume::bind`; here are the KMIP key's life (created only once
//! the passphrase has proven itself, removed again if the header cannot take it, retired
//! at unbind) and the reports.

use kmip::enums::RevocationReasonCode;
use volume::convert::{self, Found};
use volume::text::shown;
use zeroize::Zeroizing;

use crate::device::{Device, Location};
use crate::error::ServiceError;
use crate::keys::{KeyManager, RetiredKey};
use crate::refusal::Refusal;

/// What `atrest bind` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BindReport {
    /// The new KMIP key.
    pub key_uid: String,
    /// The keyslot it opens.
    pub keyslot: String,
    /// atrest's token.
    pub token: String,
    /// For a person.
    pub message: String,
}

/// What `atrest unbind` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnbindReport {
    /// The KMIP key the volume named.
    pub key_uid: String,
    /// The keyslots removed.
    pub keyslots: Vec<String>,
    /// What became of the key.
    pub retired: Option<RetiredKey>,
    /// For a person.
    pub message: String,
}

/// Enrolls the LUKS2 volume at `loc`: `passphrase` (an existing passphrase or key file's
/// bytes) must open one of its keyslots; then a KMIP key is created and activated, and a
/// keyslot it opens is added with atrest's token. The passphrase keeps working.
pub fn bind(
    kms: &mut KeyManager,
    loc: &Location,
    passphrase: &Zeroizing<Vec<u8>>,
    key_name: Option<&str>,
) -> Result<BindReport, ServiceError> {
    let dev = Device::open(loc, false)?;
    match convert::inspect(dev.devices())? {
        Found::OtherLuks => {}
        Found::Volume { key_uid, .. } => {
            return Err(volume::volume::VolumeError::AlreadyBound {
                key_uid: shown(&key_uid).into_owned(),
            }
            .into())
        }
        Found::Plain => {
            return Err(Refusal::NotLuks2ToBind {
                path: loc.path.clone(),
            }
            .into())
        }
        Found::InProgress(p) => {
            return Err(
                volume::volume::VolumeError::ConversionInProgress { kind: Some(p.kind) }.into(),
            )
        }
    }
    // The passphrase first: a wrong one makes no key on the server.
    let proven = volume::bind::prove(dev.devices(), passphrase)?;
    let name = key_name.map_or_else(|| format!("atrest-{}", dev.name()), str::to_owned);
    let key = kms.create(&name)?;
    let bound = match volume::bind::bind(
        dev.devices(),
        &proven,
        &key.secret,
        &key.uid,
        key.server.as_deref(),
    ) {
        Ok(b) => b,
        Err(e) => return Err(kms.discard(&key.uid, e.into())),
    };
    let message = format!(
        "bound: keyslot {} now opens with KMIP key {} (XTS-AES-{}); the existing keyslots and their passphrases still work",
        bound.keyslot,
        shown(&key.uid),
        bound.key_len * 4
    );
    Ok(BindReport {
        key_uid: key.uid.clone(),
        keyslot: bound.keyslot,
        token: bound.token,
        message,
    })
}

/// Removes atrest's keyslot and token from the volume at `loc` (refused when they are the
/// only way in), then revokes the KMIP key (Cessation of Operation) unless `keep`.
pub fn unbind(
    kms: &mut KeyManager,
    loc: &Location,
    keep: bool,
) -> Result<UnbindReport, ServiceError> {
    let dev = Device::open(loc, false)?;
    let u = volume::bind::unbind(dev.devices())?;
    let retired = kms.retire(
        &u.key_uid,
        RevocationReasonCode::CESSATION_OF_OPERATION,
        "atrest unbind: the volume no longer uses this key",
        keep,
    )?;
    let message = format!(
        "unbound: keyslot {} and atrest's token removed; {}",
        u.keyslots.join(", "),
        retired.sentence().replace("the old key", "its KMIP key")
    );
    Ok(UnbindReport {
        key_uid: u.key_uid,
        keyslots: u.keyslots,
        retired: Some(retired),
        message,
    })
}
