//! `atrest kmip ...`: "Save and Test" and the key operations, against the configured server.

use std::io::Write;

use anyhow::bail;
use kmip::client::Client;
use kmip::enums::RevocationReasonCode;
use kmip::message::AttributeName;
use kmip::ttlv::{xml, Item, Tag, Value};
use serde_json::json;
use service::config::Config;
use service::ops::test::TestReport;
use volume::text::shown;

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
        KmipCommand::Get {
            config,
            uid,
            raw,
            usable,
        } => {
            let key = if usable {
                super::convert::key_manager(&config)?.fetch_usable(&uid)?
            } else {
                client(&config)?.get_symmetric_key(&uid)?
            };
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
        KmipCommand::Activate { config, uid } => {
            client(&config)?.activate(&uid)?;
            println!("{}: activated", shown(&uid));
            Ok(())
        }
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
            client(&config)?.revoke(&uid, reason, message.as_deref())?;
            // A script checks the exit status; a person wants to see that it happened.
            println!(
                "{}: revoked ({})",
                shown(&uid),
                reason.name().unwrap_or("?")
            );
            Ok(())
        }
        KmipCommand::Destroy { config, uid } => {
            client(&config)?.destroy(&uid)?;
            println!(
                "{}: destroyed (its key material is gone from the server)",
                shown(&uid)
            );
            Ok(())
        }
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

/// "Save and Test": the service runs it; this prints its report as text or JSON.
pub fn test(config: &ConfigArg, as_json: bool, probe_key: bool) -> anyhow::Result<()> {
    let r = service::ops::test::save_and_test(&config.config, probe_key);
    if as_json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_test(&r);
    }
    if !r.ok {
        bail!(
            "the KMIP connection test failed at step \"{}\"",
            r.step.unwrap_or("?")
        );
    }
    Ok(())
}

fn print_test(r: &TestReport) {
    let Some(server) = &r.server else {
        println!(
            "Save and Test: FAILED at step \"{}\"",
            r.step.unwrap_or("?")
        );
        println!("  error  {}", r.error.as_deref().unwrap_or(""));
        if let Some(h) = &r.hint {
            println!("  fix    {h}");
        }
        return;
    };
    println!("Save and Test: {}", if r.ok { "OK" } else { "FAILED" });
    println!("  server        {server} answered");
    println!(
        "  TLS           {}, {} (connect and handshake {:.1} ms)",
        r.tls_version.as_deref().unwrap_or(""),
        r.cipher.as_deref().unwrap_or(""),
        r.handshake_ms.unwrap_or(0.0)
    );
    let offered = if r.versions_offered.is_empty() {
        String::new()
    } else {
        format!(" (server offers {})", r.versions_offered.join(", "))
    };
    println!(
        "  KMIP          version {}{offered}",
        r.kmip_version.as_deref().unwrap_or("")
    );
    let vendor = r.vendor.as_deref().filter(|v| !v.is_empty());
    println!("  vendor        {}", vendor.unwrap_or("(not given)"));
    match r.operations_missing.as_deref() {
        Some([]) | None => println!("  operations    all that atrest needs are supported"),
        Some(m) => println!(
            "  operations    NOT supported by the server: {}",
            m.join(", ")
        ),
    }
    println!(
        "  round trip    {:.1} ms (Query; the first request, with negotiation, {:.1} ms)",
        r.round_trip_ms.unwrap_or(0.0),
        r.first_request_ms.unwrap_or(0.0)
    );
    if let (Some(c), Some(s)) = (&r.client_certificate, &r.server_certificate) {
        println!(
            "  certificates  client expires in {} days ({}); server {} expires in {} days ({})",
            c.days_left,
            c.not_after,
            s.subject.as_deref().unwrap_or(""),
            s.days_left,
            s.not_after
        );
        let server = format!(
            "the KMIP server's certificate{}",
            s.subject
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        for (which, days) in [
            ("the client certificate", c.days_left),
            (server.as_str(), s.days_left),
        ] {
            if days <= 30 {
                println!("  WARNING       {which} expires in {days} days: renew it before it stops atrest from unlocking");
            }
        }
    }
    if let Some(p) = &r.probe_key {
        for s in &p.steps {
            println!("  probe key     {}: ok ({:.1} ms)", s.step, s.ms);
        }
        if let Some(e) = &p.error {
            println!("  probe key     {}: FAILED: {}", e.step, e.error);
            if let Some(h) = &r.hint {
                println!("  fix           {h}");
            }
        }
    }
}
