//! `atrest ctl`: the control API of a running `atrest serve`, from the command line.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};
use service::daemon::client::call;

use crate::cli::args::{CtlArgs, CtlCommand};

pub fn run(a: CtlArgs) -> anyhow::Result<()> {
    let socket = match &a.socket {
        Some(s) => s.clone(),
        None => service::daemon::api_socket(a.config.as_deref())?,
    };
    match &a.command {
        CtlCommand::Status => {
            let (_, s) = call(&socket, "GET", "/v1/status", None)?;
            print_status(&s, a.json);
            Ok(())
        }
        CtlCommand::Test { probe_key } => {
            let (code, r) = call(
                &socket,
                "POST",
                "/v1/test",
                Some(&json!({"probe_key": probe_key})),
            )?;
            println!(
                "{}",
                if a.json {
                    r.to_string()
                } else {
                    serde_json::to_string_pretty(&r)?
                }
            );
            if code != 200 {
                bail!("the KMIP connection test failed at step {}", r["step"]);
            }
            Ok(())
        }
        CtlCommand::Lock { volume } => {
            command(&socket, volume, "lock", json!({}), &a, false, "locked")
        }
        CtlCommand::Unlock { volume } => {
            command(&socket, volume, "unlock", json!({}), &a, false, "unlocked")
        }
        CtlCommand::Encrypt {
            volume,
            key,
            no_wait,
        } => {
            let body = json!({"key": serde_json::to_value(key.spec())?});
            command(&socket, volume, "encrypt", body, &a, *no_wait, "job")
        }
        CtlCommand::Decrypt {
            volume,
            old,
            no_wait,
        } => command(
            &socket,
            volume,
            "decrypt",
            json!({"keep_old": old.keep_old}),
            &a,
            *no_wait,
            "job",
        ),
        CtlCommand::Rekey {
            volume,
            deep,
            old,
            no_wait,
        } => command(
            &socket,
            volume,
            "rekey",
            json!({"deep": deep, "keep_old": old.keep_old}),
            &a,
            *no_wait,
            "job",
        ),
    }
}

/// Sends `action` for `volume`, then follows the event feed until it has an outcome.
fn command(
    socket: &std::path::Path,
    volume: &str,
    action: &str,
    body: Value,
    a: &CtlArgs,
    no_wait: bool,
    until: &str,
) -> anyhow::Result<()> {
    let (_, e) = call(socket, "GET", "/v1/events?after=0&wait=0", None)?;
    let mut after = e["last"].as_u64().unwrap_or(0);
    let (code, r) = call(
        socket,
        "POST",
        &format!("/v1/volumes/{volume}/{action}"),
        Some(&body),
    )?;
    if code != 202 {
        bail!("{}", r["error"].as_str().unwrap_or("the daemon refused"));
    }
    if no_wait {
        println!(
            "{}",
            if a.json {
                r.to_string()
            } else {
                format!("{volume}: {action} accepted")
            }
        );
        return Ok(());
    }
    let deadline =
        Instant::now() + Duration::from_secs(if until == "job" { 7 * 24 * 3600 } else { 120 });
    while Instant::now() < deadline {
        let (_, e) = call(
            socket,
            "GET",
            &format!("/v1/events?after={after}&wait=10"),
            None,
        )?;
        after = e["last"].as_u64().unwrap_or(after);
        for ev in e["events"].as_array().into_iter().flatten() {
            if ev["volume"] != volume {
                continue;
            }
            if a.json {
                println!("{ev}");
            }
            let kind = ev["event"].as_str().unwrap_or("");
            match (kind, until) {
                ("progress", _) if !a.json => eprintln!(
                    "{volume}: {} {} of {} bytes",
                    ev["operation"].as_str().unwrap_or(""),
                    ev["done"],
                    ev["total"]
                ),
                ("job", "job") => match ev["result"].as_str() {
                    Some("finished") => {
                        if !a.json {
                            println!("{volume}: {}", ev["message"].as_str().unwrap_or("done"));
                        }
                        return Ok(());
                    }
                    Some("failed" | "refused") => {
                        bail!("{volume}: {}", ev["message"].as_str().unwrap_or("failed"))
                    }
                    _ => {}
                },
                ("state", _) if until != "job" => {
                    let state = ev["state"].as_str().unwrap_or("");
                    // The state asked for, or one that says it will not come.
                    if state == until
                        || (until == "unlocked"
                            && matches!(state, "locked" | "failed" | "waiting" | "plaintext"))
                        || (until == "locked" && matches!(state, "failed" | "plaintext"))
                    {
                        if !a.json {
                            println!(
                                "{volume}: {state}{}",
                                ev["reason"]
                                    .as_str()
                                    .map(|r| format!(" ({r})"))
                                    .unwrap_or_default()
                            );
                        }
                        if state != until {
                            bail!("{volume} is not {until}");
                        }
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }
    bail!("no outcome from the daemon in time")
}

fn print_status(s: &Value, as_json: bool) {
    if as_json {
        println!("{s}");
        return;
    }
    let d = &s["daemon"];
    println!(
        "atrest serve, pid {}, started {}, {}",
        d["pid"],
        d["started"].as_str().unwrap_or(""),
        if d["ready"].as_bool() == Some(true) {
            "ready"
        } else {
            "starting"
        }
    );
    for v in s["volumes"].as_array().into_iter().flatten() {
        println!();
        println!(
            "{}  {}",
            v["name"].as_str().unwrap_or(""),
            v["state"].as_str().unwrap_or("").to_uppercase()
        );
        println!("  device       {}", v["path"].as_str().unwrap_or(""));
        if let Some(r) = v["reason"].as_str() {
            println!("  why          {r}");
        }
        if let Some(k) = v["key_uid"].as_str() {
            println!("  KMIP key     {k}");
        }
        for e in v["exports"].as_array().into_iter().flatten() {
            println!(
                "  export       {} {}",
                e["kind"].as_str().unwrap_or(""),
                e["at"].as_str().unwrap_or("")
            );
        }
        if let Some(p) = v["progress"].as_object() {
            println!(
                "  converting   {} {} of {} bytes",
                p["kind"].as_str().unwrap_or(""),
                p["done"],
                p["total"]
            );
        }
        if let Some(c) = v["last_key_check"].as_object() {
            println!(
                "  key check    {} at {}{}",
                c["result"].as_str().unwrap_or(""),
                c["time"].as_str().unwrap_or(""),
                c["server"]
                    .as_str()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = v["server_error"].as_str() {
            println!("  server       unreachable: {e} (the volume keeps serving)");
        }
        if let Some(n) = v["next_retry_secs"].as_f64() {
            println!("  next try     in {n:.1} s (attempt {})", v["attempts"]);
        }
        println!("  since        {}", v["since"].as_str().unwrap_or(""));
    }
}
