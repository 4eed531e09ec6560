//! The page's routes: who may ask what, and what each answer is. Runs on the blocking
//! pool (a Save and Test talks to the KMIP servers, a login hashes a password).
//!
//! Every route but the login form, the assets and the login itself needs a live session
//! cookie; every POST also needs the session's CSRF token in its form, and, when the
//! browser sends an `Origin`, this page's own. A refusal changes nothing and is audited.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Serialize;
use service::config::WebConfig;
use service::daemon::api::Shared;
use service::daemon::status::{State, VolumeStatus};

use crate::pages::encryption::{Gate, TestView, Typed, View};
use crate::pages::layout::{message, Section, Who};
use crate::pages::{self, audit::Filter};
use crate::request::{Answer, Request};
use crate::sessions::{same_token, Session, Sessions, COOKIE};
use crate::settings::{self, Draft, Field, FieldError};
use crate::throttle::Throttle;

/// The pre-session cookie that the login form must echo (login CSRF).
const LOGIN_COOKIE: &str = "__Host-atrest-login";
/// Password checks running at once, at most (argon2id takes 19 MiB and ~50 ms each).
const MAX_VERIFYING: usize = 2;
/// How much of the audit log's end the page reads.
const AUDIT_TAIL: u64 = 512 << 10;
/// Entries shown at most.
const AUDIT_SHOWN: usize = 500;

/// The page's state.
pub struct App {
    shared: Arc<Shared>,
    config: PathBuf,
    sessions: Sessions,
    throttle: Throttle,
    verifying: AtomicUsize,
    /// The last test and, when it passed, the fingerprint of the settings it passed for.
    last_test: Mutex<Option<(TestView, Option<[u8; 32]>)>>,
    /// One Save and Test at a time.
    saving: Mutex<()>,
    /// The admin account's name.
    user: String,
    /// What strangers may write into the audit log.
    budget: crate::audit_budget::AuditBudget,
    /// The admin password hash sessions were opened under: when `atrest admin
    /// set-password` changes it, every session ends.
    hash_seen: Mutex<Option<String>>,
}

fn who(s: &Session) -> Who<'_> {
    Who {
        user: &s.user,
        csrf: &s.csrf,
    }
}

/// A session cookie in the browser's sense too (no Max-Age): it goes when the browser
/// closes; the server ends it earlier (idle, absolute, logout, a new password).
fn session_cookie(value: &str) -> String {
    format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// What a stranger typed, fit for the audit log's `source`: printable ASCII without `@` or
/// spaces (so that it cannot pose as another `user@address`), at most 64 characters.
fn shown_user(user: &str) -> String {
    let u: String = user
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '@')
        .take(64)
        .collect();
    if u.is_empty() {
        "-".into()
    } else {
        u
    }
}

/// A request path for the audit log: printable ASCII, at most 100 characters.
fn shown_path(path: &str) -> String {
    let mut p: String = path
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .take(100)
        .collect();
    if path.len() > 100 {
        p.push('…');
    }
    p
}

fn expired_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The progress the page's script polls.
#[derive(Serialize)]
struct LiveVolume {
    name: String,
    state: &'static str,
    words: String,
    percent: Option<f64>,
    rate: Option<String>,
    eta: Option<String>,
    /// The page reloads when the key or the newest job changes (a rewrap changes no state).
    marks: String,
}

/// What the page's script compares to decide that a volume's page is out of date.
pub fn marks(v: &VolumeStatus) -> String {
    format!(
        "{}|{}",
        v.key_uid.as_deref().unwrap_or_default(),
        v.last_job
            .as_ref()
            .map(|j| j.time.as_str())
            .unwrap_or_default()
    )
}

impl App {
    /// The page for the daemon whose shared state is `shared`.
    pub fn new(shared: Arc<Shared>, web: &WebConfig) -> Self {
        let max_age = Duration::from_secs(web.session_max_hours * 3600);
        // Absolute: the candidate configurations of Save and Test live in another folder,
        // and a relative path would be resolved twice.
        let config = std::fs::canonicalize(&shared.config_path)
            .unwrap_or_else(|_| shared.config_path.clone());
        // A Save and Test cut short by a crash left its folder (with copies of the secrets).
        settings::sweep(&config);
        Self {
            sessions: Sessions::new(Duration::from_secs(web.session_idle_mins * 60), max_age),
            throttle: Throttle::default(),
            verifying: AtomicUsize::new(0),
            last_test: Mutex::new(None),
            saving: Mutex::new(()),
            user: web.admin_user.clone(),
            budget: Default::default(),
            hash_seen: Mutex::new(web.admin_password_hash.clone()),
            config,
            shared,
        }
    }

    fn source(&self, user: &str, peer: IpAddr) -> String {
        format!("{}@{peer}", shown_user(user))
    }

    /// Audits what a stranger did, within the budget.
    fn audit_stranger(&self, peer: IpAddr, user: &str, operation: &str, result: String) {
        if let Some(left_out) = self.budget.admit(peer) {
            let result = if left_out > 0 {
                format!(
                    "{result} (and {left_out} more such entries in the last minute were left out)"
                )
            } else {
                result
            };
            self.shared
                .audit
                .admin(&self.source(user, peer), None, operation, result);
        }
    }

    /// Ends every session when the admin password changed since they began.
    fn sessions_follow_the_password(&self) {
        let now = WebConfig::load(&self.config)
            .ok()
            .and_then(|w| w.admin_password_hash);
        let mut seen = self.hash_seen.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_some() && *seen != now {
            self.sessions.end_all();
            *seen = now;
            self.shared.audit.event(
                None,
                "web_sessions_ended",
                None,
                "the admin password changed: every session of the web page ended",
            );
        }
    }

    /// The answer to one request.
    pub fn handle(&self, req: &Request) -> Answer {
        let path = req.path.as_str();
        match (&req.method, path) {
            (&Method::GET, "/assets/app.css") => {
                asset("text/css; charset=utf-8", crate::assets::CSS)
            }
            (&Method::GET, "/assets/app.js") => {
                asset("text/javascript; charset=utf-8", crate::assets::JS)
            }
            (&Method::GET, "/favicon.ico") => Answer {
                status: StatusCode::NO_CONTENT,
                ..asset("image/x-icon", "")
            },
            (&Method::GET, "/login") => self.login_form(req, None, StatusCode::OK),
            (&Method::POST, "/login") => self.login(req),
            _ => self.signed_in(req),
        }
    }

    fn signed_in(&self, req: &Request) -> Answer {
        self.sessions_follow_the_password();
        let Some(session) = req.cookie(COOKIE).and_then(|c| self.sessions.get(c)) else {
            return match req.method {
                Method::GET if req.path == "/status.json" => Answer::json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({"error": "not logged in"}),
                ),
                Method::GET => Answer::redirect("/login"),
                _ => {
                    self.audit_stranger(
                        req.peer,
                        "-",
                        "web_refused",
                        format!("{} {} without a session", req.method, shown_path(&req.path)),
                    );
                    Answer::html(
                        StatusCode::FORBIDDEN,
                        message(
                            "Not logged in",
                            "Your session has ended (or never began): nothing was changed. Log in and try again.",
                            Some(("/login", "Log in")),
                        ),
                    )
                }
            };
        };
        if req.method == Method::POST {
            if let Some(refused) = self.check_post(req, &session) {
                return refused;
            }
        }
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (&req.method, parts.as_slice()) {
            (&Method::GET, [""]) => Answer::redirect("/storage/encryption"),
            (&Method::GET, ["storage", "encryption"]) => {
                self.encryption(&session, None, &[], Typed::default(), StatusCode::OK)
            }
            (&Method::POST, ["storage", "encryption"]) => self.save_and_test(req, &session),
            (&Method::POST, ["storage", "encryption", "test"]) => self.test_saved(req, &session),
            (&Method::POST, ["storage", "encryption", "encrypt"]) => self.encrypt(req, &session),
            (&Method::GET, ["volumes"]) => Answer::html(
                StatusCode::OK,
                pages::volumes::render(who(&session), &self.shared.statuses(), None),
            ),
            (&Method::POST, ["volumes", name, action]) => {
                self.volume_action(req, &session, name, action)
            }
            (&Method::GET, ["audit"]) => self.audit(req, &session),
            (&Method::GET, ["status.json"]) => self.live(),
            (&Method::POST, ["logout"]) => {
                if let Some(c) = req.cookie(COOKIE) {
                    self.sessions.end(c);
                }
                self.shared.audit.admin(
                    &self.source(&session.user, req.peer),
                    None,
                    "logout",
                    "ok",
                );
                Answer::redirect("/login").with_cookie(expired_cookie(COOKIE))
            }
            _ => Answer::html(
                StatusCode::NOT_FOUND,
                message(
                    "Not found",
                    "There is no such page.",
                    Some(("/", "Back to the settings")),
                ),
            ),
        }
    }

    /// A POST must carry the session's token and come from this page.
    fn check_post(&self, req: &Request, session: &Session) -> Option<Answer> {
        let cross_origin = match (&req.origin, &req.host) {
            (Some(o), Some(h)) => o != &format!("https://{h}"),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let token_ok = req
            .form
            .get("csrf")
            .is_some_and(|t| same_token(t, &session.csrf));
        if token_ok && !cross_origin {
            return None;
        }
        let why = if cross_origin {
            "the request came from another site"
        } else {
            "its security token is missing or belongs to another session"
        };
        self.shared.audit.admin(
            &self.source(&session.user, req.peer),
            None,
            "web_refused",
            format!("{} {}: {why}", req.method, shown_path(&req.path)),
        );
        Some(Answer::html(
            StatusCode::FORBIDDEN,
            message(
                "Request refused",
                &format!("The form was not accepted ({why}); nothing was changed. Reload the page and try again."),
                Some(("/", "Back to the settings")),
            ),
        ))
    }

    fn login_form(&self, req: &Request, error: Option<&str>, status: StatusCode) -> Answer {
        if error.is_none()
            && req
                .cookie(COOKIE)
                .and_then(|c| self.sessions.get(c))
                .is_some()
        {
            return Answer::redirect("/storage/encryption");
        }
        // One token per browser for as long as its cookie lives: a second GET (another
        // tab, a redirect) must not invalidate the form already shown.
        let token = match req.cookie(LOGIN_COOKIE) {
            Some(t) if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) => {
                zeroize::Zeroizing::new(t.to_owned())
            }
            _ => crate::sessions::token(),
        };
        // Not filled in with the account's name: the page need not tell strangers.
        let user: String = req
            .form
            .get("user")
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect();
        Answer::html(status, pages::login::login(&token, &user, error)).with_cookie(format!(
            "{LOGIN_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600",
            token.as_str()
        ))
    }

    fn login(&self, req: &Request) -> Answer {
        self.sessions_follow_the_password();
        let user = req.form.get("user").unwrap_or_default();
        let token_ok = matches!(
            (req.cookie(LOGIN_COOKIE), req.form.get("login_token")),
            (Some(c), Some(f)) if same_token(c, f)
        );
        if !token_ok {
            self.audit_stranger(req.peer, user, "login_failed", "the login form's token did not match (an old page, or a form posted from another site)".into());
            return self.login_form(
                req,
                Some("The login form had expired: it is fresh now, log in again."),
                StatusCode::FORBIDDEN,
            );
        }
        if let Err(wait) = self.throttle.check(req.peer) {
            self.audit_stranger(
                req.peer,
                user,
                "login_failed",
                "refused: too many failed logins (from this address, or from everywhere)".into(),
            );
            return self.login_form(
                req,
                Some(&format!(
                    "Too many failed logins (from your address, or from everywhere in the last minutes): wait {} before trying again.",
                    pages::duration(wait.as_secs_f64())
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        if self.verifying.fetch_add(1, Ordering::SeqCst) >= MAX_VERIFYING {
            self.verifying.fetch_sub(1, Ordering::SeqCst);
            return self.login_form(
                req,
                Some("The page is busy checking other logins: try again in a moment."),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        // Read at each login: `atrest admin set-password` takes effect without a restart.
        let hash = WebConfig::load(&self.config)
            .ok()
            .and_then(|w| w.admin_password_hash);
        let password = req.form.get("password").unwrap_or_default();
        let name_ok = same_token(user, &self.user);
        let ok = crate::password::verify(
            hash.as_deref()
                .filter(|_| name_ok)
                .unwrap_or(crate::password::decoy()),
            password,
        ) && name_ok
            && hash.is_some();
        self.verifying.fetch_sub(1, Ordering::SeqCst);
        if !ok {
            let wait = self.throttle.failed(req.peer);
            self.audit_stranger(
                req.peer,
                user,
                "login_failed",
                "wrong user name or password".into(),
            );
            let text = match wait {
                Some(w) => format!(
                    "Wrong user name or password. Too many failed logins from your address: wait {} before trying again.",
                    pages::duration(w.as_secs_f64())
                ),
                None => "Wrong user name or password.".into(),
            };
            return self.login_form(req, Some(&text), StatusCode::UNAUTHORIZED);
        }
        self.throttle.succeeded(req.peer);
        let (cookie, _) = self.sessions.create(user, req.peer);
        self.shared
            .audit
            .admin(&self.source(user, req.peer), None, "login", "ok");
        Answer::redirect("/storage/encryption")
            .with_cookie(session_cookie(&cookie))
            .with_cookie(expired_cookie(LOGIN_COOKIE))
    }

    fn gate(&self, volumes: &[VolumeStatus]) -> Gate {
        if !volumes.iter().any(|v| v.state == State::Plaintext) {
            return Gate::NoPlaintext;
        }
        let last = self.last_test.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_ref().and_then(|(_, f)| *f) {
            None => Gate::NoTest,
            Some(f) if f == settings::fingerprint(&self.config) => Gate::Open,
            Some(_) => Gate::Stale,
        }
    }

    fn encryption(
        &self,
        session: &Session,
        notice: Option<String>,
        errors: &[FieldError],
        typed: Typed,
        status: StatusCode,
    ) -> Answer {
        let mut errors = errors.to_vec();
        let current = settings::current(&self.config).unwrap_or_else(|e| {
            errors.push(FieldError {
                field: Field::General,
                message: format!("The configuration cannot be read: {e}"),
            });
            Default::default()
        });
        let volumes = self.shared.statuses();
        let gate = self.gate(&volumes);
        let certificates = self
            .shared
            .certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let last = self
            .last_test
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Answer::html(
            status,
            pages::encryption::render(View {
                certificates: &certificates,
                who: who(session),
                current: &current,
                typed,
                errors: &errors,
                test: last.as_ref().map(|(t, _)| t),
                gate,
                volumes: &volumes,
                notice,
            }),
        )
    }

    fn draft(req: &Request) -> Draft {
        let secret = |k: &str| {
            req.form
                .get(k)
                .filter(|v| !v.is_empty())
                .map(|v| zeroize::Zeroizing::new(v.to_owned()))
        };
        Draft {
            servers: req
                .form
                .get("servers")
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            ca_cert: req.form.file("ca_cert").cloned(),
            client_cert: req.form.file("client_cert").cloned(),
            client_key: req.form.file("client_key").cloned(),
            passphrase: secret("passphrase"),
            username: req.form.get("username").unwrap_or_default().to_owned(),
            password: secret("password"),
        }
    }

    fn save_and_test(&self, req: &Request, session: &Session) -> Answer {
        let source = self.source(&session.user, req.peer);
        let typed = || Typed {
            servers: req.form.get("servers").map(str::to_owned),
            username: req.form.get("username").map(str::to_owned),
        };
        let Ok(_one) = self.saving.try_lock() else {
            return self.encryption(
                session,
                Some("Another Save and Test is running: wait for it.".into()),
                &[],
                typed(),
                StatusCode::CONFLICT,
            );
        };
        let draft = Self::draft(req);
        let current = match settings::current(&self.config) {
            Ok(c) => c,
            Err(e) => {
                let err = FieldError {
                    field: Field::General,
                    message: format!("The configuration cannot be read: {e}"),
                };
                return self.encryption(
                    session,
                    None,
                    &[err],
                    typed(),
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
        };
        let mut errors = settings::check(&draft, &current);
        for (name, field) in [
            ("ca_cert", Field::CaCert),
            ("client_cert", Field::ClientCert),
            ("client_key", Field::ClientKey),
        ] {
            if let Some(u) = req.form.empty_file(name) {
                errors.push(FieldError {
                    field,
                    message: format!("the chosen file {:?} is empty", u.filename),
                });
            }
        }
        if !errors.is_empty() {
            let text: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field.name(), e.message))
                .collect();
            self.shared
                .audit
                .admin(&source, None, "kmip_settings_refused", text.join("; "));
            return self.encryption(
                session,
                Some("Nothing was saved: correct the fields marked below.".into()),
                &errors,
                typed(),
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
        let staged = match settings::stage(&self.config, &draft) {
            Ok(s) => s,
            Err(e) => {
                let err = FieldError {
                    field: Field::General,
                    message: format!("The new settings could not be written: {e}"),
                };
                self.shared.audit.admin(
                    &source,
                    None,
                    "kmip_settings_refused",
                    err.message.clone(),
                );
                return self.encryption(
                    session,
                    None,
                    &[err],
                    typed(),
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
        };
        let shared = self.shared.clone();
        let outcome = settings::test_and_commit(&self.config, staged, |c| {
            shared.new_settings_reach_served_keys(c)
        });
        let passed = outcome.passed();
        let view = TestView {
            passed,
            saved: outcome.saved,
            unchanged: false,
            when: service::audit::now(),
            reach: outcome.reach.clone(),
            report: outcome.report.clone(),
        };
        let mut errors = Vec::new();
        if outcome.saved {
            self.shared.reload.store(true, Ordering::SeqCst);
            self.shared.audit.admin(
                &source,
                None,
                "kmip_settings_saved",
                format!("servers {}; test passed", draft.servers.join(", ")),
            );
            // The daemon rereads the file within a moment; the pass counts for what is
            // now on disk.
            *self.last_test.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((view, Some(settings::fingerprint(&self.config))));
            return Answer::redirect("/storage/encryption");
        }
        let why = match (&outcome.report.error, &outcome.reach) {
            (Some(e), _) => {
                errors.push(FieldError {
                    field: settings::field_of(&outcome.report),
                    message: e.clone(),
                });
                e.clone()
            }
            (None, Some(Err(e))) => {
                errors.push(FieldError {
                    field: Field::General,
                    message: e.clone(),
                });
                e.clone()
            }
            _ => "not saved".into(),
        };
        self.shared.audit.admin(
            &source,
            None,
            "kmip_settings_test_failed",
            format!("nothing saved: {why}"),
        );
        // A failed test of new settings says nothing of the saved ones: the earlier
        // verdict on those stands.
        {
            let mut last = self.last_test.lock().unwrap_or_else(|p| p.into_inner());
            let kept = last.as_ref().and_then(|(_, f)| *f);
            *last = Some((view, kept));
        }
        self.encryption(session, Some("The test failed: nothing was saved, the settings in use are unchanged. Choose the files again when you retry.".into()), &errors, typed(), StatusCode::OK)
    }

    fn test_saved(&self, req: &Request, session: &Session) -> Answer {
        let source = self.source(&session.user, req.peer);
        let Ok(_one) = self.saving.try_lock() else {
            return self.encryption(
                session,
                Some("Another Save and Test is running: wait for it.".into()),
                &[],
                Typed::default(),
                StatusCode::CONFLICT,
            );
        };
        let before = settings::fingerprint(&self.config);
        let report = service::ops::test::save_and_test(&self.config, false);
        let passed = report.ok;
        self.shared.audit.admin(
            &source,
            None,
            "kmip_settings_test",
            if passed {
                "passed".to_owned()
            } else {
                format!("failed: {}", report.error.clone().unwrap_or_default())
            },
        );
        let errors: Vec<FieldError> = report
            .error
            .iter()
            .map(|e| FieldError {
                field: settings::field_of(&report),
                message: e.clone(),
            })
            .collect();
        let view = TestView {
            passed,
            saved: false,
            unchanged: true,
            when: service::audit::now(),
            reach: None,
            report,
        };
        *self.last_test.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((view, passed.then_some(before)));
        if passed {
            return Answer::redirect("/storage/encryption");
        }
        self.encryption(session, None, &errors, Typed::default(), StatusCode::OK)
    }

    fn encrypt(&self, req: &Request, session: &Session) -> Answer {
        let volumes = self.shared.statuses();
        let gate = self.gate(&volumes);
        if gate != Gate::Open {
            return self.encryption(
                session,
                Some("Encrypt is not available: see below.".into()),
                &[],
                Typed::default(),
                StatusCode::CONFLICT,
            );
        }
        let plain: Vec<&VolumeStatus> = volumes
            .iter()
            .filter(|v| v.state == State::Plaintext)
            .collect();
        if req.form.get("confirm") != Some("yes") {
            let mut lines: Vec<String> = plain
                .iter()
                .map(|v| {
                    format!(
                        "{} ({}) is encrypted in place with a new key created on the KMIP server.",
                        v.name, v.path
                    )
                })
                .collect();
            lines.push("Its exports stop while it converts; the volume is served again, encrypted, when it is done.".into());
            lines.push(
                "A power cut during the conversion loses nothing: it resumes at the next start."
                    .into(),
            );
            return Answer::html(
                StatusCode::OK,
                pages::confirm::confirm(
                    who(session),
                    Section::Encryption,
                    &format!("Encrypt {} volume(s)?", plain.len()),
                    &lines,
                    "/storage/encryption/encrypt",
                    "Yes, encrypt",
                    "/storage/encryption",
                ),
            );
        }
        let source = self.source(&session.user, req.peer);
        for v in plain {
            let (code, answer) = self.command(&v.name, "encrypt", b"");
            let result = if code.is_success() {
                "accepted".to_owned()
            } else {
                answer.refusal().unwrap_or("refused").to_owned()
            };
            self.shared
                .audit
                .admin(&source, Some(&v.name), "encrypt_requested", result);
        }
        Answer::redirect("/storage/encryption")
    }

    fn command(
        &self,
        volume: &str,
        action: &str,
        body: &[u8],
    ) -> (StatusCode, service::daemon::feed::ApiAnswer) {
        let uri: hyper::Uri = format!("/v1/volumes/{volume}/{action}")
            .parse()
            .unwrap_or_default();
        service::daemon::api::route(&self.shared, &Method::POST, &uri, body)
    }

    fn volume_action(&self, req: &Request, session: &Session, name: &str, action: &str) -> Answer {
        let volumes = self.shared.statuses();
        let Some(v) = volumes.iter().find(|v| v.name == name) else {
            return Answer::html(
                StatusCode::NOT_FOUND,
                message(
                    "No such volume",
                    "No volume of that name is configured.",
                    Some(("/volumes", "Back to the volumes")),
                ),
            );
        };
        let (api_action, body, title, button, lines): (&str, &[u8], String, &str, Vec<String>) = match action {
            "lock" => ("lock", b"", format!("Lock {name}?"), "Yes, lock", vec![
                "Its exports close and its key is wiped from memory; readers and writers see the volume go away.".into(),
                "It stays locked until you unlock it here (or the daemon restarts).".into(),
            ]),
            "unlock" => ("unlock", b"", format!("Unlock {name}?"), "Yes, unlock", vec![
                "The key is fetched from the KMIP server and the volume exported again.".into(),
            ]),
            "rewrap" => ("rekey", br#"{"deep":false}"#, format!("Rotate the key of {name}?"), "Yes, rotate the key", vec![
                "A new key is created on the KMIP server and the volume key is wrapped under it (a second; data is not rewritten).".into(),
                "The old KMIP key is revoked (Superseded).".into(),
                "For a key that may have been exposed, rotate and re-encrypt instead.".into(),
            ]),
            "deep" => ("rekey", br#"{"deep":true}"#, format!("Rotate the key of {name} and re-encrypt every sector?"), "Yes, re-encrypt", vec![
                "A new key is created on the KMIP server and every sector is rewritten under a new volume key.".into(),
                "It takes as long as reading and writing the whole volume; its exports keep serving meanwhile (NBD and FUSE; a dm-crypt volume is closed while it runs), and a power cut loses nothing.".into(),
                "The old KMIP key is revoked (Superseded).".into(),
            ]),
            "decrypt" => ("decrypt", b"", format!("Decrypt {name} back to plaintext?"), "Yes, decrypt", vec![
                "Every sector is written back in the clear: the data is no longer protected at rest.".into(),
                "The KMIP key is revoked when the volume is plaintext.".into(),
            ]),
            _ => return Answer::html(StatusCode::NOT_FOUND, message("No such action", "The volumes offer lock, unlock, rotate, re-encrypt and decrypt.", Some(("/volumes", "Back to the volumes")))),
        };
        if req.form.get("confirm") != Some("yes") {
            let mut lines = lines;
            lines.insert(
                0,
                format!(
                    "Volume {name} ({}), now: {}.",
                    v.path,
                    pages::state_words(v)
                ),
            );
            return Answer::html(
                StatusCode::OK,
                pages::confirm::confirm(
                    who(session),
                    Section::Volumes,
                    &title,
                    &lines,
                    &format!("/volumes/{name}/{action}"),
                    button,
                    "/volumes",
                ),
            );
        }
        let (code, answer) = self.command(name, api_action, body);
        let result = if code.is_success() {
            "accepted".to_owned()
        } else {
            answer.refusal().unwrap_or("refused").to_owned()
        };
        self.shared.audit.admin(
            &self.source(&session.user, req.peer),
            Some(name),
            &format!("{action}_requested"),
            result.clone(),
        );
        if code.is_success() {
            Answer::redirect("/volumes")
        } else {
            Answer::html(
                code,
                pages::volumes::render(
                    who(session),
                    &volumes,
                    Some(&format!("{name}: {action} was not accepted: {result}")),
                ),
            )
        }
    }

    fn live(&self) -> Answer {
        let vols: Vec<LiveVolume> = self
            .shared
            .statuses()
            .iter()
            .map(|v| LiveVolume {
                name: v.name.clone(),
                state: v.state.name(),
                words: pages::state_words(v),
                percent: v.progress.map(|p| (p.percent() * 10.0).round() / 10.0),
                rate: v
                    .progress
                    .and_then(|p| p.bytes_per_sec)
                    .map(|r| format!("{}/s", pages::size(r))),
                eta: v
                    .progress
                    .and_then(|p| p.eta_secs)
                    .map(|e| format!("{} left", pages::duration(e))),
                marks: marks(v),
            })
            .collect();
        Answer::json(StatusCode::OK, &serde_json::json!({ "volumes": vols }))
    }

    fn audit(&self, req: &Request, session: &Session) -> Answer {
        let filter = Filter {
            volume: req.param("volume").unwrap_or_default(),
            text: req.param("q").unwrap_or_default(),
        };
        let names: Vec<String> = self.shared.statuses().into_iter().map(|v| v.name).collect();
        let (entries, note) = match self.shared.audit.path() {
            None => (Vec::new(), Some("No audit log is configured.".to_owned())),
            Some(p) => match tail(p, AUDIT_TAIL) {
                Ok(text) => {
                    let needle = filter.text.to_lowercase();
                    let mut e: Vec<serde_json::Value> = text
                        .lines()
                        .rev()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        .filter(|e| {
                            filter.volume.is_empty()
                                || e["volume"].as_str() == Some(filter.volume.as_str())
                        })
                        .filter(|e| {
                            needle.is_empty() || e.to_string().to_lowercase().contains(&needle)
                        })
                        .take(AUDIT_SHOWN)
                        .collect();
                    e.truncate(AUDIT_SHOWN);
                    (
                        e,
                        Some(format!(
                            "The newest entries of {} (its last {} KiB), newest first.",
                            p.display(),
                            AUDIT_TAIL >> 10
                        )),
                    )
                }
                Err(e) => (
                    Vec::new(),
                    Some(format!("The audit log {} cannot be read: {e}", p.display())),
                ),
            },
        };
        Answer::html(
            StatusCode::OK,
            pages::audit::render(who(session), &entries, &names, &filter, note.as_deref()),
        )
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type,
        body: body.as_bytes().to_vec(),
        set_cookies: Vec::new(),
        location: None,
        cacheable: true,
    }
}

/// The last `max` bytes of `path`, from its first whole line.
fn tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(max);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::with_capacity((len - from) as usize);
    f.take(max).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(if from > 0 {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default()
    } else {
        text
    })
}
