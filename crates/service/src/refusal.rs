//! Why an operation does not apply to what it was given, by cause. Each variant names the
//! device and what to do; callers (the CLI, the daemon, the coming web page, the tests)
//! match the variant, never the text.

use std::path::PathBuf;

use volume::convert::Kind;
use volume::text::shown;

/// An operation refused before it touched anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No LUKS header where one is needed.
    #[error("{} is not an atrest volume (no LUKS header{}): nothing to {action}", path.display(), if *in_header_file { " in the header file" } else { "" })]
    NotAVolume {
        /// The device (or header file).
        path: PathBuf,
        /// The header was looked for in a detached header file.
        in_header_file: bool,
        /// What the operator asked ("open", "decrypt", "rekey").
        action: &'static str,
    },
    /// A detached header file without a header (a finished decrypt wipes it).
    #[error("{} holds no header: nothing to decrypt (a finished decrypt wipes and removes it)", path.display())]
    NoHeaderInFile {
        /// The header file.
        path: PathBuf,
    },
    /// A LUKS volume without atrest's token.
    #[error("{} holds a LUKS volume that atrest did not make (no atrest token naming its KMIP key){}", path.display(), match action {
        ForeignAction::Open => "",
        ForeignAction::Encrypt => ": it is encrypted already",
        ForeignAction::Decrypt => ": decrypt it with cryptsetup",
        ForeignAction::Rekey => ": change its keys with cryptsetup",
    })]
    ForeignLuks {
        /// The device.
        path: PathBuf,
        /// What the operator asked.
        action: ForeignAction,
    },
    /// `encrypt` of a finished atrest volume.
    #[error("{} is already an atrest volume (KMIP key {}); nothing to encrypt", path.display(), shown(key_uid))]
    AlreadyEncrypted {
        /// The device.
        path: PathBuf,
        /// Its key.
        key_uid: String,
    },
    /// `bind` of a device with no LUKS2 header.
    #[error("{} holds no LUKS2 volume: `atrest bind` enrolls one that cryptsetup made; to encrypt plaintext, use `atrest encrypt`", path.display())]
    NotLuks2ToBind {
        /// The device.
        path: PathBuf,
    },
    /// `encrypt --header` of a device that holds a LUKS header itself.
    #[error("{} holds a LUKS header itself: it is encrypted already", path.display())]
    HeaderOnDataDevice {
        /// The data device.
        path: PathBuf,
    },
    /// Another conversion (or one of another kind) has not finished.
    #[error("an {} of {} was interrupted and has not finished: run `{}` to complete it first", kind.noun(), path.display(), kind.command())]
    ConversionInProgress {
        /// The device.
        path: PathBuf,
        /// Which conversion.
        kind: Kind,
    },
    /// `status` of a device between a conversion's header-less steps.
    #[error("{}: an atrest {} was interrupted while the device had no header (KMIP key {}); run `{}` again to finish it", path.display(), kind.noun(), if key_uid.is_empty() { "not needed".into() } else { shown(key_uid) }, kind.command())]
    InterruptedWithoutHeader {
        /// The device.
        path: PathBuf,
        /// Which conversion.
        kind: Kind,
        /// Its key, if the park record names one.
        key_uid: String,
    },
    /// A rewrap of a direct-mode volume.
    #[error("{} is in direct mode: its KMIP key is the volume key, so a new key means re-encrypting every sector: rekey it with --deep (`atrest rekey --deep`, or through the daemon `atrest ctl rekey --deep NAME` or the web page's \"Rotate key and re-encrypt\")", path.display())]
    DirectModeNeedsDeepRekey {
        /// The device.
        path: PathBuf,
    },
    /// A rewrap away from a compromised key.
    #[error("the KMIP key {} of {} is Compromised: a rewrap would keep the volume key it protected, which the compromise may have exposed; rekey it with --deep, every sector re-encrypted under a new volume key (`atrest rekey --deep`, or through the daemon `atrest ctl rekey --deep NAME` or the web page's \"Rotate key and re-encrypt\")", shown(key_uid), path.display())]
    CompromisedNeedsDeepRekey {
        /// The device.
        path: PathBuf,
        /// The compromised key.
        key_uid: String,
    },
    /// XTS-AES-256 in direct mode.
    #[error("direct mode uses the KMIP key as the volume key, and KMIP AES keys are at most 256 bits: XTS-AES-256 needs wrapped mode")]
    Aes256NeedsWrapped,
    /// A sector size atrest does not write.
    #[error("sector size {0} (use 512 or 4096)")]
    SectorSize(u32),
    /// `--header` together with `--reduce-device-size`.
    #[error("--header and --reduce-device-size exclude each other: with a detached header the data stays where it is")]
    HeaderWithReduce,
    /// A block device without room for the header area.
    #[error("{} is a block device, which cannot grow: give --reduce-device-size 32M (its last 32 MiB unused: shrink the filesystem first) or --header FILE (a detached header; the data stays where it is)", path.display())]
    BlockDeviceCannotGrow {
        /// The device.
        path: PathBuf,
    },
    /// `--reduce-device-size` as large as the device.
    #[error("--reduce-device-size {reduce} is not smaller than the device ({len} bytes)")]
    ReduceTooLarge {
        /// Bytes asked for.
        reduce: u64,
        /// The device's size.
        len: u64,
    },
    /// Data that is not a whole number of sectors.
    #[error("{size} bytes of data are not a whole number of {sector}-byte sectors: pad the image (e.g. `truncate -s %{sector}`){}", if *sector == 4096 { " or use --sector-size 512" } else { "" })]
    NotWholeSectors {
        /// The data's size.
        size: u64,
        /// The sector size asked for.
        sector: u32,
    },
    /// `format` of a device that holds data.
    #[error("{} holds {what}; formatting would destroy it. To keep the data, encrypt it in place with `atrest encrypt`; to destroy it, give --force", path.display())]
    WouldDestroyData {
        /// The device.
        path: PathBuf,
        /// What it holds.
        what: String,
    },
    /// `format` of a device too small for a volume.
    #[error("{} holds {len} bytes: an atrest volume needs more than {header_area} bytes of header area and a data area of whole {sector}-byte sectors", path.display())]
    TooSmall {
        /// The device.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The header area.
        header_area: u64,
        /// The sector size asked for.
        sector: u32,
    },
    /// A header file smaller than a header.
    #[error("{} is not an atrest header file (smaller than {size} bytes)", path.display())]
    NotAHeaderFile {
        /// The file.
        path: PathBuf,
        /// The size a header file has.
        size: u64,
    },
    /// The API socket of a running daemon.
    #[error("{} is in use: another atrest serve is running", path.display())]
    ApiInUse {
        /// The socket.
        path: PathBuf,
    },
    /// A job ended because the daemon stops.
    #[error("stopped with the daemon")]
    DaemonStopping,
}

/// What was asked of a LUKS volume atrest did not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignAction {
    /// Open or serve it.
    Open,
    /// Encrypt it.
    Encrypt,
    /// Decrypt it.
    Decrypt,
    /// Rekey it.
    Rekey,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Device, Location};
    use crate::error::ServiceError;
    use crate::ops::convert::{Cipher, KeySpec};

    fn refusal(e: ServiceError) -> Refusal {
        match e {
            ServiceError::Refused(r) => r,
            other => panic!("not a refusal: {other}"),
        }
    }

    #[test]
    fn key_specs_that_cannot_work_are_refused_by_cause() {
        let spec = KeySpec {
            mode: volume::volume::KeyMode::Direct,
            cipher: Cipher::XtsAes256,
            ..KeySpec::default()
        };
        assert!(matches!(
            refusal(spec.check().unwrap_err()),
            Refusal::Aes256NeedsWrapped
        ));
        let spec = KeySpec {
            sector_size: 1024,
            ..KeySpec::default()
        };
        assert!(matches!(
            refusal(spec.check().unwrap_err()),
            Refusal::SectorSize(1024)
        ));
    }

    #[test]
    fn a_plain_file_is_not_a_volume_to_open() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("plain.img");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let loc = Location {
            path: path.clone(),
            header: None,
        };
        let dev = Device::open(&loc, false).unwrap();
        let r = refusal(crate::ops::open::key_of(&dev).unwrap_err());
        assert!(
            matches!(&r, Refusal::NotAVolume { path: p, in_header_file: false, action: "open" } if *p == path),
            "{r:?}"
        );
        assert!(r.to_string().contains("nothing to open"));
    }
}
