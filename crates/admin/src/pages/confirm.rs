//! A confirmation step: what is about to happen, and a button that does it. Served by the
//! server, so it needs no script and cannot be skipped by a script.

use maud::{html, Markup};

use super::layout::{page, Section, Who};

/// The page: `what` in a heading, `consequences` as a list, a form posting `action` with
/// `confirm=yes`, and a way back.
pub fn confirm(
    who: Who<'_>,
    section: Section,
    what: &str,
    consequences: &[String],
    action: &str,
    button: &str,
    back: &str,
) -> Markup {
    page(
        what,
        section,
        Some(Who {
            user: who.user,
            csrf: who.csrf,
        }),
        html! {
            h1 { (what) }
            ul.consequences { @for c in consequences { li { (c) } } }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(who.csrf);
                input type="hidden" name="confirm" value="yes";
                button #confirm type="submit" { (button) }
                " "
                a href=(back) { "Cancel" }
            }
        },
    )
}
