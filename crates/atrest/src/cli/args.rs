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
    /// Run the whole story on the embedded development KMIP server, nothing else needed.
    ///
    /// Starts the development KMS on a free loopback port (in DIR, or a temporary
    /// directory removed afterwards), then does what an operator does: "Save and Test"
    /// with its generated client configuration, and a throwaway key created, activated,
    /// fetched, revoked and destroyed; then a 64 MiB image encrypted in place, unlocked with
    /// the key fetched again, rekeyed (rewrap and deep) and decrypted back to the original.
    Demo {
        /// Keep the server directory here instead of a temporary one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The development KMIP server (for trying atrest out and for tests; not for production).
    #[command(subcommand)]
    Kms(KmsCommand),
    /// Talk to the KMIP server of a configuration file ("Save and Test", key operations).
    #[command(subcommand)]
    Kmip(KmipCommand),
    /// Make a new, empty encrypted volume on a file or block device, keyed from KMIP.
    ///
    /// Creates and activates an AES-256 key on the KMIP server, then writes a LUKS2 header
    /// (stock cryptsetup can read it) recording only the key's Unique Identifier. Wrapped
    /// mode (default): the KMIP key opens a keyslot holding a random volume key. Direct
    /// mode: the KMIP key is the volume key. Refuses a device that holds a filesystem, a
    /// LUKS header or any data unless --force (to keep existing data, use `atrest encrypt`).
    Format(FormatArgs),
    /// Encrypt existing data in place: a plaintext image or device becomes a volume with
    /// the same content.
    ///
    /// Creates and activates the key on KMIP first and records its identifier before any
    /// data moves. An image file grows by the 16 MiB header area (and, while converting,
    /// 1 MiB more); a block device must leave its last bytes unused (--reduce-device-size).
    /// Crash-safe at every instant: after a crash, power cut or Ctrl-C, run the same
    /// command again to finish. Stock cryptsetup refuses the volume until it is done.
    Encrypt(EncryptArgs),
    /// Decrypt a volume in place back to plaintext (the reverse of encrypt, equally safe).
    ///
    /// Then revokes the volume's KMIP key (reason Cessation of Operation) unless
    /// --keep-old.
    Decrypt(DecryptArgs),
    /// Put the volume under a new KMIP key.
    ///
    /// Wrapped mode: the volume key is rewrapped under a new KMIP key in one header commit
    /// (no data is touched). --deep: a new volume key and every sector re-encrypted,
    /// crash-safe and resumable (the only way for direct mode). The old KMIP key is then
    /// revoked (reason Superseded) unless --keep-old.
    Rekey(RekeyArgs),
    /// Enroll a LUKS2 volume that cryptsetup made: from now on atrest opens it by KMIP.
    ///
    /// Asks for a passphrase that opens one of its keyslots (or reads --key-file; never
    /// on the command line), creates and activates a KMIP key, and adds a keyslot that key
    /// opens, with atrest's token naming it, in one header commit. The existing keyslots
    /// and passphrases keep working; no data is touched. `open` and `serve` then use the
    /// volume as one atrest made.
    Bind(BindArgs),
    /// Undo `bind`: remove atrest's keyslot and token, then revoke the KMIP key (reason
    /// Cessation of Operation) unless --keep. Refused when atrest's keyslot is the only
    /// way into the volume.
    Unbind(UnbindArgs),
    /// Show what a volume's header says (format, cipher, key identifier); needs no key.
    Status {
        /// The image file or block device.
        device: PathBuf,
        /// The volume's detached header file, if it has one.
        #[arg(long, value_name = "FILE")]
        header: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve a volume's plaintext while the data stays encrypted (foreground).
    ///
    /// Fetches the key by the identifier in the header, proves it against the header's
    /// digest, keeps it only as a key schedule in locked memory left out of core dumps,
    /// and serves until SIGTERM or Ctrl-C (then flushes, closes, zeroizes, exits 0). The
    /// device is held exclusively meanwhile. A volume whose conversion was interrupted is
    /// refused with the command that finishes it.
    Open(OpenArgs),
    /// The daemon: unlock every configured volume at start, export it, watch its key.
    ///
    /// For each [[volume]] of the configuration, independently: reads the key's
    /// identifier from the header, fetches the key (servers in order, bounded backoff
    /// while none answers), unlocks only with an Active key, finishes an interrupted
    /// conversion, and exports (nbd, fuse, dm). Every key_check_secs it checks the key's
    /// state and locks the volume (exports closed, keys zeroized) when the key is no
    /// longer Active. Audit log and control API as in [serve]. SIGTERM stops (exit 0),
    /// SIGHUP rereads the configuration. Tells systemd READY=1 once every volume is
    /// unlocked or has its reason.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Talk to a running `atrest serve` through its control API.
    Ctl(CtlArgs),
    /// The admin web page's account.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Translate KMIP messages between TTLV (binary or hex) and the OASIS XML form.
    #[command(subcommand)]
    Ttlv(TtlvCommand),
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The image file or block device.
    pub device: PathBuf,
    /// The volume's detached header file, if it has one.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    #[command(flatten)]
    pub export: ExportArg,
    /// Pass NBD TRIM to the backing file as a hole punch. Off by default: holes show an
    /// observer of the disk which blocks are free.
    #[arg(long)]
    pub discard: bool,
    /// Print the ready and stopped events as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Where the plaintext is served: exactly one road.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ExportArg {
    /// NBD on a Unix socket (unix:PATH) or loopback TCP (127.0.0.1:PORT, [::1]:PORT).
    #[arg(long, value_name = "unix:PATH|127.0.0.1:PORT")]
    pub nbd: Option<String>,
    /// FUSE: the plaintext as the single file DIR/volume (losetup it for a block device).
    #[arg(long, value_name = "DIR")]
    pub fuse: Option<PathBuf>,
    /// dm-crypt through `cryptsetup open`: /dev/mapper/NAME (where device-mapper exists).
    #[arg(long, value_name = "NAME")]
    pub dm: Option<String>,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The daemon's API socket (default: [serve] api_socket of --config, else
    /// /run/atrest/api.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The daemon's configuration file, to find its API socket.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Every volume: state, reason, key, exports, last key check, server.
    Status {
        /// Exit with status 1 unless every volume is unlocked (plaintext volumes count as
        /// fine), its key server answers, no KMIP certificate is within 30 days of expiry,
        /// and the audit log takes every line: for monitoring.
        #[arg(long)]
        check: bool,
    },
    /// "Save and Test" with the daemon's configuration.
    Test {
        /// Also create, activate, fetch, revoke and destroy a throwaway key.
        #[arg(long)]
        probe_key: bool,
    },
    /// Close a volume's exports and zeroize its keys.
    Lock { volume: String },
    /// Unlock a locked volume (fetch the key again, check its state, export).
    Unlock { volume: String },
    /// Encrypt a plaintext volume in place (a background job; progress follows).
    Encrypt {
        volume: String,
        #[command(flatten)]
        key: KeyArgs,
        /// Return once the job is accepted.
        #[arg(long)]
        no_wait: bool,
    },
    /// Decrypt a volume in place (a background job).
    Decrypt {
        volume: String,
        #[command(flatten)]
        old: KeepOldArg,
        /// Return once the job is accepted.
        #[arg(long)]
        no_wait: bool,
    },
    /// Put a volume under a new key (a background job).
    Rekey {
        volume: String,
        /// Re-encrypt every sector under a new volume key.
        #[arg(long)]
        deep: bool,
        #[command(flatten)]
        old: KeepOldArg,
        /// Return once the job is accepted.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Run the development KMIP server.
    ///
    /// DEVELOPMENT AND TEST USE ONLY: production keys belong on the organisation's own key
    /// manager. On first start it creates DIR with a CA, a server certificate for localhost,
    /// a client identity (PKCS#12 with a passphrase, and PEM), the user "appliance" with a
    /// random password, and DIR/client.toml, so that `atrest kmip test --config
    /// DIR/client.toml` works at once. Speaks KMIP 1.0-2.1 over TLS 1.2/1.3 with client
    /// certificates required. Stops cleanly on SIGTERM or Ctrl-C. Logs one line per
    /// operation to stderr (RUST_LOG=warn to quiet it); key material is never logged.
    Serve {
        /// The server directory (created on first start).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5696", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Close a connection after this many seconds without a request.
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        idle_timeout: u64,
    },
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The image file or block device.
    pub device: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Destroy what the device holds.
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// How a new volume is keyed: what `format` and `encrypt` share.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The KMIP key is the volume key (no keyslot; XTS-AES-128 only).
    #[arg(long)]
    pub direct: bool,
    /// Cipher.
    #[arg(long, value_enum, default_value = "xts-aes-128")]
    pub cipher: CipherArg,
    /// Sector size in bytes (512 keeps every filesystem working; 4096 needs data whose
    /// size is a multiple of 4096).
    #[arg(long, default_value_t = 512, value_parser = parse_sector_size)]
    pub sector_size: u32,
    /// Name for the key on the KMIP server (default: atrest-<volume file name>).
    #[arg(long)]
    pub key_name: Option<String>,
}

impl KeyArgs {
    /// The service's key specification.
    pub fn spec(&self) -> service::ops::convert::KeySpec {
        service::ops::convert::KeySpec {
            mode: if self.direct {
                volume::volume::KeyMode::Direct
            } else {
                volume::volume::KeyMode::Wrapped
            },
            cipher: match self.cipher {
                CipherArg::XtsAes128 => service::ops::convert::Cipher::XtsAes128,
                CipherArg::XtsAes256 => service::ops::convert::Cipher::XtsAes256,
            },
            sector_size: self.sector_size,
            key_name: self.key_name.clone(),
        }
    }
}

/// Options every conversion has.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The image file or block device.
    pub device: PathBuf,
    /// Print progress and the result as JSON lines (for the daemon and the web page).
    #[arg(long)]
    pub json: bool,
    /// The volume's header lives in FILE (16 MiB, made by `encrypt`), not on the device:
    /// the data is converted where it is, with no room needed at the device's end. FILE
    /// is then needed for every use of the volume: keep it (and copies of it) safe.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    /// Bytes per committed step (at most 16 MiB; for tests and tuning).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, hide = true)]
    pub step: Option<u64>,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    #[command(flatten)]
    pub common: ConvertArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The last SIZE bytes of the device are unused and become room for the header (the
    /// data shrinks by SIZE; shrink the filesystem first). Needed for block devices; at
    /// least 17M + 4K, 32M recommended (as cryptsetup).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub reduce_device_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    pub common: ConvertArgs,
    /// A new volume key too: every sector is re-encrypted.
    #[arg(long)]
    pub deep: bool,
    #[command(flatten)]
    pub old: KeepOldArg,
    /// Name for the new key on the KMIP server (default: atrest-<volume file name>).
    #[arg(long)]
    pub key_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct BindArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The image file or block device (a LUKS2 volume).
    pub device: PathBuf,
    /// The volume's detached header file, if it has one.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    /// Read the existing passphrase from FILE (all of its bytes, as cryptsetup reads a key
    /// file; `-` for standard input) instead of asking on the terminal. FILE must not be
    /// readable by others.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Name for the new key on the KMIP server (default: atrest-<volume file name>).
    #[arg(long)]
    pub key_name: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UnbindArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The image file or block device.
    pub device: PathBuf,
    /// The volume's detached header file, if it has one.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    /// Leave the KMIP key Active (by default it is revoked: reason Cessation of Operation;
    /// a revoked key can still be fetched, for backups made while the volume was bound).
    #[arg(long)]
    pub keep: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What happens to the KMIP key a volume no longer uses.
#[derive(Debug, Args)]
pub struct KeepOldArg {
    /// Leave the old KMIP key Active. By default it is revoked once the volume no longer
    /// needs it (rekey: reason Superseded; decrypt: Cessation of Operation); a revoked key
    /// can still be fetched, so backups made under it stay readable.
    #[arg(long)]
    pub keep_old: bool,
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    #[command(flatten)]
    pub common: ConvertArgs,
    #[command(flatten)]
    pub old: KeepOldArg,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file ([kmip] table: servers, ca_cert, client_cert, ...).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum KmipCommand {
    /// "Save and Test": connect, negotiate, send a harmless request, report what worked.
    ///
    /// Exit status 0 when a server answered a KMIP request with success. On failure it
    /// names the step that failed (name resolution, TCP, server certificate, client
    /// certificate, KMIP authentication, version) and the likely fix.
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also create, activate, fetch, revoke and destroy a throwaway key, proving the
        /// account may do everything Encrypt will need.
        #[arg(long)]
        probe_key: bool,
    },
    /// Create an AES key; prints its Unique Identifier.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// Name attribute for the key.
        #[arg(long)]
        name: Option<String>,
        /// Key length in bits.
        #[arg(long, default_value_t = 256, value_parser = parse_bits)]
        bits: i32,
        /// Activate the key right after creating it.
        #[arg(long)]
        activate: bool,
    },
    /// Fetch a symmetric key; prints it in hex (the output is a secret).
    Get {
        #[command(flatten)]
        config: ConfigArg,
        /// The key's Unique Identifier.
        uid: String,
        /// Write the raw key bytes instead of hex (for piping into cryptsetup).
        #[arg(long)]
        raw: bool,
        /// Only a key that may protect data now: refused unless its state is Active (as
        /// `open`, `serve` and the token plugin require). For scripts that unlock, such as
        /// the Clevis pin.
        #[arg(long)]
        usable: bool,
    },
    /// Activate a key.
    Activate {
        #[command(flatten)]
        config: ConfigArg,
        /// The key's Unique Identifier.
        uid: String,
    },
    /// Revoke a key (it can then no longer be used to protect data).
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The key's Unique Identifier.
        uid: String,
        /// Revocation reason.
        #[arg(long, value_enum, default_value = "cessation-of-operation")]
        reason: RevokeReason,
        /// Revocation message.
        #[arg(long)]
        message: Option<String>,
    },
    /// Destroy a key (revoke it first if it is Active).
    Destroy {
        #[command(flatten)]
        config: ConfigArg,
        /// The key's Unique Identifier.
        uid: String,
    },
    /// Show a key's attributes (State, algorithm, length, names, dates).
    Attributes {
        #[command(flatten)]
        config: ConfigArg,
        /// The key's Unique Identifier.
        uid: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find keys by Name; prints one Unique Identifier per line.
    Locate {
        #[command(flatten)]
        config: ConfigArg,
        /// The Name to look for.
        name: String,
    },
    /// Show what the server says about itself (vendor, operations, object types).
    Query {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the KMIP versions the server speaks, most preferred first.
    Versions {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CipherArg {
    /// XTS-AES-128 (256-bit XTS key).
    #[value(name = "xts-aes-128")]
    XtsAes128,
    /// XTS-AES-256 (512-bit XTS key; wrapped mode only).
    #[value(name = "xts-aes-256")]
    XtsAes256,
}

fn parse_sector_size(s: &str) -> Result<u32, String> {
    match s {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err("sector size is 512 or 4096".into()),
    }
}

/// Bytes, with an optional K, M, G or T suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: use a number of bytes with K, M, G or T")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?}: use a number of bytes with K, M, G or T"))
}

fn parse_bits(s: &str) -> Result<i32, String> {
    match s {
        "128" | "192" | "256" => Ok(s.parse().unwrap_or(256)),
        _ => Err("AES keys are 128, 192 or 256 bits".into()),
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RevokeReason {
    Unspecified,
    KeyCompromise,
    Superseded,
    CessationOfOperation,
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
    fn format_takes_the_design_brief_flags() {
        let c = Cli::try_parse_from([
            "atrest",
            "format",
            "--config",
            "c.toml",
            "--direct",
            "--cipher",
            "xts-aes-256",
            "--sector-size",
            "4096",
            "img",
        ])
        .unwrap();
        let Command::Format(f) = c.command else {
            panic!("not format")
        };
        assert!(f.key.direct && f.key.cipher == CipherArg::XtsAes256 && f.key.sector_size == 4096);
        assert!(Cli::try_parse_from([
            "atrest",
            "format",
            "-c",
            "c",
            "--sector-size",
            "1024",
            "img"
        ])
        .is_err());
        let c = Cli::try_parse_from(["atrest", "format", "-c", "c", "img"]).unwrap();
        let Command::Format(f) = c.command else {
            panic!("not format")
        };
        assert_eq!(
            (f.key.cipher, f.key.sector_size),
            (CipherArg::XtsAes128, 512)
        );
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

/// `atrest admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set the web page's admin password: its argon2id hash goes into `[web]
    /// admin_password_hash` of the configuration (the rest of the file is kept as it is).
    ///
    /// Asks twice on a terminal; with --password-stdin reads one line from standard input.
    /// A running daemon uses the new password from the next login.
    SetPassword {
        #[command(flatten)]
        config: ConfigArg,
        /// Read the password from standard input (one line) instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
}
