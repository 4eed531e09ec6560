//! `volume::bind` against volumes stock cryptsetup made (issue 23), and what an outside
//! review of it found: a bind on a header with 256 KiB of metadata put its keyslot inside
//! the header copies, and a rewrap of a bound volume removed the operator's passphrase
//! keyslot. Each volume is checked with cryptsetup afterwards: it must still read the
//! header, and every passphrase that should open the volume must.

mod common;

use common::cryptsetup;
use std::path::{Path, PathBuf};

use volume::backend::FileBackend;
use volume::convert::{self, Devices};
use volume::luks2::header;

const SECRET: [u8; 32] = [0x5a; 32];
const NEW: [u8; 32] = [0xa5; 32];

/// A cryptsetup volume with `metadata` bytes of metadata, opened by `pass`.
fn made_by_cryptsetup(dir: &Path, metadata: &str, pass: &Path) -> PathBuf {
    let img = dir.join(format!("cs-{metadata}.img"));
    std::fs::File::create(&img)
        .unwrap()
        .set_len(24 << 20)
        .unwrap();
    let out = cryptsetup(&[
        "luksFormat",
        "--type",
        "luks2",
        "-q",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--luks2-metadata-size",
        metadata,
        "--key-file",
        pass.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

fn opens(img: &Path, key: &[u8], dir: &Path) -> bool {
    let k = dir.join("try.key");
    std::fs::write(&k, key).unwrap();
    cryptsetup(&[
        "open",
        "--test-passphrase",
        "--key-file",
        k.to_str().unwrap(),
        img.to_str().unwrap(),
    ])
    .status
    .success()
}

fn dev(img: &Path) -> FileBackend {
    FileBackend::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(img)
            .unwrap(),
    )
}

#[test]
fn bind_rewrap_and_unbind_keep_cryptsetups_header_and_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pass = d.join("pass");
    std::fs::write(&pass, b"the operator's passphrase").unwrap();
    for metadata in ["16384", "262144", "4194304"] {
        let img = made_by_cryptsetup(d, metadata, &pass);
        let b = dev(&img);
        let devs = Devices::attached(&b);
        // A wrong passphrase proves nothing and writes nothing.
        let before = std::fs::read(&img).unwrap();
        assert!(volume::bind::prove(devs, b"wrong").is_err());
        assert!(std::fs::read(&img).unwrap() == before);

        let proven = volume::bind::prove(devs, b"the operator's passphrase").unwrap();
        let bound = volume::bind::bind(devs, &proven, &SECRET, "key-1", None).unwrap();
        let dump = cryptsetup(&["luksDump", img.to_str().unwrap()]);
        assert!(
            dump.status.success(),
            "{metadata}: cryptsetup no longer reads the header after bind: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        // The new keyslot lies past both header copies.
        let h = header::read(&b).unwrap().header;
        let slot = &h.metadata.keyslots[&bound.keyslot];
        assert!(
            slot.area.offset >= 2 * h.binary.hdr_size,
            "{metadata}: keyslot at {}",
            slot.area.offset
        );
        assert!(
            opens(&img, b"the operator's passphrase", d),
            "{metadata}: bind lost the passphrase"
        );
        assert!(
            opens(&img, &SECRET, d),
            "{metadata}: the KMIP secret does not open it"
        );

        // A rewrap replaces atrest's keyslot only.
        convert::rewrap(devs, &SECRET, &NEW, "key-2").unwrap();
        assert!(cryptsetup(&["luksDump", img.to_str().unwrap()])
            .status
            .success());
        assert!(
            opens(&img, b"the operator's passphrase", d),
            "{metadata}: a rewrap removed the passphrase keyslot"
        );
        assert!(opens(&img, &NEW, d) && !opens(&img, &SECRET, d));

        // A deep rekey would strand the passphrase keyslot: refused, nothing written.
        let before = std::fs::read(&img).unwrap();
        let e = convert::begin_rekey(devs, &NEW, &SECRET, "key-3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keyslots atrest does not manage"), "{e}");
        assert!(
            std::fs::read(&img).unwrap() == before,
            "a refused deep rekey wrote"
        );

        // Unbind: atrest's keyslot and token go, the passphrase stays.
        let u = volume::bind::unbind(devs).unwrap();
        assert_eq!(u.key_uid, "key-2");
        assert!(cryptsetup(&["luksDump", img.to_str().unwrap()])
            .status
            .success());
        assert!(opens(&img, b"the operator's passphrase", d) && !opens(&img, &NEW, d));
    }
}

/// A header that would not be LUKS2 is not written: the commit fails and the disk keeps
/// the header it had.
#[test]
fn a_header_that_would_not_be_valid_luks2_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, b"p").unwrap();
    let img = made_by_cryptsetup(dir.path(), "16384", &pass);
    let b = dev(&img);
    let before = std::fs::read(&img).unwrap();
    let mut h = header::read(&b).unwrap().header;
    // A keyslot inside the header copies, as the bind bug made.
    h.metadata.keyslots.get_mut("0").unwrap().area.offset = 4096;
    let e = header::write(&b, &mut h).unwrap_err().to_string();
    assert!(e.contains("would not be valid LUKS2"), "{e}");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the refused header was written"
    );
}
