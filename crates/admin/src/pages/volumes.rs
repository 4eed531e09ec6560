//! Volumes: each configured volume, its state and key, and its actions.

use maud::{html, Markup};
use service::daemon::status::{State, VolumeStatus};

use super::layout::{page, Section, Who};

/// An action offered on a volume: (path segment, label).
fn actions(s: &VolumeStatus) -> Vec<(&'static str, &'static str)> {
    match s.state {
        // A direct-mode volume has no keyslot to rewrap: only a deep rekey rotates it.
        State::Unlocked if s.key_mode.as_deref() == Some("direct") => vec![
            ("deep", "Rotate key and re-encrypt"),
            ("decrypt", "Decrypt"),
            ("lock", "Lock"),
        ],
        State::Unlocked => vec![
            ("rewrap", "Rotate key"),
            ("deep", "Rotate key and re-encrypt"),
            ("decrypt", "Decrypt"),
            ("lock", "Lock"),
        ],
        State::Locked | State::Failed | State::Waiting => vec![("unlock", "Unlock")],
        _ => vec![],
    }
}

/// The page.
pub fn render(who: Who<'_>, volumes: &[VolumeStatus], notice: Option<&str>) -> Markup {
    page(
        "Volumes",
        Section::Volumes,
        Some(Who {
            user: who.user,
            csrf: who.csrf,
        }),
        html! {
            h1 { "Volumes" }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            div data-live {
                @for s in volumes {
                    section.volume data-volume=(s.name) data-state=(s.state.name()) data-marks=(crate::app::marks(s)) aria-labelledby=(format!("vol-{}", s.name)) {
                        h2 id=(format!("vol-{}", s.name)) { (s.name) }
                        dl {
                            dt { "State" } dd { span.state { (super::state_words(s)) } (super::job_line(s)) }
                            @if s.state == State::Converting || s.progress.is_some() { dt { "Progress" } dd { (super::progress(s)) } }
                            dt { "Device" } dd { code { (s.path) } }
                            dt { "Key identifier" } dd { @if let Some(k) = &s.key_uid { code { (k) } } @else { "none" } }
                            dt { "Cipher" } dd { (s.cipher.as_deref().unwrap_or("—")) }
                            dt { "Last key-state check" } dd {
                                @if let Some(c) = &s.last_key_check {
                                    (c.result) " at " (c.time)
                                    @if let Some(sv) = &c.server { " (" (sv) ")" }
                                } @else { "none yet" }
                            }
                            @if let Some(e) = &s.server_error { dt { "Key server problem" } dd.error { (e) } }
                            @if let Some(e) = &s.device_error { dt { "Device problem" } dd.error { (e) } }
                            dt { "Exports" } dd {
                                @if s.exports.is_empty() { "none" }
                                @for e in &s.exports { (e.kind) " " code { (e.at) } br; }
                            }
                            dt { "Since" } dd { (s.since) }
                        }
                        div.actions {
                            @for (action, label) in actions(s) {
                                form.inline method="post" action=(format!("/volumes/{}/{}", s.name, action)) {
                                    input type="hidden" name="csrf" value=(who.csrf);
                                    button type="submit" class=(if action == "lock" || action == "decrypt" { "secondary" } else { "" }) { (label) "…" }
                                }
                            }
                        }
                    }
                }
                @if volumes.is_empty() { p { "No volume is configured: add [[volume]] tables to the configuration." } }
            }
        },
    )
}
