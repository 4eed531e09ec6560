//! Command-line parsing and dispatch: one `match` on the subcommand.

mod args;
mod cmd;
mod output;

pub use args::parse;
use args::{Cli, Command};

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo { dir } => cmd::demo::run(dir),
        Command::Kms(c) => cmd::kms::run(c),
        Command::Kmip(c) => cmd::kmip::run(c),
        Command::Format(a) => cmd::format::run(a),
        Command::Encrypt(a) => cmd::encrypt::run(a),
        Command::Decrypt(a) => cmd::decrypt::run(a),
        Command::Rekey(a) => cmd::rekey::run(a),
        Command::Bind(a) => cmd::bind::bind(a),
        Command::Unbind(a) => cmd::bind::unbind(a),
        Command::Status {
            device,
            json,
            header,
        } => cmd::status::run(&device, header.as_deref(), json),
        Command::Open(a) => cmd::open::run(a),
        Command::Serve { config } => cmd::serve::run(&config.config),
        Command::Ctl(a) => cmd::ctl::run(a),
        Command::Admin(c) => cmd::admin::run(c),
        Command::Ttlv(c) => cmd::ttlv::run(c),
    }
}

/// A conversion stopped on request at a committed step (exit status 3).
#[derive(Debug)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped at a safe point; run the same command again to continue")
    }
}

impl std::error::Error for Stopped {}

/// True when `e` comes from writing to a pipe whose reader has gone away.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
