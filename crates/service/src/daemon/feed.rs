//! The daemon's event feed and its API answers as types: what `atrest serve` writes and
//! what `atrest ctl` (and the coming web page) read are the same structs, so a field
//! renamed on one side is a compile error on the other, not a silently empty column.
//!
//! On the wire an event is one JSON object: `{"event": "state", "volume": "…", …, "seq": N,
//! "time": "…"}` (`GET /v1/events?after=N&wait=S` answers [`Feed`]); the status is
//! [`StatusReport`] (`GET /v1/status`).

use serde::{Deserialize, Serialize};
use volume::convert::Kind;

use super::status::{State, VolumeStatus};
use crate::audit::AuditHealth;

/// Something that happened to a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The volume's state changed (or was asked for again).
    State {
        /// Which volume.
        volume: String,
        /// Its state now.
        state: State,
        /// Why, when waiting, locked or failed.
        reason: Option<String>,
    },
    /// No key server answered; the next attempt is scheduled.
    Retry {
        /// Which volume.
        volume: String,
        /// Attempts so far.
        attempts: u32,
        /// Seconds until the next.
        next_retry_secs: Option<f64>,
    },
    /// The key's state was asked while serving.
    KeyCheck {
        /// Which volume.
        volume: String,
        /// The state, or why no answer came.
        result: String,
    },
    /// A key check got no answer (the volume keeps serving).
    KeyCheckFailed {
        /// Which volume.
        volume: String,
        /// Why.
        error: String,
    },
    /// The image file was deleted while served.
    DeviceDeleted {
        /// Which volume.
        volume: String,
        /// What it means and what to do.
        error: String,
    },
    /// A conversion job started, resumed, ended or was refused.
    Job {
        /// Which volume.
        volume: String,
        /// Which conversion.
        operation: Kind,
        /// How it stands.
        result: JobResult,
        /// The outcome in words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A conversion's committed progress (at most twice a second).
    Progress {
        /// Which volume.
        volume: String,
        /// Which conversion.
        operation: Kind,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
}

impl Event {
    /// The volume the event is about.
    pub fn volume(&self) -> &str {
        match self {
            Self::State { volume, .. }
            | Self::Retry { volume, .. }
            | Self::KeyCheck { volume, .. }
            | Self::KeyCheckFailed { volume, .. }
            | Self::DeviceDeleted { volume, .. }
            | Self::Job { volume, .. }
            | Self::Progress { volume, .. } => volume,
        }
    }
}

/// How a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResult {
    /// Started from the API.
    Started,
    /// An interrupted conversion is being finished.
    Resuming,
    /// Done.
    Finished,
    /// Ended with an error (in the message).
    Failed,
    /// Not started (the message says why).
    Refused,
}

/// An event as the feed keeps it: numbered and timed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    /// Its number (increasing from 1).
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// `GET /v1/events`: the events after the number asked for, and the number to ask after
/// next time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feed {
    /// The events, oldest first.
    pub events: Vec<Logged>,
    /// The highest number handed out so far.
    pub last: u64,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// The daemon.
    pub daemon: DaemonStatus,
    /// Every volume.
    pub volumes: Vec<VolumeStatus>,
}

/// The daemon's own facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Its process.
    pub pid: u32,
    /// Its configuration file.
    pub config: std::path::PathBuf,
    /// When it started (RFC 3339).
    pub started: String,
    /// Every volume unlocked or with its reason.
    pub ready: bool,
    /// How the process is hardened.
    pub hardening: Hardening,
    /// Whether the audit log takes every line.
    pub audit: AuditHealth,
    /// Syslog forwarding, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<crate::syslog::SyslogHealth>,
    /// The KMIP certificates' expiry (a `warning` within 30 days of it).
    #[serde(default)]
    pub certificates: Vec<super::expiry::CertExpiry>,
}

/// The process's own word on its hardening.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hardening {
    /// Whether a core dump or ptrace could read its memory.
    pub dumpable: bool,
}

/// `POST /v1/volumes/NAME/ACTION` (202): the command is with the volume's worker; its
/// outcome comes as events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The action.
    pub accepted: String,
    /// The volume.
    pub volume: String,
}

/// Any refusal (4xx, 5xx): what went wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The reason.
    pub error: String,
}

/// What a client needs of `POST /v1/test`'s answer (the whole of it is
/// [`crate::ops::test::TestReport`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TestVerdict {
    /// Every step passed.
    pub ok: bool,
    /// The step that failed.
    #[serde(default)]
    pub step: Option<String>,
    /// Why.
    #[serde(default)]
    pub error: Option<String>,
    /// What to do.
    #[serde(default)]
    pub hint: Option<String>,
    /// The server that answered.
    #[serde(default)]
    pub server: Option<String>,
    /// TLS version.
    #[serde(default)]
    pub tls_version: Option<String>,
    /// Cipher suite.
    #[serde(default)]
    pub cipher: Option<String>,
    /// KMIP version negotiated.
    #[serde(default)]
    pub kmip_version: Option<String>,
    /// The server's product.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Milliseconds per request.
    #[serde(default)]
    pub round_trip_ms: Option<f64>,
    /// The server certificate.
    #[serde(default)]
    pub server_certificate: Option<crate::ops::test::Expiry>,
    /// The client certificate.
    #[serde(default)]
    pub client_certificate: Option<crate::ops::test::Expiry>,
}

/// Every answer of the control API, as the daemon builds it: one type per route, so that
/// the web page (which calls the routes in process) reads fields, not JSON paths. On the
/// wire each is its own object (untagged).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ApiAnswer {
    /// `GET /v1/status`.
    Status(Box<StatusReport>),
    /// `POST /v1/test`.
    Test(Box<crate::ops::test::TestReport>),
    /// `GET /v1/events`.
    Feed(Feed),
    /// A volume command taken.
    Accepted(Accepted),
    /// A refusal.
    Error(ApiError),
}

impl ApiAnswer {
    /// A refusal with `error`.
    pub fn error(error: impl Into<String>) -> Self {
        Self::Error(ApiError {
            error: error.into(),
        })
    }

    /// The refusal's reason, if it is one.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            Self::Error(e) => Some(&e.error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_keeps_its_wire_form_and_comes_back() {
        let e = Logged {
            seq: 7,
            time: "2026-12-04T23:00:00.000Z".into(),
            event: Event::Job {
                volume: "v".into(),
                operation: Kind::Decrypt,
                result: JobResult::Finished,
                message: Some("decrypted".into()),
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "job");
        assert_eq!(v["operation"], "decrypt");
        assert_eq!(v["result"], "finished");
        assert_eq!(v["seq"], 7);
        assert_eq!(serde_json::from_value::<Logged>(v).unwrap(), e);
        let s = serde_json::to_value(Event::State {
            volume: "v".into(),
            state: State::Locked,
            reason: None,
        })
        .unwrap();
        assert_eq!(s["state"], "locked");
    }
}
