//! Issue 19, item 1: someone who can write the disk but holds no key forges what steers a
//! conversion (the header's conversion state, the park record, the rekey journal), with
//! every checksum recomputed as an attacker with a copy of atrest would. A resume with the
//! right key (what `atrest serve` or the operator's `atrest decrypt` would run) must refuse
//! with "does not verify" and leave every byte of the device as it was.

use serde_json::{json, Value};
use volume::backend::{BlockBackend, MemBackend};
use volume::convert::park::HeaderPlan;
use volume::convert::{self, ConvertError, Devices, Found, Keys, Kind, Options, Outcome};
use volume::layout::{park_len, DATA_OFFSET, JOURNAL_RECORD_OFFSET, RECORD_LEN};
use volume::luks2::header;
use volume::luks2::metadata::Metadata;
use volume::volume::KeyMode;

const KEY: [u8; 32] = *b"right-key-0123456789abcdef-RIGHT";
const NEW: [u8; 32] = *b"new-key-fedcba9876543210-NEW-KEY";
const SECRET_LINE: &[u8] = b"session 4711 opened by alice from 10.1.2.3\n";

fn text(len: usize) -> Vec<u8> {
    SECRET_LINE.iter().copied().cycle().take(len).collect()
}

fn plan() -> HeaderPlan {
    HeaderPlan {
        key_uid: "uid-7".into(),
        key_mode: KeyMode::Wrapped,
        volume_key_len: 32,
        sector_size: 512,
        server_hint: None,
    }
}

fn both() -> Keys<'static> {
    Keys {
        current: Some(&KEY),
        new: Some(&NEW),
    }
}

/// Runs the conversion in progress; with `stop_after_first`, stops after its first
/// committed step.
fn run(dev: &MemBackend, stop_after_first: bool) -> Result<Outcome, ConvertError> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    convert::run(
        Devices::attached(dev),
        both(),
        Options { chunk: 512 << 10 },
        &stop,
        &mut |p| {
            if stop_after_first && p.done > 0 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst)
            }
        },
    )
}

/// A finished volume holding 3 MiB of audit lines.
fn volume() -> MemBackend {
    let plain = text(3 << 20);
    let dev = MemBackend::from_bytes(plain.clone());
    convert::begin_encrypt(&dev, &plan(), plain.len() as u64, &KEY).unwrap();
    assert_eq!(run(&dev, false).unwrap(), Outcome::Finished);
    dev
}

/// A conversion of `kind`, stopped after its first committed step.
fn in_progress(kind: Kind) -> MemBackend {
    let dev = match kind {
        Kind::Encrypt => {
            let plain = text(3 << 20);
            let dev = MemBackend::from_bytes(plain.clone());
            convert::begin_encrypt(&dev, &plan(), plain.len() as u64, &KEY).unwrap();
            dev
        }
        Kind::Decrypt => {
            let dev = volume();
            convert::begin_decrypt(Devices::attached(&dev), &KEY).unwrap();
            dev
        }
        Kind::Rekey => {
            let dev = volume();
            convert::begin_rekey(Devices::attached(&dev), &KEY, &NEW, "uid-8").unwrap();
            dev
        }
    };
    assert!(matches!(run(&dev, true).unwrap(), Outcome::Stopped(_)));
    dev
}

/// Rewrites the header after `edit`, checksums valid.
fn tamper(dev: &dyn BlockBackend, edit: impl FnOnce(&mut Metadata)) {
    let mut h = header::read(dev).unwrap().header;
    edit(&mut h.metadata);
    header::write(dev, &mut h).unwrap();
}

fn conversion(m: &mut Metadata) -> &mut Value {
    m.tokens
        .get_mut("0")
        .unwrap()
        .extra
        .get_mut("conversion")
        .unwrap()
}

/// Resumes on a forged device with the right keys: refused as unauthenticated, nothing
/// written. Twice, so a refusal leaves nothing that a second attempt acts on.
fn refused(dev: &MemBackend, what: &str) {
    let before = dev.contents();
    for _ in 0..2 {
        let e = run(dev, false).unwrap_err();
        assert!(
            matches!(e, ConvertError::Unauthenticated { .. }),
            "{what}: {e}"
        );
        assert!(e.to_string().contains("Nothing was changed"), "{e}");
        assert!(
            dev.contents() == before,
            "{what}: a forged record led to a write"
        );
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| w == &needle).count()
}

/// The attack as the outside run made it: a finished volume whose header now says
/// "decrypt in progress" (fixed segment size, the requirement, a conversion record with
/// done 0 and a park area) and whose image was grown to match. Before the fix a resume
/// decrypted the whole volume in place.
#[test]
fn a_forged_decrypt_record_on_a_finished_volume_decrypts_nothing() {
    let dev = volume();
    let size = 3u64 << 20;
    let plen = park_len(size);
    let len = DATA_OFFSET + size + plen + RECORD_LEN;
    dev.set_len(len).unwrap();
    for mac in [None, Some("00".repeat(32))] {
        tamper(&dev, |m| {
            m.segments.get_mut("0").unwrap().size = size.to_string();
            m.config
                .requirements
                .get_or_insert_with(Default::default)
                .mandatory = vec![convert::state::REQUIREMENT.into()];
            let mut c = json!({
                "kind": "decrypt", "size": size.to_string(), "done": "0",
                "park": {"offset": (DATA_OFFSET + size).to_string(), "len": plen.to_string()},
            });
            if let Some(mac) = &mac {
                c["mac"] = json!(mac);
            }
            m.tokens
                .get_mut("0")
                .unwrap()
                .extra
                .insert("conversion".into(), c);
        });
        assert!(matches!(
            convert::inspect(Devices::attached(&dev)).unwrap(),
            Found::InProgress(p) if p.kind == Kind::Decrypt
        ));
        refused(&dev, "forged decrypt");
        assert_eq!(
            count(&dev.contents(), SECRET_LINE),
            0,
            "plaintext reached the disk"
        );
    }
}

/// Every field of every kind of conversion state, changed alone to a value the header's
/// validation accepts (so only the tag can tell), and the tag itself.
#[test]
fn every_field_of_every_conversion_state_is_bound_to_the_key() {
    type Edit = (&'static str, fn(&mut Metadata));
    let common: [Edit; 6] = [
        ("done + one step", |m| {
            let c = conversion(m);
            let done: u64 = c["done"].as_str().unwrap().parse().unwrap();
            c["done"] = json!((done + (512 << 10)).to_string());
        }),
        ("done - 512", |m| {
            let c = conversion(m);
            let done: u64 = c["done"].as_str().unwrap().parse().unwrap();
            c["done"] = json!((done - 512).to_string());
        }),
        ("mac removed", |m| {
            conversion(m).as_object_mut().unwrap().remove("mac");
        }),
        ("mac of another state", |m| {
            conversion(m)["mac"] = json!("ab".repeat(32));
        }),
        ("key_uid", |m| {
            m.tokens
                .get_mut("0")
                .unwrap()
                .extra
                .insert("key_uid".into(), json!("uid-other"));
        }),
        ("segment iv_tweak", |m| {
            m.segments.get_mut("0").unwrap().iv_tweak = Some("8".into());
        }),
    ];
    let parked: [Edit; 3] = [
        ("kind encrypt <-> decrypt", |m| {
            let c = conversion(m);
            let k = if c["kind"] == "encrypt" {
                "decrypt"
            } else {
                "encrypt"
            };
            c["kind"] = json!(k);
        }),
        ("park.sha256", |m| {
            conversion(m)["park"]["sha256"] = json!("cd".repeat(32));
        }),
        ("park.offset", |m| {
            let c = conversion(m);
            let at: u64 = c["park"]["offset"].as_str().unwrap().parse().unwrap();
            c["park"]["offset"] = json!((at - 4096).to_string());
        }),
    ];
    let rekey: [Edit; 2] = [
        ("new_key_uid", |m| {
            conversion(m)["new_key_uid"] = json!("uid-9");
        }),
        ("kind rekey -> decrypt in place", |m| {
            conversion(m)["kind"] = json!("decrypt");
        }),
    ];
    for kind in [Kind::Encrypt, Kind::Decrypt, Kind::Rekey] {
        let extra: &[Edit] = if kind == Kind::Rekey { &rekey } else { &parked };
        for (what, edit) in common.iter().chain(extra) {
            let dev = in_progress(kind);
            tamper(&dev, edit);
            let before = dev.contents();
            let e = run(&dev, false).unwrap_err();
            assert!(
                dev.contents() == before,
                "{kind:?} {what}: a forged state led to a write ({e})"
            );
            // A value that validation already refuses is refused by name; what validation
            // accepts only the tag can catch.
            assert!(
                matches!(e, ConvertError::Unauthenticated { .. })
                    || e.to_string().contains("conversion."),
                "{kind:?} {what}: {e}"
            );
            if what.starts_with("done") || what.starts_with("mac") || *what == "key_uid" {
                assert!(
                    matches!(e, ConvertError::Unauthenticated { .. }),
                    "{kind:?} {what}: {e}"
                );
            }
        }
        // The untouched state still resumes to the end: the check refuses forgeries, not
        // the conversions atrest wrote.
        let dev = in_progress(kind);
        assert_eq!(run(&dev, false).unwrap(), Outcome::Finished, "{kind:?}");
    }
}

/// A park record (the device's last 4 KiB) with a valid checksum says "encrypt: write
/// this header" or "decrypt: put these bytes back at the start"; with no header to ask,
/// the record alone steers the run. Forged, it must not.
#[test]
fn a_forged_park_record_is_refused_and_nothing_is_written() {
    // Encrypt before its header exists: the real record, each field changed, resealed.
    let plain = text(3 << 20);
    let original = MemBackend::from_bytes(plain.clone());
    convert::begin_encrypt(&original, &plan(), plain.len() as u64, &KEY).unwrap();
    let image = original.contents();
    let tail = &image[image.len() - RECORD_LEN as usize..];
    let rec = convert::park::decode(tail).unwrap();
    assert!(!rec.mac.is_empty());
    type RecordEdit = (&'static str, fn(&mut convert::park::Record));
    let edits: [RecordEdit; 5] = [
        ("mac removed", |r| r.mac.clear()),
        ("key_uid", |r| {
            r.header.as_mut().unwrap().key_uid = "uid-9".into()
        }),
        ("key_mode", |r| {
            r.header.as_mut().unwrap().key_mode = KeyMode::Direct
        }),
        ("sector_size", |r| {
            r.header.as_mut().unwrap().sector_size = 4096
        }),
        ("kind", |r| {
            r.kind = Kind::Decrypt;
            r.key_uid = Some("uid-7".into());
        }),
    ];
    for (what, edit) in edits {
        let mut r = rec.clone();
        edit(&mut r);
        let mut img = image.clone();
        let n = img.len();
        img[n - RECORD_LEN as usize..].copy_from_slice(&convert::park::encode(&r).unwrap());
        let dev = MemBackend::from_bytes(img);
        refused(&dev, &format!("encrypt park record, {what}"));
    }
    // Decrypt with the header gone: any device whose first bytes are not a header, with a
    // park and a record that says "decrypt" behind it. A finished volume, its header
    // zeroed: without the tag the record would copy the forged park over the start and
    // truncate the image.
    let dev = volume();
    let n = dev.len().unwrap();
    let plen = park_len(3 << 20);
    dev.set_len(n + plen + RECORD_LEN).unwrap();
    dev.write_at(&vec![0u8; 32 << 10], 0).unwrap();
    let park = vec![b'X'; plen as usize];
    dev.write_at(&park, n).unwrap();
    let forged = convert::park::Record {
        kind: Kind::Decrypt,
        size: n - DATA_OFFSET,
        data_offset: DATA_OFFSET,
        park_len: plen,
        sha256: convert::park::sha256_hex(&park),
        header: None,
        key_uid: Some("uid-7".into()),
        mac: String::new(),
    };
    let len = dev.len().unwrap();
    dev.write_at(&convert::park::encode(&forged).unwrap(), len - RECORD_LEN)
        .unwrap();
    refused(&dev, "decrypt park record");
}

/// The journal of an in-place rekey: a whole record for this run at the committed
/// position makes the run take the hot zone's old content from the journal. A forged one
/// would have the run write the forger's bytes through the keys.
#[test]
fn a_forged_journal_record_is_refused_and_nothing_is_written() {
    let dev = in_progress(Kind::Rekey);
    let h = header::read(&dev).unwrap().header;
    let c = h.metadata.tokens["0"].extra["conversion"].clone();
    let done: u64 = c["done"].as_str().unwrap().parse().unwrap();
    let zone = vec![0x5a; 512 << 10];
    dev.write_at(&zone, volume::layout::JOURNAL_OFFSET).unwrap();
    let block = convert::record::seal(
        b"ATREST-JRNL-V1\0\0",
        &json!({
            "run": "uid-8", "pos": done, "len": zone.len(),
            "sha256": convert::park::sha256_hex(&zone),
        }),
    )
    .unwrap();
    dev.write_at(&block, JOURNAL_RECORD_OFFSET).unwrap();
    refused(&dev, "rekey journal record");
}

/// The checksum journal (issue 25): a record for this run and position, with a list of
/// checksums whose SHA-256 the record states, makes the run decide block by block what is
/// old. Forged without the key it is refused, whatever the checksums say.
#[test]
fn a_forged_checksum_journal_record_is_refused_and_nothing_is_written() {
    let dev = in_progress(Kind::Rekey);
    let done = committed(&dev);
    // Checksums that would call every block of the zone "already done": the run would
    // then leave the old ciphertext in place under the new key's name.
    let sums = vec![0x33u8; (512 << 10) / 512 * 16];
    dev.write_at(&sums, volume::layout::JOURNAL_OFFSET).unwrap();
    for mac in [None, Some("00".repeat(32))] {
        let mut rec = json!({
            "run": "uid-8", "pos": done, "len": 512 << 10,
            "sha256": convert::park::sha256_hex(&sums), "checksums": 512,
        });
        if let Some(mac) = &mac {
            rec["mac"] = json!(mac);
        }
        let block = convert::record::seal(b"ATREST-JRNL-V1\0\0", &rec).unwrap();
        dev.write_at(&block, JOURNAL_RECORD_OFFSET).unwrap();
        refused(&dev, &format!("checksum journal record, tag {mac:?}"));
    }
}

/// The committed position of the conversion in progress on `dev`.
fn committed(dev: &MemBackend) -> u64 {
    let h = header::read(dev).unwrap().header;
    let c = h.metadata.tokens["0"].extra["conversion"].clone();
    c["done"].as_str().unwrap().parse().unwrap()
}

/// The plaintext of a finished volume under `secret`.
fn plaintext_of(dev: &MemBackend, secret: &[u8]) -> Vec<u8> {
    let v = volume::volume::unlock(
        std::sync::Arc::new(MemBackend::from_bytes(dev.contents())),
        secret,
    )
    .unwrap();
    let mut out = vec![0u8; v.size() as usize];
    v.read_at(&mut out, 0).unwrap();
    out
}

/// A rekey stopped after its first step, with a genuine journal record (made with the
/// run's own record key, as a crash right after the journal's sync leaves it) for the hot
/// zone at the committed position: its checksums, or (`checksums` false) the earlier
/// format's copy of its old content. Returns the device and where the zone lies on it.
fn interrupted_with_journal(checksums: bool) -> (MemBackend, u64) {
    let dev = in_progress(Kind::Rekey);
    let done = committed(&dev);
    let len = 512u64 << 10;
    let at = DATA_OFFSET + done;
    let mut zone = vec![0u8; len as usize];
    dev.read_at(&mut zone, at).unwrap();
    let rk = convert::auth::RecordKey::derive(&NEW).unwrap();
    let saved = if checksums {
        convert::journal::Checksums::new(&rk).unwrap().of(&zone)
    } else {
        zone
    };
    let rec = convert::journal::Record {
        run: "uid-8".into(),
        pos: done,
        len,
        sha256: convert::park::sha256_hex(&saved),
        checksums: checksums.then_some(512),
        mac: String::new(),
    };
    convert::journal::save(&dev, &rec, &saved, &rk).unwrap();
    (dev, at)
}

/// A genuine checksum record, then a block of the zone changed to something that is
/// neither its old nor its new content: not what a crash does. The resume stops before
/// writing, names the block, and does so again on a second try.
#[test]
fn a_zone_changed_beyond_a_crash_is_refused_and_nothing_is_written() {
    let (dev, at) = interrupted_with_journal(true);
    // Unchanged, the genuine record is simply used: the zone is old, and is redone.
    let intact = MemBackend::from_bytes(dev.contents());
    assert_eq!(run(&intact, false).unwrap(), Outcome::Finished);
    assert!(plaintext_of(&intact, &NEW) == text(3 << 20));
    // One block scribbled over.
    let bad = at + 7 * 512;
    dev.write_at(&[0xEE; 512], bad).unwrap();
    let before = dev.contents();
    for _ in 0..2 {
        let e = run(&dev, false).unwrap_err();
        assert!(
            matches!(e, ConvertError::ZoneDamaged { offset, len: 512 } if offset == bad),
            "{e}"
        );
        assert!(e.to_string().contains("nothing was written"), "{e}");
        assert!(dev.contents() == before, "a damaged zone led to a write");
    }
}

/// A journal written before checksums (its record holds the zone's old content itself)
/// is still honoured: an upgrade in the middle of a deep rekey loses nothing.
#[test]
fn a_journal_of_the_earlier_format_still_resumes() {
    let (dev, at) = interrupted_with_journal(false);
    let len = 512u64 << 10;
    // The zone half rewritten as the crash left it: only the journal has the old content.
    dev.write_at(&vec![0xEE; (len / 2) as usize], at).unwrap();
    assert_eq!(run(&dev, false).unwrap(), Outcome::Finished);
    assert!(plaintext_of(&dev, &NEW) == text(3 << 20));
}

/// The fuzz target's forged-state property (`fuzz/fuzz_targets/convert_resume.rs`) on
/// fixed inputs: states that validation accepts, each one field away from atrest's.
#[test]
fn the_fuzz_targets_forged_state_property_holds_on_near_misses() {
    for forged in [
        r#"{"kind":"decrypt","size":"2097152","done":"1310720","park":{"offset":"18874368","len":"1048576","sha256":""}}"#,
        r#"{"kind":"decrypt","size":"2097152","done":"0","park":{"offset":"18874368","len":"1048576"}}"#,
        r#"{"kind":"encrypt","size":"2097152","done":"1048576","park":{"offset":"18874368","len":"1048576"},"mac":"00"}"#,
        r#"{"kind":"rekey","size":"2097152","done":"0","new_key_uid":"x","new_digest":"0","in_place":true}"#,
        r#"{}"#,
    ] {
        volume::fuzzing::forged_state(forged.as_bytes());
    }
}
