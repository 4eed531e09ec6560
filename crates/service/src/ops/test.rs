//! "Save and Test": prove the KMIP connection with real requests and say precisely what
//! failed. The report is data (`Serialize`); the CLI prints it as text or JSON, the web
//! page will show it.

use std::path::Path;
use std::time::{Duration, Instant};

use kmip::client::{Client, ClientConfig, ClientError, NEEDED_OPERATIONS};
use kmip::enums::RevocationReasonCode;
use kmip::message::ProtocolVersion;

use crate::config::Config;

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// A certificate's expiry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expiry {
    /// Subject (server certificate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// notAfter.
    pub not_after: String,
    /// Days left.
    pub days_left: i32,
}

/// One timed step of the throwaway-key probe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeStep {
    /// create, activate, get, revoke, destroy.
    pub step: &'static str,
    /// Milliseconds.
    pub ms: f64,
}

/// A probe step that failed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeFailure {
    /// Which.
    pub step: &'static str,
    /// Why.
    pub error: String,
}

/// The throwaway-key probe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// The steps that worked.
    pub steps: Vec<ProbeStep>,
    /// The one that failed.
    pub error: Option<ProbeFailure>,
}

/// What "Save and Test" found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TestReport {
    /// True when a server answered and (with the probe) every key step worked.
    pub ok: bool,
    /// The step that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<&'static str>,
    /// What failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The likely fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The server that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// TLS version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// Cipher suite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// TCP connect plus TLS handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_ms: Option<f64>,
    /// The negotiated KMIP version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmip_version: Option<String>,
    /// What the server offers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions_offered: Vec<String>,
    /// Vendor identification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Operations atrest needs that the server does not list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operations_missing: Option<Vec<String>>,
    /// A Query's round trip on the open connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<f64>,
    /// The first request, with negotiation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_request_ms: Option<f64>,
    /// The server certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<Expiry>,
    /// The client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Expiry>,
    /// The throwaway-key probe, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_key: Option<Probe>,
}

impl TestReport {
    fn failed(step: &'static str, error: String, hint: Option<String>) -> Self {
        Self {
            ok: false,
            step: Some(step),
            error: Some(error),
            hint,
            ..Self::default()
        }
    }
}

/// Runs "Save and Test" with the configuration at `path`; `probe` also creates, activates,
/// fetches, revokes and destroys a throwaway key. Never fails: a failure is in the report.
pub fn save_and_test(path: &Path, probe: bool) -> TestReport {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        // Most configuration errors say what to do themselves.
        Err(e) => {
            return TestReport::failed(
                "read configuration",
                e.to_string(),
                e.hint().map(str::to_owned),
            )
        }
    };
    // "Save and Test" reports what failed at once: a refused port is a wrong port until
    // proven otherwise, not a busy server to wait for.
    let kmip = ClientConfig {
        busy_retry: std::time::Duration::ZERO,
        ..cfg.kmip
    };
    let mut client = match Client::new(kmip) {
        Ok(c) => c,
        Err(e) => {
            let e = ClientError::from(e);
            return TestReport::failed(e.step(), e.to_string(), Some(e.hint()));
        }
    };
    let (q, first) = match client.ping() {
        Ok(x) => x,
        Err(e) => return TestReport::failed(e.step(), e.to_string(), Some(e.hint())),
    };
    // The first request paid for negotiation (and server-side password hashing); time a
    // second one for the round trip an operation will see.
    let rtt = client.ping().map_or(first, |(_, d)| d);
    let Some(info) = client.server_info() else {
        return TestReport::failed(
            "KMIP request",
            "no server information after a successful request".into(),
            None,
        );
    };
    // 1.0 servers cannot answer Discover Versions, which is not a failure.
    let offered = if info.version >= ProtocolVersion::V1_1 {
        client.discover_versions().unwrap_or_default()
    } else {
        Vec::new()
    };
    let missing = NEEDED_OPERATIONS
        .iter()
        .filter(|op| !q.operations.is_empty() && !q.operations.contains(op))
        .map(|op| op.to_string())
        .collect();
    let (client_not_after, client_days) = client.client_certificate_expiry();
    let client_cert = Expiry {
        subject: None,
        not_after: client_not_after.to_owned(),
        days_left: client_days,
    };
    let probe = probe.then(|| probe_key(&mut client));
    let probe_error = probe.as_ref().and_then(|p| p.error.clone());
    TestReport {
        ok: probe_error.is_none(),
        step: probe_error.as_ref().map(|e| e.step),
        error: probe_error.as_ref().map(|e| e.error.clone()),
        hint: probe_error.as_ref().map(|_| {
            "the account may not manage keys as atrest needs: grant Create, Activate, Get, Revoke and Destroy on the KMIP server".into()
        }),
        server: Some(info.server.to_string()),
        tls_version: Some(info.tls.version.clone()),
        cipher: Some(info.tls.cipher.clone()),
        handshake_ms: Some(ms(info.tls.handshake_time)),
        kmip_version: Some(info.version.to_string()),
        versions_offered: offered.iter().map(|v| v.to_string()).collect(),
        vendor: Some(q.vendor_identification.clone().unwrap_or_default()),
        operations_missing: Some(missing),
        round_trip_ms: Some(ms(rtt)),
        first_request_ms: Some(ms(first)),
        server_certificate: Some(Expiry {
            subject: Some(info.tls.server_subject.clone()),
            not_after: info.tls.server_not_after.clone(),
            days_left: info.tls.server_days_left,
        }),
        client_certificate: Some(client_cert),
        probe_key: probe,
    }
}

/// One step of the probe, run against the throwaway key.
type ProbeFn<'a> = dyn Fn(&mut Client) -> Result<(), ClientError> + 'a;

/// Create, activate, get, revoke, destroy a throwaway key, stopping at the first failure
/// (and still trying to clean up the key).
fn probe_key(client: &mut Client) -> Probe {
    let mut p = Probe {
        steps: Vec::new(),
        error: None,
    };
    let name = format!("atrest-probe-{}", std::process::id());
    let t = Instant::now();
    let uid = match client.create_aes_key(256, Some(&name)) {
        Ok(u) => u,
        Err(e) => {
            p.error = Some(ProbeFailure {
                step: "create",
                error: format!("{e} ({})", e.hint()),
            });
            return p;
        }
    };
    p.steps.push(ProbeStep {
        step: "create",
        ms: ms(t.elapsed()),
    });
    let steps: [(&'static str, &ProbeFn<'_>); 4] = [
        ("activate", &|c: &mut Client| c.activate(&uid)),
        ("get", &|c: &mut Client| {
            let k = c.get_symmetric_key(&uid)?;
            match k.len() {
                32 => Ok(()),
                n => Err(ClientError::Misbehaved {
                    server: String::new(),
                    detail: format!("a 256-bit key came back with {n} bytes"),
                }),
            }
        }),
        ("revoke", &|c: &mut Client| {
            c.revoke(
                &uid,
                RevocationReasonCode::CESSATION_OF_OPERATION,
                Some("atrest probe"),
            )
        }),
        ("destroy", &|c: &mut Client| c.destroy(&uid)),
    ];
    for (name, step) in steps {
        let t = Instant::now();
        if let Err(e) = step(client) {
            p.error = Some(ProbeFailure {
                step: name,
                error: format!("{e} ({})", e.hint()),
            });
            // Leave no Active throwaway key behind.
            let _ = client.revoke(&uid, RevocationReasonCode::CESSATION_OF_OPERATION, None);
            let _ = client.destroy(&uid);
            return p;
        }
        p.steps.push(ProbeStep {
            step: name,
            ms: ms(t.elapsed()),
        });
    }
    p
}
