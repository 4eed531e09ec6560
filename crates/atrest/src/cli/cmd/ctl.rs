//! `atrest ctl`: the control API of a running `atrest serve`, from the command line.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};
use service::daemon::client::call;
use service::daemon::feed::{ApiError, Event, Feed, JobResult, StatusReport, TestVerdict};
use service::daemon::status::State;

use crate::cli::args::{CtlArgs, CtlCommand};

pub fn run(a: CtlArgs) -> anyhow::Result<()> {
    let socket = match &a.socket {
        Some(s) => s.clone(),
        None => service::daemon::api_socket(a.config.as_deref())?,
    };
    match &a.command {
        CtlCommand::Status { check } => {
            let (_, s) = call(&socket, "GET", "/v1/status", None)?;
            let report: StatusReport = serde_json::from_value(s.clone())?;
            let mut out = std::io::stdout().lock();
            if a.json {
                writeln!(out, "{s}")?;
            } else {
                print_status(&mut out, &report)?;
            }
            if *check {
                let not: Vec<String> = report
                    .volumes
                    .iter()
                    .filter(|v| !matches!(v.state, State::Unlocked | State::Plaintext))
                    .map(|v| {
                        format!(
                            "{} is {}{}",
                            v.name,
                            v.state.name(),
                            v.reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                if !not.is_empty() {
                    bail!("not every volume is unlocked: {}", not.join("; "));
                }
                if !report.daemon.audit.ok {
                    bail!("the audit log does not take every line");
                }
                let trouble: Vec<String> = report
                    .volumes
                    .iter()
                    .filter_map(|v| {
                        v.server_error
                            .as_ref()
                            .map(|e| format!("{}: the key server did not answer ({e})", v.name))
                    })
                    .chain(
                        report
                            .daemon
                            .certificates
                            .iter()
                            .filter_map(|c| c.warning.clone()),
                    )
                    .collect();
                if !trouble.is_empty() {
                    bail!("{}", trouble.join("; "));
                }
            }
            Ok(())
        }
        CtlCommand::Test { probe_key } => {
            let (code, r) = call(
                &socket,
                "POST",
                "/v1/test",
                Some(&json!({"probe_key": probe_key})),
            )?;
            let v: TestVerdict = serde_json::from_value(r.clone())?;
            if a.json {
                println!("{r}");
            } else {
                print_test(&v);
            }
            if code != 200 {
                match (v.step, v.error) {
                    (Some(step), _) => bail!("the KMIP connection test failed at step {step:?}"),
                    (None, Some(e)) => bail!("the KMIP connection test did not run: {e}"),
                    (None, None) => bail!("the KMIP connection test failed ({code})"),
                }
            }
            Ok(())
        }
        CtlCommand::Lock { volume } => command(
            &socket,
            volume,
            "lock",
            json!({}),
            &a,
            false,
            Until::State(State::Locked),
        ),
        CtlCommand::Unlock { volume } => command(
            &socket,
            volume,
            "unlock",
            json!({}),
            &a,
            false,
            Until::State(State::Unlocked),
        ),
        CtlCommand::Encrypt {
            volume,
            key,
            no_wait,
        } => {
            let body = json!({"key": serde_json::to_value(key.spec())?});
            command(&socket, volume, "encrypt", body, &a, *no_wait, Until::Job)
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
            Until::Job,
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
            Until::Job,
        ),
    }
}

/// What `command` waits for after the daemon accepted it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The volume reaches this state (or one that says it will not come).
    State(State),
    /// The job ends.
    Job,
}

/// Sends `action` for `volume`, then follows the event feed until it has an outcome.
fn command(
    socket: &std::path::Path,
    volume: &str,
    action: &str,
    body: Value,
    a: &CtlArgs,
    no_wait: bool,
    until: Until,
) -> anyhow::Result<()> {
    let feed = |after: u64, wait: u64| -> anyhow::Result<Feed> {
        let (_, e) = call(
            socket,
            "GET",
            &format!("/v1/events?after={after}&wait={wait}"),
            None,
        )?;
        Ok(serde_json::from_value(e)?)
    };
    let mut after = feed(0, 0)?.last;
    let (code, r) = call(
        socket,
        "POST",
        &format!("/v1/volumes/{volume}/{action}"),
        Some(&body),
    )?;
    if code != 202 {
        let e: Result<ApiError, _> = serde_json::from_value(r);
        bail!(
            "{}",
            e.map_or_else(|_| "the daemon refused".to_owned(), |e| e.error)
        );
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
    let deadline = Instant::now()
        + Duration::from_secs(if until == Until::Job {
            7 * 24 * 3600
        } else {
            120
        });
    let mut last_line = Instant::now() - Duration::from_secs(60);
    while Instant::now() < deadline {
        let f = feed(after, 10)?;
        after = f.last;
        for logged in f.events {
            if logged.event.volume() != volume {
                continue;
            }
            if a.json {
                println!("{}", serde_json::to_string(&logged)?);
            }
            match (logged.event, until) {
                (
                    Event::Progress {
                        operation,
                        done,
                        total,
                        ..
                    },
                    _,
                    // The CLI's units and pace: a line every few seconds, and the last.
                ) if !a.json
                    && (last_line.elapsed() >= Duration::from_secs(5) || done == total) =>
                {
                    last_line = Instant::now();
                    eprintln!(
                        "{volume}: {} {} of {} ({:.0}%)",
                        operation.as_str(),
                        indicatif::HumanBytes(done),
                        indicatif::HumanBytes(total),
                        100.0 * done as f64 / total.max(1) as f64
                    );
                }
                (
                    Event::Job {
                        result, message, ..
                    },
                    Until::Job,
                ) => match result {
                    JobResult::Finished => {
                        if !a.json {
                            println!("{volume}: {}", message.as_deref().unwrap_or("done"));
                        }
                        return Ok(());
                    }
                    JobResult::Failed | JobResult::Refused => {
                        bail!("{volume}: {}", message.as_deref().unwrap_or("failed"))
                    }
                    JobResult::Started | JobResult::Resuming => {}
                },
                (Event::State { state, reason, .. }, Until::State(want)) => {
                    // The state asked for, or one that says it will not come.
                    let settled = state == want
                        || (want == State::Unlocked
                            && matches!(
                                state,
                                State::Locked | State::Failed | State::Waiting | State::Plaintext
                            ))
                        || (want == State::Locked
                            && matches!(state, State::Failed | State::Plaintext));
                    if settled {
                        if !a.json {
                            println!(
                                "{volume}: {}{}",
                                state.name(),
                                reason.map(|r| format!(" ({r})")).unwrap_or_default()
                            );
                        }
                        if state != want {
                            bail!("{volume} is not {}", want.name());
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

/// Save and Test's answer for a person (as `atrest kmip test` prints its own).
fn print_test(v: &TestVerdict) {
    println!(
        "{}",
        if v.ok {
            "KMIP connection test passed"
        } else {
            "KMIP connection test FAILED"
        }
    );
    if let (Some(t), Some(c)) = (&v.tls_version, &v.cipher) {
        println!(
            "  connection    {t} with {c} to {}",
            v.server.as_deref().unwrap_or("?")
        );
    }
    if let Some(k) = &v.kmip_version {
        println!(
            "  KMIP          version {k}, server product {}",
            v.vendor.as_deref().unwrap_or("(not given)")
        );
    }
    if let Some(ms) = v.round_trip_ms {
        println!("  round trip    {ms:.1} ms");
    }
    for (which, c) in [
        ("server certificate", &v.server_certificate),
        ("client certificate", &v.client_certificate),
    ] {
        if let Some(c) = c {
            println!(
                "  {which}: {}expires {} ({} days left)",
                c.subject
                    .as_deref()
                    .map(|s| format!("{s}, "))
                    .unwrap_or_default(),
                c.not_after,
                c.days_left
            );
        }
    }
    if let Some(step) = &v.step {
        println!(
            "  failed at     {step}: {}",
            v.error.as_deref().unwrap_or("")
        );
    } else if let Some(e) = &v.error {
        println!("  error         {e}");
    }
    if let Some(h) = &v.hint {
        println!("  what to do    {h}");
    }
}

/// Writes the status for a person; a closed pipe (`| head`) is an error the caller treats
/// as the end of the output, not a panic.
fn print_status(out: &mut impl std::io::Write, s: &StatusReport) -> std::io::Result<()> {
    let d = &s.daemon;
    writeln!(
        out,
        "atrest serve, pid {}, started {}, {}",
        d.pid,
        d.started,
        if d.ready { "ready" } else { "starting" }
    )?;
    if !d.audit.ok {
        writeln!(
            out,
            "  AUDIT LOG FAILING since {}: {} ({} line(s) waiting, {} lost)",
            d.audit.failing_since.as_deref().unwrap_or("?"),
            d.audit.error.as_deref().unwrap_or("?"),
            d.audit.pending,
            d.audit.lost
        )?;
    }
    for c in &d.certificates {
        if let Some(w) = &c.warning {
            writeln!(out, "  CERTIFICATE  {w}")?;
        }
    }
    for v in &s.volumes {
        writeln!(out,)?;
        writeln!(out, "{}  {}", v.name, v.state.name().to_uppercase())?;
        writeln!(out, "  device       {}", v.path)?;
        if let Some(r) = &v.reason {
            writeln!(out, "  why          {r}")?;
        }
        if let Some(e) = &v.device_error {
            writeln!(out, "  DEVICE       {e}")?;
        }
        if let Some(k) = &v.key_uid {
            writeln!(out, "  KMIP key     {k}")?;
        }
        for e in &v.exports {
            writeln!(out, "  export       {} {}", e.kind, e.at)?;
        }
        if let Some(p) = &v.progress {
            writeln!(
                out,
                "  converting   {} {} of {} bytes",
                p.kind.as_str(),
                p.done,
                p.total
            )?;
        }
        if let Some(c) = &v.last_key_check {
            writeln!(
                out,
                "  key check    {} at {}{}",
                c.result,
                c.time,
                c.server
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            )?;
        }
        if let Some(e) = &v.server_error {
            writeln!(
                out,
                "  server       unreachable: {e} (the volume keeps serving)"
            )?;
        }
        if let Some(n) = v.next_retry_secs {
            writeln!(out, "  next try     in {n:.1} s (attempt {})", v.attempts)?;
        }
        writeln!(out, "  since        {}", v.since)?;
    }
    Ok(())
}
