//! Strings that came from a disk, made safe to print. A volume header is writable by
//! whoever holds the disk, so its strings (the key identifier, the server hint, the label)
//! may carry escape sequences that rewrite an operator's terminal or hide text; every one
//! of them passes through [`shown`] before it reaches a message.

use std::borrow::Cow;
use std::fmt::Write;

/// Longest value a message repeats; a hostile header may hold megabytes in one field.
pub const MAX_SHOWN: usize = 200;

fn needs_escape(c: char) -> bool {
    c.is_control()
        // Bidirectional overrides and isolates reorder what a terminal shows.
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `s` with control characters (and bidi overrides) escaped as `\u{..}` and cut to
/// [`MAX_SHOWN`] characters, so it can be printed on a terminal as it is.
pub fn shown(s: &str) -> Cow<'_, str> {
    let long = s.chars().nth(MAX_SHOWN).is_some();
    if !long && !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(4 * MAX_SHOWN) + 16);
    for c in s.chars().take(MAX_SHOWN) {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    if long {
        out.push('…');
    }
    Cow::Owned(out)
}

/// True when `s` holds a control character or a bidi override.
pub fn has_control(s: &str) -> bool {
    s.chars().any(needs_escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_and_cuts_long_values() {
        assert_eq!(shown("key-1"), "key-1");
        assert_eq!(shown("a\x1b]0;pwned\x07b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(shown("x\u{202E}y\r\n"), "x\\u{202e}y\\u{d}\\u{a}");
        assert_eq!(shown("\u{9b}31m"), "\\u{9b}31m");
        let long = "z".repeat(5000);
        let s = shown(&long);
        assert!(s.len() < 300 && s.ends_with('…'), "{s}");
        assert!(has_control("\x1b") && !has_control("plain ü"));
    }
}
