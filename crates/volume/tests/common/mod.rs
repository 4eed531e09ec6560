//! What the volume crate's test binaries that talk to stock cryptsetup share.

use std::process::{Command, Output};

/// Runs Debian's cryptsetup with `args` (installed by `scripts/setup-peers.sh`: a missing
/// peer fails the test, it is never skipped).
pub fn cryptsetup(args: &[&str]) -> Output {
    Command::new("cryptsetup")
        .args(args)
        .output()
        .expect("cryptsetup is installed by scripts/setup-peers.sh")
}
