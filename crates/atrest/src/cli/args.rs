//! The command line, as clap structs. Each flag carries its help; parse tests follow.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Encrypts an appliance's data at rest with keys kept on your KMIP key manager.
#[derive(Debug, Parser)]
#[command(name = "atrest", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Translate KMIP messages between TTLV (binary or hex) and the OASIS XML form.
    #[command(subcommand)]
    Ttlv(TtlvCommand),
}

#[derive(Debug, Subcommand)]
pub enum TtlvCommand {
    /// TTLV (binary, or hex with any whitespace) in, OASIS XML out.
    ///
    /// Reads one message or several back to back (a capture of a connection) and prints
    /// each in the XML form of the OASIS KMIP test cases; several are wrapped in <KMIP>.
    /// On malformed input it prints what decoded and names the byte offset at fault.
    /// Key material and passwords print as $REDACTED unless --reveal-secrets is given.
    Decode(DecodeArgs),
    /// OASIS XML in, TTLV hex out (one line per message).
    ///
    /// Accepts one message, or several inside a <KMIP> or <KmipTestCase> wrapper as the
    /// OASIS test-case files have them.
    Encode(EncodeArgs),
}

#[derive(Debug, Args)]
pub struct Input {
    /// File to read; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub input: Input,
    /// Print key material and passwords instead of $REDACTED (the output then holds
    /// secrets: keep it off tickets and chat).
    #[arg(long)]
    pub reveal_secrets: bool,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub input: Input,
    /// Write raw TTLV bytes instead of hex.
    #[arg(long)]
    pub binary: bool,
}

/// Parses the process arguments, exiting with status 2 on a usage error.
pub fn parse() -> Cli {
    Cli::parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ttlv_decode_takes_an_optional_file() {
        let c = Cli::try_parse_from(["atrest", "ttlv", "decode"]).unwrap();
        let Command::Ttlv(TtlvCommand::Decode(d)) = c.command else {
            panic!("not decode")
        };
        assert!(d.input.input.is_none() && !d.reveal_secrets);
        let c = Cli::try_parse_from(["atrest", "ttlv", "decode", "--reveal-secrets", "-"]).unwrap();
        let Command::Ttlv(TtlvCommand::Decode(d)) = c.command else {
            panic!("not decode")
        };
        assert!(d.reveal_secrets);
        let c = Cli::try_parse_from(["atrest", "ttlv", "encode", "--binary", "x.xml"]).unwrap();
        let Command::Ttlv(TtlvCommand::Encode(e)) = c.command else {
            panic!("not encode")
        };
        assert!(e.binary);
        assert_eq!(e.input.input.unwrap(), PathBuf::from("x.xml"));
    }
}
