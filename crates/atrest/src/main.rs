//! `atrest`: encrypts an appliance's data at rest with keys kept on the organisation's KMIP
//! key manager.
//!
//! This binary is thin, as ripgrep's is: it parses arguments, calls the library crates
//! (`kmip` today; `kms`, `volume` and `service` as they arrive) and owns the exit-status
//! policy:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success (a closed pipe on stdout counts as success: `atrest ttlv decode | head`) |
//! | 1 | the command failed; the message on stderr says why and what to fix |
//! | 2 | the command line was wrong (from clap) |
//! | 3 | a conversion (encrypt, decrypt, rekey --deep) stopped on Ctrl-C or SIGTERM at a safe point; the same command continues it |

#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything can fetch a key: no core dumps, no ptrace by this user, freed memory
    // wiped (see the secmem crate). Every command hardens; none needs to be debuggable.
    let _ = secmem::harden_process();
    let args = cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        // The progress output has already said where it stopped.
        Err(e) if e.is::<cli::Stopped>() => ExitCode::from(3),
        Err(e) => {
            eprintln!("atrest: {}", message(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, each cause once: a library error that already
/// quotes its OS error in its own text would otherwise print it twice.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
