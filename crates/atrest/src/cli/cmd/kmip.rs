//! `atrest kmip ...`: "Save and Test" and the key operations, against the configured server.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kmip::client::{Client, ClientError, NEEDED_OPERATIONS};
use kmip::enums::RevocationReasonCode;
use kmip::message::{AttributeName, ProtocolVersion};
use kmip::ttlv::{xml, Item, Tag, Value};
use serde_json::json;
use service::config::Config;

use crate::cli::args::{ConfigArg, KmipCommand, RevokeReason};

pub fn run(cmd: KmipCommand) -> anyhow::Result<()> {
    match cmd {
        KmipCommand::Test {
            config,
            json,
            probe_key,
        } => test(&config, json, probe_key),
        KmipCommand::Create {
            config,
            name,
            bits,
            activate,
        } => {
            let mut c = client(&config)?;
            let uid = c.create_aes_key(bits, name.as_deref())?;
            if activate {
                c.activate(&uid)?;
            }
            println!("{uid}");
            Ok(())
        }
        KmipCommand::Get { config, uid, raw } => {
            let key = client(&config)?.get_symmetric_key(&uid)?;
            let mut out = std::io::stdout().lock();
            if raw {
                out.write_all(&key)?;
            } else {
                let hex = zeroize::Zeroizing::new(hex::encode(key.as_slice()));
                writeln!(out, "{}", hex.as_str())?;
            }
            out.flush()?;
            Ok(())
        }
        KmipCommand::Activate { config, uid } => Ok(client(&config)?.activate(&uid)?),
        KmipCommand::Revoke {
            config,
            uid,
            reason,
            message,
        } => {
            let reason = match reason {
                RevokeReason::Unspecified => RevocationReasonCode::UNSPECIFIED,
                RevokeReason::KeyCompromise => RevocationReasonCode::KEY_COMPROMISE,
                RevokeReason::Superseded => RevocationReasonCode::SUPERSEDED,
                RevokeReason::CessationOfOperation => RevocationReasonCode::CESSATION_OF_OPERATION,
            };
            Ok(client(&config)?.revoke(&uid, reason, message.as_deref())?)
        }
        KmipCommand::Destroy { config, uid } => Ok(client(&config)?.destroy(&uid)?),
        KmipCommand::Attributes { config, uid, json } => attributes(&config, &uid, json),
        KmipCommand::Locate { config, name } => {
            for uid in client(&config)?.locate_by_name(&name)? {
                println!("{uid}");
            }
            Ok(())
        }
        KmipCommand::Query { config } => {
            let q = client(&config)?.query()?;
            println!(
                "vendor      {}",
                q.vendor_identification.as_deref().unwrap_or("(not given)")
            );
            if let Some(info) = &q.server_information {
                println!("server      {}", server_information_text(info));
            }
            let ops: Vec<String> = q.operations.iter().map(|o| o.to_string()).collect();
            println!("operations  {}", ops.join(" "));
            let objs: Vec<String> = q.object_types.iter().map(|o| o.to_string()).collect();
            println!("objects     {}", objs.join(" "));
            Ok(())
        }
        KmipCommand::Versions { config } => {
            for v in client(&config)?.discover_versions()? {
                println!("{v}");
            }
            Ok(())
        }
    }
}

fn client(config: &ConfigArg) -> anyhow::Result<Client> {
    let c = Config::load(&config.config)?;
    Ok(Client::new(c.kmip)?)
}

fn attributes(config: &ConfigArg, uid: &str, as_json: bool) -> anyhow::Result<()> {
    let attrs = client(config)?.get_attributes(uid, &[])?;
    let mut map = serde_json::Map::new();
    for a in &attrs.list {
        let name = match &a.name {
            AttributeName::Standard(t) => t.name().map_or_else(|| t.to_string(), str::to_owned),
            AttributeName::Vendor { vendor, name } => format!("{vendor}:{name}"),
        };
        let text = attribute_text(&a.value, a.tag().unwrap_or(Tag::ATTRIBUTE_VALUE));
        if as_json {
            map.insert(name, json!(text));
        } else {
            println!("{name:32} {text}");
        }
    }
    if as_json {
        println!("{}", serde_json::Value::Object(map));
    }
    Ok(())
}

/// An attribute value as one line of text, using the XML form's names.
fn attribute_text(value: &Value, tag: Tag) -> String {
    let item = Item::new(tag, value.clone());
    match value {
        Value::Structure(children) => children
            .iter()
            .map(|c| attribute_text(&c.value, c.tag))
            .collect::<Vec<_>>()
            .join(", "),
        _ => {
            let x = xml::to_xml_with(&item, xml::Secrets::Redact);
            x.split("value=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("")
                .to_owned()
        }
    }
}

fn server_information_text(info: &Item) -> String {
    match &info.value {
        Value::Structure(c) if !c.is_empty() => attribute_text(&info.value, info.tag),
        Value::Structure(_) => "(empty)".into(),
        v => attribute_text(v, info.tag),
    }
}

/// "Save and Test".
pub fn test(config: &ConfigArg, as_json: bool, probe_key: bool) -> anyhow::Result<()> {
    let report = |step: &str, error: String, hint: String| -> anyhow::Result<()> {
        if as_json {
            let hint = (!hint.is_empty()).then_some(hint);
            println!(
                "{}",
                json!({"ok": false, "step": step, "error": error, "hint": hint})
            );
        } else {
            println!("Save and Test: FAILED at step \"{step}\"");
            println!("  error  {error}");
            if !hint.is_empty() {
                println!("  fix    {hint}");
            }
        }
        bail!("the KMIP connection test failed at step \"{step}\"")
    };
    let cfg = match Config::load(&config.config) {
        Ok(c) => c,
        Err(e) => {
            // Most configuration errors say what to do themselves; repeat nothing.
            let hint = e.hint().unwrap_or_default().to_owned();
            return report("read configuration", e.to_string(), hint);
        }
    };
    let mut client = match Client::new(cfg.kmip) {
        Ok(c) => c,
        Err(e) => {
            let e = ClientError::from(e);
            return report(e.step(), e.to_string(), e.hint());
        }
    };
    let (q, rtt) = match client.ping() {
        Ok(x) => x,
        Err(e) => return report(e.step(), e.to_string(), e.hint()),
    };
    // The first request paid for negotiation (and server-side password hashing); time a
    // second one for the round trip an operation will see.
    let first = rtt;
    let rtt = client.ping().map_or(first, |(_, d)| d);
    let info = client
        .server_info()
        .context("no server information after a successful request")?;
    // Ask again for the list; 1.0 servers cannot answer, which is not a failure.
    let offered = if info.version >= ProtocolVersion::V1_1 {
        client.discover_versions().unwrap_or_default()
    } else {
        Vec::new()
    };
    let missing: Vec<String> = NEEDED_OPERATIONS
        .iter()
        .filter(|op| !q.operations.is_empty() && !q.operations.contains(op))
        .map(|op| op.to_string())
        .collect();
    let vendor = q.vendor_identification.clone().unwrap_or_default();
    let (client_not_after, client_days) = client.client_certificate_expiry();
    let (client_not_after, client_days) = (client_not_after.to_owned(), client_days);

    let probe = if probe_key {
        Some(probe(&mut client))
    } else {
        None
    };
    let probe_ok = probe.as_ref().is_none_or(|p| p.error.is_none());

    if as_json {
        let mut j = json!({
            "ok": probe_ok,
            "server": info.server.to_string(),
            "tls_version": info.tls.version,
            "cipher": info.tls.cipher,
            "handshake_ms": ms(info.tls.handshake_time),
            "kmip_version": info.version.to_string(),
            "versions_offered": offered.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            "vendor": vendor,
            "operations_missing": missing,
            "round_trip_ms": ms(rtt),
            "first_request_ms": ms(first),
            "server_certificate": {"subject": info.tls.server_subject, "not_after": info.tls.server_not_after, "days_left": info.tls.server_days_left},
            "client_certificate": {"not_after": client_not_after, "days_left": client_days},
        });
        if let Some(p) = &probe {
            j["probe_key"] = json!({
                "steps": p.steps.iter().map(|(s, d)| json!({"step": s, "ms": ms(*d)})).collect::<Vec<_>>(),
                "error": p.error.as_ref().map(|(s, e, _)| json!({"step": s, "error": e})),
            });
            if let Some((step, _, hint)) = &p.error {
                j["step"] = json!(step);
                j["hint"] = json!(hint);
            }
        }
        println!("{j}");
    } else {
        println!("Save and Test: {}", if probe_ok { "OK" } else { "FAILED" });
        println!("  server        {} answered", info.server);
        println!(
            "  TLS           {}, {} (connect and handshake {:.1} ms)",
            info.tls.version,
            info.tls.cipher,
            ms(info.tls.handshake_time)
        );
        let offered_text = match offered.is_empty() {
            true => String::new(),
            false => format!(
                " (server offers {})",
                offered
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        println!("  KMIP          version {}{offered_text}", info.version);
        println!(
            "  vendor        {}",
            if vendor.is_empty() {
                "(not given)"
            } else {
                &vendor
            }
        );
        if missing.is_empty() {
            println!("  operations    all that atrest needs are supported");
        } else {
            println!(
                "  operations    NOT supported by the server: {}",
                missing.join(", ")
            );
        }
        println!(
            "  round trip    {:.1} ms (Query; the first request, with negotiation, {:.1} ms)",
            ms(rtt),
            ms(first)
        );
        println!(
            "  certificates  client expires in {client_days} days ({client_not_after}); server {} expires in {} days ({})",
            info.tls.server_subject, info.tls.server_days_left, info.tls.server_not_after
        );
        for days in [client_days, info.tls.server_days_left] {
            if days < 30 {
                println!("  WARNING       a certificate expires in {days} days: renew it before it stops atrest from unlocking");
            }
        }
        if let Some(p) = &probe {
            for (s, d) in &p.steps {
                println!("  probe key     {s}: ok ({:.1} ms)", ms(*d));
            }
            if let Some((s, e, h)) = &p.error {
                println!("  probe key     {s}: FAILED: {e}");
                println!("  fix           {h}");
            }
        }
    }
    if !probe_ok {
        bail!("the throwaway key test failed");
    }
    Ok(())
}

/// One step of the probe, run against the throwaway key.
type ProbeStep<'a> = dyn Fn(&mut Client) -> Result<(), ClientError> + 'a;

struct Probe {
    steps: Vec<(&'static str, Duration)>,
    error: Option<(&'static str, String, String)>,
}

/// Create, activate, get, revoke, destroy a throwaway key, stopping at the first failure
/// (and still trying to clean up the key).
fn probe(client: &mut Client) -> Probe {
    let mut p = Probe {
        steps: Vec::new(),
        error: None,
    };
    let name = format!("atrest-probe-{}", std::process::id());
    let t = Instant::now();
    let uid = match client.create_aes_key(256, Some(&name)) {
        Ok(u) => u,
        Err(e) => {
            p.error = Some(("create", e.to_string(), e.hint()));
            return p;
        }
    };
    p.steps.push(("create", t.elapsed()));
    let steps: [(&'static str, &ProbeStep<'_>); 4] = [
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
            p.error = Some((name, e.to_string(), e.hint()));
            // Leave no Active throwaway key behind.
            let _ = client.revoke(&uid, RevocationReasonCode::CESSATION_OF_OPERATION, None);
            let _ = client.destroy(&uid);
            return p;
        }
        p.steps.push((name, t.elapsed()));
    }
    p
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
