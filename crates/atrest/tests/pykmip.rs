//! atrest's KMIP client against PyKMIP 0.11's real server (harness = false: one set of
//! servers for every case, stopped at the end even when a case fails).
//!
//! The test makes its own PKI with OpenSSL (RSA and ECDSA CAs, a foreign CA, an expired
//! server certificate, a certificate for the wrong host name, PKCS#12 and encrypted PEM
//! client identities), starts four PyKMIP servers from the virtualenv that
//! `scripts/setup-peers.sh` installs (`$ATREST_PYKMIP_VENV`, default `.venv`), and runs the
//! real `atrest` binary as an operator would. A missing virtualenv is a failure, not a skip.

mod harness;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use harness::atrest;
use harness::kms::free_port;
use harness::pykmip::{write, Pki, PyKmip};

// ---------------------------------------------------------------------------------------
// The environment every case sees

struct Env {
    dir: PathBuf,
    pki: Pki,
    ec: u16,
    rsa: u16,
    expired: u16,
    other_name: u16,
}

struct Conf<'a> {
    servers: Vec<String>,
    ca: &'a str,
    cert: &'a str,
    key: Option<&'a str>,
    pass: Option<&'a str>,
    version: &'a str,
    timeout: u64,
}

impl Env {
    /// The default configuration: the ECDSA server, a PEM identity, auto version.
    fn conf(&self) -> Conf<'static> {
        Conf {
            servers: vec![format!("localhost:{}", self.ec)],
            ca: "ec-ca.crt",
            cert: "ec-client.crt",
            key: Some("ec-client.key"),
            pass: None,
            version: "auto",
            timeout: 5,
        }
    }

    fn write_conf(&self, name: &str, c: &Conf<'_>) -> PathBuf {
        let q = |s: &str| format!("\"{}\"", self.pki.path(s));
        let mut t = format!(
            "[kmip]\nservers = [{}]\nca_cert = {}\nclient_cert = {}\nusername = \"appliance\"\npassword_file = {}\nversion = \"{}\"\ntimeout_secs = {}\n",
            c.servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "),
            q(c.ca),
            q(c.cert),
            q("kmip.pass"),
            c.version,
            c.timeout
        );
        if let Some(k) = c.key {
            t += &format!("client_key = {}\n", q(k));
        }
        if let Some(p) = c.pass {
            t += &format!("passphrase_file = {}\n", q(p));
        }
        let p = self.dir.join(format!("{name}.toml"));
        std::fs::write(&p, t).unwrap();
        p
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "atrest failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `atrest kmip test --json`, returning the JSON and whether it exited 0.
fn save_and_test(conf: &Path) -> (Json, bool) {
    let out = atrest(&["kmip", "test", "--json", "--config", conf.to_str().unwrap()]);
    let j: Json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(j["ok"].as_bool(), Some(out.status.success()), "{j}");
    (j, out.status.success())
}

fn expect_failure(env: &Env, name: &str, c: &Conf<'_>, step: &str, error_contains: &str) {
    let (j, success) = save_and_test(&env.write_conf(name, c));
    assert!(!success, "{name}: expected failure, got {j}");
    assert_eq!(j["step"], step, "{name}: {j}");
    let error = j["error"].as_str().unwrap();
    assert!(error.contains(error_contains), "{name}: {error}");
    // A fix: in the hint, or (configuration errors) in the error itself.
    let hint = j["hint"].as_str().unwrap_or("");
    assert!(
        !hint.is_empty() || error.contains("run: chmod"),
        "{name}: no fix given: {j}"
    );
    // No secret ever reaches the report.
    let text = j.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("client passphrase"),
        "{text}"
    );
}

/// Create, activate, get, attributes, locate, revoke, destroy through the CLI.
fn lifecycle(conf: &Path, label: &str) {
    let c = conf.to_str().unwrap();
    let name = format!("atrest-{label}-{}", std::process::id());
    let uid = ok(&atrest(&["kmip", "create", "--config", c, "--name", &name]));
    let uid = uid.trim();
    assert!(!uid.is_empty());
    let said = ok(&atrest(&["kmip", "activate", "--config", c, uid]));
    assert_eq!(said.trim(), format!("{uid}: activated"), "{label}");
    let key = ok(&atrest(&["kmip", "get", "--config", c, uid]));
    assert_eq!(key.trim().len(), 64, "{label}: a 256-bit key in hex");
    let raw = atrest(&["kmip", "get", "--raw", "--config", c, uid]);
    assert_eq!(hex::encode(&raw.stdout), key.trim());
    let attrs = ok(&atrest(&[
        "kmip",
        "attributes",
        "--json",
        "--config",
        c,
        uid,
    ]));
    let attrs: Json = serde_json::from_str(&attrs).unwrap();
    assert_eq!(attrs["State"], "Active", "{label}: {attrs}");
    assert_eq!(attrs["CryptographicAlgorithm"], "AES", "{label}: {attrs}");
    assert_eq!(attrs["CryptographicLength"], "256", "{label}: {attrs}");
    let found = ok(&atrest(&["kmip", "locate", "--config", c, &name]));
    assert_eq!(found.trim(), uid, "{label}: locate by name");
    // An Active key cannot be destroyed: the server's refusal comes through.
    let refused = atrest(&["kmip", "destroy", "--config", c, uid]);
    assert!(
        !refused.status.success(),
        "{label}: destroy of an Active key succeeded"
    );
    // Each says what it did (issue 22: revoke used to print nothing).
    let said = ok(&atrest(&["kmip", "revoke", "--config", c, uid]));
    assert_eq!(
        said.trim(),
        format!("{uid}: revoked (CessationOfOperation)"),
        "{label}"
    );
    let said = ok(&atrest(&["kmip", "destroy", "--config", c, uid]));
    assert!(
        said.starts_with(&format!("{uid}: destroyed")),
        "{label}: {said}"
    );
    let gone = atrest(&["kmip", "get", "--config", c, uid]);
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("ItemNotFound"), "{label}: {err}");
}

// ---------------------------------------------------------------------------------------
// Cases

fn save_and_test_reports_the_server_tls_and_kmip_version(env: &Env) {
    let (j, success) = save_and_test(&env.write_conf("report", &env.conf()));
    assert!(success, "{j}");
    assert_eq!(j["server"], format!("localhost:{}", env.ec));
    assert_eq!(j["tls_version"], "TLSv1.2");
    assert!(
        j["cipher"].as_str().unwrap().starts_with("ECDHE-ECDSA-AES"),
        "{j}"
    );
    assert_eq!(j["kmip_version"], "2.0", "PyKMIP prefers 2.0: {j}");
    assert_eq!(
        j["versions_offered"],
        serde_json::json!(["2.0", "1.4", "1.3", "1.2", "1.1", "1.0"])
    );
    assert!(j["vendor"].as_str().unwrap().contains("PyKMIP"), "{j}");
    assert_eq!(j["operations_missing"], serde_json::json!([]), "{j}");
    assert!(j["round_trip_ms"].as_f64().unwrap() > 0.0);
    let days = j["server_certificate"]["days_left"].as_i64().unwrap();
    assert!((823..=825).contains(&days), "{j}");
    assert!((823..=825).contains(&j["client_certificate"]["days_left"].as_i64().unwrap()));
    // The human form says the same.
    let text = ok(&atrest(&[
        "kmip",
        "test",
        "--config",
        env.dir.join("report.toml").to_str().unwrap(),
    ]));
    assert!(text.starts_with("Save and Test: OK"), "{text}");
    assert!(text.contains("version 2.0"), "{text}");
}

fn probe_key_proves_the_whole_lifecycle(env: &Env) {
    let conf = env.write_conf("probe", &env.conf());
    let out = atrest(&[
        "kmip",
        "test",
        "--json",
        "--probe-key",
        "--config",
        conf.to_str().unwrap(),
    ]);
    let j: Json = serde_json::from_slice(&ok(&out).into_bytes()).unwrap();
    let steps: Vec<&str> = j["probe_key"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["create", "activate", "get", "revoke", "destroy"],
        "{j}"
    );
}

fn lifecycle_in_every_version_pykmip_accepts(env: &Env) {
    for v in ["1.0", "1.1", "1.2", "1.3", "1.4", "2.0"] {
        let mut c = env.conf();
        c.version = v;
        let conf = env.write_conf(&format!("v{v}"), &c);
        let (j, success) = save_and_test(&conf);
        assert!(success, "{v}: {j}");
        assert_eq!(j["kmip_version"], v);
        lifecycle(&conf, &format!("v{v}"));
    }
}

fn lifecycle_with_rsa_certificates_on_the_stock_cbc_suites(env: &Env) {
    let mut c = env.conf();
    c.servers = vec![format!("localhost:{}", env.rsa)];
    c.ca = "rsa-ca.crt";
    c.cert = "rsa-client.crt";
    c.key = Some("rsa-client.key");
    let conf = env.write_conf("rsa", &c);
    let (j, success) = save_and_test(&conf);
    assert!(success, "{j}");
    let cipher = j["cipher"].as_str().unwrap();
    // Stock PyKMIP offers only CBC suites with an RSA certificate.
    assert!(
        cipher.contains("SHA256") || cipher.contains("SHA384"),
        "{cipher}"
    );
    assert!(!cipher.contains("GCM"), "{cipher}");
    lifecycle(&conf, "rsa");
}

fn lifecycle_with_a_pkcs12_identity_and_with_encrypted_pem_keys(env: &Env) {
    let mut c = env.conf();
    c.cert = "ec-client.p12";
    c.key = None;
    c.pass = Some("client.pass");
    lifecycle(&env.write_conf("p12", &c), "p12");
    for key in ["ec-client.pkcs8.key", "ec-client.legacy.key"] {
        let mut c = env.conf();
        c.key = Some(key);
        c.pass = Some("client.pass");
        let (j, success) = save_and_test(&env.write_conf(key, &c));
        assert!(success, "{key}: {j}");
    }
    lifecycle(
        &env.write_conf("pkcs8", &{
            let mut c = env.conf();
            c.key = Some("ec-client.pkcs8.key");
            c.pass = Some("client.pass");
            c
        }),
        "pkcs8",
    );
}

fn untrusted_ca_is_reported_as_such(env: &Env) {
    let mut c = env.conf();
    c.ca = "rsa-ca.crt";
    expect_failure(
        env,
        "untrusted",
        &c,
        "verify server certificate",
        "not trusted",
    );
}

fn wrong_host_name_is_reported_as_such(env: &Env) {
    let mut c = env.conf();
    c.servers = vec![format!("localhost:{}", env.other_name)];
    expect_failure(
        env,
        "hostname",
        &c,
        "verify server certificate",
        "does not name localhost",
    );
    // Dialled by address: the certificate must carry that IP address.
    c.servers = vec![format!("127.0.0.1:{}", env.other_name)];
    expect_failure(
        env,
        "hostname-ip",
        &c,
        "verify server certificate",
        "does not name 127.0.0.1",
    );
}

fn expired_server_certificate_is_reported_as_such(env: &Env) {
    let mut c = env.conf();
    c.servers = vec![format!("localhost:{}", env.expired)];
    expect_failure(
        env,
        "expired",
        &c,
        "verify server certificate",
        "validity period",
    );
}

fn client_certificate_from_another_ca_is_reported_as_rejected(env: &Env) {
    let mut c = env.conf();
    c.cert = "foreign-client.crt";
    c.key = Some("foreign-client.key");
    expect_failure(
        env,
        "foreign",
        &c,
        "present client certificate",
        "rejected the client certificate",
    );
}

fn wrong_passphrase_is_reported_before_connecting(env: &Env) {
    for (cert, key) in [
        ("ec-client.p12", None),
        ("ec-client.crt", Some("ec-client.pkcs8.key")),
        ("ec-client.crt", Some("ec-client.legacy.key")),
    ] {
        let mut c = env.conf();
        c.cert = cert;
        c.key = key;
        c.pass = Some("wrong.pass");
        expect_failure(
            env,
            "wrongpass",
            &c,
            "load client certificate",
            "passphrase",
        );
    }
}

fn nothing_listening_is_reported_as_refused(env: &Env) {
    let mut c = env.conf();
    c.servers = vec![format!("127.0.0.1:{}", free_port())];
    expect_failure(env, "refused", &c, "TCP connect", "connection refused");
}

fn unknown_host_is_reported_as_name_resolution(env: &Env) {
    let mut c = env.conf();
    c.servers = vec!["no-such-host.invalid".into()];
    expect_failure(env, "dns", &c, "resolve host name", "does not resolve");
}

fn a_server_that_never_answers_times_out(env: &Env) {
    // A real peer cannot be made to hang, so this one is ours: it accepts and stays silent.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let mut c = env.conf();
    c.servers = vec![format!("127.0.0.1:{port}")];
    c.timeout = 1;
    let started = Instant::now();
    expect_failure(env, "silent", &c, "KMIP request", "no answer within 1s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    t.join().unwrap();
}

fn fails_over_to_the_second_server_when_the_first_is_down(env: &Env) {
    let mut c = env.conf();
    c.servers = vec![
        format!("127.0.0.1:{}", free_port()),
        format!("localhost:{}", env.ec),
    ];
    let (j, success) = save_and_test(&env.write_conf("failover", &c));
    assert!(success, "{j}");
    assert_eq!(j["server"], format!("localhost:{}", env.ec));
    // And all-down names each server's failure.
    c.servers = vec![
        format!("127.0.0.1:{}", free_port()),
        "no-such-host.invalid".into(),
    ];
    expect_failure(
        env,
        "alldown",
        &c,
        "reach any server",
        "no KMIP server could be used",
    );
}

fn a_group_readable_password_file_is_refused_with_the_fix(env: &Env) {
    let p = env.dir.join("open.pass");
    write(&p, b"s3cret\n", 0o644);
    let conf = env.write_conf("openpass", &env.conf());
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(&env.pki.path("kmip.pass"), p.to_str().unwrap());
    std::fs::write(&conf, text).unwrap();
    let (j, success) = save_and_test(&conf);
    assert!(!success);
    assert_eq!(j["step"], "read configuration");
    assert!(j["error"].as_str().unwrap().contains("chmod 600"), "{j}");
}

// ---------------------------------------------------------------------------------------

fn main() {
    let venv = harness::pykmip::venv();
    // Scratch space removed when `scratch` drops: after the run, or while unwinding from a
    // panic outside the cases. The PyKMIP servers are dropped (stopped) before it.
    let scratch = harness::scratch("atrest-pykmip-");
    let dir = scratch.path().to_owned();
    let pki = Pki::create(&dir.join("pki"));
    let mut servers = vec![
        PyKmip::start("ec", &venv, &dir, &pki, "ec", "ec-server"),
        PyKmip::start("rsa", &venv, &dir, &pki, "rsa", "rsa-server"),
        PyKmip::start("expired", &venv, &dir, &pki, "ec", "ec-server-expired"),
        PyKmip::start(
            "other-name",
            &venv,
            &dir,
            &pki,
            "ec",
            "ec-server-other-name",
        ),
    ];
    for s in &mut servers {
        s.wait_ready();
    }
    let env = Env {
        dir: dir.clone(),
        pki,
        ec: servers[0].port,
        rsa: servers[1].port,
        expired: servers[2].port,
        other_name: servers[3].port,
    };
    let cases: &[harness::Case<Env>] = &[
        (
            "save_and_test_reports_the_server_tls_and_kmip_version",
            save_and_test_reports_the_server_tls_and_kmip_version,
        ),
        (
            "probe_key_proves_the_whole_lifecycle",
            probe_key_proves_the_whole_lifecycle,
        ),
        (
            "lifecycle_in_every_version_pykmip_accepts",
            lifecycle_in_every_version_pykmip_accepts,
        ),
        (
            "lifecycle_with_rsa_certificates_on_the_stock_cbc_suites",
            lifecycle_with_rsa_certificates_on_the_stock_cbc_suites,
        ),
        (
            "lifecycle_with_a_pkcs12_identity_and_with_encrypted_pem_keys",
            lifecycle_with_a_pkcs12_identity_and_with_encrypted_pem_keys,
        ),
        (
            "untrusted_ca_is_reported_as_such",
            untrusted_ca_is_reported_as_such,
        ),
        (
            "wrong_host_name_is_reported_as_such",
            wrong_host_name_is_reported_as_such,
        ),
        (
            "expired_server_certificate_is_reported_as_such",
            expired_server_certificate_is_reported_as_such,
        ),
        (
            "client_certificate_from_another_ca_is_reported_as_rejected",
            client_certificate_from_another_ca_is_reported_as_rejected,
        ),
        (
            "wrong_passphrase_is_reported_before_connecting",
            wrong_passphrase_is_reported_before_connecting,
        ),
        (
            "nothing_listening_is_reported_as_refused",
            nothing_listening_is_reported_as_refused,
        ),
        (
            "unknown_host_is_reported_as_name_resolution",
            unknown_host_is_reported_as_name_resolution,
        ),
        (
            "a_server_that_never_answers_times_out",
            a_server_that_never_answers_times_out,
        ),
        (
            "fails_over_to_the_second_server_when_the_first_is_down",
            fails_over_to_the_second_server_when_the_first_is_down,
        ),
        (
            "a_group_readable_password_file_is_refused_with_the_fix",
            a_group_readable_password_file_is_refused_with_the_fix,
        ),
    ];
    let (conclusion, env) = harness::run(cases, env);
    drop(servers);
    harness::finish(conclusion, env, scratch);
}
