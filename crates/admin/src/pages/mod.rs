//! The HTML, one file per page, on a shared layout. Server-rendered with maud (escaped by
//! default, checked at compile time); the only script is `/assets/app.js` (progress), so
//! the CSP forbids inline script outright.

pub mod audit;
pub mod confirm;
pub mod encryption;
pub mod layout;
pub mod login;
pub mod volumes;

use maud::{html, Markup};
use service::daemon::status::{State, VolumeStatus};

/// A volume's state in an operator's words.
pub fn state_words(v: &VolumeStatus) -> String {
    let why = v
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match v.state {
        State::Starting => "Starting".into(),
        State::Waiting => format!("Waiting for the key server{why}"),
        State::Converting => match &v.progress {
            Some(p) => format!("{} {:.1}%", kind_words(p.kind), p.percent()),
            None => "Converting".into(),
        },
        State::Unlocked => match &v.progress {
            // A deep rekey while serving.
            Some(p) => format!(
                "Encrypted and unlocked; {} {:.1}%",
                kind_words(p.kind).to_lowercase(),
                p.percent()
            ),
            None => "Encrypted and unlocked".into(),
        },
        State::Locked => format!("Locked{why}"),
        State::Plaintext => "Plaintext (not encrypted)".into(),
        State::Failed => format!("Failed{why}"),
        State::Stopped => "Stopped".into(),
    }
}

/// The newest job's outcome, when it is news: a failure or refusal (in red), or a
/// finished job with its message.
pub fn job_line(v: &VolumeStatus) -> Markup {
    use service::daemon::feed::JobResult;
    let Some(j) = &v.last_job else {
        return html! {};
    };
    let what = match j.operation {
        volume::convert::Kind::Encrypt => "Encryption",
        volume::convert::Kind::Decrypt => "Decryption",
        volume::convert::Kind::Rekey => "Key rotation",
    };
    let msg = j.message.as_deref().unwrap_or_default();
    html! {
        @match j.result {
            JobResult::Failed => { p.error.job role="alert" { (what) " failed at " (j.time) ": " (msg) } }
            JobResult::Refused => { p.error.job role="alert" { (what) " refused at " (j.time) ": " (msg) } }
            JobResult::Finished => { p.hint.job { (what) " finished at " (j.time) ": " (msg) } }
            JobResult::Started | JobResult::Resuming => {}
        }
    }
}

/// "Encrypting", "Decrypting", "Re-encrypting".
pub fn kind_words(k: volume::convert::Kind) -> &'static str {
    match k {
        volume::convert::Kind::Encrypt => "Encrypting",
        volume::convert::Kind::Decrypt => "Decrypting",
        volume::convert::Kind::Rekey => "Re-encrypting",
    }
}

/// Bytes as MiB/GiB.
pub fn size(b: f64) -> String {
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    }
}

/// Seconds as `1 h 02 min`, `3 min 05 s`, `12 s`.
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// The progress block of a converting volume (updated in place by app.js).
pub fn progress(v: &VolumeStatus) -> Markup {
    let pct = v.progress.map(|p| p.percent()).unwrap_or(0.0);
    let rate = v.progress.and_then(|p| p.bytes_per_sec);
    let eta = v.progress.and_then(|p| p.eta_secs);
    html! {
        @if v.state == State::Converting || v.progress.is_some() {
            div.progress data-progress=(v.name) {
                progress max="100" value=(format!("{pct:.1}")) aria-label=(format!("{} progress", v.name)) {}
                span.pct { (format!("{pct:.1}%")) }
                " · "
                span.rate { (rate.map(|r| format!("{}/s", size(r))).unwrap_or_else(|| "measuring…".into())) }
                " · "
                span.eta { (eta.map(|e| format!("{} left", duration(e))).unwrap_or_default()) }
            }
        }
    }
}
