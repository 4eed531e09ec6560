//! `atrest kms serve`, the development KMIP server, against real clients (harness = false:
//! the servers are child processes started once and killed at the end).
//!
//! - PyKMIP 0.11's own client runs its lifecycle in KMIP 1.0, 1.2, 1.4 and 2.0.
//! - The OASIS test cases for the symmetric-key lifecycle and baseline profiles (`SKLC-*`,
//!   `BL-*`) are replayed request by request; each response is compared with the expected
//!   one apart from what the suite leaves free. The tally per version is printed, the
//!   failing files are listed with the first difference, and the pass count must not drop
//!   below the floor recorded here.
//! - Restart and `kill -9`: every key acknowledged before the kill is there, intact, after.
//! - Credential, ownership, batches, and "Save and Test" against it.

mod harness;

use harness::atrest;
use harness::kms::{atrest_bin, free_port, Kms, RawKmip};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kmip::client::Client;
use kmip::ttlv::{xml, Item, ItemType, Tag, Value};
use service::config::Config;

// ---------------------------------------------------------------------------------------
// OASIS replay

const NOW_PLACEHOLDER_BASE: i64 = 0;

/// Compares an expected response with the actual one. Free: time stamps and dates (the
/// suite's come from another day), unique identifiers (bound to the placeholders on first
/// sight, then checked), key material and other random bytes, Result Message text,
/// correlation values; and the order of attributes in a list.
fn matches(
    expected: &Item,
    actual: &Item,
    uids: &mut BTreeMap<String, String>,
    path: &str,
) -> Result<(), String> {
    let path = format!("{path}/{}", expected.tag);
    if expected.tag != actual.tag {
        return Err(format!("{path}: got {}", actual.tag));
    }
    let name = expected.tag.name().unwrap_or("");
    match (&expected.value, &actual.value) {
        // A Server Correlation Value is optional (1.4+): the suite has it in some 2.1 files
        // and not in others, so its presence is free too.
        (Value::Structure(e), Value::Structure(a)) if name == "ResponseHeader" => {
            let strip = |v: &[Item]| -> Item {
                Item::structure(
                    expected.tag,
                    v.iter()
                        .filter(|i| i.tag != Tag::SERVER_CORRELATION_VALUE)
                        .cloned()
                        .collect(),
                )
            };
            let (e, a) = (strip(e), strip(a));
            match (&e.value, &a.value) {
                (Value::Structure(ec), Value::Structure(ac)) if ec.len() == ac.len() => {
                    for (ei, ai) in ec.iter().zip(ac) {
                        matches(ei, ai, uids, &path)?;
                    }
                    Ok(())
                }
                _ => Err(format!("{path}: header fields differ")),
            }
        }
        (Value::Structure(e), Value::Structure(a)) => {
            let unordered = matches!(name, "Attributes" | "ResponsePayload" | "AttributeValue")
                && e.iter()
                    .chain(a.iter())
                    .any(|i| i.tag == Tag::ATTRIBUTE || name == "Attributes");
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: expected fields {:?}, got {:?}",
                    e.iter().map(|i| i.tag.to_string()).collect::<Vec<_>>(),
                    a.iter().map(|i| i.tag.to_string()).collect::<Vec<_>>()
                ));
            }
            if unordered {
                let mut left: Vec<&Item> = a.iter().collect();
                for ei in e {
                    let pos = left
                        .iter()
                        .position(|ai| matches(ei, ai, &mut uids.clone(), &path).is_ok())
                        .ok_or_else(|| {
                            format!("{path}: no match for {}", xml::to_xml(ei).trim())
                        })?;
                    let ai = left.remove(pos);
                    matches(ei, ai, uids, &path)?;
                }
                return Ok(());
            }
            for (ei, ai) in e.iter().zip(a) {
                matches(ei, ai, uids, &path)?;
            }
            Ok(())
        }
        (Value::TextString(e), Value::TextString(a)) if e.starts_with('$') => {
            match uids.get(e.as_str()) {
                Some(bound) if bound != a.as_str() => Err(format!(
                    "{path}: {} is {bound}, got {}",
                    e.as_str(),
                    a.as_str()
                )),
                Some(_) => Ok(()),
                None => {
                    uids.insert(e.to_string(), a.to_string());
                    Ok(())
                }
            }
        }
        (e, a) if e.item_type() == a.item_type() => {
            let free = matches!(
                e.item_type(),
                ItemType::DateTime | ItemType::DateTimeExtended
            ) || matches!(
                name,
                "ResultMessage"
                    | "KeyMaterial"
                    | "DigestValue"
                    | "ServerCorrelationValue"
                    | "ClientCorrelationValue"
                    | "Nonce"
                    | "NonceValue"
                    | "Data"
                    | "IVCounterNonce"
            );
            if free || e == a {
                Ok(())
            } else {
                Err(format!(
                    "{path}: expected {}, got {}",
                    xml::to_xml(expected).trim(),
                    xml::to_xml(actual).trim()
                ))
            }
        }
        (e, a) => Err(format!(
            "{path}: type {} expected, got {}",
            e.item_type(),
            a.item_type()
        )),
    }
}

/// Replays one test case file; Ok, or the first difference.
fn replay(kms: &Kms, file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + NOW_PLACEHOLDER_BASE;
    let sub = |t: ItemType, v: &str| -> Option<String> {
        match t {
            ItemType::DateTime => {
                let off: i64 = match v.strip_prefix("$NOW")? {
                    "" => 0,
                    rest => rest.parse().ok()?,
                };
                Some((now + off).to_string())
            }
            ItemType::ByteString => Some(hex::encode(v.as_bytes())),
            _ => None,
        }
    };
    let items = xml::from_xml_document(&text, Some(&sub)).map_err(|e| format!("XML: {e}"))?;
    let mut raw = RawKmip::connect(kms);
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    let mut pending: Option<Item> = None;
    for (i, item) in items.into_iter().enumerate() {
        if item.tag == Tag::REQUEST_MESSAGE {
            // Requests name objects by the placeholders bound so far.
            let request = bind(&item, &uids);
            pending = Some(raw.call(&request));
        } else {
            let actual = pending.take().ok_or("response without request")?;
            matches(&item, &actual, &mut uids, "").map_err(|e| format!("message {i}: {e}"))?;
        }
    }
    Ok(())
}

fn bind(item: &Item, uids: &BTreeMap<String, String>) -> Item {
    match &item.value {
        Value::Structure(c) => Item::structure(item.tag, c.iter().map(|i| bind(i, uids)).collect()),
        Value::TextString(s) if s.starts_with('$') => Item::text(
            item.tag,
            uids.get(s.as_str())
                .cloned()
                .unwrap_or_else(|| s.to_string()),
        ),
        _ => item.clone(),
    }
}

fn oasis_replay(kms: &Kms) {
    // The repository's copy (testdata/kmip/README.md); $KMIP_TESTCASES overrides.
    let suite = std::env::var_os("KMIP_TESTCASES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kmip/testcases"),
        PathBuf::from,
    );
    assert!(
        suite.is_dir(),
        "OASIS test cases not found at {}",
        suite.display()
    );
    let mut files = Vec::new();
    for v in std::fs::read_dir(&suite).unwrap() {
        let v = v.unwrap().path();
        for kind in ["mandatory", "optional"] {
            let Ok(rd) = std::fs::read_dir(v.join(kind)) else {
                continue;
            };
            for f in rd {
                let f = f.unwrap().path();
                let n = f.file_name().unwrap().to_string_lossy().into_owned();
                if (n.starts_with("SKLC-") || n.starts_with("BL-")) && n.ends_with(".xml") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    let mut tally: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&suite).unwrap().display().to_string();
        let version = rel.split('/').next().unwrap().to_owned();
        let t = tally.entry(version).or_default();
        t.1 += 1;
        match replay(kms, f) {
            Ok(()) => t.0 += 1,
            Err(e) => failures.push(format!("{rel}: {e}")),
        }
    }
    println!("OASIS SKLC-*/BL-* replay against atrest kms serve:");
    for (v, (pass, all)) in &tally {
        println!("  {v}: {pass}/{all} pass");
    }
    for f in &failures {
        println!("  FAIL {f}");
    }
    let passed: usize = tally.values().map(|t| t.0).sum();
    assert!(
        passed >= REPLAY_FLOOR,
        "{passed} test cases pass, fewer than the {REPLAY_FLOOR} recorded"
    );
}

/// Test cases that passed when this was last measured; a change that breaks one fails here.
const REPLAY_FLOOR: usize = 23;

// ---------------------------------------------------------------------------------------
// Cases

struct Env {
    root: PathBuf,
    kms: Kms,
    venv: PathBuf,
}

fn pykmip_client_lifecycle_in_four_versions(env: &Env) {
    let pki = env.kms.dir.join("pki");
    for v in ["1.0", "1.2", "1.4", "2.0"] {
        let out = Command::new(env.venv.join("bin/python"))
            .args(["-W", "ignore"])
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/peers/pykmip_client_lifecycle.py"),
            )
            .arg("127.0.0.1")
            .arg(env.kms.port.to_string())
            .arg(pki.join("ca.crt"))
            .arg(pki.join("client.crt"))
            .arg(pki.join("client.key"))
            .arg("appliance")
            .arg(env.kms.dir.join("kmip.pass"))
            .arg(v)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(&format!("lifecycle {v} ok")),
            "PyKMIP client in {v}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn save_and_test_works_at_once_with_the_generated_client_toml(env: &Env) {
    let out = atrest(&[
        "kmip",
        "test",
        "--probe-key",
        "--json",
        "--config",
        env.kms.client_toml().to_str().unwrap(),
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{j}");
    assert_eq!(j["kmip_version"], "2.1");
    assert_eq!(j["tls_version"], "TLSv1.3");
    assert_eq!(j["vendor"], "atrest development KMS");
    for f in [
        "client.pass",
        "kmip.pass",
        "users.json",
        "master.key",
        "pki/ca.key",
        "pki/client.key",
        "pki/client.p12",
        "pki/server.key",
    ] {
        let mode = std::fs::metadata(env.kms.dir.join(f))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
            0,
            "{f} is open to others"
        );
    }
}

fn a_wrong_password_is_authentication_not_successful(env: &Env) {
    let dir = env.root.join("wrongpw");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("kmip.pass");
    std::fs::write(&bad, "not-the-password\n").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let toml = std::fs::read_to_string(env.kms.client_toml()).unwrap();
    let base = env.kms.dir.display().to_string();
    let toml = toml
        .replace("\"pki/", &format!("\"{base}/pki/"))
        .replace("\"client.pass\"", &format!("\"{base}/client.pass\""))
        .replace("\"kmip.pass\"", &format!("\"{}\"", bad.display()));
    let conf = dir.join("c.toml");
    std::fs::write(&conf, toml).unwrap();
    let out = atrest(&["kmip", "test", "--json", "--config", conf.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert_eq!(j["step"], "KMIP authentication", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("AuthenticationNotSuccessful"),
        "{j}"
    );
}

fn objects_belong_to_the_identity_that_created_them(env: &Env) {
    // A second client certificate from the server's own CA, with another name.
    let pki = env.kms.dir.join("pki");
    let ca = kms::pki::Issued {
        cert: openssl::x509::X509::from_pem(&std::fs::read(pki.join("ca.crt")).unwrap()).unwrap(),
        key: openssl::pkey::PKey::private_key_from_pem(&std::fs::read(pki.join("ca.key")).unwrap())
            .unwrap(),
    };
    let other = kms::pki::issue(
        "someone-else",
        kms::pki::Role::Client,
        kms::pki::KeyKind::EcP256,
        Some(&ca),
        -1,
        10,
    )
    .unwrap();
    let dir = env.root.join("other");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.crt"), other.cert.to_pem().unwrap()).unwrap();
    std::fs::write(
        dir.join("c.key"),
        other.key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("c.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let conf = dir.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[kmip]\nservers=[\"127.0.0.1:{}\"]\nca_cert=\"{}\"\nclient_cert=\"c.crt\"\nclient_key=\"c.key\"\nusername=\"appliance\"\npassword_file=\"{}\"\n",
            env.kms.port,
            pki.join("ca.crt").display(),
            env.kms.dir.join("kmip.pass").display()
        ),
    )
    .unwrap();
    let mine = atrest(&[
        "kmip",
        "create",
        "--activate",
        "--config",
        env.kms.client_toml().to_str().unwrap(),
    ]);
    let uid = String::from_utf8(mine.stdout).unwrap().trim().to_owned();
    let theirs = atrest(&["kmip", "get", "--config", conf.to_str().unwrap(), &uid]);
    assert!(!theirs.status.success());
    assert!(String::from_utf8_lossy(&theirs.stderr).contains("ItemNotFound"));
    let mine = atrest(&[
        "kmip",
        "get",
        "--config",
        env.kms.client_toml().to_str().unwrap(),
        &uid,
    ]);
    assert!(mine.status.success());
}

fn a_batch_of_several_items_is_answered_in_order(env: &Env) {
    // Two Creates and a Get of the second by ID Placeholder, in one message, KMIP 1.4.
    let xml_text = r#"<RequestMessage>
  <RequestHeader>
    <ProtocolVersion><ProtocolVersionMajor type="Integer" value="1"/><ProtocolVersionMinor type="Integer" value="4"/></ProtocolVersion>
    <Authentication><Credential><CredentialType type="Enumeration" value="UsernameAndPassword"/>
      <CredentialValue><Username type="TextString" value="appliance"/><Password type="TextString" value="PASSWORD"/></CredentialValue></Credential></Authentication>
    <BatchCount type="Integer" value="3"/>
  </RequestHeader>
  <BatchItem><Operation type="Enumeration" value="Create"/><UniqueBatchItemID type="ByteString" value="01"/>
    <RequestPayload><ObjectType type="Enumeration" value="SymmetricKey"/><TemplateAttribute>
      <Attribute><AttributeName type="TextString" value="Cryptographic Algorithm"/><AttributeValue type="Enumeration" value="AES"/></Attribute>
      <Attribute><AttributeName type="TextString" value="Cryptographic Length"/><AttributeValue type="Integer" value="128"/></Attribute>
    </TemplateAttribute></RequestPayload></BatchItem>
  <BatchItem><Operation type="Enumeration" value="Create"/><UniqueBatchItemID type="ByteString" value="02"/>
    <RequestPayload><ObjectType type="Enumeration" value="SymmetricKey"/><TemplateAttribute>
      <Attribute><AttributeName type="TextString" value="Cryptographic Algorithm"/><AttributeValue type="Enumeration" value="AES"/></Attribute>
      <Attribute><AttributeName type="TextString" value="Cryptographic Length"/><AttributeValue type="Integer" value="256"/></Attribute>
    </TemplateAttribute></RequestPayload></BatchItem>
  <BatchItem><Operation type="Enumeration" value="Get"/><UniqueBatchItemID type="ByteString" value="03"/><RequestPayload/></BatchItem>
</RequestMessage>"#;
    let password = std::fs::read_to_string(env.kms.dir.join("kmip.pass")).unwrap();
    let request = xml::from_xml(&xml_text.replace("PASSWORD", password.trim())).unwrap();
    let response = RawKmip::connect(&env.kms).call(&request);
    let items: Vec<&Item> = response.children_with(Tag::BATCH_ITEM).collect();
    assert_eq!(items.len(), 3);
    for (i, bi) in items.iter().enumerate() {
        assert_eq!(
            bi.child(Tag::UNIQUE_BATCH_ITEM_ID).unwrap().value,
            Value::ByteString(vec![i as u8 + 1].into())
        );
        assert_eq!(
            bi.child(Tag::RESULT_STATUS).unwrap().value,
            Value::Enumeration(0),
            "{}",
            xml::to_xml(bi)
        );
    }
    let second = items[1]
        .child(Tag::RESPONSE_PAYLOAD)
        .unwrap()
        .child(Tag::UNIQUE_IDENTIFIER)
        .unwrap();
    let got = items[2].child(Tag::RESPONSE_PAYLOAD).unwrap();
    assert_eq!(got.child(Tag::UNIQUE_IDENTIFIER).unwrap(), second);
    let kb = got
        .child(Tag::SYMMETRIC_KEY)
        .unwrap()
        .child(Tag::KEY_BLOCK)
        .unwrap();
    assert_eq!(
        kb.child(Tag::CRYPTOGRAPHIC_LENGTH).unwrap().value,
        Value::Integer(256)
    );
}

fn keys_survive_restart_and_kill_9(env: &Env) {
    let dir = env.root.join("crash");
    let port = free_port();
    let mut server = Kms::start(&dir, port);
    let mut config = Config::load(&server.client_toml()).unwrap();
    // The writer below is meant to fail as soon as the server dies, not wait for it.
    config.kmip.busy_retry = Duration::ZERO;
    // Keys created and acknowledged before a clean restart.
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    {
        let mut c = Client::new(config.kmip.clone()).unwrap();
        for _ in 0..5 {
            let uid = c.create_aes_key(256, Some("restart")).unwrap();
            acked.push((uid.clone(), c.get_symmetric_key(&uid).unwrap().to_vec()));
        }
    }
    let status = server.terminate().expect("server ran");
    assert!(
        status.success(),
        "SIGTERM should stop the server cleanly, got {status}"
    );
    // kill -9 at random moments while a client creates keys as fast as it can.
    for round in 0..5u64 {
        let mut server = Kms::start(&dir, port);
        let kmip = config.kmip.clone();
        let writer = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut c = Client::new(kmip).unwrap();
            loop {
                match c.create_aes_key(256, Some("crash")) {
                    Ok(uid) => match c.get_symmetric_key(&uid) {
                        Ok(k) => got.push((uid, k.to_vec())),
                        Err(_) => return got,
                    },
                    Err(_) => return got,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(150 + round * 97));
        server.kill9();
        acked.extend(writer.join().unwrap());
    }
    let _server = Kms::start(&dir, port);
    let mut c = Client::new(config.kmip).unwrap();
    for (uid, key) in &acked {
        let now = c
            .get_symmetric_key(uid)
            .unwrap_or_else(|e| panic!("{uid} lost after kill -9: {e}"));
        assert_eq!(now.as_slice(), key.as_slice(), "{uid} changed");
    }
    assert!(acked.len() > 20, "only {} keys were created", acked.len());
    println!(
        "  {} acknowledged keys intact after 1 restart and 5 kill -9",
        acked.len()
    );
}

/// After a site-wide power cut the appliances may come up before their key server: a
/// one-shot fetch (`atrest kmip get`, as the Clevis pin and the token plugin run it) keeps
/// trying, with backoff and jitter, for `busy_retry_secs`, and gets its key once the
/// server listens. "Save and Test" does not wait: a refused port is reported at once.
fn a_fetch_started_before_the_key_server_waits_for_it(env: &Env) {
    let dir = env.root.join("late");
    let port = free_port();
    let mut server = Kms::start(&dir, port);
    let conf = server.client_toml();
    let uid = {
        let mut c = Client::new(Config::load(&conf).unwrap().kmip).unwrap();
        let uid = c.create_aes_key(256, Some("late")).unwrap();
        c.activate(&uid).unwrap();
        uid
    };
    assert!(server.terminate().expect("server ran").success());
    let started = Instant::now();
    let test = atrest(&["kmip", "test", "--json", "--config", conf.to_str().unwrap()]);
    assert!(!test.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Save and Test waited {:?} for a refused port",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&test.stdout).contains("connection refused"),
        "{}",
        String::from_utf8_lossy(&test.stdout)
    );
    let started = Instant::now();
    let fetch = Command::new(atrest_bin())
        .args([
            "kmip",
            "get",
            "--usable",
            "--config",
            conf.to_str().unwrap(),
            &uid,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let _server = Kms::start(&dir, port);
    let out = fetch.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim().len(), 64);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500), "{took:?}");
    // The waits grow to 2 s: the fetch came within a few seconds of the server.
    assert!(took < Duration::from_secs(10), "{took:?}");
    println!("  the fetch waited {took:?} for a server that came up after 2.5 s");
}

fn the_log_names_operations_but_never_key_material(env: &Env) {
    let log = std::fs::read_to_string(env.kms.dir.with_extension("log")).unwrap();
    assert!(
        log.contains("op=Create") && log.contains("op=Get") && log.contains("who=atrest-appliance")
    );
    let password = std::fs::read_to_string(env.kms.dir.join("kmip.pass")).unwrap();
    assert!(!log.contains(password.trim()));
    // Every key the server handed out so far: none may appear in the log.
    let conf = Config::load(&env.kms.client_toml()).unwrap();
    let mut c = Client::new(conf.kmip).unwrap();
    let uid = c.create_aes_key(256, None).unwrap();
    let key = hex::encode(c.get_symmetric_key(&uid).unwrap().as_slice());
    let log = std::fs::read_to_string(env.kms.dir.with_extension("log")).unwrap();
    assert!(!log.to_lowercase().contains(&key));
}

fn oasis_sklc_and_bl_test_cases_replay(env: &Env) {
    // The suite's requests carry no Credential: replay against a server without users.
    let dir = env.root.join("oasis");
    let port = free_port();
    drop(Kms::start(&dir, port));
    std::fs::remove_file(dir.join("users.json")).unwrap();
    let server = Kms::start(&dir, port);
    oasis_replay(&server);
}

fn format_makes_a_volume_cryptsetup_opens_with_the_key_from_kmip(env: &Env) {
    let conf = env.kms.client_toml();
    let conf = conf.to_str().unwrap();
    let img = env.root.join("vol.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let imgs = img.to_str().unwrap();
    let out = atrest(&["format", "--config", conf, "--sector-size", "4096", imgs]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = atrest(&["status", "--json", imgs]);
    let j: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(j["key_mode"], "wrapped");
    assert_eq!(j["sector_size"], 4096);
    assert_eq!(j["data_size"], 16 << 20);
    let uid = j["key_uid"].as_str().unwrap().to_owned();
    // The KMIP key itself opens the volume with stock cryptsetup.
    let key = atrest(&["kmip", "get", "--raw", "--config", conf, &uid]);
    let key_file = env.root.join("vol.key");
    std::fs::write(&key_file, &key.stdout).unwrap();
    let cs = Command::new("cryptsetup")
        .args([
            "open",
            "--test-passphrase",
            "--key-file",
            key_file.to_str().unwrap(),
            imgs,
        ])
        .output()
        .unwrap();
    assert!(
        cs.status.success(),
        "{}",
        String::from_utf8_lossy(&cs.stderr)
    );
    std::fs::remove_file(&key_file).unwrap();
    // The key is Active on the server.
    let attrs = atrest(&["kmip", "attributes", "--json", "--config", conf, &uid]);
    let a: serde_json::Value = serde_json::from_slice(&attrs.stdout).unwrap();
    assert_eq!(a["State"], "Active");
    // A second format refuses to destroy it; other content is refused too.
    let again = atrest(&["format", "--config", conf, imgs]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds a LUKS header"));
    let ext = env.root.join("ext.img");
    let mut fs = vec![0u8; 32 << 20];
    fs[1080] = 0x53;
    fs[1081] = 0xEF;
    std::fs::write(&ext, fs).unwrap();
    let refused = atrest(&["format", "--config", conf, ext.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ext2/3/4 filesystem"));
    // Direct mode cannot do XTS-AES-256; a device too small is refused before a key is made.
    let bad = atrest(&[
        "format",
        "--config",
        conf,
        "--direct",
        "--cipher",
        "xts-aes-256",
        imgs,
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wrapped mode"));
    let small = env.root.join("small.img");
    std::fs::File::create(&small)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let before = atrest(&["kmip", "locate", "--config", conf, "atrest-small.img"]);
    let out = atrest(&["format", "--config", conf, small.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let after = atrest(&["kmip", "locate", "--config", conf, "atrest-small.img"]);
    assert_eq!(
        before.stdout, after.stdout,
        "a key was created for a device that cannot hold a volume"
    );
    // Direct mode: the KMIP key is the volume key.
    let direct = env.root.join("direct.img");
    std::fs::File::create(&direct)
        .unwrap()
        .set_len(20 << 20)
        .unwrap();
    let out = atrest(&[
        "format",
        "--config",
        conf,
        "--direct",
        direct.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = atrest(&["status", direct.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&st.stdout).contains("key mode      direct"));
}

fn an_oversized_message_is_refused_and_the_connection_closed(env: &Env) {
    let mut raw = RawKmip::connect(&env.kms);
    // A Request Message header claiming 2 MiB, over the 1 MiB bound: answered, then closed,
    // without the server waiting for (or allocating) the 2 MiB.
    raw.stream
        .write_all(&hex::decode("4200780100200000").unwrap())
        .unwrap();
    let r = raw.read_response();
    let bi = r.child(Tag::BATCH_ITEM).unwrap();
    assert_eq!(
        bi.child(Tag::RESULT_STATUS).unwrap().value,
        Value::Enumeration(1)
    );
    let mut rest = [0u8; 1];
    assert!(
        matches!(raw.stream.read(&mut rest), Ok(0) | Err(_)),
        "connection still open"
    );
}

fn an_idle_connection_is_closed_after_the_idle_timeout(env: &Env) {
    let dir = env.root.join("idle");
    let server = Kms::start_with(&dir, free_port(), &["--idle-timeout", "1"]);
    let mut raw = RawKmip::connect(&server);
    let started = Instant::now();
    let mut b = [0u8; 1];
    let r = raw.stream.read(&mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // A client that reconnects is served again.
    let conf = Config::load(&server.client_toml()).unwrap();
    Client::new(conf.kmip).unwrap().query().unwrap();
}

fn main() {
    let venv = harness::pykmip::venv();
    // Scratch space removed when `scratch` drops: after the run, or while unwinding from a
    // panic outside the cases. The servers in `env` are dropped (killed) before it.
    let scratch = harness::scratch("atrest-kms-");
    let root = scratch.path().to_owned();
    let kms = Kms::start(&root.join("main"), free_port());
    let env = Env { root, kms, venv };
    let cases: &[harness::Case<Env>] = &[
        (
            "save_and_test_works_at_once_with_the_generated_client_toml",
            save_and_test_works_at_once_with_the_generated_client_toml,
        ),
        (
            "pykmip_client_lifecycle_in_four_versions",
            pykmip_client_lifecycle_in_four_versions,
        ),
        (
            "a_wrong_password_is_authentication_not_successful",
            a_wrong_password_is_authentication_not_successful,
        ),
        (
            "objects_belong_to_the_identity_that_created_them",
            objects_belong_to_the_identity_that_created_them,
        ),
        (
            "a_batch_of_several_items_is_answered_in_order",
            a_batch_of_several_items_is_answered_in_order,
        ),
        (
            "keys_survive_restart_and_kill_9",
            keys_survive_restart_and_kill_9,
        ),
        (
            "a_fetch_started_before_the_key_server_waits_for_it",
            a_fetch_started_before_the_key_server_waits_for_it,
        ),
        (
            "format_makes_a_volume_cryptsetup_opens_with_the_key_from_kmip",
            format_makes_a_volume_cryptsetup_opens_with_the_key_from_kmip,
        ),
        (
            "an_oversized_message_is_refused_and_the_connection_closed",
            an_oversized_message_is_refused_and_the_connection_closed,
        ),
        (
            "an_idle_connection_is_closed_after_the_idle_timeout",
            an_idle_connection_is_closed_after_the_idle_timeout,
        ),
        (
            "the_log_names_operations_but_never_key_material",
            the_log_names_operations_but_never_key_material,
        ),
        (
            "oasis_sklc_and_bl_test_cases_replay",
            oasis_sklc_and_bl_test_cases_replay,
        ),
    ];
    let (conclusion, env) = harness::run(cases, env);
    harness::finish(conclusion, env, scratch);
}
