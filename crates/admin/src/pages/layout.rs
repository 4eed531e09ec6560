//! The frame every page shares: title, navigation, the signed-in user and a logout form.

use maud::{html, Markup, DOCTYPE};

/// Which section the page belongs to (its navigation entry is marked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Storage › Encryption.
    Encryption,
    /// Volumes.
    Volumes,
    /// The audit log.
    Audit,
    /// Login and other pages outside the navigation.
    None,
}

/// Who is signed in, for the header.
pub struct Who<'a> {
    /// The account.
    pub user: &'a str,
    /// The session's CSRF token (for the logout form).
    pub csrf: &'a str,
}

/// A whole page.
pub fn page(title: &str, section: Section, who: Option<Who<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · atrest" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    span.brand { "atrest" }
                    @if let Some(w) = &who {
                        nav aria-label="Main" {
                            a href="/storage/encryption" aria-current=[(section == Section::Encryption).then_some("page")] { "Storage › Encryption" }
                            a href="/volumes" aria-current=[(section == Section::Volumes).then_some("page")] { "Volumes" }
                            a href="/audit" aria-current=[(section == Section::Audit).then_some("page")] { "Audit log" }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(w.csrf);
                            span.user { "Signed in as " strong { (w.user) } }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page with a message only (an error, a refusal).
pub fn message(title: &str, text: &str, back: Option<(&str, &str)>) -> Markup {
    page(
        title,
        Section::None,
        None,
        html! {
            h1 { (title) }
            p.error role="alert" { (text) }
            @if let Some((href, label)) = back {
                p { a href=(href) { (label) } }
            }
        },
    )
}
