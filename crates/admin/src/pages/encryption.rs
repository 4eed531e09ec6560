//! Storage › Encryption: the KMIP settings form, the last test's steps, and Encrypt.

use maud::{html, Markup};
use service::daemon::status::{State, VolumeStatus};
use service::ops::test::TestReport;

use super::layout::{page, Section, Who};
use crate::settings::{CertInfo, Current, Field, FieldError};

/// The last Save and Test, as shown.
#[derive(Clone)]
pub struct TestView {
    /// The report.
    pub report: TestReport,
    /// The served-keys check of new settings.
    pub reach: Option<Result<(), String>>,
    /// Whether new settings were saved.
    pub saved: bool,
    /// Whether nothing was changed (a test of the settings in force).
    pub unchanged: bool,
    /// When (RFC 3339).
    pub when: String,
    /// Everything passed.
    pub passed: bool,
}

/// Whether Encrypt is offered, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Yes.
    Open,
    /// No test has passed since the daemon started.
    NoTest,
    /// The settings changed since the last passing test.
    Stale,
    /// Nothing to encrypt.
    NoPlaintext,
}

impl Gate {
    fn why(self) -> &'static str {
        match self {
            Self::Open => "",
            Self::NoTest => "Encrypt is offered after the saved settings pass a test: press “Save and Test Changes” (or “Test saved settings”).",
            Self::Stale => "The settings changed since their last passing test: test them again before encrypting.",
            Self::NoPlaintext => "No volume is plaintext: every configured volume is encrypted or converting.",
        }
    }
}

/// What the form shows when a save was refused: the operator's typing, kept.
#[derive(Default)]
pub struct Typed {
    /// Server lines.
    pub servers: Option<String>,
    /// User name.
    pub username: Option<String>,
}

/// The page's parts.
pub struct View<'a> {
    /// Signed in.
    pub who: Who<'a>,
    /// The settings in force.
    pub current: &'a Current,
    /// The operator's typing, when a save was refused.
    pub typed: Typed,
    /// Problems by field.
    pub errors: &'a [FieldError],
    /// The last test.
    pub test: Option<&'a TestView>,
    /// Encrypt's gate.
    pub gate: Gate,
    /// The volumes.
    pub volumes: &'a [VolumeStatus],
    /// A line at the top (what just happened).
    pub notice: Option<String>,
    /// The KMIP certificates' expiry, as the daemon last looked.
    pub certificates: &'a [service::daemon::expiry::CertExpiry],
}

fn error_for(errors: &[FieldError], f: Field) -> Markup {
    html! {
        @for e in errors.iter().filter(|e| e.field == f) {
            p.field-error id=(format!("{}-error", f.name())) role="alert" { (e.message) }
        }
    }
}

fn described_by(errors: &[FieldError], f: Field) -> Option<String> {
    errors
        .iter()
        .any(|e| e.field == f)
        .then(|| format!("{}-error", f.name()))
}

fn cert_line(c: &Option<CertInfo>) -> Markup {
    html! {
        @match c {
            Some(c) => {
                p.current {
                    "Now: " code { (c.path) }
                    @if let Some(s) = &c.subject { br; "Subject: " (s) }
                    @if let Some(n) = &c.not_after { br; "Expires: " (n) }
                }
            }
            None => { p.current { "Now: none" } }
        }
    }
}

fn step(ok: bool, title: &str, detail: Markup) -> Markup {
    html! {
        li class=(if ok { "pass" } else { "fail" }) {
            span.mark aria-hidden="true" { (if ok { "✔" } else { "✘" }) }
            span.visually-hidden { (if ok { "passed: " } else { "failed: " }) }
            strong { (title) } " " (detail)
        }
    }
}

fn expiry(label: &str, e: &service::ops::test::Expiry) -> Markup {
    html! {
        (step(e.days_left > 0, label, html! {
            @if let Some(s) = &e.subject { "subject " code { (s) } ", " }
            "expires " (e.not_after) " (" (e.days_left) " days left)"
        }))
    }
}

/// The steps of a test, in words.
pub fn test_steps(t: &TestView) -> Markup {
    let r = &t.report;
    html! {
        section.test aria-labelledby="test-title" {
            h2 #test-title {
                @if t.passed { "Test passed" } @else { "Test failed" }
                " " small { (t.when) }
            }
            @if t.saved { p.notice { "The new settings are saved and in use." } }
            @else if !t.unchanged && !t.passed { p.notice { "Nothing was saved: the settings in use are unchanged." } }
            ol.steps {
                @if let (Some(v), Some(c)) = (&r.tls_version, &r.cipher) {
                    (step(true, "Secure connection:", html! {
                        (v) " with " code { (c) }
                        @if let Some(s) = &r.server { " to " code { (s) } }
                        @if let Some(ms) = r.handshake_ms { ", handshake " (format!("{ms:.0}")) " ms" }
                    }))
                }
                @if let Some(e) = &r.server_certificate { (expiry("Server certificate:", e)) }
                @if let Some(e) = &r.client_certificate { (expiry("Client certificate:", e)) }
                @if let Some(v) = &r.kmip_version {
                    (step(true, "KMIP:", html! {
                        "version " (v)
                        @if !r.versions_offered.is_empty() { " (the server offers " (r.versions_offered.join(", ")) ")" }
                        @if let Some(p) = &r.vendor { @if !p.is_empty() { ", server product " code { (p) } } }
                    }))
                }
                @if let Some(ms) = r.round_trip_ms {
                    (step(true, "Round trip:", html! { (format!("{ms:.1}")) " ms per request" }))
                }
                @if let Some(m) = &r.operations_missing {
                    @if !m.is_empty() {
                        (step(false, "Operations:", html! { "the server does not list " (m.join(", ")) }))
                    }
                }
                @if let Some(step_name) = r.step {
                    (step(false, &format!("{}:", capitalised(step_name)), html! {
                        (r.error.as_deref().unwrap_or_default())
                        @if let Some(h) = &r.hint { br; em { "What to do: " (h) } }
                    }))
                }
                @match &t.reach {
                    Some(Ok(())) => { (step(true, "Served volumes:", html! { "their keys are reachable with these settings" })) }
                    Some(Err(e)) => { (step(false, "Served volumes:", html! { (e) })) }
                    None => {}
                }
            }
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The page.
pub fn render(v: View<'_>) -> Markup {
    let c = v.current;
    let servers = v
        .typed
        .servers
        .clone()
        .unwrap_or_else(|| c.servers.join("\n"));
    let username = v
        .typed
        .username
        .clone()
        .unwrap_or_else(|| c.username.clone());
    let plaintext: Vec<&VolumeStatus> = v
        .volumes
        .iter()
        .filter(|s| s.state == State::Plaintext)
        .collect();
    page(
        "Storage › Encryption",
        Section::Encryption,
        Some(Who {
            user: v.who.user,
            csrf: v.who.csrf,
        }),
        html! {
            h1 { "Storage › Encryption" }
            @if let Some(n) = &v.notice { p.notice role="status" { (n) } }
            @for c in v.certificates {
                @if let Some(w) = &c.warning { p.error.certificate role="alert" { (w) } }
            }
            (error_for(v.errors, Field::General))
            form.settings method="post" action="/storage/encryption" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(v.who.csrf);
                fieldset {
                    legend { "KMIP servers" }
                    label for="servers" { "Servers, one per line, tried in order (host name or address; port 5696 unless written host:port)" }
                    textarea #servers name="servers" rows="3" required aria-describedby=[described_by(v.errors, Field::Servers)] { (servers) }
                    (error_for(v.errors, Field::Servers))
                }
                fieldset {
                    legend { "Certificates" }
                    label for="ca_cert" { "Server CA certificate (PEM or DER)" }
                    (cert_line(&c.ca_cert))
                    input #ca_cert type="file" name="ca_cert" aria-describedby=[described_by(v.errors, Field::CaCert)];
                    (error_for(v.errors, Field::CaCert))
                    label for="client_cert" { "Client certificate (PKCS#12, or PEM with its key)" }
                    (cert_line(&c.client_cert))
                    input #client_cert type="file" name="client_cert" aria-describedby=[described_by(v.errors, Field::ClientCert)];
                    (error_for(v.errors, Field::ClientCert))
                    label for="client_key" { "Client private key (PEM; only with a PEM certificate)" }
                    p.current { "Now: " @match &c.client_key { Some(k) => { code { (k) } } None => { "none" } } }
                    input #client_key type="file" name="client_key" aria-describedby=[described_by(v.errors, Field::ClientKey)];
                    (error_for(v.errors, Field::ClientKey))
                    label for="passphrase" { "Passphrase of the client certificate or key" }
                    input #passphrase type="password" name="passphrase" autocomplete="off"
                        placeholder=(if c.passphrase_set { "unchanged" } else { "not set" })
                        aria-describedby=[described_by(v.errors, Field::Passphrase)];
                    (error_for(v.errors, Field::Passphrase))
                }
                fieldset {
                    legend { "KMIP credential" }
                    label for="username" { "User name" }
                    input #username type="text" name="username" value=(username) autocomplete="off" aria-describedby=[described_by(v.errors, Field::Username)];
                    (error_for(v.errors, Field::Username))
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="new-password"
                        placeholder=(if c.password_set { "unchanged" } else { "not set" })
                        aria-describedby=[described_by(v.errors, Field::Password)];
                    (error_for(v.errors, Field::Password))
                }
                p.hint { "Secrets are never shown: leave a field empty to keep what is saved. Files left unchosen stay as they are." }
                button #save type="submit" { "Save and Test Changes" }
            }
            form.inline method="post" action="/storage/encryption/test" {
                input type="hidden" name="csrf" value=(v.who.csrf);
                button #test-saved type="submit" class="secondary" { "Test saved settings" }
            }
            @if let Some(t) = v.test { (test_steps(t)) }
            section.encrypt aria-labelledby="encrypt-title" data-live {
                h2 #encrypt-title { "Encryption" }
                table.volumes {
                    thead { tr { th { "Volume" } th { "State" } th { "Progress" } } }
                    tbody {
                        @for s in v.volumes {
                            tr data-volume=(s.name) data-state=(s.state.name()) data-marks=(crate::app::marks(s)) {
                                td { (s.name) }
                                td { span.state { (super::state_words(s)) } (super::job_line(s)) }
                                td { (super::progress(s)) }
                            }
                        }
                    }
                }
                form method="post" action="/storage/encryption/encrypt" {
                    input type="hidden" name="csrf" value=(v.who.csrf);
                    @if v.gate == Gate::Open {
                        button #encrypt type="submit" { "Encrypt " (plaintext.len()) " volume(s)…" }
                    } @else {
                        button #encrypt type="submit" disabled aria-describedby="encrypt-why" { "Encrypt" }
                        p #encrypt-why .hint { (v.gate.why()) }
                    }
                }
            }
        },
    )
}
