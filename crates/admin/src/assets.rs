//! The page's stylesheet and script, compiled into the binary: no build step, no CDN, and
//! nothing on disk an attacker could swap.

/// The stylesheet.
pub const CSS: &str = include_str!("../assets/app.css");
/// The script (progress polling, nothing else).
pub const JS: &str = include_str!("../assets/app.js");
