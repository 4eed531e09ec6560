//! The login form.

use maud::{html, Markup};

use super::layout::{page, Section};

/// The form, with the pre-session token, and an error to show.
pub fn login(token: &str, user: &str, error: Option<&str>) -> Markup {
    page(
        "Log in",
        Section::None,
        None,
        html! {
            h1 { "Log in to the appliance's encryption settings" }
            form.login method="post" action="/login" {
                input type="hidden" name="login_token" value=(token);
                @if let Some(e) = error {
                    p.error #login-error role="alert" { (e) }
                }
                label for="user" { "User name" }
                input #user type="text" name="user" value=(user) autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
        },
    )
}
