//! The data path checked against implementations that are not ours: the NIST CAVP XTS
//! vectors (XTSGenAES128/256, data-unit sequence numbers, as pyca/cryptography ships them
//! in `cryptography_vectors`), and pyca/cryptography decrypting, sector by sector, a volume
//! atrest wrote. Both come from the virtualenv `scripts/setup-peers.sh` makes
//! (`$ATREST_PYKMIP_VENV`, default `.venv`); a missing one is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use volume::backend::{BlockBackend, FileBackend};
use volume::volume::{format, unlock, FormatOptions, KeyMode};
use volume::xts::Xts;

fn venv() -> PathBuf {
    let v = std::env::var_os("ATREST_PYKMIP_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
        PathBuf::from,
    );
    assert!(
        v.join("bin/python").exists(),
        "no virtualenv at {}: run scripts/setup-peers.sh",
        v.display()
    );
    v
}

fn vectors_dir() -> PathBuf {
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", "import cryptography_vectors, os; print(os.path.dirname(cryptography_vectors.__file__))"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cryptography_vectors missing: run scripts/setup-peers.sh"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        .join("ciphers/AES/XTS/tweak-dataunitseqno")
}

#[test]
fn nist_xts_vectors_pass() {
    let (mut run, mut skipped) = (0, 0);
    for file in ["XTSGenAES128.rsp", "XTSGenAES256.rsp"] {
        let text = std::fs::read_to_string(vectors_dir().join(file)).unwrap();
        let mut encrypt = true;
        let mut fields = std::collections::HashMap::new();
        for line in text.lines().map(str::trim) {
            match line {
                "[ENCRYPT]" => encrypt = true,
                "[DECRYPT]" => encrypt = false,
                _ => {}
            }
            if let Some((k, v)) = line.split_once(" = ") {
                fields.insert(k.to_owned(), v.to_owned());
            }
            if !(line.starts_with("CT") && encrypt || line.starts_with("PT") && !encrypt) {
                continue;
            }
            let bits: usize = fields["DataUnitLen"].parse().unwrap();
            if !bits.is_multiple_of(128) {
                // Partial last blocks need ciphertext stealing, which dm-crypt's
                // aes-xts-plain64 never uses (sectors are whole blocks).
                skipped += 1;
                fields.clear();
                continue;
            }
            let key = hex::decode(&fields["Key"]).unwrap();
            let seq: u64 = fields["DataUnitSeqNumber"].parse().unwrap();
            let pt = hex::decode(&fields["PT"]).unwrap();
            let ct = hex::decode(&fields["CT"]).unwrap();
            let x = match Xts::new(&key) {
                Ok(x) => x,
                Err(e) => panic!("{file} COUNT {}: {e}", fields["COUNT"]),
            };
            let mut buf = if encrypt { pt.clone() } else { ct.clone() };
            let unit = buf.len();
            if encrypt {
                x.encrypt(&mut buf, unit, seq);
                assert_eq!(buf, ct, "{file} encrypt COUNT {}", fields["COUNT"]);
            } else {
                x.decrypt(&mut buf, unit, seq);
                assert_eq!(buf, pt, "{file} decrypt COUNT {}", fields["COUNT"]);
            }
            run += 1;
            fields.clear();
        }
    }
    println!("NIST XTS vectors: {run} passed, {skipped} skipped (data units not a whole number of blocks)");
    assert!(run >= 1000, "only {run} vectors ran");
}

#[test]
fn pyca_cryptography_decrypts_what_atrest_wrote() {
    let tmp = tempfile::Builder::new()
        .prefix("atrest-pyca-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    for (key_len, sector_size) in [(32usize, 512u32), (32, 4096)] {
        let img = dir.join(format!("v{sector_size}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(18 << 20)
            .unwrap();
        let mut key = vec![0u8; key_len];
        openssl::rand::rand_bytes(&mut key).unwrap();
        let dev: Arc<dyn BlockBackend> = Arc::new(FileBackend::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&img)
                .unwrap(),
        ));
        let opts = FormatOptions {
            mode: KeyMode::Direct,
            volume_key_len: key_len,
            sector_size,
            key_uid: "k".into(),
            server_hint: None,
            data_size: None,
            detached: false,
        };
        format(dev.as_ref(), &key, &opts).unwrap();
        let vol = unlock(dev, &key).unwrap();
        let mut plain = vec![0u8; 1 << 20];
        openssl::rand::rand_bytes(&mut plain).unwrap();
        vol.write_at(&plain, 0).unwrap();
        vol.flush().unwrap();
        let plain_file = dir.join("plain.bin");
        std::fs::write(&plain_file, &plain).unwrap();
        let script = format!(
            r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex("{key}")
ss = {ss}
img = open("{img}", "rb"); img.seek({offset})
plain = open("{plain}", "rb").read()
ct = img.read(len(plain))
for i in range(len(plain) // ss):
    tweak = (i * ss // 512).to_bytes(16, "little")
    d = Cipher(algorithms.AES(key), modes.XTS(tweak)).decryptor()
    if d.update(ct[i*ss:(i+1)*ss]) + d.finalize() != plain[i*ss:(i+1)*ss]:
        sys.exit("sector %d differs" % i)
print("ok", len(plain) // ss)
"#,
            key = hex::encode(&key),
            ss = sector_size,
            img = img.display(),
            offset = volume::volume::DATA_OFFSET,
            plain = plain_file.display()
        );
        let out = Command::new(venv().join("bin/python"))
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sector size {sector_size}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
